import ArgumentParser
import JobrunCore
#if canImport(Glibc)
import Glibc
#endif

/// `jobrun map [options] FN.lua [INPUT...]`: GNU parallel's and `xargs -P`'s
/// job without writing a pipeline. The options are read and checked here
/// (bad usage: exit 2 before anything starts); the run itself is
/// prelude/map.lua, run as the main chunk (Host.Options.driver), so the
/// status line, --stats, --stats-json and Ctrl-C are those of any run.
struct Map: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call the function a Lua file returns on each input line, in N workers; print its results.",
        usage: """
            jobrun map [-j N] [-k] [--tag] [--retries n] [--timeout s] [--halt P] [--joblog file [--resume]]
                       [--pipe [--block SIZE]] [run options] FN.lua [INPUT ...]
            """,
        discussion: """
            FN.lua returns a function; it is called on each line of the INPUT files (in
            order; none or `-`: stdin), without its newline, in N warm worker processes
            forked after FN.lua has run (its upvalues just work). What it returns is
            printed: a string or number as a line (a newline is added unless the string
            ends with one), a list of them one line each, true the input line itself,
            false or nil nothing. What it prints (print, io.write) comes out with its
            result, never torn or mixed with another line's. docs/map.md has the details
            and the GNU parallel and xargs commands each form replaces.

            Examples:
              jobrun map upper.lua names.txt      # return function(l) return l:upper() end
              find . -name '*.log' | jobrun map -j 8 -k count.lua
              jobrun map --tag --retries 2 --timeout 30 --joblog run.tsv get.lua urls.txt
              jobrun map --joblog run.tsv --resume get.lua urls.txt  # skip the lines done
              zcat big.gz | jobrun map --pipe --block 4M wc.lua

            Exit status:
              0        every line succeeded
              1-100    that many lines failed (each failure is on stderr, naming its line)
              101      more than 100 lines failed
              2        bad usage or bad input (an unreadable INPUT, a FN.lua that does not
                       load or returns no function): said on stderr, nothing was run
              130, 143 interrupted by Ctrl-C or SIGTERM (--stats is still written)
            """
    )

    @Option(name: [.customShort("j"), .customLong("jobs")], parsing: .unconditional, help: ArgumentHelp(
        "Worker processes (default: the number of cores).", valueName: "N"))
    var jobs: String?

    @Flag(name: [.customShort("k"), .customLong("keep-order")], help: "Print results in input order (default: as they finish).")
    var keepOrder = false

    @Flag(name: .customLong("tag"), help: "Start each output line with its input line and a tab (--pipe: the block's number).")
    var tag = false

    @Option(name: .customLong("retries"), parsing: .unconditional, help: ArgumentHelp(
        "Run a line that failed or timed out again, up to n more times.", valueName: "n"))
    var retries: String?

    @Option(name: .customLong("timeout"), parsing: .unconditional, help: ArgumentHelp(
        "Seconds a line may take; past it its worker is killed and the line fails.", valueName: "s"))
    var timeout: String?

    @Option(name: .customLong("halt"), parsing: .unconditional, help: ArgumentHelp(
        "Stop after failures: never, soon,fail=N, now,fail=N, soon,fail=P%, now,fail=P%.", valueName: "P"))
    var halt: String?

    @Option(name: .customLong("joblog"), help: ArgumentHelp("Write one TSV line per input line finished.", valueName: "file"),
            completion: .file())
    var joblog: String?

    @Flag(name: .customLong("resume"), help: "With --joblog: skip the lines the log shows done.")
    var resume = false

    @Flag(name: .customLong("pipe"), help: "Give the function blocks of input (whole lines) instead of single lines.")
    var pipe = false

    @Option(name: .customLong("block"), parsing: .unconditional, help: ArgumentHelp(
        "With --pipe: about this many bytes per block (default 1M; k = 1000, K = 1024, M, G, MB, MiB...).", valueName: "SIZE"))
    var block: String?

    // The run's own options (as `jobrun run`'s).
    @Option(name: .customLong("shm-limit"), parsing: .unconditional, help: ArgumentHelp(
        "Most shared memory (MiB) queued items may use at once.", valueName: "MiB"))
    var shmLimit: String?

    @Option(name: .customShort("e"), parsing: .unconditionalSingleValue, help: ArgumentHelp(
        "Run this Lua chunk before FN.lua (repeatable).", valueName: "code"))
    var chunks: [String] = []

    @Flag(inversion: .prefixedNo, help: "Draw the live status line on stderr (default: when stderr is a terminal).")
    var progress: Bool?

    @Flag(name: .customLong("stats"), help: "Print per-process and per-queue statistics on stderr when the run ends.")
    var stats = false

    @Option(name: .customLong("stats-json"), help: ArgumentHelp("Write the run's statistics to this file as JSON.", valueName: "file"),
            completion: .file())
    var statsJSON: String?

    @Argument(help: ArgumentHelp("The Lua file that returns the function.", valueName: "FN.lua"),
              completion: .file(extensions: ["lua"]))
    var function: String

    @Argument(help: ArgumentHelp("Input files, read in order (-: stdin; default: stdin).", valueName: "INPUT"),
              completion: .file())
    var inputs: [String] = []

    /// The default --block, as GNU parallel's: 1 MiB.
    static let defaultBlock = 1 << 20

    func validate() throws {
        if let text = jobs, Map.positiveInt(text) == nil {
            throw ValidationError(text == "0"
                ? "-j 0: give the number of workers, at least 1 (GNU parallel's 'as many as possible' is not offered: a worker per core is the default)"
                : "-j must be a whole number of workers, at least 1, got '\(text)'")
        }
        if let text = retries, Int(text).map({ $0 < 0 }) ?? true {
            throw ValidationError("--retries must be a whole number, 0 or more, got '\(text)'")
        }
        if let text = timeout, Double(text).map({ !($0 > 0 && $0.isFinite) }) ?? true {
            throw ValidationError("--timeout must be a positive number of seconds, got '\(text)'")
        }
        if let text = halt, !Map.isHaltPolicy(text) {
            throw ValidationError("--halt must be never, soon,fail=N, now,fail=N, soon,fail=P% or now,fail=P% (N >= 1, 0 < P <= 100), got '\(text)'")
        }
        if resume && joblog == nil {
            throw ValidationError("--resume needs --joblog FILE (the log of the run to resume)")
        }
        if let text = block {
            if !pipe { throw ValidationError("--block needs --pipe (it sets the size of the blocks --pipe hands out)") }
            if Map.byteSize(text) == nil {
                throw ValidationError("--block must be a size in bytes, optionally with a unit (64k, 1M, 10MB, 1MiB; k = 1000, K = 1024), at least 1 and at most 1G, got '\(text)'")
            }
        }
        try Run.checkShmLimit(shmLimit)
        if function == "-" {
            throw ValidationError("FN.lua must be a file (- is the input: stdin)")
        }
    }

    /// `jobrun map -j4 ...` as GNU parallel and make take it: `-j 4` (the
    /// parser takes a short option's value only as the next word). Other
    /// command lines, and words after `--`, are left as they are.
    static func expandingJobs(_ arguments: [String]) -> [String] {
        guard arguments.first == "map" else { return arguments }
        var out: [String] = []
        var rest = false
        for a in arguments {
            if !rest, a.hasPrefix("-j"), a.count > 2, a.dropFirst(2).allSatisfy(\.isNumber) {
                out += ["-j", String(a.dropFirst(2))]
            } else {
                if a == "--" { rest = true }
                out.append(a)
            }
        }
        return out
    }

    /// The device and inode of a regular file, nil when there is none.
    static func fileID(_ path: String) -> [UInt64]? {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return [UInt64(st.st_dev), UInt64(st.st_ino)]
    }

    static func positiveInt(_ text: String) -> Int? {
        guard let n = Int(text), n >= 1 else { return nil }
        return n
    }

    /// GNU parallel's --halt forms that the Pool takes (CONTRACT-15): never,
    /// soon|now,fail=N (N >= 1), soon|now,fail=P% (0 < P <= 100).
    static func isHaltPolicy(_ text: String) -> Bool {
        if text == "never" { return true }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "soon" || parts[0] == "now", parts[1].hasPrefix("fail=") else { return false }
        let value = parts[1].dropFirst("fail=".count)
        if value.hasSuffix("%") {
            guard let p = Double(value.dropLast()), p > 0, p <= 100 else { return false }
            return true
        }
        return positiveInt(String(value)) != nil
    }

    /// The most --block takes: a block is one item in shared memory.
    static let maxBlock = 1 << 30

    /// "64k" -> 64000, "64K" -> 65536, "1M"/"1MB"/"1MiB"/"1mib" -> 1048576,
    /// "10mb" -> 10000000, "512" -> 512: GNU parallel's units (upper case
    /// 1024-based, lower case 1000-based), a "B" after them allowed, and an
    /// "i" (MiB) always 1024-based. Nil for anything else, 0, or past maxBlock.
    static func byteSize(_ text: String) -> Int? {
        var rest = Substring(text)
        if rest.hasSuffix("B") || rest.hasSuffix("b") { rest = rest.dropLast() }
        var binary = false
        if rest.hasSuffix("i") { binary = true; rest = rest.dropLast() }
        var multiplier = 1.0
        if let last = rest.last, let power = "kmgt".firstIndex(of: Character(last.lowercased())) {
            let exponent = Double("kmgt".distance(from: "kmgt".startIndex, to: power) + 1)
            multiplier = (binary || last.isUppercase) ? pow(1024, exponent) : pow(1000, exponent)
            rest = rest.dropLast()
        } else if binary {
            return nil
        }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isNumber || $0 == "." }), let value = Double(rest) else { return nil }
        let bytes = (value * multiplier).rounded(.down)
        guard bytes >= 1, bytes <= Double(maxBlock) else { return nil }
        return Int(bytes)
    }

    mutating func run() throws {
        // Everything named is checked before anything runs: one line per
        // file that cannot be read.
        var bad: [String] = []
        func problem(_ path: String) -> String? {
            if access(path, F_OK) != 0 || access(path, R_OK) != 0 {
                return "cannot open \(path): \(String(cString: strerror(errno)))"
            }
            var st = stat()
            if stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { return "cannot read \(path): it is a directory" }
            return nil
        }
        if let p = problem(function) { bad.append(p) }
        for input in inputs where input != "-" {
            if let p = problem(input) { bad.append(p) }
        }
        // The log is written from the start (or appended to): one that is
        // FN.lua or an input would destroy it, and the run would read its
        // own log lines as input.
        if let joblog, let log = Map.fileID(joblog) {
            for (path, role) in [(function, "FN.lua")] + (inputs.isEmpty ? ["-"] : inputs).map({ ($0, "an input") })
            where Map.fileID(path == "-" ? "/dev/stdin" : path) == log {
                bad.append("--joblog \(joblog) is \(role == "FN.lua" ? "the function file" : role) (\(path == "-" ? "stdin" : path)): the log would overwrite it; name another file")
                break
            }
        }
        if !bad.isEmpty {
            FileHandleOutput.standardError(bad.map { "jobrun map: \($0)\n" }.joined())
            throw ExitCode(2)
        }
        var settings = ["jobs=\(jobs.flatMap(Map.positiveInt) ?? 0)"]
        if keepOrder { settings.append("keep_order=1") }
        if tag { settings.append("tag=1") }
        if pipe { settings.append("pipe=1"); settings.append("block=\(block.flatMap(Map.byteSize) ?? Map.defaultBlock)") }
        if let retries { settings.append("retries=\(Int(retries) ?? 0)") }
        if let timeout { settings.append("timeout=\(timeout)") }
        if let halt { settings.append("halt=\(halt)") }
        if let joblog { settings.append("joblog=\(joblog)") }
        if resume { settings.append("resume=1") }
        let status = Host.runMain(script: function, arguments: inputs,
                                  options: Host.Options(shmLimit: shmLimit.flatMap(Run.shmLimitBytes), chunks: chunks,
                                                        progress: progress.map { $0 ? .on : .off } ?? .auto,
                                                        stats: stats, statsJSON: statsJSON,
                                                        driver: "map.lua", driverArguments: settings + ["--", function] + inputs))
        throw ExitCode(status)
    }
}
