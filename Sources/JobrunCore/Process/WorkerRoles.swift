import Glibc

/// What a re-entered worker is told when its role starts: the arena is
/// mapped, its ledger record taken over (RUNNING), its death tied to its
/// parent's. Role parameters come in the environment the host gave
/// `Runtime.spawnWorker(role:environment:)` (getenv).
package struct WorkerStart: Sendable {
    package let role: String
    package let name: String
    package let parent: pid_t
}

/// The roles a re-entered worker can run, by name. A role is code of the
/// library, not of the host: a worker never runs the host's `main` (nor
/// anything the host set up there), so a role cannot be registered at run
/// time, only listed here. A role runs single-threaded, must not fork
/// threads of its own, and returns the worker's exit status.
package enum WorkerRoles {
    package typealias Body = @Sendable (WorkerStart) -> Int32

    static let table: [String: Body] = [
        "echo": EchoRole.run,
        "plugin": PluginRole.run,
        "script": ScriptRole.run,
        "idle": { _ in while true { pause() } },
    ]

    static func role(named name: String) -> Body? { table[name] }
    package static func exists(_ name: String) -> Bool { table[name] != nil }
}
