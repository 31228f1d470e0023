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
///
/// Package access: a Swift host sees only the `Jobrun` library's public
/// `JobrunError` (Sources/Jobrun/JobrunError.swift), which the library
/// makes of this one wherever it crosses. In a file that imports both
/// modules, write `JobrunCore.JobrunError` for this one.
package struct JobrunError: Error, Sendable, Hashable, CustomStringConvertible {
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The `kind` a Lua script sees (lua-api.md: Python's names).
        let kind: ErrorKind
        private let name: String
        private init(_ kind: ErrorKind, _ name: String) { self.kind = kind; self.name = name }
        package var description: String { name }

        package static let empty = Code(.Empty, "empty")
        package static let full = Code(.Full, "full")
        package static let closed = Code(.Closed, "closed")
        package static let timeout = Code(.Timeout, "timeout")
        package static let valueError = Code(.ValueError, "valueError")
        package static let typeError = Code(.TypeError, "typeError")
        package static let endOfFile = Code(.EOF, "endOfFile")
        /// A process died holding what the caller waits for.
        package static let workerDied = Code(.WorkerDied, "workerDied")
        /// Every live process waits on something no one can do.
        package static let deadlock = Code(.Deadlock, "deadlock")
        package static let processError = Code(.ProcessError, "processError")
        /// A system call failed (`errno` says how); to Lua a ProcessError.
        package static let systemCall = Code(.ProcessError, "systemCall")
    }

    package let code: Code
    package let message: String
    /// The errno of the failed system call (code `.systemCall`).
    package let errno: Errno?

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
        self.errno = nil
    }

    /// `call` failed with `errno`: "fork: Resource temporarily unavailable".
    package init(call: String, errno: Errno) {
        self.code = .systemCall
        self.message = "\(call): \(errno)"
        self.errno = errno
    }

    package var description: String { message }
}
