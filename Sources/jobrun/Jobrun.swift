import ArgumentParser
import SystemPackage
import JobrunCore
#if canImport(Glibc)
import Glibc
#endif

// The command line. Three subcommands: `run` (the default, so `jobrun
// script.lua ARGS...` needs no word before the script), `check` and `map`
// (Map.swift). Only the first argument can name a subcommand, and only when
// it is exactly `run`, `check`, `map` or `help`; a script with one of those
// names is run as `jobrun ./check` or `jobrun run map`. Everything after the script is the
// script's, verbatim (`--flag`, `-x`, `--help` included).
//
// The main process forks, so it stays single-threaded: no Dispatch, no
// Swift concurrency, no Foundation process launching in this target.

enum FileHandleOutput {
    /// Straight to descriptor 2, unbuffered as C's stderr (Swift 6 refuses
    /// C's `stderr`, a mutable global); swift-system retries an interrupted write.
    static func standardError(_ text: String) {
        _ = try? FileDescriptor.standardError.writeAll(text.utf8)
    }

    static func standardOutput(_ text: String) {
        _ = try? FileDescriptor.standardOutput.writeAll(text.utf8)
    }
}

@main
struct Jobrun: ParsableCommand {
    /// As ParsableCommand.main(), but bad usage exits 2 (the Unix convention
    /// the docs promise) rather than 64.
    static func main() {
        // A `script` worker (core.spawn writes this argument list): its start
        // is on the clock of every Process{script = ...}, and argument
        // parsing by reflection was two thirds of it. Anything unexpected
        // goes through the full parser below.
        if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "--worker",
           let worker = WorkerArguments(Array(CommandLine.arguments.dropFirst(2))) {
            Glibc.exit(worker.run())
        }
        // `jobrun script.lua [args...]` with no option before the script, the
        // common call: run it without the parser's start-up cost (~4 ms).
        let argv = CommandLine.arguments
        if argv.count > 1, argv[1] == "-" || !argv[1].hasPrefix("-"), !["run", "check", "map", "help"].contains(argv[1]) {
            Glibc.exit(Host.runMain(script: argv[1], arguments: Array(argv.dropFirst(2))))
        }
        // Completion scripts that complete `jobrun <Tab>` as `jobrun run <Tab>`.
        if let script = Completion.script(arguments: argv) {
            FileHandleOutput.standardOutput(script + "\n")
            Glibc.exit(0)
        }
        var command: ParsableCommand
        do {
            command = try parseAsRoot(Map.expandingJobs(Array(argv.dropFirst())))
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
        usage: """
            jobrun [--shm-limit <MiB>] [--prefix] [--[no-]progress] [--stats] [--stats-json <file>]
                   [-e <code> ...] [<script> [<args> ...]]
            jobrun check <script> ...
            jobrun map [-j N] [-k] [--tag] [--retries n] [--timeout s] [--halt P] [--joblog file [--resume]]
                       [--pipe [--block SIZE]] FN.lua [INPUT ...]
            """,
        discussion: """
            The script starts worker processes and joins them with shared-memory
            queues, locks and the other objects of Python's multiprocessing,
            through the `jobrun` module (a global; also `require "jobrun"`).

            Options of `run` (the default subcommand; `jobrun help run` lists them):
              --shm-limit <MiB>   most shared memory queued items may use at once
              --prefix            start each line a worker prints with "[name] "
              --progress          draw the live status line on stderr even when it is
                                  not a terminal (default: only on a terminal)
              --no-progress       never draw it
              --stats             print per-process and per-queue statistics at the end
              --stats-json <file> write the same statistics as JSON
              -e <code>           run the Lua chunk before the script (repeatable);
                                  with no script, run just the chunk(s)

            Examples:
              jobrun examples/pipeline.lua examples/data/words.txt 4
              jobrun stage.lua a --verbose -x  # arg[1..3]: "a", "--verbose", "-x"
              jobrun --prefix pipeline.lua     # workers' lines: "[consumer-1] ..."
              jobrun --stats pipeline.lua      # where the time went, at the end
              jobrun -e 'print(jobrun.cpu_count())'
              generate | jobrun - a b          # the script from stdin ("stdin" in messages)
              jobrun check a.lua b.lua         # compile only: "a.lua: ok" or the error
              jobrun ./check                   # a script named `check` (or `map`)
              jobrun map -j 4 -k fn.lua in.txt # fn.lua's function on each line (`jobrun help map`)

            Exit status:
              0        the script ended (check: every script compiles)
              1        the script raised an error, could not be compiled or is a
                       precompiled chunk, or a worker failed and the script was
                       never told (check: a syntax error or a precompiled chunk)
              n        the script called os.exit(n)
              128+N    jobrun was killed by signal N (as the shell reports it); after
                       Ctrl-C (130) or SIGTERM (143), --stats and --stats-json are
                       still written
              2        bad usage, such as a missing or unreadable script

            Shell completion (`jobrun <Tab>` completes as `jobrun run <Tab>`):
              jobrun --generate-completion-script bash|zsh|fish
            """,
        version: JobrunCore.version,
        subcommands: [Run.self, Check.self, Map.self],
        defaultSubcommand: Run.self
    )
}

/// `jobrun [run] [options] [script [args...]]`: runs the script (and the `-e`
/// chunks). Also the entry point of a `script` worker (hidden `--worker*`).
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a script (the default: `jobrun script.lua` is `jobrun run script.lua`).",
        discussion: """
            Arguments after the script are the script's, verbatim, options included:
            arg[0] is the script, arg[1..n] and ... are the arguments.
            """
    )

    // Text, checked in validate(): "-1" is a value here, not an option, and
    // every bad value gets the same message.
    @Option(name: .customLong("shm-limit"), parsing: .unconditional, help: ArgumentHelp(
        "Most shared memory (MiB) queued items may use at once; producers wait past it.",
        valueName: "MiB"))
    var shmLimit: String?

    /// The largest --shm-limit: 2^44 - 1 MiB, whose bytes still fit 64 bits.
    static let maxShmLimitMiB: UInt64 = (1 << 44) - 1

    /// --shm-limit in bytes; nil when it is not a whole number of MiB from 1 to maxShmLimitMiB.
    static func shmLimitBytes(_ text: String) -> UInt64? {
        guard let mib = UInt64(text), mib >= 1, mib <= maxShmLimitMiB else { return nil }
        return mib << 20
    }

    /// validate()'s check of --shm-limit (run's and map's).
    static func checkShmLimit(_ text: String?) throws {
        if let text, shmLimitBytes(text) == nil {
            throw ValidationError("--shm-limit must be a whole number of MiB from 1 to \(maxShmLimitMiB), got '\(text)'")
        }
    }

    @Option(name: .customShort("e"), parsing: .unconditionalSingleValue, help: ArgumentHelp(
        "Run this Lua chunk before the script (repeatable, like lua -e); with no script, run just the chunks.",
        valueName: "code"))
    var chunks: [String] = []

    @Flag(name: .customLong("prefix"), help: "Start each line a worker prints (print, io.write, io.stdout/io.stderr:write) with [its name].")
    var prefix = false

    @Flag(inversion: .prefixedNo, help: "Draw the live status line on stderr (default: when stderr is a terminal).")
    var progress: Bool?

    @Flag(name: .customLong("stats"), help: "Print per-process and per-queue statistics on stderr when the run ends.")
    var stats = false

    @Option(name: .customLong("stats-json"), help: ArgumentHelp("Write the run's statistics to this file as JSON.", valueName: "file"),
            completion: .file())
    var statsJSON: String?

    @Flag(name: .customLong("worker"), help: .hidden) var worker = false
    @Option(name: .customLong("worker-arena-fd"), help: .hidden) var workerArenaFD: Int32 = 3
    @Option(name: .customLong("worker-token"), help: .hidden) var workerToken: String = ""
    @Option(name: .customLong("worker-args"), help: .hidden) var workerArgs: String = "0:0"
    @Option(name: .customLong("worker-name"), help: .hidden) var workerName: String = "Process"
    @Option(name: .customLong("worker-parent"), help: .hidden) var workerParent: Int32 = 0
    @Option(name: .customLong("worker-dir"), help: .hidden) var workerDirectory: String = "."
    @Option(name: .customLong("worker-record"), help: .hidden) var workerRecord: Int = -1
    @Flag(name: .customLong("worker-daemon"), help: .hidden) var workerDaemon = false
    @Flag(name: .customLong("worker-prefix"), help: .hidden) var workerPrefix = false
    @Option(name: .customLong("worker-path"), help: .hidden) var workerPath: String = ""
    @Option(name: .customLong("worker-cpath"), help: .hidden) var workerCPath: String = ""

    @Argument(help: ArgumentHelp("The Lua script to run (-: read it from stdin; optional with -e).", valueName: "script"),
              completion: .file(extensions: ["lua"]))
    var script: String?

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Arguments for the script: arg[1..n] and ...", valueName: "args"))
    var arguments: [String] = []

    func validate() throws {
        try Run.checkShmLimit(shmLimit)
        if script == nil && (worker || chunks.isEmpty) {
            throw ValidationError("Missing expected argument '<script>' (or -e <code>)")
        }
    }

    mutating func run() throws {
        let status: Int32
        if worker, let script {
            let parts = workerArgs.split(separator: ":")
            let offset = UInt64(parts.first ?? "0") ?? 0
            let length = Int(parts.last ?? "0") ?? 0
            status = Host.runWorker(arenaFD: workerArenaFD, token: workerToken, argsOffset: offset, argsLength: length,
                                    name: workerName, daemon: workerDaemon, parent: workerParent,
                                    scriptDirectory: workerDirectory, script: script, prefix: workerPrefix,
                                    packagePath: workerPath, packageCPath: workerCPath,
                                    record: workerRecord)
        } else {
            status = Host.runMain(script: script, arguments: arguments,
                                  options: Host.Options(shmLimit: shmLimit.flatMap(Run.shmLimitBytes),
                                                        chunks: chunks, prefix: prefix,
                                                        progress: progress.map { $0 ? .on : .off } ?? .auto,
                                                        stats: stats, statsJSON: statsJSON))
        }
        throw ExitCode(status)
    }
}


/// `jobrun check SCRIPT...`: compiles each script without running it.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compile scripts without running them; report syntax errors.",
        discussion: """
            Prints "SCRIPT: ok" for each script that compiles and the syntax error
            (file:line: message) on stderr for each that does not; a precompiled chunk
            is refused (Lua does not verify bytecode). Exit status: 0 when all compile,
            1 when one has a syntax error or is precompiled, 2 when one cannot be read.
            """
    )

    @Argument(help: ArgumentHelp("The Lua scripts to check.", valueName: "script"),
              completion: .file(extensions: ["lua"]))
    var scripts: [String]

    mutating func run() throws {
        throw ExitCode(Host.check(scripts: scripts))
    }
}
