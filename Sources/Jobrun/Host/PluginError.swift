import JobrunCore

/// Why a plug-in call (or a host's start) failed: one error type with a
/// code, naming the plug-in, the function and the worker.
public struct PluginError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// No `<folder>/<name>.lua` (or a name that is not a plug-in name), or no folder.
        case pluginNotFound
        /// The file or its folder exists but cannot be read.
        case pluginNotReadable
        /// The plug-in (or a sibling it requires) does not compile; the message has `file:line`.
        case syntaxError
        /// The file ran but did not return a table of functions.
        case notATable
        /// The plug-in's table has no function of that name.
        case functionMissing
        /// The plug-in raised an error: `message` and `traceback`.
        case luaError
        /// The result holds what a LuaValue cannot (function, coroutine, userdata...); the message names where.
        case unsendableResult
        /// The call ran past `Limits.callTimeout`: its worker was killed and replaced.
        case timedOut
        /// The worker ended during the call (a crash: the message names the signal); it was replaced.
        case workerDied
        /// The call went past the memory limit (`Limits.memory`).
        case limitExceeded
        /// The host was shut down (before or during the call).
        case hostShutDown
        /// The argument cannot be sent (too deep), or a Codable argument or result did not convert.
        case badArgument
        /// The task awaiting the call was cancelled (a call that ran had its worker killed and replaced).
        case cancelled
    }

    /// The worker that served (or was serving) the call.
    public struct Worker: Sendable, Equatable, CustomStringConvertible {
        public var pid: Int32
        public var name: String
        public var description: String { "\(name) (pid \(pid))" }
    }

    public var code: Code
    public var plugin: String
    public var function: String
    public var worker: Worker?
    public var message: String
    /// The plug-in's frames, for `luaError` ("" otherwise).
    public var traceback: String

    public init(_ code: Code, plugin: String = "", function: String = "", worker: Worker? = nil,
                message: String, traceback: String = "") {
        self.code = code; self.plugin = plugin; self.function = function; self.worker = worker
        self.message = message; self.traceback = traceback
    }

    /// `thumbnail.resize: luaError: plugins/thumbnail.lua:3: boom [plugin-1 (pid 123)]`, then the traceback.
    public var description: String {
        var s = plugin.isEmpty && function.isEmpty ? "" : "\(plugin).\(function): "
        s += "\(code.rawValue): \(message)"
        if let worker { s += " [\(worker)]" }
        if !traceback.isEmpty { s += "\n" + traceback }
        return s
    }

    /// A worker's error code (PluginErrorCode's raw value) as a public code.
    static func code(fromWorker raw: String) -> Code {
        switch PluginErrorCode(rawValue: raw) {
        case .pluginNotFound: .pluginNotFound
        case .pluginNotReadable: .pluginNotReadable
        case .syntaxError: .syntaxError
        case .pluginNotATable: .notATable
        case .functionMissing: .functionMissing
        case .luaError: .luaError
        case .unsendableResult: .unsendableResult
        case .limitExceeded: .limitExceeded
        case .badRequest: .badArgument
        case nil: .luaError
        }
    }
}
