import Foundation

// Shared helpers for the end-to-end tests: they run the built `jobrun` binary
// as a child process, the way a user does, and never wait without a bound.

/// The package root: three levels above this file (Tests/JobrunEndToEndTests/Support.swift).
let packageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .deletingLastPathComponent()
    .deletingLastPathComponent()

/// The binary under test: `$JOBRUN_BIN`, or `<root>/.build/debug/jobrun`.
var jobrunBinary: String {
    if let bin = ProcessInfo.processInfo.environment["JOBRUN_BIN"], !bin.isEmpty { return bin }
    return packageRoot.appendingPathComponent(".build/debug/jobrun").path
}

/// Runs `jobrun args...` and returns its exit status and output.
///
/// - `stdin`: text fed to the child's standard input (otherwise /dev/null).
/// - `timeout`: a hard bound in seconds. When it passes, the child gets
///   SIGTERM, then SIGKILL two seconds later, and `timedOut` is true.
/// - `cwd`: the child's working directory (default: the package root).
///
/// `status` is the exit status, or minus the signal number when a signal
/// ended the child (as `Process.exitcode` does in jobrun). Output goes to
/// temporary files rather than pipes, so a grandchild that outlives the child
/// and keeps the descriptors open cannot make the test wait for EOF.
func runJobrun(_ args: [String], stdin: String? = nil, timeout: Double = 60,
               cwd: String? = nil, executable: String? = nil) -> (status: Int32, stdout: String, stderr: String, timedOut: Bool) {
    let fm = FileManager.default
    let scratch = fm.temporaryDirectory.appendingPathComponent("jobrun-e2e-\(UUID().uuidString)")
    do {
        try fm.createDirectory(at: scratch, withIntermediateDirectories: true)
    } catch {
        return (-1, "", "runJobrun: cannot create \(scratch.path): \(error)", false)
    }
    defer { try? fm.removeItem(at: scratch) }

    let outURL = scratch.appendingPathComponent("stdout")
    let errURL = scratch.appendingPathComponent("stderr")
    let inURL = scratch.appendingPathComponent("stdin")
    _ = fm.createFile(atPath: outURL.path, contents: nil)
    _ = fm.createFile(atPath: errURL.path, contents: nil)

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable ?? jobrunBinary)
    process.arguments = args
    process.currentDirectoryURL = URL(fileURLWithPath: cwd ?? packageRoot.path)

    guard let outHandle = FileHandle(forWritingAtPath: outURL.path),
          let errHandle = FileHandle(forWritingAtPath: errURL.path) else {
        return (-1, "", "runJobrun: cannot open output files in \(scratch.path)", false)
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
        return (-1, "", "runJobrun: cannot start \(jobrunBinary): \(error) (run `swift build` first?)", false)
    }

    // Foundation learns that a child ended only when every copy of a socket
    // the child inherited is closed, and jobrun's own children inherit it too.
    // So the end of jobrun itself is read with waitid(WNOWAIT), which leaves
    // the child for Foundation to reap; a worker that outlives jobrun is then
    // reported instead of looking like a hang.
    let pid = process.processIdentifier
    var timedOut = false
    let deadline = Date().addingTimeInterval(timeout)
    var status = exitStatus(of: pid)
    while status == nil && process.isRunning && Date() < deadline {
        usleep(5_000)
        status = exitStatus(of: pid)
    }
    if status == nil && process.isRunning {
        timedOut = true
        process.terminate()
        let grace = Date().addingTimeInterval(2)
        while exitStatus(of: pid) == nil && process.isRunning && Date() < grace { usleep(5_000) }
        if exitStatus(of: pid) == nil && process.isRunning { kill(pid, SIGKILL) }
        let last = Date().addingTimeInterval(2)
        while exitStatus(of: pid) == nil && process.isRunning && Date() < last { usleep(5_000) }
        status = exitStatus(of: pid)
    }
    // Give Foundation a moment to see the end too (it then reaps the child).
    let settle = Date().addingTimeInterval(5)
    while process.isRunning && Date() < settle { usleep(5_000) }
    var note = ""
    if process.isRunning {
        note = "\nrunJobrun: jobrun (pid \(pid)) ended, but processes it started were still running 5 s later\n"
    } else if status == nil {
        status = process.terminationReason == .uncaughtSignal ? -process.terminationStatus : process.terminationStatus
    }

    // Lossy decoding: a test should show bad bytes, not lose the whole output.
    let stdout = String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self)
    let stderr = String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self)
    return (status ?? -1, stdout, stderr + note, timedOut)
}

/// Runs any command (`argv[0]` a path) with the same bounds as `runJobrun`.
func runCommand(_ argv: [String], timeout: Double = 60) -> (status: Int32, stdout: String, stderr: String, timedOut: Bool) {
    runJobrun(Array(argv.dropFirst()), timeout: timeout, executable: argv[0])
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
