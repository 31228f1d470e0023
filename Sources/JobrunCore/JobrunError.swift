import SystemPackage

/// The one error type of jobrun's Swift code, in the manner of
/// swift-subprocess's `SubprocessError`: a `Code` that can grow without
/// breaking a `switch` of the callers (a struct, not an enum), a message
/// for people, and the errno when a system call failed.
///
/// Inside jobrun it replaces the strings that used to carry failures (a
/// `String?` that meant "failed", with the kind kept aside in a static):
/// a wait returns the monitor's verdict as a `JobrunError`, an argument
/// check throws one, a failed system call throws one. A binding raises it
/// in Lua as the error table of its code's kind (`Lua.raise`).
public struct JobrunError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The `kind` a Lua script sees (lua-api.md: Python's names).
        let kind: ErrorKind
        private let name: String
        private init(_ kind: ErrorKind, _ name: String) { self.kind = kind; self.name = name }
        public var description: String { name }

        public static let empty = Code(.Empty, "empty")
        public static let full = Code(.Full, "full")
        public static let closed = Code(.Closed, "closed")
        public static let timeout = Code(.Timeout, "timeout")
        public static let valueError = Code(.ValueError, "valueError")
        public static let typeError = Code(.TypeError, "typeError")
        public static let endOfFile = Code(.EOF, "endOfFile")
        /// A process died holding what the caller waits for.
        public static let workerDied = Code(.WorkerDied, "workerDied")
        /// Every live process waits on something no one can do.
        public static let deadlock = Code(.Deadlock, "deadlock")
        public static let processError = Code(.ProcessError, "processError")
        /// A system call failed (`errno` says how); to Lua a ProcessError.
        public static let systemCall = Code(.ProcessError, "systemCall")
    }

    public let code: Code
    public let message: String
    /// The errno of the failed system call (code `.systemCall`).
    public let errno: Errno?

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
        self.errno = nil
    }

    /// `call` failed with `errno`: "fork: Resource temporarily unavailable".
    public init(call: String, errno: Errno) {
        self.code = .systemCall
        self.message = "\(call): \(errno)"
        self.errno = errno
    }

    public var description: String { message }
}
