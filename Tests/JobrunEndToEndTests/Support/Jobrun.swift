import Foundation
import Testing

// The one place the end-to-end tests get their helpers from: running the
// built `jobrun` (or any command) as a child process, the way a user does,
// under a hard time bound; scratch folders holding a script and the files
// beside it; and the checks that say which line or field broke.

// MARK: - Where things are

/// The package root: four levels above this file
/// (Tests/JobrunEndToEndTests/Support/Jobrun.swift).
let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .deletingLastPathComponent()

/// The binary under test: `$JOBRUN_BIN`, or `<root>/.build/debug/jobrun`.
var jobrunBinary: String {
    if let bin = ProcessInfo.processInfo.environment["JOBRUN_BIN"], !bin.isEmpty { return bin }
    return packageRoot.appendingPathComponent(".build/debug/jobrun").path
}

// MARK: - A run

/// What a run of a command left: its exit status (minus the signal number
/// when a signal ended it, as `Process.exitcode` does in jobrun), its output,
/// and whether the test's time bound ran out and the command was killed.
struct RunResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut: Bool

    /// The lines of standard output, without the final newline's empty line.
    var lines: [String] { splitLines(stdout) }

    /// Everything a failure message needs to show.
    var description: String {
        let out = stdout.isEmpty ? "(stdout is empty)" : "stdout:\n\(stdout)"
        let err = stderr.isEmpty ? "(stderr is empty)" : "stderr:\n\(stderr.suffix(4000))"
        let time = timedOut ? "TIMED OUT and was killed; " : ""
        return "\(time)exit status \(status)\n\(out)\n\(err)"
    }
}

/// Runs `jobrun args...` and returns its exit status and output.
///
/// - `stdin`: text fed to the child's standard input (otherwise /dev/null).
/// - `timeout`: a hard bound in seconds. When it passes, the child gets
///   SIGTERM, then SIGKILL two seconds later, and `timedOut` is true.
/// - `cwd`: the child's working directory (default: the package root).
/// - `environment`: variables set for the child on top of the test's own.
///
/// Output goes to temporary files rather than pipes, so a grandchild that
/// outlives the child and keeps the descriptors open cannot make the test
/// wait for EOF.
func runJobrun(_ args: [String], stdin: String? = nil, timeout: Double = 60, cwd: String? = nil,
               environment: [String: String] = [:], executable: String? = nil) -> RunResult {
    let fm = FileManager.default
    let scratch = fm.temporaryDirectory.appendingPathComponent("jobrun-e2e-\(UUID().uuidString)")
    do {
        try fm.createDirectory(at: scratch, withIntermediateDirectories: true)
    } catch {
        return RunResult(status: -1, stdout: "", stderr: "runJobrun: cannot create \(scratch.path): \(error)", timedOut: false)
    }
    defer { try? fm.removeItem(at: scratch) }

    let outURL = scratch.appendingPathComponent("stdout")
    let errURL = scratch.appendingPathComponent("stderr")
    let inURL = scratch.appendingPathComponent("stdin")
    _ = fm.createFile(atPath: outURL.path, contents: nil)
    _ = fm.createFile(atPath: errURL.path, contents: nil)

    let process = Process()
    let executable = executable ?? jobrunBinary
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = args
    process.currentDirectoryURL = URL(fileURLWithPath: cwd ?? packageRoot.path)
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }

    guard let outHandle = FileHandle(forWritingAtPath: outURL.path),
          let errHandle = FileHandle(forWritingAtPath: errURL.path) else {
        return RunResult(status: -1, stdout: "", stderr: "runJobrun: cannot open output files in \(scratch.path)", timedOut: false)
    }
    defer { try? outHandle.close(); try? errHandle.close() }
    process.standardOutput = outHandle
    process.standardError = errHandle

    var inHandle: FileHandle? = nil
    if let stdin {
        // A file, not a pipe: a child that never reads cannot block the writer.
        _ = fm.createFile(atPath: inURL.path, contents: Data(stdin.utf8))
        inHandle = FileHandle(forReadingAtPath: inURL.path)
        process.standardInput = inHandle
    } else {
        process.standardInput = FileHandle.nullDevice
    }
    defer { try? inHandle?.close() }

    do {
        try process.run()
    } catch {
        return RunResult(status: -1, stdout: "",
                         stderr: "runJobrun: cannot start \(executable): \(error) (run `swift build` first?)", timedOut: false)
    }

    // Foundation learns that a child ended only when every copy of a socket
    // the child inherited is closed, and jobrun's own children inherit it too.
    // So the end of jobrun itself is read with waitid(WNOWAIT), which leaves
    // the child for Foundation to reap; a worker that outlives jobrun is then
    // reported instead of looking like a hang.
    let pid = process.processIdentifier
    var timedOut = false
    func ended() -> Bool { exitStatus(of: pid) != nil || !process.isRunning }
    var status: Int32? = nil
    if !waitUntil(timeout: timeout, poll: 0.005, ended) {
        timedOut = true
        process.terminate()
        if !waitUntil(timeout: 2, poll: 0.005, ended) { kill(pid, SIGKILL) }
        _ = waitUntil(timeout: 2, poll: 0.005, ended)
    }
    status = exitStatus(of: pid)
    // Give Foundation a moment to see the end too (it then reaps the child).
    _ = waitUntil(timeout: 5, poll: 0.005) { !process.isRunning }
    var note = ""
    if process.isRunning {
        note = "\nrunJobrun: jobrun (pid \(pid)) ended, but processes it started were still running 5 s later\n"
    } else if status == nil {
        status = process.terminationReason == .uncaughtSignal ? -process.terminationStatus : process.terminationStatus
    }

    // Lossy decoding: a test should show bad bytes, not lose the whole output.
    let stdout = String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self)
    let stderr = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
    return RunResult(status: status ?? -1, stdout: stdout, stderr: stderr + note, timedOut: timedOut)
}

/// Runs any command (`argv[0]` a path) with the same bounds as `runJobrun`.
func runCommand(_ argv: [String], timeout: Double = 60, cwd: String? = nil,
                environment: [String: String] = [:]) -> RunResult {
    runJobrun(Array(argv.dropFirst()), timeout: timeout, cwd: cwd, environment: environment, executable: argv[0])
}

/// The exit status of child `pid` once it has ended (minus the signal number
/// when a signal ended it), without reaping it; nil while it runs.
private func exitStatus(of pid: pid_t) -> Int32? {
    var info = siginfo_t()
    guard waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0,
          info._sifields._sigchld.si_pid == pid else { return nil }
    let value = info._sifields._sigchld.si_status
    return info.si_code == CLD_EXITED ? value : -value
}

// MARK: - Scripts in a scratch folder

/// A fresh temporary folder (mode 0755, so `nobody` can read it) holding
/// `files`, whose names may include sub-folders ("stages/stage.lua");
/// `{dir}` in any file's text stands for the folder's path.
struct ScratchFolder {
    let url: URL
    var path: String { url.path }

    init(_ files: [String: String] = [:], prefix: String = "jobrun-test") {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o755])
        for (name, text) in files { write(name, text) }
    }

    /// Writes `text` (with `{dir}` replaced) to `name` inside the folder.
    func write(_ name: String, _ text: String) {
        let file = url.appendingPathComponent(name)
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? expand(text).write(to: file, atomically: true, encoding: .utf8)
    }

    /// `text` with `{dir}` replaced by the folder's path.
    func expand(_ text: String) -> String { text.replacingOccurrences(of: "{dir}", with: path) }

    func file(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Copies the file at `source` into the folder under its own name.
    func copy(_ source: URL) throws {
        try FileManager.default.copyItem(at: source, to: url.appendingPathComponent(source.lastPathComponent))
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// Runs `code` as `main.lua` from a fresh scratch folder holding `files` too
/// (see `ScratchFolder`; `{dir}` also works in `options` and `args`).
///
/// - `environment`: variables for jobrun, e.g. JOBRUN_TEST_KILL_AT (see
///   TestHooks.swift: the process named there SIGKILLs itself at that step).
/// - `shell`: commands run by bash before jobrun is exec'd (to set limits
///   such as `ulimit -n`); `asNobody` then runs it all as `nobody` when we
///   are root (root is not bound by `ulimit -u`).
func runScript(_ code: String, args: [String] = [], files: [String: String] = [:], options: [String] = [],
               environment: [String: String] = [:], shell: String? = nil, asNobody: Bool = false,
               timeout: Double = 60) -> RunResult {
    let dir = ScratchFolder(files)
    defer { dir.remove() }
    dir.write("main.lua", code)
    let argv = options.map(dir.expand) + [dir.file("main.lua")] + args.map(dir.expand)
    guard shell != nil || asNobody else {
        return runJobrun(argv, timeout: timeout, environment: environment)
    }
    var command = ["/bin/bash", "-c", (shell ?? ":") + "; exec \"$@\"", "bash", jobrunBinary] + argv
    if asNobody && getuid() == 0 {
        command = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + command
    }
    return runCommand(command, timeout: timeout, environment: environment)
}

// MARK: - Waiting, always bounded

/// Polls `condition` every `poll` seconds until it holds (true) or `timeout`
/// seconds have passed (false). The one way a test waits for something it
/// cannot be told about, such as a process ending or a file appearing.
@discardableResult
func waitUntil(timeout: Double, poll: Double = 0.01, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if condition() { return true }
        if Date() >= deadline { return false }
        usleep(useconds_t(poll * 1_000_000))
    }
}

/// True while `pid` runs (a zombie counts as ended).
func isRunning(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0,
          let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Lua for scripts that must wait for something no event tells them of:
/// `wait_until(f, seconds)` polls `f` until it returns true (then true) or
/// `seconds` pass (then false); `asleep(pid)` waits until process `pid`
/// sleeps (state S in /proc), i.e. it has gone to sleep in the wait it was
/// started into. Prepend it to a script: it adds no output.
let luaWaits = """
    local function wait_until(f, seconds)
      local t = jobrun.time()
      while not f() do
        if jobrun.time() - t > (seconds or 10) then return false end
        jobrun.sleep(0.005)
      end
      return true
    end
    local function asleep(pid)
      return wait_until(function()
        local f = io.open("/proc/" .. pid .. "/stat")
        local st = f and f:read("a"):match("%) (%a)")
        if f then f:close() end
        return st == "S"
      end, 10)
    end

    """

// MARK: - Checks that say what broke

/// `text` split into lines, without the empty line after a final newline.
func splitLines(_ text: String) -> [String] {
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    return lines
}

/// Checks that the run ended with `status` (and was not killed for taking
/// too long); on failure shows its output.
func expectStatus(_ r: RunResult, _ status: Int32 = 0, _ what: @autoclosure () -> String = "",
                  sourceLocation: SourceLocation = #_sourceLocation) {
    let label = what().isEmpty ? "" : "\(what()): "
    #expect(!r.timedOut, "\(label)the run did not end in time\n\(r)", sourceLocation: sourceLocation)
    #expect(r.status == status, "\(label)exit status \(r.status), expected \(status)\n\(r)", sourceLocation: sourceLocation)
}

/// Checks standard output line by line. Each expected line is paired with
/// the behaviour it shows, and a mismatch names that behaviour:
///
///     expectLines(r, [
///         "an unstarted process has no pid and a default name": "nil\tProcess-1",
///         "join returns true and the exit code is os.exit's": "true\t42",
///     ])
///
/// An expected line ending in "…" only needs to start with what comes before
/// it (for a figure that varies, such as a pid or a time). A line missing or
/// extra is reported as such; every failure shows the whole run (output and
/// stderr) once, after the per-line messages.
func expectLines(_ r: RunResult, _ expected: KeyValuePairs<String, String>,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    let got = r.lines
    var failed = false
    for (i, (behaviour, want)) in expected.enumerated() {
        let line = i < got.count ? got[i].debugDescription : "nothing (output ended)"
        let matches = i < got.count && (want.hasSuffix("…") ? got[i].hasPrefix(want.dropLast()) : got[i] == want)
        if !matches {
            failed = true
            Issue.record("line \(i + 1), \(behaviour): expected \(want.debugDescription), got \(line)",
                         sourceLocation: sourceLocation)
        }
    }
    if got.count > expected.count {
        failed = true
        let extra = got[expected.count...].map(\.debugDescription).joined(separator: ", ")
        Issue.record("\(got.count - expected.count) unexpected line(s) after line \(expected.count): \(extra)",
                     sourceLocation: sourceLocation)
    }
    if failed || r.timedOut {
        Issue.record("the whole run: \(r)", sourceLocation: sourceLocation)
    }
}

/// Checks a run whose whole output is one line of tab-separated fields (one
/// `print` of several values): each expected field is paired with what it
/// shows, and a mismatch names that field. A field ending in "…" is a prefix.
func expectFields(_ r: RunResult, _ expected: KeyValuePairs<String, String>,
                  sourceLocation: SourceLocation = #_sourceLocation) {
    let lines = r.lines
    guard lines.count == 1 else {
        Issue.record("expected one line of \(expected.count) fields, got \(lines.count) lines\n\(r)", sourceLocation: sourceLocation)
        return
    }
    let got = lines[0].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
    var failed = got.count != expected.count
    if failed {
        Issue.record("expected \(expected.count) fields, got \(got.count): \(lines[0].debugDescription)", sourceLocation: sourceLocation)
    }
    for (i, (what, want)) in expected.enumerated() where i < got.count {
        let matches = want.hasSuffix("…") ? got[i].hasPrefix(want.dropLast()) : got[i] == want
        if !matches {
            failed = true
            Issue.record("field \(i + 1), \(what): expected \(want.debugDescription), got \(got[i].debugDescription)",
                         sourceLocation: sourceLocation)
        }
    }
    if failed { Issue.record("the whole run: \(r)", sourceLocation: sourceLocation) }
}

/// A line diff of `expected` against `actual` ("-" only in expected, "+" only
/// in actual, " " in both), from their longest common subsequence.
func lineDiff(expected: String, actual: String) -> String {
    let a = splitLines(expected), b = splitLines(actual)
    // lcs[i][j]: length of the longest common subsequence of a[i...] and b[j...].
    var lcs = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        for j in stride(from: b.count - 1, through: 0, by: -1) {
            lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
        }
    }
    var out: [String] = []
    var i = 0, j = 0
    while i < a.count || j < b.count {
        if i < a.count && j < b.count && a[i] == b[j] {
            out.append("  " + a[i]); i += 1; j += 1
        } else if i < a.count && (j == b.count || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.append("- " + a[i]); i += 1
        } else {
            out.append("+ " + b[j]); j += 1
        }
    }
    return out.joined(separator: "\n")
}

/// Runs `jobrun script args...` from the package root and checks its standard
/// output and exit status, in the manner of swift-argument-parser's
/// `AssertExecuteCommand`: on a mismatch the failure shows a line diff
/// (expected "-", got "+") and the run's stderr.
///
/// - `unordered`: compare the output's lines as sorted (for scripts whose
///   workers print in any order).
/// - `masks`: before comparing, every match of each expression (per line) is
///   replaced with "*" in both the output and `expected` (for pids, or which
///   worker took an item).
func assertExecute(_ script: String, _ args: [String] = [], expecting expected: String, exitCode: Int32 = 0,
                   unordered: Bool = false, masks: [NSRegularExpression] = [], timeout: Double = 60,
                   sourceLocation: SourceLocation = #_sourceLocation) {
    let command = ([script] + args).joined(separator: " ")
    let r = runJobrun([script] + args, timeout: timeout, cwd: packageRoot.path)
    let stderrNote = r.stderr.isEmpty ? "(stderr is empty)" : "stderr:\n\(r.stderr)"
    if r.timedOut {
        Issue.record("jobrun \(command) did not end within \(timeout) s and was killed\nstdout so far:\n\(r.stdout)\n\(stderrNote)",
                     sourceLocation: sourceLocation)
        return
    }
    #expect(r.status == exitCode, "jobrun \(command): exit status \(r.status), expected \(exitCode)\n\(stderrNote)",
            sourceLocation: sourceLocation)

    func normalize(_ text: String) -> String {
        var lines = splitLines(text).map { line in
            masks.reduce(line) { l, re in
                re.stringByReplacingMatches(in: l, range: NSRange(l.startIndex..., in: l), withTemplate: "*")
            }
        }
        if unordered { lines.sort() }
        return lines.joined(separator: "\n")
    }
    let want = normalize(expected), got = normalize(r.stdout)
    guard want != got else { return }
    let how = (unordered ? "lines sorted" : "exact") + (masks.isEmpty ? "" : ", masked")
    Issue.record("""
        jobrun \(command): stdout differs from what was expected (\(how); - expected, + got):
        \(lineDiff(expected: want, actual: got))
        \(stderrNote)
        """, sourceLocation: sourceLocation)
}

// MARK: - Inputs that must end clearly

/// Bad and hostile input, one row each: the script, the exit status it must
/// end with, and text its output (stdout + stderr) must contain. Every row
/// must also end well within the timeout and print no Swift crash report.
struct BadInput: CustomTestStringConvertible, Sendable {
    let name: String
    let script: String
    let status: Int32
    let expect: String
    var testDescription: String { name }
}

/// Runs `c.script` and checks that it ends (never hangs) with its status and
/// message, and with no Swift crash report.
func expectClearOutcome(_ c: BadInput, sourceLocation: SourceLocation = #_sourceLocation) {
    let r = runScript(c.script, timeout: 60)
    let output = r.stdout + r.stderr
    #expect(!r.timedOut, "\(c.name): hung", sourceLocation: sourceLocation)
    #expect(r.status == c.status, "\(c.name): exit \(r.status)\n\(output)", sourceLocation: sourceLocation)
    #expect(output.contains(c.expect), "\(c.name): output lacks \(c.expect):\n\(output)", sourceLocation: sourceLocation)
    #expect(!output.contains("Fatal error") && !output.contains("Backtrac") && !output.contains("Program crashed"),
            "\(c.name): Swift crash report\n\(output)", sourceLocation: sourceLocation)
}
