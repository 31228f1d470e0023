@testable import JobrunCore
@testable import JobrunCLI
import CJobrunShims
import CLua
import FuzzShims
import Glibc

// libFuzzer entry points for everything a user can hand jobrun: a message to
// decode, a script, a command line, the hidden worker options. One binary;
// JOBRUN_FUZZ_TARGET picks the target (scripts/fuzz sets it):
//
//   decoder  the bytes as a codec message, decoded into a Lua state as a
//            worker decodes a queue item or its arguments
//   script   the bytes as script text, loaded (text mode, as a run loads it)
//            and run in a sandboxed state: the jobrun module without Process
//            and Pool, no io, no os.execute/remove/exit, no C modules; every
//            wait at most 2 ms and all of a script's waits at most 10 ms; a
//            Pipe's send refused when its item could wait for shared memory;
//            an instruction budget ends endless loops
//   cli      the bytes as an argument list (NUL-separated), parsed as the
//            command line is; worker options that parse are tried as below
//   worker   the bytes choose a descriptor (the run's arena, forged copies of
//            it, other files), a token and an arguments block, tried as a
//            `script` worker tries its hidden options
//
// A target must never crash, trap or leak a Lua stack slot; it aborts when an
// invariant it checks fails, so that libFuzzer keeps the input.

enum Target: String { case decoder, script, cli, worker }
var target = Target.decoder
var decoderState: LuaState! = nil
var realArenaFD: Int32 = -1
var realToken = ""
var forgedFDs: [Int32] = []
var validBlocks: [UInt64] = []
var inputs = 0
/// JOBRUN_FUZZ_VERBOSE=1 (replaying an input): a script's print prints and
/// its error is shown.
let verbose = getenv("JOBRUN_FUZZ_VERBOSE") != nil

func fail(_ message: String) -> Never {
    writeAll(2, "jobrun-fuzz: \(message)\n")
    abort()
}

/// SwiftPM links an executable's `main` to this symbol; libFuzzer's driver
/// takes over from here (LLVMFuzzerInitialize, then the inputs).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@_cdecl("jobrun_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, { fuzzOneInput($0, $1) })
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let name = getenv("JOBRUN_FUZZ_TARGET").map { String(cString: $0) } ?? "decoder"
    guard let t = Target(rawValue: name) else { fail("JOBRUN_FUZZ_TARGET must be decoder, script, cli or worker, got '\(name)'") }
    target = t
    // The fuzzed script's Lua memory: at most 64 MiB, then "not enough memory".
    setenv("JOBRUN_TEST_LUA_LIMIT", "\(64 << 20)", 1)
    // A small limit: scripts that queue a lot wait (at most 2 ms), then are refused.
    do { try Arena.create(limit: 64 << 20) } catch { fail("cannot create the arena: \(error)") }
    ProcessRegistry.register(name: "MainProcess", parent: getppid())
    switch target {
    case .decoder:
        decoderState = Host.newState()
        if let dir = getenv("JOBRUN_FUZZ_WRITE_SEEDS") { writeDecoderSeeds(String(cString: dir)); exit(0) }
    case .script:
        break
    case .cli, .worker:
        setUpWorkerFixtures()
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    inputs += 1
    switch target {
    case .decoder: fuzzDecoder(bytes)
    case .script: fuzzScript(bytes)
    case .cli: fuzzCommandLine(bytes)
    case .worker: fuzzWorker(bytes)
    }
    return 0
}

// MARK: decoder

func fuzzDecoder(_ bytes: UnsafeRawBufferPointer) {
    let L = decoderState!
    let top = lua_gettop(L)
    if let e = ValueDecoder.decode(L, bytes) {
        if lua_gettop(L) != top { fail("decode failed (\(e)) but left \(lua_gettop(L) - top) values") }
        if !e.hasPrefix("corrupt message: ") { fail("decode failed with an unexpected error: \(e)") }
    } else if lua_gettop(L) != top + 1 {
        fail("decode pushed \(lua_gettop(L) - top) values")
    } else {
        // Use the value as a worker would: walk it, send it on.
        walkAndReencode(L)
    }
    lua_settop(L, top)
    let (n, e) = ValueDecoder.decodeValues(L, bytes)
    if lua_gettop(L) != top + (e == nil ? n : 0) { fail("decodeValues left \(lua_gettop(L) - top) values for \(n)") }
    lua_settop(L, top)
    // A list field spread into a table, directly or routed (Pool's tasks and results).
    _ = Host.runChunkReturning(L, "return {[7] = {{}, 2, 3}, [1] = {{}, 1, 1}}")
    let routes = lua_gettop(L)
    lua_createtable(L, 0, 0)
    let table = lua_gettop(L)
    for (field, into) in [(5, ValueDecoder.Destination.routed(routes: routes, key: 3)), (2, .table(table, first: 4)),
                          (1, .routed(routes: routes, key: 1))] {
        let before = lua_gettop(L)
        let e = ValueDecoder.decode(L, bytes, spreading: field, into: into)
        if lua_gettop(L) != before + (e == nil ? 1 : 0) { fail("decode(spreading:) left \(lua_gettop(L) - before) values") }
        lua_settop(L, before)
    }
    lua_settop(L, top)
    if inputs % 4096 == 0 { _ = Host.runChunkReturning(L, "return collectgarbage()"); lua_settop(L, top) }
}

/// Reads every key and value of the decoded value (tables nested, functions
/// called with no arguments under the instruction budget is not needed: they
/// are not called) and encodes it again, as a stage that forwards an item does.
func walkAndReencode(_ L: LuaState) {
    let walk = """
        local v = ...
        local seen = {}
        local function walk(x, depth)
          if type(x) ~= "table" or seen[x] or depth > 250 then return end
          seen[x] = true
          for k, y in next, x do walk(k, depth + 1); walk(y, depth + 1) end
        end
        walk(v, 0)
        """
    lua_pushvalue(L, -1)
    if luaL_loadbufferx(L, walk, walk.utf8.count, "=walk", "t") != LUA_OK { fail("walk chunk") }
    lua_rotate(L, -2, 1)
    if jr_lua_pcall(L, 1, 0, 0) != LUA_OK { jr_lua_pop(L, 1) }
    var enc = ValueEncoder(capacity: 64)
    let before = lua_gettop(L)
    if enc.encode(L, -1, path: "item") == nil {
        let again = enc.bytes
        if ValueDecoder.decode(L, again) != nil { fail("a decoded value, encoded again, does not decode") }
    }
    lua_settop(L, before)
}

func writeDecoderSeeds(_ dir: String) {
    let L = decoderState!
    let values = [
        "return nil", "return true", "return 0", "return -1", "return math.maxinteger", "return math.mininteger",
        "return 0.5", "return 0/0", "return -0.0", "return 1/0", "return ''", "return 'a string item'",
        "return string.rep('x', 300)", "return {}", "return {1, 2.5, 'three', true, false}",
        "return {x = {y = 'z'}, [0.25] = -7, [true] = false}",
        "local t = {'a', 'b'} t.self = t t[t] = {t, t} return t",
        "local n = 0 return {inc = function() n = n + 1 end, get = function() return n end, s = string.format}",
        "local function f(x) if x > 0 then return f(x - 1) end return GLOBAL end return {f, f, print}",
        "local t = {} for i = 1, 20 do t[i] = {i, tostring(i), t} end return t",
        "return {1, 2, 3, 4, {5, 6, 7}}", "return {7, 123, 2, 'map', {'a', 'b', 'c'}}",
        "return jobrun.Queue()", "return {jobrun.Lock(), jobrun.Dict(), jobrun.Value(3), jobrun.Event()}",
        "return jobrun.JoinableQueue{redeliver = true}", "return {jobrun.Pipe()}", "return jobrun.current_process()",
    ]
    mkdir(dir, 0o755)
    for (i, code) in values.enumerated() {
        guard Host.runChunkReturning(L, code) else { fail("seed \(code) does not run") }
        var enc = ValueEncoder(capacity: 64)
        if let e = enc.encode(L, -1, path: "seed") { fail("seed \(code): \(e)") }
        writeFile("\(dir)/value-\(i)", enc.bytes)
        // The same value as a message of values (a worker's arguments).
        var many = ValueEncoder(capacity: 64)
        lua_pushinteger(L, lua_Integer(i))
        if many.encodeValues(L, from: lua_gettop(L) - 1, count: 2, path: "args") == nil {
            writeFile("\(dir)/values-\(i)", many.bytes)
        }
        lua_settop(L, 0)
    }
}

func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { fail("cannot write \(path)") }
    _ = write(fd, bytes.baseAddress, bytes.count)
    close(fd)
}

extension Host {
    /// Runs a trusted chunk that returns one value, left on the stack; false when it fails.
    static func runChunkReturning(_ L: LuaState, _ code: String) -> Bool {
        guard luaL_loadbufferx(L, code, code.utf8.count, "=seed", "t") == LUA_OK,
              jr_lua_pcall(L, 0, 1, 0) == LUA_OK else { jr_lua_pop(L, 1); return false }
        return true
    }
}

// MARK: script

/// What a fuzzed script may use (see the header). Runs with (jobrun, budget).
let sandbox = """
    local jobrun, encodedSize, sharedRoom, verbose = ...
    local error, type, pcall, select = error, type, pcall, select
    -- (The instruction budget is a C hook, set after this chunk: FuzzShims.)
    debug = {getmetatable = debug.getmetatable, setmetatable = debug.setmetatable,
             getregistry = debug.getregistry, traceback = debug.traceback, getinfo = debug.getinfo,
             getlocal = debug.getlocal, getupvalue = debug.getupvalue, upvalueid = debug.upvalueid}
    package.loaded.debug = debug
    -- Nothing outside the process: no files, commands, C modules, exits.
    io = nil; package.loaded.io = nil
    os = {time = os.time, clock = os.clock, difftime = os.difftime, getenv = os.getenv}
    package.loaded.os = os
    loadfile, dofile = nil, nil
    package.loadlib = nil; package.searchers[3] = nil; package.searchers[4] = nil
    package.path = ""
    local tostring = tostring
    if not verbose then
      print = function(...) for i = 1, select('#', ...) do tostring((select(i, ...))) end end
    end
    -- No processes: Process and Pool fork.
    jobrun.Process, jobrun.Pool = nil, nil
    -- Every wait ends within 2 ms, and all of a script's waits within
    -- 10 ms (then timeouts are 0: the paths that do not wait); other values
    -- (negative, NaN, a string...) go through.
    local waits = 0.01
    local function short(t)
      if t == nil or (type(t) == "number" and t > 0.002) then t = 0.002 end
      if type(t) == "number" and t > 0 then
        if t > waits then t = waits end
        waits = waits - t
      end
      return t
    end
    local sleep = jobrun.sleep
    jobrun.sleep = function(s, ...) return sleep(short(s), ...) end
    local wraps = {
      get = function(m) return function(self, block, timeout, ...)
        if block ~= false then timeout = short(timeout) end
        return m(self, block, timeout, ...) end end,
      put = function(m) return function(self, item, block, timeout, ...)
        if block ~= false then timeout = short(timeout) end
        return m(self, item, block, timeout, ...) end end,
      wait = function(m) return function(self, timeout, ...) return m(self, short(timeout), ...) end end,
      wait_for = function(m) return function(self, pred, timeout, ...) return m(self, pred, short(timeout), ...) end end,
      join = function(m) return function(self, timeout, ...) return m(self, short(timeout), ...) end end,
      recv = function(m) return function(self, timeout, ...) return m(self, short(timeout), ...) end end,
      poll = function(m) return function(self, timeout, ...) return m(self, short(timeout), ...) end end,
      with = function(m) return function(self, fn, ...)
        if not self:acquire(true) then error("fuzz: busy", 0) end
        local r = table.pack(pcall(fn, ...))
        self:release()
        if not r[1] then error(r[2], 0) end
        return table.unpack(r, 2, r.n) end end,
      -- A Pipe's send has no timeout: an item stored in a block of its own
      -- waits, with no end, for shared memory that only a reader frees. Items
      -- that could (twice their encoded size, for the block's size class,
      -- more than the room left) are refused here; smaller ones never wait
      -- (the ring that holds them grows or the send fails).
      send = function(m) return function(self, ...)
        local n = select('#', ...) > 0 and encodedSize((...))
        if n and 2 * n + (1 << 20) > sharedRoom() then error("fuzz: the item could wait for shared memory", 0) end
        return m(self, ...) end end,
      items = function() return function() error("fuzz: no items", 0) end end,
    }
    wraps.acquire = wraps.get
    local done = {}
    local function wrap(o)
      local mt = debug.getmetatable(o)
      local idx = mt and mt.__index
      if type(idx) ~= "table" or done[idx] then return end
      done[idx] = true
      for name, w in pairs(wraps) do
        if type(idx[name]) == "function" then idx[name] = w(idx[name]) end
      end
    end
    for _, o in ipairs({jobrun.Queue(), jobrun.JoinableQueue(), jobrun.JoinableQueue{redeliver = true},
                        jobrun.Lock(), jobrun.RLock(), jobrun.Semaphore(1), jobrun.BoundedSemaphore(1),
                        jobrun.Event(), jobrun.Barrier(1), jobrun.Condition(), jobrun.Dict(), jobrun.Value(0),
                        jobrun.Pipe()}) do
      wrap(o)
    end
    -- Classes whose methods live elsewhere than a shared __index table are wrapped per object.
    for _, name in ipairs({"Queue", "JoinableQueue", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
                           "Event", "Barrier", "Condition", "Dict", "Value", "Pipe"}) do
      local make = jobrun[name]
      jobrun[name] = function(...)
        local r = table.pack(make(...))
        for i = 1, r.n do wrap(r[i]) end
        return table.unpack(r, 1, r.n)
      end
    end
    """

/// encodedSize(v) -> the bytes a send of `v` stores, or nil when `v` cannot
/// be sent. Raises nothing.
let encodedSize: jr_swift_fn = { L in
    let L = L!
    var enc = ValueEncoder(capacity: 64)
    if enc.encode(L, 1, path: "value") == nil { lua_pushinteger(L, lua_Integer(enc.bytes.count)) } else { lua_pushnil(L) }
    enc.reset()   // drops the references to objects that encoding took
    return 1
}

/// sharedRoom() -> the bytes of shared memory still free under the limit.
let sharedRoom: jr_swift_fn = { L in
    lua_pushinteger(L!, lua_Integer(Arena.limit) - lua_Integer(Arena.bytesInUse))
    return 1
}

func fuzzScript(_ bytes: UnsafeRawBufferPointer) {
    defer {
        // Objects are freed when the state closes (their last reference;
        // those in a cycle by the cycle collector), so none is left and
        // the arena stays small; one that keeps growing is a leak.
        let live = ObjectTable.liveCount
        if live > 0 { fail("\(live) objects still live once the state is closed (a reference never dropped, or a cycle not collected)") }
        if Arena.bytesInUse > Arena.limit / 2 { fail("\(Arena.bytesInUse) bytes of shared memory in use after \(inputs) scripts") }
    }
    guard let L = Host.newState() else { fail("no state") }
    guard luaL_loadbufferx(L, sandbox, sandbox.utf8.count, "=sandbox", "t") == LUA_OK else { fail("sandbox: \(Lua.string(L, -1) ?? "")") }
    lua_getglobal(L, "jobrun")
    jr_push_swift_function(L, encodedSize)
    jr_push_swift_function(L, sharedRoom)
    lua_pushboolean(L, verbose ? 1 : 0)
    if jr_lua_pcall(L, 4, 0, 0) != LUA_OK {
        fail("sandbox: \(Lua.string(L, -1) ?? "") (\(Arena.bytesInUse) bytes of shared memory in use)")
    }
    let text = String(decoding: bytes, as: UTF8.self)
    if Host.loadText(L, chunk: text, name: "fuzz") == LUA_OK {
        fuzz_set_budget(L, 200)    // 200,000 instructions
        if jr_lua_pcall(L, 0, 0, 0) != LUA_OK, verbose { writeAll(2, "jobrun-fuzz: the script raised: \(Lua.string(L, -1) ?? "?")\n") }
        lua_sethook(L, nil, 0, 0)   // finalizers run at lua_close as in a run
    } else if bytes.first == 0x1b, Lua.string(L, -1)?.contains("precompiled chunks are not accepted") != true {
        fail("a precompiled chunk was not refused: \(Lua.string(L, -1) ?? "")")
    }
    lua_settop(L, 0)
    lua_close(L)
}

// MARK: cli

func fuzzCommandLine(_ bytes: UnsafeRawBufferPointer) {
    let args = bytes.split(separator: 0, omittingEmptySubsequences: false).prefix(24).map { String(decoding: $0, as: UTF8.self) }
    if args.first == "--worker", let w = WorkerArguments(Array(args.dropFirst())) {
        let parts = w.args.split(separator: ":")
        tryWorker(fd: w.arenaFD, token: w.token, offset: UInt64(parts.first ?? "0") ?? 0, length: Int(parts.last ?? "0") ?? 0)
    }
    do {
        let command = try Jobrun.parseAsRoot(args)
        if let run = command as? Run, run.worker {
            let parts = run.workerArgs.split(separator: ":")
            tryWorker(fd: run.workerArenaFD, token: run.workerToken,
                      offset: UInt64(parts.first ?? "0") ?? 0, length: Int(parts.last ?? "0") ?? 0)
        }
        if let run = command as? Run, let limit = run.shmLimit {
            let bytes = Run.shmLimitBytes(limit)
            if bytes == nil || bytes! < 1 << 20 { fail("--shm-limit '\(limit)' passed validation") }
        }
    } catch {
        _ = Jobrun.fullMessage(for: error)
        _ = Jobrun.exitCode(for: error)
    }
}

// MARK: worker

/// Descriptors a forged `--worker-arena-fd` may name: the run's arena; memfd
/// copies of its head (one whose header fits it, one whose size does not,
/// one whose `top` is past its end, one with another token); a memfd too
/// small for a header; /dev/null; a pipe; a regular file; a directory.
func setUpWorkerFixtures() {
    realArenaFD = Arena.fd
    realToken = Arena.tokenText
    for n in [40, 100, 1000, 5000, 70000] {
        guard let b = try? Arena.allocate(n) else { fail("allocate") }
        validBlocks.append(b)
    }
    if let b = try? Arena.allocate(40) { Arena.free(b); validBlocks.append(b) }   // a freed block
    // The header (with the process table) and the first blocks after it.
    let copyBytes = Int(Arena.headerBytes) + (1 << 20)
    let head = UnsafeRawBufferPointer(start: Arena.base, count: copyBytes)
    func forged(_ edit: (UnsafeMutablePointer<jr_arena_header>) -> Void, size: Int = copyBytes) -> Int32 {
        let fd = jr_memfd_create("jobrun-arena")
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else { fail("memfd") }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 64)
        copy.copyMemory(from: head.baseAddress!, byteCount: copyBytes)
        edit(copy.assumingMemoryBound(to: jr_arena_header.self))
        _ = pwrite(fd, copy, min(size, copyBytes), 0)
        copy.deallocate()
        return fd
    }
    forgedFDs = [
        realArenaFD,
        forged { $0.pointee.size = UInt64(copyBytes); $0.pointee.top = min($0.pointee.top, UInt64(copyBytes)) },
        forged { _ in },
        forged { $0.pointee.size = UInt64(copyBytes); $0.pointee.top = UInt64(copyBytes) + 4096 },
        forged { h in
            h.pointee.size = UInt64(copyBytes)
            h.pointee.token.0 ^= 1
        },
        forged({ _ in }, size: 64),
        open("/dev/null", O_RDONLY),
        { var p: [Int32] = [0, 0]; _ = pipe(&p); return p[0] }(),
        open("/proc/self/exe", O_RDONLY),
        open("/", O_RDONLY | O_DIRECTORY),
    ]
    Arena.detach()
}

func tryWorker(fd: Int32, token: String, offset: UInt64, length: Int) {
    if let problem = Host.attachWorker(arenaFD: fd, token: token, argsOffset: offset, argsLength: length) {
        if Arena.isAttached && problem.hasPrefix("cannot attach") { fail("attached although: \(problem)") }
    } else {
        // Only memfds with a whole header may attach: the arena, and the two
        // copies whose size and top fit (with its token, or another one
        // that the input then named).
        if ![forgedFDs[0], forgedFDs[1], forgedFDs[4]].contains(fd) { fail("attached descriptor \(fd), not a whole arena") }
        // The arguments block is read as a worker reads it.
        let bytes = UnsafeRawBufferPointer(start: Arena.pointer(offset), count: length)
        if decoderState == nil { decoderState = Host.newState() }
        let L = decoderState!
        let top = lua_gettop(L)
        _ = ValueDecoder.decodeValues(L, bytes)
        lua_settop(L, top)
    }
    Arena.detach()
}

struct Reader {
    var bytes: UnsafeRawBufferPointer
    var at = 0
    mutating func byte() -> UInt8 { at < bytes.count ? { defer { at += 1 }; return bytes[at] }() : 0 }
    mutating func u64() -> UInt64 { (0..<8).reduce(0) { v, _ in v << 8 | UInt64(byte()) } }
    mutating func rest() -> String { defer { at = bytes.count }; return String(decoding: bytes[min(at, bytes.count)...], as: UTF8.self) }
}

func fuzzWorker(_ bytes: UnsafeRawBufferPointer) {
    var r = Reader(bytes: bytes)
    let pick = r.byte()
    let fd: Int32 = pick < 200 ? forgedFDs[Int(pick) % forgedFDs.count] : Int32(truncatingIfNeeded: r.u64())
    let tokenPick = r.byte()
    let offsetPick = r.byte()
    let offset: UInt64 = offsetPick < 128
        ? validBlocks[Int(offsetPick) % validBlocks.count] &+ UInt64(bitPattern: Int64(Int8(bitPattern: r.byte())))
        : r.u64()
    let lengthPick = r.byte()
    let length: Int = lengthPick < 128 ? Int(lengthPick) * 64 : Int(truncatingIfNeeded: r.u64())
    var token: String
    switch tokenPick % 4 {
    case 0, 1: token = realToken
    case 2:
        var t = Array(realToken.utf8)
        t[Int(r.byte()) % t.count] = r.byte()
        token = String(decoding: t, as: UTF8.self)
    default: token = r.rest()
    }
    tryWorker(fd: fd, token: token, offset: offset, length: length)
}
