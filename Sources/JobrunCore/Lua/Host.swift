import CJobrunShims
import CLua
import Glibc

/// Runs a script the way lua.c does (arg table, `...`, pcall with a traceback
/// handler, exit status) in a state that has the `jobrun` module.
public enum Host {
    /// Options for the main process of a run.
    public struct Options {
        public var shmLimit: UInt64?
        /// `-e` chunks, run in order before the script (as `lua -e`).
        public var chunks: [String]
        /// `--prefix`: workers' output lines start with `[name] `.
        public var prefix: Bool
        /// `--progress` / `--no-progress` (auto: when stderr is a terminal).
        public var progress: Progress.Mode
        /// `--stats`: the tables on stderr at the end; `--stats-json FILE`.
        public var stats: Bool
        public var statsJSON: String?
        /// A prelude file run as the main chunk in place of the script, with
        /// `driverArguments` as its `...` (`jobrun map`: prelude/map.lua).
        /// The script still names the run (`arg[0]`, messages, `ps`); `arg`
        /// holds the script's arguments.
        public var driver: String?
        public var driverArguments: [String]
        public init(shmLimit: UInt64? = nil, chunks: [String] = [], prefix: Bool = false,
                    progress: Progress.Mode = .auto, stats: Bool = false, statsJSON: String? = nil,
                    driver: String? = nil, driverArguments: [String] = []) {
            self.shmLimit = shmLimit; self.chunks = chunks; self.prefix = prefix
            self.progress = progress; self.stats = stats; self.statsJSON = statsJSON
            self.driver = driver; self.driverArguments = driverArguments
        }
    }

    /// The end of the run in the main process: collect the last children,
    /// wipe the status line, report --stats. Returns the exit status (1 when
    /// the --stats-json file could not be written, or a worker failed without
    /// the script being told, and the run had succeeded).
    /// How many unseen failures the end-of-run line names (the rest are counted).
    static let unseenNamed = 10

    /// How long the main process, interrupted, waits for the monitor to stop
    /// the workers and write the statistics (it needs about two seconds at most).
    static let interruptWaitMillis: Int32 = 10_000

    static func endOfRun(_ code: Int32) -> Int32 {
        let ctx = ProcessContext.current
        guard ctx.identity.isMain, !ctx.output.ended else { return code }
        ctx.output.ended = true
        // The run has ended: from here a Ctrl-C or SIGTERM no longer stops
        // it (the report below is the one it would have written).
        jr_interrupt_hold()
        ProcessControl.reapStrays()
        fflush(nil)
        Progress.stop()
        let o = ctx.output.mainOptions
        var status = code
        if o.stats || o.statsJSON != nil {
            if !Stats.report(mainExit: code, text: o.stats, jsonFD: ctx.output.statsFD, jsonPath: o.statsJSON ?? "") && code == 0 {
                status = 1
            }
        }
        // Errors never pass silently unless the script saw them: workers that
        // failed on their own, and that the script was never told about.
        let unseen = ProcessRegistry.unseenFailures()
        let reused = ProcessRegistry.recycledUnseenFailures   // their records were reused: counted, not named
        if !unseen.isEmpty || reused > 0 {
            let n = unseen.count + reused
            // One line, whatever the count: the first few are named.
            var named = Array(unseen.prefix(Host.unseenNamed))
            let more = n - named.count
            if named.isEmpty {
                named.append("\(reused) whose records later processes reused")
            } else if more > 0 {
                named.append("and \(more) more")
            }
            writeAll(2, "jobrun: \(n) worker\(n == 1 ? "" : "s") failed unseen: \(named.joined(separator: ", "))\n")
            if status == 0 { status = 1 }
        }
        Monitor.stop()
        return status
    }

    /// Runs `script` (or, when it is nil, just the `-e` chunks) as the main
    /// process; returns the exit status.
    public static func runMain(script: String?, arguments: [String], options: Options = Options()) -> Int32 {
        let ctx = ProcessContext.current
        if let script, script != stdinScript {
            if access(script, F_OK) != 0 || access(script, R_OK) != 0 {
                writeAll(2, "jobrun: cannot open \(script): \(String(cString: strerror(Glibc.errno)))\n")
                return 2
            }
            var st = stat()
            if stat(script, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
                writeAll(2, "jobrun: cannot run \(script): it is a directory\n")
                return 2
            }
        }
        if let path = options.statsJSON {
            guard let file = Stats.openJSON(path) else { return 2 }
            ctx.output.statsFD = file.fd
            ctx.output.statsTemp = file.temp
        }
        jr_reset_signals()
        ProcessControl.becomeSubreaper()
        do { try Arena.create(limit: options.shmLimit) } catch {
            writeAll(2, "jobrun: cannot create shared memory: \(error)\n")
            return 1
        }
        jr_stdout_linebuffered()
        ctx.output.mainOptions = options
        ProcessRegistry.register(name: "MainProcess", parent: getppid())
        Progress.setUp(options.progress)
        if let err = Monitor.start() {
            writeAll(2, "jobrun: \(err): the run cannot go on unsupervised\n")
            Stats.discardJSON()
            return 1
        }
        // Ctrl-C and SIGTERM: --stats and --stats-json are still written
        // (by the monitor, while this process waits in its handler), then
        // the process dies of the signal (interrupt.c).
        jr_interrupt_install(ProcessRegistry.record, ctx.supervision.monitorDoneFD, ctx.supervision.monitorAnswerFD,
                             Host.interruptWaitMillis)
        // `jobrun -`: the script is read from stdin, as `lua -` does; its
        // folder is the current one, and messages name it "stdin".
        ctx.identity.scriptDirectory = script.flatMap { $0 == stdinScript ? nil : directory(of: $0) } ?? "."
        ctx.identity.scriptName = script.map { $0 == stdinScript ? "stdin" : baseName(of: $0) } ?? "(command line)"
        guard let L = newState() else { return 1 }
        installOutputHooks(L, tag: options.prefix, clear: Progress.isOn)
        setArgTable(L, script: script ?? "jobrun", arguments: arguments)
        let code = runFile(L, script: script, chunks: options.chunks, arguments: arguments,
                           driver: options.driver, driverArguments: options.driverArguments) { message in
            Progress.stop()   // the run's last words: the status line goes first
            return "jobrun: \(message)\n"
        }
        closeState(L)
        return endOfRun(code)
    }

    /// Runs a `script` worker (started by `Process{script = ...}`).
    public static func runWorker(arenaFD: Int32, token: String, argsOffset: UInt64, argsLength: Int, name: String,
                                 daemon: Bool, parent: Int32, scriptDirectory: String, script: String,
                                 prefix: Bool = false, packagePath: String = "", packageCPath: String = "",
                                 record: Int = -1) -> Int32 {
        let ctx = ProcessContext.current
        jr_reset_signals()
        // The descriptor and offsets are checked first, so that a hand-typed
        // `jobrun --worker ...` is told what is wrong with it.
        if let problem = attachWorker(arenaFD: arenaFD, token: token, argsOffset: argsOffset, argsLength: argsLength) {
            writeAll(2, "jobrun: worker \(name): \(problem)\n")
            return 1
        }
        ProcessControl.dieWithParent(parent)
        _ = jr_set_cloexec(arenaFD, 1)
        jr_stdout_linebuffered()
        ProcessRegistry.takeOver(record, name: name, parent: parent)
        ctx.becomeWorker(name: name, daemon: daemon)
        ctx.identity.scriptName = baseName(of: script)
        setProcessTitle(name: name, script: ctx.identity.scriptName)
        return runAttachedWorker(argsOffset: argsOffset, argsLength: argsLength, name: name, daemon: daemon,
                                 scriptDirectory: scriptDirectory, script: script, prefix: prefix,
                                 packagePath: packagePath, packageCPath: packageCPath)
    }

    /// The rest of a `script` worker, once it is attached to the run and
    /// has its ledger record: also the Swift host's "script" worker role
    /// (ScriptRole), which the re-entry attached.
    static func runAttachedWorker(argsOffset: UInt64, argsLength: Int, name: String, daemon: Bool,
                                  scriptDirectory: String, script: String, prefix: Bool,
                                  packagePath: String, packageCPath: String) -> Int32 {
        let ctx = ProcessContext.current
        ctx.identity.scriptDirectory = scriptDirectory
        // `require` looks beside the worker's own script first, then where
        // its parent looked.
        guard let L = newState(packageDirectory: directory(of: script), path: packagePath, cpath: packageCPath) else { return 1 }
        // The worker's identity, as seen by jobrun.current_process().
        Prelude.run(L, "script_worker.lua") {
            Lua.pushModule(L); Lua.pushString(L, name); lua_pushboolean(L, daemon ? 1 : 0); return 3
        }
        installOutputHooks(L, tag: prefix, clear: Progress.isOn)
        // Decode the arguments the parent left in the arena; after them, the
        // list of the Pipe ends among them, held for this worker (CoreBindings.spawn).
        let listAt = (argsLength + 7) & ~7
        if Arena.allocatedBlock(payload: argsOffset, count: listAt + 8) != nil {
            PipeHolders.adopt(Arena.pointer(argsOffset + UInt64(listAt)).load(as: UInt64.self))
        }
        let top = lua_gettop(L)
        let (n, err) = ValueDecoder.decodeValues(L, UnsafeRawBufferPointer(start: Arena.pointer(argsOffset), count: argsLength), adopting: true)
        Arena.free(argsOffset)
        if let err {
            writeAll(2, "Process \(name) (pid \(getpid())): cannot decode its arguments: \(err)\n")
            return 1
        }
        var args: [Int32] = []
        _ = n
        for i in (top + 1)...max(top + 1, lua_gettop(L)) where i <= lua_gettop(L) { args.append(i) }
        // arg table: arg[0] = script, arg[1..n] = the values.
        lua_createtable(L, Int32(args.count), 1)
        Lua.pushString(L, script); lua_rawseti(L, -2, 0)
        for (k, i) in args.enumerated() { lua_pushvalue(L, i); lua_rawseti(L, -2, lua_Integer(k + 1)) }
        lua_setglobal(L, "arg")
        let pid = getpid()
        let format = { (message: String) in
            Progress.lineStart(fd: 2) + prefixLines("Process \(name) (pid \(pid)): \(message)\n", name: name)
        }
        // An uncaught error is reported as a forked worker reports it.
        let code = runFile(L, script: script, argumentIndices: args, format: format) { message in
            if !reportThroughStderr(L, "Process \(name) (pid \(pid)): \(message)\n") { writeAll(2, format(message)) }
        }
        closeState(L)
        return code
    }

    /// Maps the run's arena from a `script` worker's hidden options, or says
    /// why they are not this run's: the descriptor must be the arena carrying
    /// the run's token, and the arguments an allocated block of it. (The fuzz
    /// target `worker` calls this with forged options.)
    static func attachWorker(arenaFD: Int32, token: String, argsOffset: UInt64, argsLength: Int) -> String? {
        do { try Arena.attach(fd: arenaFD, token: token) } catch {
            return "cannot attach shared memory: \(error)"
        }
        guard Arena.allocatedBlock(payload: argsOffset, count: argsLength) != nil else {
            return "its arguments (\(argsOffset):\(argsLength)) are not a block of the run's shared memory"
        }
        return nil
    }

    /// Closes a state this process created, as lua5.4 does at exit: pending
    /// to-be-closed variables close and `__gc` finalizers run. A forked
    /// worker never does (ProcessContext.identity.ownsState): its state is a copy of its
    /// parent's, whose finalizers are the parent's to run.
    static func closeState(_ L: LuaState) {
        let ctx = ProcessContext.of(L)
        guard ctx.identity.ownsState else { return }
        ctx.identity.ownsState = false    // once
        // The main process's objects end with the run: not freed one by one
        // now (and its queues still show in --stats).
        if ctx.identity.isMain { ObjectTable.keepAtExit = true }
        lua_close(L)
        if !ctx.identity.isMain { ObjectTable.releaseAll() }   // what no finalizer released, and its list
        fflush(nil)
    }

    /// What `ps` shows for a worker: "jobrun: consumer-1 (pipeline.lua)"
    /// (the main script's name for a forked worker, its own for a `script`
    /// worker), in place of the command line it inherited.
    /// Test-only: JOBRUN_TEST_KEEP_ARGV=1 keeps a worker's command line (a
    /// test reads a `script` worker's hidden arguments from /proc).
    static func setProcessTitle(name: String, script: String) {
        if getenv("JOBRUN_TEST_KEEP_ARGV") != nil { return }
        _ = jr_set_process_title("jobrun: \(name) (\(script))")
        _ = jr_set_process_name("jobrun")   // a `script` worker's comm is "exe" (/proc/self/exe)
    }

    static func baseName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        let b = String(path[path.index(after: slash)...])
        return b.isEmpty ? path : b
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    /// A state with the standard libraries and the `jobrun` module;
    /// `package.path` starts with `packageDirectory` (default: the main
    /// script's folder), followed by `path` and `cpath` when they are given
    /// (a `script` worker's parent's), else by Lua's defaults.
    /// With `budget` (bytes, 0: none yet) the state's memory is counted and
    /// capped per state (jr_lua_newstate_budgeted: a plug-in worker's); close
    /// it with jr_lua_close_budgeted.
    static func newState(packageDirectory: String? = nil, path: String = "", cpath: String = "",
                         budget: Int? = nil) -> LuaState? {
        let made = budget.map { jr_lua_newstate_budgeted($0) } ?? jr_lua_newstate()
        guard let L = made else {
            writeAll(2, "jobrun: cannot create a Lua state (out of memory)\n")
            return nil
        }
        if jr_openlibs(L) != LUA_OK {
            writeAll(2, "jobrun: cannot open the Lua standard libraries\n")
            return nil
        }
        Module.install(L)
        // Bytecode refused, the collector, package.path (the script's folder first).
        Prelude.run(L, "loaders.lua") { 0 }
        let dir = packageDirectory ?? ProcessContext.current.identity.scriptDirectory
        Prelude.run(L, "state.lua") {
            Lua.pushString(L, dir); Lua.pushString(L, path); Lua.pushString(L, cpath); return 3
        }
        return L
    }

    static func setArgTable(_ L: LuaState, script: String, arguments: [String]) {
        lua_createtable(L, Int32(arguments.count), 1)
        Lua.pushString(L, script); lua_rawseti(L, -2, 0)
        for (i, a) in arguments.enumerated() { Lua.pushString(L, a); lua_rawseti(L, -2, lua_Integer(i + 1)) }
        lua_setglobal(L, "arg")
    }

    /// Reports a `script` worker's uncaught error as a forked worker's is
    /// reported (process.lua's report_error: through `io.stderr` while that
    /// is an open file, with its output hooks, else on descriptor 2); false
    /// when that could not run: the caller writes to descriptor 2 then.
    static func reportThroughStderr(_ L: LuaState, _ text: String) -> Bool {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        Lua.pushModule(L)
        guard lua_type(L, -1) == LUA_TTABLE, Lua.rawField(L, -1, "_report_error") == LUA_TFUNCTION else { return false }
        Lua.pushString(L, text)
        return jr_lua_pcall(L, 1, 0, 0) == LUA_OK
    }

    /// Runs the `-e` chunks, then loads and runs the script file (if any) with
    /// the given arguments; then ends the process's children as lua-api.md
    /// says; returns the exit status. An error the script raised goes to
    /// `report` when given, else to descriptor 2 as `format` makes it.
    static func runFile(_ L: LuaState, script: String?, chunks: [String] = [], arguments: [String] = [],
                        argumentIndices: [Int32] = [], driver: String? = nil, driverArguments: [String] = [],
                        format: (String) -> String, report: ((String) -> Void)? = nil) -> Int32 {
        jr_push_swift_function(L, tracebackHandler)
        let handler = lua_gettop(L)
        var code: Int32 = 0
        for chunk in chunks where code == 0 {
            // The chunk name lua.c gives `-e` code: errors read "(command line):1: ...".
            if loadText(L, chunk: chunk, name: "(command line)") != LUA_OK {
                writeAll(2, format(Lua.string(L, -1) ?? "(command line): cannot load"))
                jr_lua_pop(L, 1)
                code = 1
            } else if jr_lua_pcall(L, 0, 0, handler) != LUA_OK {
                jr_fflush_stdout()
                writeAll(2, format(Lua.string(L, -1) ?? "(error object is not a string)"))
                jr_lua_pop(L, 1)
                code = 1
            }
        }
        if code == 0, let driver {
            // Trusted code of our own, run as a script would be (its errors are the user's to see).
            if Prelude.load(L, driver) != LUA_OK {
                writeAll(2, format(Lua.string(L, -1) ?? "cannot load \(driver)"))
                jr_lua_pop(L, 1)
                code = 1
            } else {
                for a in driverArguments { Lua.pushString(L, a) }
                if jr_lua_pcall(L, Int32(driverArguments.count), 0, handler) != LUA_OK {
                    jr_fflush_stdout()
                    writeAll(2, format(Lua.string(L, -1) ?? "(error object is not a string)"))
                    jr_lua_pop(L, 1)
                    code = 1
                }
            }
        } else if code == 0, let script {
            if loadText(L, file: script) != LUA_OK {
                writeAll(2, format(Lua.string(L, -1) ?? "cannot load \(script)"))
                jr_lua_pop(L, 1)
                code = 1
            } else {
                for a in arguments { Lua.pushString(L, a) }
                for i in argumentIndices { lua_pushvalue(L, i) }
                let nargs = Int32(arguments.count + argumentIndices.count)
                if jr_lua_pcall(L, nargs, 0, handler) != LUA_OK {
                    jr_fflush_stdout()
                    let message = Lua.string(L, -1) ?? "(error object is not a string)"
                    if let report { report(message) } else { writeAll(2, format(message)) }
                    jr_lua_pop(L, 1)
                    code = 1
                }
            }
        }
        shutdown(L, abort: code != 0)
        ProcessControl.reapStrays()
        fflush(nil)
        return code
    }

    /// Loads a script file as text only: Lua does not verify bytecode, so a
    /// precompiled chunk (luac output, damaged or not) could crash the
    /// process; it is refused with its own message. As luaL_loadfilex.
    static func loadText(_ L: LuaState, file: String) -> Int32 {
        // "-": standard input, under the chunk name "stdin" (luaL_loadfilex
        // reads it when given no file name, as lua.c does for `lua -`).
        if file == stdinScript { return refusingBytecode(L, name: "stdin", luaL_loadfilex(L, nil, "t")) }
        return refusingBytecode(L, name: file, luaL_loadfilex(L, file, "t"))
    }

    /// The script name that means standard input.
    static let stdinScript = "-"

    /// Loads a `-e` chunk as text only (see loadText(file:)).
    static func loadText(_ L: LuaState, chunk: String, name: String) -> Int32 {
        refusingBytecode(L, name: name, luaL_loadbufferx(L, chunk, chunk.utf8.count, "=" + name, "t"))
    }

    private static func refusingBytecode(_ L: LuaState, name: String, _ status: Int32) -> Int32 {
        if status != LUA_OK, let message = Lua.string(L, -1), message.hasPrefix("attempt to load a binary chunk") {
            jr_lua_pop(L, 1)
            Lua.pushString(L, "\(name): precompiled chunks are not accepted (Lua does not verify bytecode)")
        }
        return status
    }

    /// jobrun._shutdown(abort): terminate daemon children and join the others;
/// after an error, stop them all.
    static func shutdown(_ L: LuaState, abort: Bool) {
        Lua.pushModule(L)
        Lua.rawField(L, -1, "_shutdown")
        lua_pushboolean(L, abort ? 1 : 0)
        if jr_lua_pcall(L, 1, 0, 0) != LUA_OK {
            writeAll(2, "jobrun: while stopping children: \(Lua.string(L, -1) ?? "?")\n")
            jr_lua_pop(L, 1)
        }
        jr_lua_pop(L, 1)
    }

    /// Message handler: `jobrun._traceback` from the prelude (describes jobrun
    /// errors with their place), falling back to the C handler.
    static let tracebackHandler: jr_swift_fn = { L in
        let L = L!
        Lua.pushModule(L)
        if lua_type(L, -1) == LUA_TTABLE {
            Lua.rawField(L, -1, "_traceback")
            if lua_type(L, -1) == LUA_TFUNCTION {
                lua_pushvalue(L, 1)
                if jr_lua_pcall(L, 1, 1, 0) == LUA_OK { return 1 }
            }
        }
        lua_settop(L, 1)
        return jr_traceback_handler(L)
    }
}
