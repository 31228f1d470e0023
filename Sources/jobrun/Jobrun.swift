import ArgumentParser
import JobrunCore
#if canImport(Glibc)
import Glibc
#endif

enum FileHandleOutput {
    static func standardError(_ text: String) { fputs(text, stderr) }
}

@main
struct Jobrun: ParsableCommand {
    /// As ParsableCommand.main(), but bad usage exits 2 (the Unix convention
    /// the docs promise) rather than 64.
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = fullMessage(for: error)
            FileHandleOutput.standardError(message + "\n")
            exit(withError: ExitCode(2))
        }
        do { try command.run() } catch { exit(withError: error) }
    }

    static let configuration = CommandConfiguration(
        commandName: "jobrun",
        abstract: "Run a Lua 5.4 script as a multi-process pipeline.",
        discussion: """
            The script starts worker processes and joins them with shared-memory
            queues, locks and the other objects of Python's multiprocessing,
            through the `jobrun` module (a global; also `require "jobrun"`).

            Examples:
              jobrun examples/pipeline.lua examples/data/words.txt 4
              jobrun pipeline.lua a b c      # arg[1..3] and ... are "a", "b", "c"

            Exit status: 0 when the script ends, 1 when it raises an error,
            n for os.exit(n), 2 for bad usage (such as a missing script).
            """,
        version: JobrunCore.version
    )

    @Option(name: .customLong("shm-limit"), help: ArgumentHelp(
        "Most shared memory (MiB) queued items may use at once; producers wait past it.",
        valueName: "MiB"))
    var shmLimit: UInt64?

    @Flag(name: .customLong("worker"), help: .hidden) var worker = false
    @Option(name: .customLong("worker-arena-fd"), help: .hidden) var workerArenaFD: Int32 = 3
    @Option(name: .customLong("worker-args"), help: .hidden) var workerArgs: String = "0:0"
    @Option(name: .customLong("worker-name"), help: .hidden) var workerName: String = "Process"
    @Option(name: .customLong("worker-parent"), help: .hidden) var workerParent: Int32 = 0
    @Option(name: .customLong("worker-dir"), help: .hidden) var workerDirectory: String = "."
    @Flag(name: .customLong("worker-daemon"), help: .hidden) var workerDaemon = false

    @Argument(help: ArgumentHelp("The Lua script to run.", valueName: "script"))
    var script: String

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Arguments for the script: arg[1..n] and ...", valueName: "args"))
    var arguments: [String] = []

    mutating func run() throws {
        let status: Int32
        if worker {
            let parts = workerArgs.split(separator: ":")
            let offset = UInt64(parts.first ?? "0") ?? 0
            let length = Int(parts.last ?? "0") ?? 0
            status = Host.runWorker(arenaFD: workerArenaFD, argsOffset: offset, argsLength: length,
                                    name: workerName, daemon: workerDaemon, parent: workerParent,
                                    scriptDirectory: workerDirectory, script: script)
        } else {
            status = Host.runMain(script: script, arguments: arguments,
                                  options: Host.Options(shmLimit: shmLimit.map { $0 << 20 }))
        }
        throw ExitCode(status)
    }
}
