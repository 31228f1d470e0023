/// What goes wrong with a queue or a script worker driven from Swift
/// (JoinableQueue, ScriptWorker). A code, and a message naming the worker
/// or the value concerned.
public struct JobrunQueueError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// `join`: items were taken by a worker that died before marking
        /// them done; the message names it ("... consumer-1 (pid 41) was
        /// killed by signal 9 (SIGKILL) while holding it"). Told once: a
        /// later join counts those items as done.
        case workerDied
        /// A `get` or `join` that asked for deadlock detection waits while
        /// every worker of the run waits too: nothing can wake them. The
        /// message names each process and what it waits on.
        case deadlock
        /// `put` or `get` on a closed queue.
        case closed
        /// A value cannot cross (a function, a cycle, bytes that are no
        /// value) or does not decode to the type asked for.
        case badValue
        /// `taskDone` called more times than items were put.
        case tooManyTaskDone
        /// A script worker cannot start (no such file, no room).
        case startFailed
        /// The runtime has shut down, or cannot start in this process.
        case runtime
        /// Anything else (out of shared memory...).
        case failed
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
