import CJobrunEntry
import CJobrunShims
import Glibc

/// A Swift host's workers and monitor are the host's own executable started
/// again (as Python's spawn start method does), never a fork of the host:
/// a host runs threads, and a fork of a threaded process may hold any lock
/// some other thread held. Re-entering the host's executable needs no
/// install step (no `jobrun` binary to find) and the worker runs exactly
/// the library version the host was built with.
///
/// The constructor of CJobrunEntry sees JOBRUN_ENTRY before the host's
/// `main` runs and calls `jobrun_reentry_main` below; its status ends the
/// process. JOBRUN_ENTRY_ARGS carries what the role needs, as
/// space-separated `key=value` words (values never hold spaces):
///
/// - worker: `fd` (the arena, 3), `token` (the run's, 32 hex digits),
///   `slot` (the ledger record the parent reserved), `parent` (its pid),
///   `role` (a name in WorkerRoles), `name` (for the ledger and messages);
/// - monitor: `fd`, `token`, `main` (the host's pid), `done` (the pipe the
///   host closes to end it, 4);
/// - script: none; its argv is the command line's `--worker ...` (a
///   `Process{script = ...}` started inside a host's worker, which would
///   otherwise run the host's `main` with those arguments), after
///   `foreignPrefix` in lua5.4.
enum Reentry {
    static let roleVariable = "JOBRUN_ENTRY"

    /// In lua5.4 with the module (ForeignState), a `script` worker is lua5.4
    /// started again with these arguments before the worker's own: `-e`
    /// loads jobrun.so (`package.loadlib(path, "*")`: no `require`, no
    /// run started), whose constructor (CJobrunEntry) sees JOBRUN_ENTRY and
    /// runs the worker before lua5.4 goes further; `-` ends lua5.4's options
    /// (lua.c checks every option before running any). nil: this executable
    /// is jobrun or a Swift host, started as `jobrun --worker ...`.
    nonisolated(unsafe) static var foreignPrefix: [String]?
    static let argsVariable = "JOBRUN_ENTRY_ARGS"

    /// Makes sure the constructor's object is linked wherever JobrunCore is.
    static func anchor() { jobrun_entry_anchor() }

    /// Whether this process is a re-entered worker or monitor.
    static var isReentered: Bool { jobrun_entry_is_reentered() != 0 }

    /// The environment entries that start `role` with `args`.
    static func environment(role: String, args: [String: String]) -> [String] {
        let words = args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return ["\(roleVariable)=\(role)", "\(argsVariable)=\(words.joined(separator: " "))"]
    }

    static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for word in text.split(separator: " ") {
            guard let eq = word.firstIndex(of: "=") else { continue }
            out[String(word[..<eq])] = String(word[word.index(after: eq)...])
        }
        return out
    }

    static func run(role: String, args: [String: String], argv: [String] = []) -> Int32 {
        func fail(_ why: String) -> Int32 {
            writeAll(2, "jobrun: re-entered \(role) (pid \(getpid())): \(why)\n")
            return 70
        }
        // A `Process{script = ...}` started in a host's worker
        // (ProcessControl.spawnSelf): the command line's worker options.
        if role == "script" {
            guard let at = argv.firstIndex(of: "--worker"), at >= 1,
                  let worker = WorkerArguments(Array(argv[(at + 1)...])) else {
                return fail("not a script worker's arguments")
            }
            // lua5.4 that loaded the module: its own script workers start the same way.
            if at > 1 { foreignPrefix = Array(argv[..<at]) }
            return worker.run()
        }
        guard let fdText = args["fd"], let fd = Int32(fdText), let token = args["token"] else {
            return fail("JOBRUN_ENTRY_ARGS lacks fd or token")
        }
        switch role {
        case "worker":
            guard let parent = args["parent"].flatMap({ pid_t($0) }), let slot = args["slot"].flatMap({ Int($0) }),
                  let name = args["name"], let roleName = args["role"] else {
                return fail("JOBRUN_ENTRY_ARGS lacks parent, slot, name or role")
            }
            // First: a host SIGKILLed from here on takes this worker with it,
            // and one that died before the request is noticed (getppid).
            ProcessControl.dieWithParent(parent)
            jr_reset_signals()
            do { try Arena.attach(fd: fd, token: token) } catch { return fail("cannot attach shared memory: \(error)") }
            _ = jr_set_cloexec(fd, 1)
            ProcessRegistry.takeOver(slot, name: name, parent: parent)
            ProcessContext.current.becomeWorker(name: name, daemon: true)
            _ = jr_set_process_name(String(name.prefix(15)))
            guard let body = WorkerRoles.role(named: roleName) else { return fail("no worker role named '\(roleName)'") }
            return body(WorkerStart(role: roleName, name: name, parent: parent))
        case "monitor":
            guard let main = args["main"].flatMap({ pid_t($0) }), let done = args["done"].flatMap({ Int32($0) }) else {
                return fail("JOBRUN_ENTRY_ARGS lacks main or done")
            }
            do { try Arena.attach(fd: fd, token: token) } catch { return fail("cannot attach shared memory: \(error)") }
            _ = jr_set_cloexec(fd, 1)
            _ = jr_set_cloexec(done, 1)
            Monitor.supervise(main: main, doneFD: done)
        default:
            return fail("unknown role")
        }
    }
}

/// Called by CJobrunEntry's constructor in a re-entered process, before the
/// host's `main`; returns the process's exit status.
@_cdecl("jobrun_reentry_main")
public func jobrunReentryMain(_ role: UnsafePointer<CChar>, _ args: UnsafePointer<CChar>, _ argc: Int32,
                              _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var arguments: [String] = []
    if let argv { for i in 0..<Int(max(0, argc)) { arguments.append(argv[i].map { String(cString: $0) } ?? "") } }
    return Reentry.run(role: String(cString: role), args: Reentry.parse(String(cString: args)), argv: arguments)
}
