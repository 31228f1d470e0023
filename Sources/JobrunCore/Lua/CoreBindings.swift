import Atomics
import CJobrunShims
import CLua
import Glibc

/// The private primitives the prelude (prelude/*.lua) builds `jobrun.Process`
/// and the module's small functions on. Lua code calls them as `core.X`.
enum CoreBindings {
    static func register(_ L: LuaState) {
        // Filled by the prelude; the decoder gives it to a Process another process sent.
        luaL_newmetatable(L, "jobrun.Process"); jr_lua_pop(L, 1)
        lua_createtable(L, 0, 16)
        Lua.setFunction(L, "fork", fork)
        Lua.setFunction(L, "spawn", spawn)
        Lua.setFunction(L, "wait", wait)
        Lua.setFunction(L, "poll", poll)
        Lua.setFunction(L, "kill", killProcess)
        Lua.setFunction(L, "seen", seen)
        Lua.setFunction(L, "exit", exit)
        Lua.setFunction(L, "getpid", getpid)
        Lua.setFunction(L, "metatable", metatable)
        Lua.setFunction(L, "sleep", sleep)
        Lua.setFunction(L, "time", time)
        Lua.setFunction(L, "unix_time", unixTime)
        Lua.setFunction(L, "file_id", fileID)
        Lua.setFunction(L, "hash", hash)
        Lua.setFunction(L, "cpu_count", cpuCount)
        Lua.setFunction(L, "raise", raise)
        Lua.setFunction(L, "progress", progress)
        Lua.setFunction(L, "newtable", newtable)
        Lua.setFunction(L, "random_seed", randomSeed)
        Lua.setFunction(L, "recorded_exit", recordedExit)
        Lua.setFunction(L, "alive", alive)
        Lua.setFunction(L, "acting_on_verdict", actingOnVerdict)
        Lua.setFunction(L, "shm_in_use", shmInUse)
        Lua.setFunction(L, "write_stderr", writeStderr)
        Lua.setFunction(L, "timeout", timeout)
        Lua.setFunction(L, "sendable", sendable)
        Lua.setFunction(L, "describe_exit", describeExitCode)
        Lua.setFunction(L, "note_missing_global", noteMissingGlobal)
        Lua.setFunction(L, "take_missing_global", takeMissingGlobal)
        Lua.setFunction(L, "input_ready", inputReady)
        Lua.pushString(L, version); lua_setfield(L, -2, "version")
        lua_pushinteger(L, lua_Integer(JR_MAX_PROCESSES)); lua_setfield(L, -2, "max_processes")
    }

    /// core.describe_exit(code) -> "exited with status 3" / "was killed by
    /// signal 9 (SIGKILL)": the words the Swift side uses, for Pool.
    static let describeExitCode: jr_swift_fn = { L in
        let L = L!
        let code = lua_isinteger(L, 1) != 0 ? Int32(clamping: jr_lua_tointegerx(L, 1, nil)) : Int32.min
        Lua.pushString(L, describeExit(code))
        return 1
    }

    /// core.input_ready(file) -> whether reading `file` now would not sleep
    /// (jobrun map reads its input only then: jr_lua_file_ready).
    static let inputReady: jr_swift_fn = { L in
        lua_pushboolean(L!, jr_lua_file_ready(L!, 1) != 0 ? 1 : 0)
        return 1
    }

    /// core.note_missing_global(name): this worker failed on the global
    /// `name`, nil in its copy of its parent's state (its record says so).
    static let noteMissingGlobal: jr_swift_fn = { L in
        guard let name = Lua.string(L!, 1), name.utf8.count < 48, let r = ProcessRegistry.record else { return 0 }
        copyCString(name, into: &r.pointee.missing_global)
        return 0
    }

    /// core.take_missing_global(pid) -> the global the worker `pid` failed
    /// on (once: it is cleared), or nothing.
    static let takeMissingGlobal: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        guard pid > 0, let r = ProcessRegistry.find(pid), r.pointee.missing_global.0 != 0 else { return 0 }
        Lua.pushString(L, cString(&r.pointee.missing_global))
        r.pointee.missing_global.0 = 0
        return 1
    }

    /// core.shm_in_use() -> bytes of shared memory in allocated blocks now,
    /// bytes in blocks on the free lists (`jobrun._shm_in_use`, for the tests
    /// that check nothing leaks and no free block is lost).
    static let shmInUse: jr_swift_fn = { L in
        let listed = Arena.bytesListedFree   // first: it repairs what a dead allocator left
        lua_pushinteger(L!, lua_Integer(truncatingIfNeeded: Arena.bytesInUse))
        lua_pushinteger(L!, lua_Integer(truncatingIfNeeded: listed))
        return 2
    }

    /// core.fork(name, daemon, main, p) -> pid, in the parent. The child
    /// never returns: it runs main(p) (the prelude's child_main) under
    /// lua_pcall, which also makes a yield out of it an error instead of a
    /// jump into the parent's code, and exits with the code main returns,
    /// or 1 with a message when anything raised on the way.
    static let fork: jr_swift_fn = { L in
        let L = L!
        let name = Lua.string(L, 1) ?? "Process"
        let daemon = lua_toboolean(L, 2) != 0
        // The child inherits every handle this process has not collected
        // yet, and keeps their objects until it collects them itself (maybe
        // never, if it blocks): with shared memory more than half used, the
        // garbage goes first (ObjectHandle.collectingIfShort).
        if Arena.bytesInUse > Arena.limit / 2 { jr_lua_collect(L) }
        guard let slot = ProcessRegistry.reserve(name: name) else { return tooManyProcesses(L, name) }
        // The child holds every Pipe end this process holds, from now on.
        let ends = PipeHolders.prepareChild()
        // The child inherits every handle: a reference for each object, its own.
        let inherited = ObjectTable.retainForChild()
        let started: ProcessControl.Started
        do { started = try ProcessControl.fork() } catch {
            ObjectTable.childNotStarted(inherited)
            PipeHolders.childStarted(ends, pid: nil)
            ProcessRegistry.abandon(slot)
            return Lua.raise(L, .ProcessError, "cannot start process \(name): \(error)")
        }
        if case .parent(let pid) = started {
            ProcessRegistry.started(slot, pid: pid)
            TestHooks.killPoint("fork-started")     // dies as its child starts
            PipeHolders.childStarted(ends, pid: pid)
            lua_pushinteger(L, lua_Integer(pid))
            return 1
        }
        // ProcessControl.fork has made the context this process's own (afterFork).
        ProcessContext.of(L).becomeWorker(name: name, daemon: daemon)
        Host.setProcessTitle(name: name, script: ProcessContext.of(L).identity.scriptName)
        ProcessRegistry.takeOver(slot, name: name, parent: getppid())
        ObjectTable.listHoldings()
        PipeHolders.adopt(ends)
        lua_settop(L, 4)            // ..., main, p
        var code: Int32 = 1
        if jr_lua_pcall(L, 1, 1, 0) == LUA_OK {
            code = Int32(truncatingIfNeeded: lua_tointegerx(L, -1, nil))
        } else {
            let message = Lua.string(L, -1) ?? errorMessage(L, -1) ?? "(error object is a \(Lua.typeName(L, -1)) value)"
            jr_fflush_stdout()
            writeAll(2, "Process \(name) (pid \(Glibc.getpid())): \(message)\n")
        }
        ObjectTable.releaseAll()
        jr_flush_and_exit(code)
    }

    /// Every record of the run belongs to a live process: a start past that
    /// would run unsupervised, so it is refused.
    static func tooManyProcesses(_ L: LuaState, _ name: String) -> Int32 {
        Lua.raise(L, .ProcessError, "cannot start process \(name): too many processes: \(JR_MAX_PROCESSES) processes of the run are alive, "
                  + "the most jobrun supervises at once")
    }

    /// "jobrun.<kind>: <message>" for a jobrun error table at `index`, read
    /// raw (no metamethod runs); nil for anything else.
    static func errorMessage(_ L: LuaState, _ index: Int32) -> String? {
        guard lua_type(L, index) == LUA_TTABLE else { return nil }
        let t = lua_absindex(L, index)
        func field(_ key: String) -> String? {
            Lua.pushString(L, key)
            _ = lua_rawget(L, t)
            defer { jr_lua_pop(L, 1) }
            return Lua.string(L, -1)
        }
        guard let message = field("message") else { return nil }
        return "jobrun.\(field("kind") ?? "Error"): \(message)"
    }

    /// core.spawn(path, name, daemon, package_path, package_cpath, args...)
    /// -> pid: a fresh jobrun in worker mode running `path`, its args
    /// encoded into the arena; its `require` searches where ours does.
    static let spawn: jr_swift_fn = { L in
        let L = L!
        guard var path = Lua.string(L, 1) else { return Lua.raise(L, .TypeError, "Process: script must be a string") }
        let name = Lua.string(L, 2) ?? "Process"
        let daemon = lua_toboolean(L, 3) != 0
        if !path.hasPrefix("/") { path = ProcessContext.of(L).identity.scriptDirectory + "/" + path }
        if access(path, R_OK) != 0 {
            return Lua.raise(L, .ProcessError, "Process \(name): cannot open script \(path): \(String(cString: strerror(Glibc.errno)))")
        }
        let packagePath = Lua.string(L, 4) ?? "", packageCPath = Lua.string(L, 5) ?? ""
        let nargs = max(0, lua_gettop(L) - 5)
        ProcessContext.hot(L).pointee.encoder.reset()
        PipeHolders.startCollecting()
        let err = ProcessContext.hot(L).pointee.encoder.encodeValues(L, from: 6, count: nargs, path: "args")
        let passed = PipeHolders.stopCollecting()
        if let err { return Lua.raise(L, .TypeError, "Process \(name): \(err)") }
        let bytes = ProcessContext.hot(L).pointee.encoder.bytes
        let off: UInt64
        // The encoded arguments, then (at the next multiple of 8) the list of
        // the Pipe ends among them, which the worker holds from now on.
        let listAt = (bytes.count + 7) & ~7
        do { off = try Arena.allocate(listAt + 8) } catch {
            ProcessContext.hot(L).pointee.encoder.dropReferences()
            return Lua.raise(L, .ProcessError, "Process \(name): out of shared memory for its arguments")
        }
        if bytes.count > 0 { memcpy(Arena.pointer(off), bytes.baseAddress!, bytes.count) }
        guard let slot = ProcessRegistry.reserve(name: name) else {
            Arena.free(off)
            ProcessContext.hot(L).pointee.encoder.dropReferences()
            return tooManyProcesses(L, name)
        }
        // The arguments' handles keep their objects alive until the worker
        // decodes them (adopting the references) or was never started.
        ProcessContext.hot(L).pointee.encoder.keepReferences()
        let ends = passed.isEmpty ? 0 : PipeHolders.prepareChild(ends: passed)
        (Arena.pointer(off) + listAt).storeBytes(of: ends, as: UInt64.self)
        var argv = ["--worker", "--worker-record", String(slot), "--worker-arena-fd", "3", "--worker-token", Arena.tokenText, "--worker-args", "\(off):\(bytes.count)",
                    "--worker-name", name, "--worker-parent", String(Glibc.getpid()),
                    "--worker-dir", ProcessContext.of(L).identity.scriptDirectory,
                    "--worker-path", packagePath, "--worker-cpath", packageCPath]
        if daemon { argv.append("--worker-daemon") }
        if ProcessContext.of(L).output.prefix { argv.append("--worker-prefix") }
        argv.append(path)
        do {
            let pid = try ProcessControl.spawnSelf(arguments: argv)
            ProcessRegistry.started(slot, pid: pid)
            PipeHolders.childStarted(ends, pid: pid)
            lua_pushinteger(L, lua_Integer(pid))
            return 1
        } catch {
            PipeHolders.childStarted(ends, pid: nil)
            ProcessRegistry.abandon(slot)
            ValueScan.forEachObjectInValues(UnsafeRawBufferPointer(start: Arena.pointer(off), count: listAt)) { ObjectTable.release($0) }
            Arena.free(off)
            return Lua.raise(L, .ProcessError, "cannot start process \(name): \(error)")
        }
    }

    /// core.wait(pid, timeout) -> exit code, or nil on timeout.
    static let wait: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "join") } catch {
            return Lua.raise(L, error)
        }
        switch ProcessControl.wait(pid, timeout: timeout) {
        case .exited(let code): lua_pushinteger(L, lua_Integer(code)); return 1
        case .timedOut: lua_pushnil(L); return 1
        case .failed(let f):
            let name = ProcessRegistry.find(pid).map { ProcessRegistry.name(of: $0) } ?? "pid \(pid)"
            return ProcessRegistry.raiseFailure(L, f, in: "join of \(name)")
        }
    }

    static let poll: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        if let code = ProcessControl.poll(pid) { lua_pushinteger(L, lua_Integer(code)) } else { lua_pushnil(L) }
        return 1
    }

    /// core.kill(pid, sig): the script's own signal, so a death by it is no failure.
    static let killProcess: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        // core.kill(pid, sig, true): the end of the run stops it.
        if pid > 0 { ProcessRegistry.markSignalled(pid, atEnd: lua_toboolean(L, 3) != 0) }
        let sig = Int32(truncatingIfNeeded: lua_tointegerx(L, 2, nil))
        // core.kill(pid, sig, false, true): its descendants too (a Pool stopping an item's work).
        let tree = lua_toboolean(L, 4) != 0
        if tree && sig == SIGKILL {
            ProcessControl.killTree(pid)
            return 0
        }
        // Another signal (a Pool's terminate): the descendants first, found
        // while the process lives (once it dies they are the main process's).
        if tree { for d in ProcessControl.descendants(of: pid) { _ = Glibc.kill(d, sig) } }
        ProcessControl.signal(pid, sig)
        return 0
    }

    /// core.seen(pid): the script has been told how `pid` ended (p:join(),
    /// p.exitcode, a Pool's WorkerDied about it).
    static let seen: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        if pid > 0 { ProcessRegistry.markReported(pid) }
        return 0
    }

    /// core.exit(code, close): flush stdio and _exit; never returns. With
    /// `close` the state is closed first, as lua5.4's os.exit does (not in a
    /// forked worker: see Host.closeState).
    static let exit: jr_swift_fn = { L in
        let L = L!
        var code: Int32 = 0
        switch lua_type(L, 1) {
        case LUA_TBOOLEAN: code = lua_toboolean(L, 1) != 0 ? 0 : 1
        case LUA_TNUMBER: code = Int32(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        default: code = 0
        }
        let ctx = ProcessContext.of(L)
        if lua_toboolean(L, 2) != 0 { Host.closeState(L) }   // L is gone after this
        if ctx.identity.isMain { code = Host.endOfRun(code) } else { ObjectTable.releaseAll() }
        jr_flush_and_exit(code)
    }

    /// core.write_stderr(text): a worker's report on descriptor 2, as its
    /// lines would read through `io.stderr` (--prefix, the progress line).
    static let writeStderr: jr_swift_fn = { L in
        let text = Lua.string(L!, 1) ?? ""
        writeAll(2, Progress.lineStart(fd: 2) + Host.prefixLines(text, name: ProcessContext.of(L).identity.processName))
        return 0
    }

    /// core.random_seed() -> two integers for math.randomseed, from the
    /// kernel's random source (a forked worker's own sequence).
    static let randomSeed: jr_swift_fn = { L in
        var seed: (Int64, Int64) = (0, 0)
        let n = withUnsafeMutableBytes(of: &seed) { jr_getrandom($0.baseAddress, UInt($0.count)) }
        if n != MemoryLayout.size(ofValue: seed) {
            seed = (Int64(monotonicNanos()), Int64(Glibc.getpid()))
        }
        lua_pushinteger(L, lua_Integer(seed.0)); lua_pushinteger(L, lua_Integer(seed.1))
        return 2
    }

    /// core.recorded_exit(pid) -> the exit code its parent recorded when it
    /// reaped it, or nil: how a process that did not start `pid` learns it.
    static let recordedExit: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        if let r = ProcessRegistry.find(pid), r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 {
            lua_pushinteger(L, lua_Integer(r.pointee.exit_code))
        } else {
            lua_pushnil(L)
        }
        return 1
    }

    /// core.alive(pid) -> whether a process of the run that the caller did
    /// not start still runs, from its record: not seen ending. A process
    /// with no record yet is still starting if its pid exists.
    static let alive: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        let running: Bool
        if let r = ProcessRegistry.find(pid) {
            running = !ProcessRegistry.hasEnded(r) && r.atomic(\.has_exit_code).load(ordering: .acquiring) == 0
        } else {
            running = pid > 0 && (kill(pid, 0) == 0 || Glibc.errno == EPERM)
        }
        lua_pushboolean(L, running ? 1 : 0)
        return 1
    }

    /// core.acting_on_verdict(pid) -> whether the process was given the
    /// monitor's verdict on its latest wait and has not waited since
    /// (ProcessRegistry.isActingOnVerdict).
    static let actingOnVerdict: jr_swift_fn = { L in
        let L = L!
        let pid = pid_t(truncatingIfNeeded: lua_tointegerx(L, 1, nil))
        lua_pushboolean(L, pid > 0 && ProcessRegistry.isActingOnVerdict(pid) ? 1 : 0)
        return 1
    }

    static let getpid: jr_swift_fn = { L in
        lua_pushinteger(L, lua_Integer(Glibc.getpid())); return 1
    }

    static let metatable: jr_swift_fn = { L in
        let L = L!
        guard let name = Lua.string(L, 1) else { return 0 }
        _ = jr_luaL_getmetatable(L, name)
        return 1
    }

    /// core.sendable(value, name) -> true, or false and the codec's reason
    /// with the path from `name` ("list[3].x: cannot send a coroutine"):
    /// how Pool names the part of a task or a result it could not send.
    static let sendable: jr_swift_fn = { L in
        let L = L!
        let name = Lua.string(L, 2) ?? "value"
        ProcessContext.hot(L).pointee.encoder.reset()
        let err = ProcessContext.hot(L).pointee.encoder.encode(L, 1, path: name)
        ProcessContext.hot(L).pointee.encoder.reset()
        lua_pushboolean(L, err == nil ? 1 : 0)
        guard let err else { return 1 }
        Lua.pushString(L, err)
        return 2
    }

    /// core.timeout(value, fname) -> seconds (>= 0) or nil, or false, kind,
    /// message for the prelude to raise at its caller's line: Lua.optTimeout,
    /// so every timeout is read the same way.
    static let timeout: jr_swift_fn = { L in
        let L = L!
        let fn = Lua.string(L, 2) ?? "timeout"
        do throws(JobrunError) {
            if let t = try Lua.optTimeout(L, 1, fn) { lua_pushnumber(L, t) } else { lua_pushnil(L) }
            return 1
        } catch {
            lua_pushboolean(L, 0); Lua.pushString(L, error.code.kind.rawValue); Lua.pushString(L, error.message)
            return 3
        }
    }

    static let sleep: jr_swift_fn = { L in
        let L = L!
        let seconds: Double?
        do { seconds = try Lua.optTimeout(L, 1, "sleep", "seconds", negativeIsZero: false) } catch {
            return Lua.raise(L, error)
        }
        if seconds == nil && jr_lua_isnoneornil(L, 1) != 0 {
            return Lua.raise(L, .TypeError, "sleep: seconds must be a number, got nil")
        }
        // math.huge, or longer than the clock counts (~292 years): sleep until killed.
        let ns = seconds.map(saturatingNanos) ?? Int64.max
        if ns == Int64.max { while true { pause() } }
        var ts = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        var left = timespec()
        // A signal (SIGCHLD) cuts the sleep short: sleep what is left.
        _ = valueOrErrno("nanosleep") { defer { ts = left }; return nanosleep(&ts, &left) }
        ProcessControl.reapStrays()
        Monitor.watch()
        return 0
    }

    /// jobrun.progress(name, done [, total]): a counter of the script's own
    /// on the status line (a bar with an ETA when the total is known) and in
    /// --stats.
    static let progress: jr_swift_fn = { L in
        let L = L!
        guard lua_type(L, 1) == LUA_TSTRING, let name = Lua.string(L, 1), !name.isEmpty, name.utf8.count < 48 else {
            return Lua.raise(L, .TypeError, "jobrun.progress: name must be a non-empty string of at most 47 bytes, got \(Lua.typeName(L, 1))")
        }
        /// A whole number >= 0 at `i`, or the message saying what it is instead.
        func count(_ i: Int32, _ what: String) -> Result<UInt64, JobrunError> {
            guard lua_type(L, i) == LUA_TNUMBER else {
                return .failure(JobrunError(.typeError, "jobrun.progress: \(what) must be a number, got \(Lua.typeName(L, i))"))
            }
            let v = jr_lua_tonumberx(L, i, nil)
            if v >= 0 && v < 1.8e19 && v == v.rounded(.down) { return .success(UInt64(v)) }
            return .failure(JobrunError(.valueError, "jobrun.progress: \(what) must be a whole number >= 0, got \(Lua.numberText(v))"))
        }
        do throws(JobrunError) {
            let done = try count(2, "done").get()
            let total = jr_lua_isnoneornil(L, 3) != 0 ? nil : try count(3, "total").get()
            try Progress.report(name: name, done: done, total: total)
        } catch {
            return Lua.raise(L, error)
        }
        return 0
    }

    static let time: jr_swift_fn = { L in
        lua_pushnumber(L, Double(monotonicNanos()) / 1e9); return 1
    }

    /// core.unix_time() -> seconds since the epoch, as a float (a Pool's joblog).
    static let unixTime: jr_swift_fn = { L in
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        lua_pushnumber(L, Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9); return 1
    }

    /// core.file_id(path) -> "device:inode" of the file, or nothing when it
    /// cannot be stat'ed: the same file under two names (`./x.tsv`, `x.tsv`,
    /// a link) is one joblog.
    static let fileID: jr_swift_fn = { L in
        let L = L!
        var st = stat()
        guard let path = Lua.string(L, 1), stat(path, &st) == 0 else { return 0 }
        Lua.pushString(L, "\(UInt64(st.st_dev)):\(UInt64(st.st_ino))")
        return 1
    }

    /// core.hash(s) -> the 64-bit FNV-1a hash of the string's bytes, as 16
    /// hex digits: the same in every process and run (a joblog's Hash column
    /// and job fingerprint, which resume compares).
    static let hash: jr_swift_fn = { L in
        let L = L!
        var len = 0
        guard lua_type(L, 1) == LUA_TSTRING, let p = lua_tolstring(L, 1, &len) else {
            return Lua.raise(L, .TypeError, "hash: expected a string")
        }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        UnsafeRawBufferPointer(start: p, count: len).forEach { b in
            h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3
        }
        let hex = String(h, radix: 16)
        Lua.pushString(L, String(repeating: "0", count: 16 - hex.count) + hex)
        return 1
    }

    static let cpuCount: jr_swift_fn = { L in
        lua_pushinteger(L, lua_Integer(jr_cpu_count())); return 1
    }

    /// core.newtable(narr, nrec) -> a table with room for `narr` array items
    /// and `nrec` other keys (lua_createtable): filling a table of known size
    /// then never rehashes. A hint, so out-of-range sizes are clamped (to
    /// 2^24, far below what makes lua_createtable raise).
    static let newtable: jr_swift_fn = { L in
        let L = L!
        func size(_ i: Int32) -> Int32 { Int32(max(0, min(lua_tointegerx(L, i, nil), 1 << 24))) }
        lua_createtable(L, size(1), size(2))
        return 1
    }

    /// core.raise(kind, message, level): builds a jobrun error whose `where`
    /// names the Lua code `level` frames up, and raises it.
    static let raise: jr_swift_fn = { L in
        let L = L!
        let kind = ErrorKind(rawValue: Lua.string(L, 1) ?? "") ?? .ValueError
        let message = Lua.string(L, 2) ?? ""
        let level = Int32(truncatingIfNeeded: lua_tointegerx(L, 3, nil))
        lua_createtable(L, 0, 3)
        Lua.pushString(L, kind.rawValue); lua_setfield(L, -2, "kind")
        Lua.pushString(L, message); lua_setfield(L, -2, "message")
        let place = Lua.whereString(L, level: max(1, level))
        if !place.isEmpty { Lua.pushString(L, String(place.dropLast(2))); lua_setfield(L, -2, "where") }
        lua_getfield(L, jr_registryindex(), "jobrun.Error")
        lua_setmetatable(L, -2)
        return -1
    }
}
