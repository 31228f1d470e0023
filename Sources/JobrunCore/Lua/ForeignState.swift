import CJobrunShims
import CLua
import Glibc

/// `require "jobrun"` from a Lua interpreter jobrun did not start: lua5.4
/// loading jobrun.so (the jobrun-lua product; its C `luaopen_jobrun` calls
/// `jobrun_foreign_open` below and raises what it reports).
///
/// The first require in a process starts the run as `Host.runMain` does for
/// the command: the arena, the main process's ledger record, the monitor
/// (forked now, while the process is still single-threaded and before any
/// worker), then installs the module in the state. lua5.4 runs no threads, so
/// `Process{target = fn}` forks it as the command's main process is forked.
///
/// What differs from the command: the state is lua5.4's (its allocator, its
/// `load`, its package.path, its signal handlers but SIGINT's); the script's
/// folder and name come from `arg[0]`; there is no status line, `--stats` or
/// `--prefix`; after an uncaught error children are joined, not stopped (an
/// error and a normal end look alike from a finalizer). The end of the run, as in `Host.endOfRun`, runs when lua5.4
/// closes the state (a finalizer on a value kept in the registry) or when the
/// script calls `os.exit` (the prelude's, which ends the run first); a worker
/// that failed unseen makes the exit status 1, as with the command; if the
/// process dies otherwise, the monitor, which sees its main process end
/// however it ends, stops what is left of the run.
enum ForeignState {
    /// Registry key of the value whose finalizer ends the run.
    static let sentinelKey = "jobrun.foreign.sentinel"
    /// The pid that started the run (its forked workers have a copy of the
    /// state, and of its sentinel, but never close it).
    nonisolated(unsafe) static var mainPid: pid_t = 0

    /// Pushes the module (1) or an error message (-1, for the C caller to raise).
    static func open(_ L: LuaState, modulePath: String?) -> Int32 {
        Lua.pushModule(L)
        if lua_type(L, -1) == LUA_TTABLE { return 1 }   // this state has it already
        jr_lua_pop(L, 1)
        let ctx = ProcessContext.current
        if ctx.arena.base != nil {
            Lua.pushString(L, "jobrun: this process already runs jobrun in another Lua state (one per process)")
            return -1
        }
        if let given = modulePath, let real = realpath(given, nil) {
            let path = String(cString: real)
            free(real)
            if !path.contains("]==]") {
                Reentry.foreignPrefix = ["lua5.4", "-e", "package.loadlib([==[\(path)]==], '*')", "-"]
            }
        }
        if let err = startRun(ctx, script: script(L)) {
            Lua.pushString(L, "jobrun: \(err)")
            return -1
        }
        // Every thread of the state finds the context here, those made
        // before this require too (their extra space is not ours).
        jr_set_foreign_context(Unmanaged.passUnretained(ctx).toOpaque())
        // The globals as lua5.4 made them, whatever metatable a script set on
        // them (a strict mode's __newindex would raise through Swift):
        // Module.install sets the global `jobrun`.
        lua_rawgeti(L, jr_registryindex(), lua_Integer(LUA_RIDX_GLOBALS))
        let globals = lua_gettop(L)
        let guarded = lua_getmetatable(L, globals) != 0
        if guarded {
            lua_pushnil(L)
            _ = lua_setmetatable(L, globals)
        }
        Module.install(L)
        if guarded { _ = lua_setmetatable(L, globals) }   // pops it
        jr_lua_pop(L, 1)
        // The sentinel: a userdata only the registry holds, collected when
        // lua5.4 closes the state at the end of the script.
        _ = lua_newuserdatauv(L, 1, 0)
        lua_createtable(L, 0, 1)
        jr_push_swift_function(L, atClose)
        lua_setfield(L, -2, "__gc")
        _ = lua_setmetatable(L, -2)
        lua_setfield(L, jr_registryindex(), sentinelKey)
        Lua.pushModule(L)
        return 1
    }

    /// `arg[0]` as lua5.4 set it: its folder (relative `Process{script =
    /// ...}` paths resolve against it; "." for stdin or none) and its name
    /// (in workers' process titles and messages, as with the command).
    private static func script(_ L: LuaState) -> (directory: String, name: String) {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        lua_rawgeti(L, jr_registryindex(), lua_Integer(LUA_RIDX_GLOBALS))
        guard Lua.rawField(L, -1, "arg") == LUA_TTABLE, lua_rawgeti(L, -1, 0) == LUA_TSTRING,
              let script = Lua.string(L, -1) else { return (".", "lua5.4") }
        if script == "-" { return (".", "stdin") }
        return (Host.directory(of: script), Host.baseName(of: script))
    }

    /// Host.runMain's start of a run, in a process jobrun did not start;
    /// nil, or why the run cannot start.
    private static func startRun(_ ctx: ProcessContext, script: (directory: String, name: String)) -> String? {
        // Ctrl-C ends the run at once, as it ends the command: lua.c's
        // handler only sets a hook that raises "interrupted!" when Lua code
        // runs next, which a wait in jobrun (a join, a get) does not reach
        // until it is over. lua.c restores the default itself after the
        // script, and forked workers inherit it; the monitor stops what is
        // left once the main process is gone. Unblocked too: a parent may
        // have started lua5.4 with it blocked (as the command does, jr_reset_signals).
        signal(SIGINT, SIG_DFL)
        var interrupt = sigset_t()
        sigemptyset(&interrupt)
        sigaddset(&interrupt, SIGINT)
        sigprocmask(SIG_UNBLOCK, &interrupt, nil)
        ProcessControl.becomeSubreaper()
        do { try Arena.create(limit: nil) } catch {
            return "cannot create shared memory: \(error)"
        }
        // A forked worker must not print again what its parent buffered.
        jr_stdout_linebuffered()
        ctx.output.mainOptions = Host.Options(progress: .off)
        ProcessRegistry.register(name: "MainProcess", parent: getppid())
        Progress.setUp(.off)
        if let err = Monitor.start() { return "\(err): the run cannot go on unsupervised" }
        ctx.identity.scriptDirectory = script.directory
        ctx.identity.scriptName = script.name
        mainPid = getpid()
        return nil
    }

    /// The sentinel's `__gc`: lua5.4 is closing the state. As the command's
    /// end of a run: daemon children are terminated and the others joined,
    /// strays reaped, unseen worker failures named, the monitor stopped.
    static let atClose: jr_swift_fn = { L in
        let L = L!
        guard getpid() == mainPid, ProcessContext.current.identity.isMain else { return 0 }
        ObjectTable.keepAtExit = true
        Host.shutdown(L, abort: false)
        ProcessControl.reapStrays()
        // A worker failed and the script was never told: the run fails, as
        // with the command. lua5.4 would return 0 or (after an error it has
        // reported) 1; either way the status is 1, and stdio is flushed
        // before the process ends here.
        let status = Host.endOfRun(0)
        if status != 0 { jr_flush_and_exit(status) }
        return 0
    }
}

/// Called by luaopen_jobrun (JobrunLuaModule, C): pushes the module and
/// returns 1, or pushes a message and returns -1 for the C side to raise.
/// `modulePath`: the file the module was loaded from (dladdr), for `script`
/// workers, which load it again.
@_cdecl("jobrun_foreign_open")
public func jobrunForeignOpen(_ L: OpaquePointer?, _ modulePath: UnsafePointer<CChar>?) -> Int32 {
    guard let L else { return 0 }
    return ForeignState.open(L, modulePath: modulePath.map { String(cString: $0) })
}
