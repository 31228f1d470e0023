import Foundation
import Testing

/// Inputs that used to crash jobrun (a Swift trap that pcall cannot catch, a
/// SIGSEGV): each must now end with its status and message, no crash report.
let crashInputs: [BadInput] = [
    // Timeouts past what a 64-bit count of nanoseconds holds (~9.2e9 s) wait
    // that long (as good as forever); math.huge waits forever; NaN is refused.
    .init(name: "Lock acquire with a timeout of 1e10 s", script: "print(jobrun.Lock():acquire(true, 1e10))", status: 0, expect: "true"),
    .init(name: "Event wait with a timeout of 1e18 s", script: "local e = jobrun.Event(); e:set(); print(e:wait(1e18))", status: 0, expect: "true"),
    .init(name: "Queue get with a timeout of 1e300 s", script: "local q = jobrun.Queue(); q:put('x'); print(q:get(true, 1e300))", status: 0, expect: "x"),
    .init(name: "join with a timeout of 1e300 s", script: "local p = jobrun.Process{target = function() end}; p:start(); p:join(1e300); print(p.exitcode)", status: 0, expect: "0"),
    .init(name: "sleep(1e300) sleeps until stopped", script: """
        local p = jobrun.Process{target = function() jobrun.sleep(1e300) end}
        p:start(); p:join(0.5); p:terminate(); p:join(10); print("exit", p.exitcode)
        """, status: 0, expect: "exit\t-15"),
    .init(name: "sleep(math.huge) sleeps until stopped", script: """
        local p = jobrun.Process{target = function() jobrun.sleep(math.huge) end}
        p:start(); p:join(0.5); p:terminate(); p:join(10); print("exit", p.exitcode)
        """, status: 0, expect: "exit\t-15"),
    .init(name: "sleep(NaN)", script: "jobrun.sleep(0/0)", status: 1, expect: "jobrun.ValueError: sleep: seconds must be a non-negative number, got nan"),
    // Counts: an unbounded Semaphore at math.maxinteger cannot be released
    // again; a value that is no 64-bit integer is a ValueError.
    .init(name: "Semaphore(math.maxinteger):release()", script: "jobrun.Semaphore(math.maxinteger):release()", status: 1,
          expect: "jobrun.ValueError: Semaphore#1.release: the value would pass math.maxinteger"),
    .init(name: "Semaphore(2^63)", script: "jobrun.Semaphore(2^63)", status: 1, expect: "jobrun.ValueError: Semaphore: value must be an integer in range, got 9.223372036854776e+18"),
    .init(name: "BoundedSemaphore(1e300)", script: "jobrun.BoundedSemaphore(1e300)", status: 1, expect: "jobrun.ValueError: BoundedSemaphore: value must be an integer in range"),
    .init(name: "Queue(math.maxinteger) is unbounded in practice", script: "local q = jobrun.Queue(math.maxinteger); q:put(1); print(q:get(), q:full())", status: 0, expect: "1\tfalse"),
    .init(name: "Barrier(2^62) waits for its parties", script: "local b = jobrun.Barrier(2^62); print(pcall(b.wait, b, 0.05))", status: 0, expect: "false\tjobrun.Timeout"),
    .init(name: "Pool{workers = 1e300}", script: "jobrun.Pool{workers = 1e300}", status: 1, expect: "jobrun.ValueError: Pool: workers must be a positive integer, got 1e+300"),
    .init(name: "Pool{workers = math.maxinteger}", script: "jobrun.Pool{workers = math.maxinteger}", status: 1,
          expect: "jobrun.ValueError: Pool: workers must be at most 4095 (a run supervises at most 4096 live processes"),
    .init(name: "Pool map with a chunksize of 2^63", script: "local p = jobrun.Pool(1); print(pcall(p.map, p, tostring, {1}, 2^63)); p:terminate()", status: 0,
          expect: "false\tjobrun.ValueError: "),
    // Value:add wraps around on integers, as Lua's integer arithmetic does.
    .init(name: "Value:add wraps as Lua integers do", script: "local v = jobrun.Value(math.maxinteger); print(v:add(1) == math.mininteger, math.maxinteger + 1 == math.mininteger)",
          status: 0, expect: "true\ttrue"),
]

@Suite("No input crashes it")
struct CrashTests {
    @Test(arguments: crashInputs)
    func crashInput(_ c: BadInput) { expectClearOutcome(c) }

    /// A counter whose ETA is past 2^63 ns: the status line used to trap.
    @Test func progressWithAnEnormousTotal() {
        // The sleeps let the progress line be drawn (it is redrawn on a timer).
        let r = runScript("jobrun.progress('x', 1, 1.7e19); jobrun.sleep(1.5); jobrun.progress('x', 2); jobrun.sleep(0.5); print('done')", options: ["--progress"], timeout: 60)
        expectStatus(r)
        #expect(r.stdout.contains("done"))
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Backtrac"), "\(r.stderr)")
    }

    // MARK: precompiled chunks

    /// A scratch folder holding `m.lua`, `good.luac` (its chunk as luac5.4
    /// writes it) and `bad.luac`: the same with one code byte damaged, which
    /// makes lua5.4 itself die of a signal (SIGSEGV or SIGABRT).
    func bytecodeFolder() -> ScratchFolder {
        let source = "local t = {} for i = 1, 3 do t[i] = i * 2 end print('ran', #t) return t"
        let dir = ScratchFolder(["m.lua": source], prefix: "jobrun-luac")
        let good = dir.url.appendingPathComponent("good.luac")
        // Lua's own string.dump, run by jobrun: the bytes luac5.4 writes.
        _ = runJobrun(["-e", "local f = assert(io.open('\(good.path)', 'wb')); f:write(string.dump(assert(load([[\(source)]], '=m')))); f:close()"], timeout: 30)
        var bytes = [UInt8]((try? Data(contentsOf: good)) ?? Data())
        if bytes.count > 100 { bytes[100] = 0xff }
        try? Data(bytes).write(to: dir.url.appendingPathComponent("bad.luac"))
        return dir
    }

    @Test func damagedChunkCrashesPlainLua() throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/lua5.4"))
        let dir = bytecodeFolder()
        defer { dir.remove() }
        let r = runCommand(["/usr/bin/lua5.4", dir.file("bad.luac")], timeout: 30)
        #expect(r.status < 0, "the damaged chunk is no longer a crash input for lua5.4: exit \(r.status)")
    }

    @Test func precompiledScriptIsRefused() {
        let dir = bytecodeFolder()
        defer { dir.remove() }
        for name in ["good.luac", "bad.luac"] {
            let path = dir.file(name)
            let r = runJobrun([path], timeout: 30)
            #expect(r.status == 1, "\(name): exit \(r.status)\n\(r.stderr)")
            #expect(r.stderr.contains("jobrun: \(path): precompiled chunks are not accepted (Lua does not verify bytecode)"), "\(name): \(r.stderr)")
            #expect(!r.stdout.contains("ran"))
            let c = runJobrun(["check", path], timeout: 30)
            #expect(c.status == 1, "check \(name): exit \(c.status)\n\(c.stdout)\(c.stderr)")
            #expect(!c.stdout.contains("ok"), "check \(name): \(c.stdout)")
            #expect(c.stderr.contains("\(path): precompiled chunks are not accepted"), "check \(name): \(c.stderr)")
        }
    }

    @Test func precompiledWorkerScriptAndChunkAreRefused() {
        let dir = bytecodeFolder()
        defer { dir.remove() }
        let bad = dir.file("bad.luac")
        let r = runScript("local p = jobrun.Process{script = '\(bad)'}; p:start(); p:join(10); print('exit', p.exitcode)", timeout: 30)
        expectStatus(r)
        #expect(r.stdout.contains("exit\t1"), "\(r.stdout)")
        #expect(r.stderr.contains("precompiled chunks are not accepted"), "\(r.stderr)")
        let e = runJobrun(["-e", "\u{1b}Lua"], timeout: 30)
        #expect(e.status == 1)
        #expect(e.stderr.contains("jobrun: (command line): precompiled chunks are not accepted"), "\(e.stderr)")
    }

    @Test func userCodeLoadsTextOnly() {
        let dir = bytecodeFolder()
        defer { dir.remove() }
        let r = runScript("""
            package.path = '\(dir.path)/?.luac;\(dir.path)/?.lua;' .. package.path
            local bytes = string.dump(function() return 1 end)
            print(load(bytes))
            print(load(bytes, 'b', 'b'))
            print(loadfile('\(dir.path)/bad.luac'))
            print(pcall(dofile, '\(dir.path)/bad.luac'))
            print(pcall(require, 'good'))
            print(load('return 1 + 1')())
            local env = {x = 5}
            print(load('return x', 'c', 't', env)(), load('return x', 'c', 'bt', nil) ~= nil)
            print(require('m')[3])
            """, files: [:], options: [], timeout: 30)
        let out = r.stdout
        expectStatus(r)
        #expect(out.components(separatedBy: "attempt to load a binary chunk").count == 6, "\(out)")
        #expect(out.hasSuffix("2\n5\ttrue\nran\t3\n6\n"), "\(out)")
    }

    // MARK: command line

    @Test(arguments: ["17592186044416", "99999999999999999999", "-1", "lots", "0", ""])
    func shmLimitOutOfRange(_ value: String) {
        let r = runJobrun(["--shm-limit", value, "-e", "print('ran')"], timeout: 30)
        #expect(r.status == 2, "\(value): exit \(r.status)\n\(r.stderr)")
        #expect(r.stderr.contains("--shm-limit must be a whole number of MiB from 1 to 17592186044415, got '\(value)'"), "\(value): \(r.stderr)")
        #expect(!r.stdout.contains("ran"))
    }

    @Test func shmLimitAtItsLargest() {
        let r = runJobrun(["--shm-limit", "17592186044415", "-e", "local q = jobrun.Queue(); q:put(1); print(q:get())"], timeout: 30)
        expectStatus(r)
        #expect(r.stdout == "1\n")
    }

    // MARK: hidden worker options

    /// `jobrun --worker ...` as a user could type it: a file that merely
    /// starts with the arena's magic, offsets out of bounds, no token.
    @Test func forgedWorkerOptionsAreRefused() {
        let dir = ScratchFolder(["w.lua": "print('ran')"], prefix: "jobrun-forged")
        defer { dir.remove() }
        let script = dir.file("w.lua")
        // A file that starts with the arena's magic, then zeros; and one that is nothing but the magic.
        let magic = dir.file("magic")
        let tiny = dir.file("tiny")
        var header = [UInt8](repeating: 0, count: 1 << 20)
        let m = magicBytes()
        header.replaceSubrange(0..<8, with: m)
        try? Data(header).write(to: URL(fileURLWithPath: magic))
        try? Data(m).write(to: URL(fileURLWithPath: tiny))
        let token = String(repeating: "ab", count: 16)
        let cases: [(String, [String])] = [
            ("magic file, no token", ["--worker", "--worker-args", "4096:10", script]),
            ("magic file, a token", ["--worker", "--worker-token", token, "--worker-args", "4096:10", script]),
            ("tiny file", ["--worker", "--worker-token", token, "--worker-args", "0:0", script]),
            ("bad token text", ["--worker", "--worker-token", "xyz", "--worker-args", "0:0", script]),
            ("args far away", ["--worker", "--worker-token", token, "--worker-args", "999999999999:99", script]),
        ]
        for (name, args) in cases {
            let file = name == "tiny file" ? tiny : magic
            let r = runCommand(["/bin/bash", "-c", "f=$1; shift; exec \"$0\" \"$@\" 3<>\"$f\"", jobrunBinary, file] + args, timeout: 30)
            let out = r.stdout + r.stderr
            #expect(!r.timedOut, "\(name): hung")
            #expect(r.status == 1, "\(name): exit \(r.status)\n\(out)")
            #expect(r.stderr.contains("jobrun: worker Process: cannot attach shared memory: "), "\(name): \(out)")
            #expect(!out.contains("ran"), "\(name): \(out)")
            #expect(!out.contains("Fatal error") && !out.contains("Backtrac"), "\(name): \(out)")
        }
    }

    /// The run's own arena and token, with offsets that are not the block
    /// of arguments: refused, and the run goes on.
    @Test func forgedOffsetsInTheRealArenaAreRefused() {
        let r = runScript("""
            local pid = jobrun.current_process().pid
            local q = jobrun.Queue()
            local p = jobrun.Process{script = 'cmdline.lua', args = {q}}
            p:start()
            local cmdline = q:get(true, 30); p:join(30)
            local token = cmdline:match('%-%-worker%-token%z(%x+)%z')
            local fd = io.popen('for f in /proc/' .. pid .. '/fd/*; do case $(readlink $f) in /memfd:jobrun-arena*) echo $f;; esac; done'):read('l')
            local function worker(t, args)
              local cmd = string.format('/proc/%d/exe --worker --worker-token %s --worker-args %s --worker-parent %d check.lua 3<>%s 2>&1', pid, t, args, pid, fd)
              local h = io.popen(cmd); local out = h:read('a'); local ok, _, code = h:close()
              print(args, code, (out:gsub('\\n', ' ')))
            end
            worker(token, '999999999:10')
            worker(token, '64:8')
            worker(token, '-16:8')
            worker(string.rep('0', 32), '64:8')
            q:put('still'); print(q:get(), #token)
            """, files: ["cmdline.lua": "local q = ...; local f = io.open('/proc/self/cmdline', 'rb'); q:put(f:read('a')); f:close()",
                         "check.lua": "print('ran')"],
            environment: ["JOBRUN_TEST_KEEP_ARGV": "1"],   // the worker's hidden arguments stay in its cmdline
            timeout: 60)
        let out = r.stdout
        expectStatus(r)
        #expect(out.contains("999999999:10\t1\tjobrun: worker Process: its arguments (999999999:10) are not a block of the run's shared memory"), "\(out)")
        #expect(out.contains("64:8\t1\tjobrun: worker Process: its arguments (64:8) are not a block"), "\(out)")
        #expect(out.contains("-16:8\t1\tjobrun: worker Process: its arguments (0:8) are not a block"), "\(out)")
        #expect(out.contains("64:8\t1\tjobrun: worker Process: cannot attach shared memory: descriptor 3 is not this run's shared memory"), "\(out)")
        #expect(out.contains("still\t32\n"), "\(out)")
        #expect(!out.contains("ran"), "\(out)")
    }

    /// The arena's magic as the file stores it (little-endian JR_ARENA_MAGIC).
    func magicBytes() -> [UInt8] {
        let header = (try? String(contentsOfFile: packageRoot.appendingPathComponent("Sources/CJobrunShims/include/jobrun_shims.h").path, encoding: .utf8)) ?? ""
        guard let line = header.split(separator: "\n").first(where: { $0.contains("JR_ARENA_MAGIC") && $0.contains("0x") }),
              let hex = line.split(separator: " ").first(where: { $0.hasPrefix("0x") }),
              let value = UInt64(hex.dropFirst(2).prefix(while: { $0.isHexDigit }), radix: 16) else { return [] }
        return withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}
