import JobrunCore

/// The one error type of the `Jobrun` library, in the manner of
/// swift-subprocess's `SubprocessError`: a `code` that can grow without
/// breaking a caller's `switch` (a struct with static members, not an
/// enum: write a `default:`), a message for people, and the context the
/// failure happened in — the plug-in, the function and the worker, each
/// empty or nil where it does not apply (a queue has no plug-in; a call
/// refused before it reached a worker has no worker).
///
/// Thrown by `PluginHost` (its start and its calls), `Queue`,
/// `JoinableQueue` and `ScriptWorker`. A cancelled plug-in call throws
/// `cancelled`; a cancelled queue wait throws Swift's `CancellationError`. JobrunCore's own error type stays inside
/// the package: every failure from it is turned into one of these.
///
/// ```swift
/// catch let error as JobrunError {
///     switch error.code {
///     case .timedOut, .workerDied: retry()
///     case .closed: break
///     default: throw error
///     }
/// }
/// ```
public struct JobrunError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong; docs/embedding.md ("Errors") has a table of when each happens.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The code's name: `"timedOut"`.
        public var description: String { name }

        // A plug-in, as its worker found it.

        /// No `<folder>/<name>.lua` (or a name that is not a plug-in name), or no folder.
        public static let pluginNotFound = Code("pluginNotFound")
        /// The file or its folder exists but cannot be read.
        public static let pluginNotReadable = Code("pluginNotReadable")
        /// The plug-in (or a sibling it requires) does not compile; the message has `file:line`.
        public static let syntaxError = Code("syntaxError")
        /// The file ran but did not return a table of functions.
        public static let notATable = Code("notATable")
        /// The plug-in's table has no function of that name.
        public static let functionMissing = Code("functionMissing")
        /// The plug-in raised an error (or called `os.exit`): `message` and `traceback`.
        public static let luaError = Code("luaError")
        /// The result holds what a LuaValue cannot (function, coroutine, userdata...); the message names where.
        public static let unsendableResult = Code("unsendableResult")
        /// The call went past the worker's memory limit (`PluginHost.Limits.memory`); the worker goes on.
        public static let limitExceeded = Code("limitExceeded")

        // A call, as the host saw it.

        /// The call ran past `Limits.callTimeout`: its worker was killed and
        /// replaced. Also a queue's `get` or `join` given a timeout that
        /// found nothing in time (Python's `queue.Empty` for `get`).
        public static let timedOut = Code("timedOut")
        /// A worker ended where it should not have: during a plug-in call
        /// (a crash; the message names the signal; it was replaced), or,
        /// for `JoinableQueue.join`, holding items it had not marked done
        /// (the message names it; told once).
        public static let workerDied = Code("workerDied")
        /// The plug-in host was shut down (before or during the call).
        public static let hostShutDown = Code("hostShutDown")
        /// The task awaiting the call was cancelled (a call that ran had its worker killed and replaced).
        public static let cancelled = Code("cancelled")

        // Values, queues and workers.

        /// A value cannot cross (too deep, a cycle, a function in a queue
        /// item, bytes that are no value), or a Codable argument, result or
        /// item does not convert to or from the type asked for.
        public static let badValue = Code("badValue")
        /// A `get` or `join` with `detectDeadlock` waits while every worker
        /// of the run waits too: nothing can wake them. The message names
        /// each process and what it waits on.
        public static let deadlock = Code("deadlock")
        /// `put` on a closed queue, or `get` on a closed and empty one.
        public static let closed = Code("closed")
        /// `taskDone` called more times than items were put.
        public static let tooManyTaskDone = Code("tooManyTaskDone")
        /// A worker cannot start: a script worker's file cannot be read, or
        /// no process could be started (a plug-in host's workers too).
        public static let startFailed = Code("startFailed")
        /// jobrun's runtime (its shared memory and monitor) cannot start in
        /// this process (one that already runs a jobrun script), or has shut down.
        public static let runtimeUnavailable = Code("runtimeUnavailable")
        /// The system refused: out of shared memory, a failed system call.
        public static let systemError = Code("systemError")
    }

    /// A worker process: the one that served (or was serving) a call.
    public struct Worker: Sendable, Hashable, CustomStringConvertible {
        public var pid: Int32
        public var name: String
        public init(pid: Int32, name: String) { self.pid = pid; self.name = name }
        /// `plugin-1 (pid 4242)`.
        public var description: String { "\(name) (pid \(pid))" }
    }

    public var code: Code
    public var message: String
    /// The plug-in called ("" outside a plug-in call).
    public var plugin: String
    /// The function called ("" outside a plug-in call).
    public var function: String
    /// The worker concerned, when one is known.
    public var worker: Worker?
    /// The plug-in's frames, for `luaError` ("" otherwise).
    public var traceback: String

    public init(_ code: Code, _ message: String, plugin: String = "", function: String = "",
                worker: Worker? = nil, traceback: String = "") {
        self.code = code; self.message = message
        self.plugin = plugin; self.function = function; self.worker = worker; self.traceback = traceback
    }

    /// `thumbnail.resize: luaError: plugins/thumbnail.lua:3: boom [plugin-1 (pid 123)]`,
    /// then the traceback; `closed: put on a closed queue` for a queue.
    public var description: String {
        var s = plugin.isEmpty && function.isEmpty ? "" : "\(plugin).\(function): "
        s += "\(code): \(message)"
        if let worker { s += " [\(worker)]" }
        if !traceback.isEmpty { s += "\n" + traceback }
        return s
    }
}

extension JobrunError.Code {
    /// A worker's error code (PluginErrorCode's raw value) as a public code.
    init(worker raw: String) {
        self = switch PluginErrorCode(rawValue: raw) {
        case .pluginNotFound: .pluginNotFound
        case .pluginNotReadable: .pluginNotReadable
        case .syntaxError: .syntaxError
        case .pluginNotATable: .notATable
        case .functionMissing: .functionMissing
        case .luaError: .luaError
        case .unsendableResult: .unsendableResult
        case .limitExceeded: .limitExceeded
        case .badRequest: .badValue
        case nil: .luaError
        }
    }
}
