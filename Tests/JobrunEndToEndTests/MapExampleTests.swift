import Foundation
import Testing

// examples/logs_to_tsv.lua, the resumable `jobrun map` job, run as its
// header comment tells a user to: ExamplesTests checks its stdout with one
// fixed command; these check the workflow around it. A run that stops
// partway and a `--resume` run that does exactly the rest make what one run
// makes (halted at a missing log, or stopped by Ctrl-C while a read hangs),
// and with FLAKY (its simulated unreliable share) and enough retries
// every line succeeds and the job log shows the retries.

/// One line of a job log: Seq, Exit, Retries (columns 1, 5, 6).
struct JoblogLine: Equatable {
    let seq: Int
    let exit: String
    let retries: Int
}

/// The lines of job log `path` after its `#` header lines.
func joblogLines(_ path: String) -> [JoblogLine] {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return splitLines(text).filter { !$0.hasPrefix("#") }.compactMap { line in
        let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard f.count == 8, let seq = Int(f[0]), let retries = Int(f[5]) else { return nil }
        return JoblogLine(seq: seq, exit: f[4], retries: retries)
    }
}

/// Every regular file under `folder`, by path relative to it, with its bytes.
func filesUnder(_ folder: String) -> [String: Data] {
    var files: [String: Data] = [:]
    let base = URL(fileURLWithPath: folder)
    guard let walk = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey]) else { return [:] }
    for case let url as URL in walk where (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true {
        files[String(url.path.dropFirst(base.path.count + 1))] = try? Data(contentsOf: url)
    }
    return files
}

@Suite("examples/logs_to_tsv.lua: resume and retries")
struct MapExampleTests {
    static let inputs = 9   // the lines of examples/data/logs.txt

    /// A scratch folder laid out as the package root for the example: its
    /// function file and a copy of examples/data (so files can go missing).
    static func workspace() throws -> ScratchFolder {
        let dir = ScratchFolder(prefix: "jobrun-logs-to-tsv")
        let examples = URL(fileURLWithPath: dir.file("examples"))
        try FileManager.default.createDirectory(at: examples, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Examples.folder.appendingPathComponent("data"),
                                         to: examples.appendingPathComponent("data"))
        try FileManager.default.copyItem(at: Examples.folder.appendingPathComponent("logs_to_tsv.lua"),
                                         to: examples.appendingPathComponent("logs_to_tsv.lua"))
        return dir
    }

    static var expected: [String] {
        let url = Examples.folder.appendingPathComponent("logs_to_tsv.expected")
        return splitLines((try? String(contentsOf: url, encoding: .utf8)) ?? "")
    }

    static let inputArgs = ["examples/logs_to_tsv.lua", "examples/data/logs.txt"]

    /// The files one run writes with OUT=tsv, by path under tsv/.
    static func oneRunFiles() throws -> [String: Data] {
        let whole = try workspace()
        defer { whole.remove() }
        let one = runJobrun(["map", "-j", "2", "-k", "--joblog", "run.tsv"] + inputArgs, timeout: 60, cwd: whole.path,
                            environment: ["OUT": "tsv"])
        expectStatus(one, 0, "one run")
        #expect(one.lines == expected)
        let files = filesUnder(whole.file("tsv"))
        try #require(files.count == inputs, "one run wrote \(files.keys.sorted())")
        return files
    }

    /// Checks that `dir`/tsv holds the files of `wanted`, each the same.
    static func expectSameFiles(_ dir: ScratchFolder, _ wanted: [String: Data],
                                sourceLocation: SourceLocation = #_sourceLocation) {
        let made = filesUnder(dir.file("tsv"))
        #expect(made.keys.sorted() == wanted.keys.sorted(), sourceLocation: sourceLocation)
        for (name, bytes) in wanted {
            let same = made[name] == bytes   // not in the #expect: it would print both files
            #expect(same, "tsv/\(name) differs from one run's", sourceLocation: sourceLocation)
        }
    }

    @Test func aRunStoppedPartwayThenResumedMakesWhatOneRunMakes() throws {
        let wanted = try Self.oneRunFiles()

        // Run 1, on one worker: the log on line 6 is missing (the share lost
        // it); the job halts at that failure (`soon`: what the worker holds
        // then finishes), lines 1-5 done. Lines 7-9 may be done too: they can
        // go to the worker in the same chunk as line 6, so run 2 may have only
        // line 6 left; what it must run is exactly what run 1 did not log.
        let dir = try Self.workspace()
        defer { dir.remove() }
        let missing = dir.file("examples/data/app-logs/billing/2026-11-29.log"), aside = dir.file("held.log")
        try FileManager.default.moveItem(atPath: missing, toPath: aside)
        let run1 = runJobrun(["map", "-j", "1", "-k", "--joblog", "run.tsv", "--halt", "soon,fail=1"] + Self.inputArgs,
                             timeout: 60, cwd: dir.path, environment: ["OUT": "tsv"])
        expectStatus(run1, 1, "run 1 halts at its one failure")
        #expect(run1.stderr.contains("logs.txt:6 ") && run1.stderr.contains("No such file or directory"), "\(run1)")
        #expect(run1.stderr.contains("halted"), "\(run1)")
        let log1 = joblogLines(dir.file("run.tsv"))
        let done1 = Set(log1.filter { $0.exit == "0" }.map(\.seq))
        #expect(log1.contains(JoblogLine(seq: 6, exit: "Error", retries: 0)), "\(log1)")
        #expect(done1.isSuperset(of: 1...5) && !done1.contains(6), "\(log1)")
        #expect(run1.lines == done1.sorted().map { Self.expected[$0 - 1] }, "run 1 prints the lines it did, in order")
        #expect(!filesUnder(dir.file("tsv")).keys.contains { $0.hasSuffix(".part") }, "no half-written file stays")

        // Run 2: the file is back; --resume runs exactly the lines not done.
        try FileManager.default.moveItem(atPath: aside, toPath: missing)
        let run2 = runJobrun(["map", "-j", "2", "-k", "--joblog", "run.tsv", "--resume"] + Self.inputArgs, timeout: 60, cwd: dir.path,
                             environment: ["OUT": "tsv"])
        expectStatus(run2, 0, "run 2 (--resume)")
        let log2 = Array(joblogLines(dir.file("run.tsv")).dropFirst(log1.count))
        let rest = Set(1...Self.inputs).subtracting(done1)
        #expect(log2.map(\.seq).sorted() == rest.sorted(), "run 2 ran \(log2.map(\.seq)); run 1 had done \(done1.sorted())")
        #expect(log2.allSatisfy { $0.exit == "0" }, "\(log2)")
        let expectedRest = rest.sorted().map { Self.expected[$0 - 1] }
        #expect(run2.lines == expectedRest, "run 2 prints the lines it ran, in order")
        #expect((run1.lines + run2.lines).sorted() == Self.expected.sorted(), "the two runs print what one run prints")

        // The two runs' files are what one run makes.
        Self.expectSameFiles(dir, wanted)
    }

    @Test func ctrlCThenResumeDoesTheRest() throws {
        let wanted = try Self.oneRunFiles()
        // Line 6's log is a FIFO: a read that hangs, as on a share that
        // stopped answering. On one worker, lines 1-5 run and line 6 waits.
        // A helper opens the FIFO's other end (which returns once the worker
        // has opened it, so the job is at line 6; it holds it open until
        // jobrun has ended, so the read never ends), waits (bounded) for
        // stdout to show what the job log does, and presses Ctrl-C: SIGINT
        // to jobrun. Every wait is bounded (timeout 20).
        let dir = try Self.workspace()
        defer { dir.remove() }
        let log6 = "examples/data/app-logs/billing/2026-11-29.log"
        try FileManager.default.moveItem(atPath: dir.file(log6), toPath: dir.file("held.log"))
        try #require(mkfifo(dir.file(log6), 0o644) == 0)
        let command = """
            cd '\(dir.path)' || exit 9
            ( timeout 20 bash -c '
                exec 3> "$0"
                for i in $(seq 100); do [ "$(grep -vc "^#" run.tsv)" = "$(wc -l < out1)" ] && break; sleep 0.05; done
                kill -INT "$1"
                for i in $(seq 400); do ps -o stat= -p "$1" | grep -q "^[^Z]" || break; sleep 0.05; done' \(log6) $$
              kill -INT $$ ) > /dev/null 2>&1 &
            OUT=tsv exec '\(jobrunBinary)' map -j 1 -k --joblog run.tsv \(Self.inputArgs.joined(separator: " ")) > out1
            """
        let run1 = runCommand(["/bin/bash", "-c", command], timeout: 60)
        expectStatus(run1, -SIGINT, "run 1 dies of the SIGINT, as a shell reports with 130")
        let log1 = joblogLines(dir.file("run.tsv"))
        let done1 = Set(log1.map(\.seq))
        // Which of lines 1-5 came back before line 6 depends on how the
        // pool chunked them: a line that ran in one chunk with line 6 has
        // not. Those that came back are logged and printed.
        #expect(done1.isSubset(of: 1...5) && log1.allSatisfy { $0.exit == "0" }, "\(log1)")
        let out1 = splitLines((try? String(contentsOfFile: dir.file("out1"), encoding: .utf8)) ?? "")
        #expect(Set(out1).isSubset(of: done1.map { Self.expected[$0 - 1] }), "run 1 printed only lines it logged")

        // The share answers again: --resume runs the rest, 6-9 among them.
        try FileManager.default.removeItem(atPath: dir.file(log6))
        try FileManager.default.moveItem(atPath: dir.file("held.log"), toPath: dir.file(log6))
        let run2 = runJobrun(["map", "-j", "2", "-k", "--joblog", "run.tsv", "--resume"] + Self.inputArgs, timeout: 60,
                             cwd: dir.path, environment: ["OUT": "tsv"])
        expectStatus(run2, 0, "run 2 (--resume)")
        let log2 = Array(joblogLines(dir.file("run.tsv")).dropFirst(log1.count))
        let rest = Set(1...Self.inputs).subtracting(done1).sorted()
        #expect(log2.map(\.seq).sorted() == rest && log2.allSatisfy { $0.exit == "0" }, "\(log2); run 1: \(log1)")
        #expect(run2.lines == rest.map { Self.expected[$0 - 1] })
        Self.expectSameFiles(dir, wanted)
    }

    @Test func withFlakyReadsAndRetriesEveryLineSucceedsAndTheLogShowsTheRetries() {
        // FLAKY=0.8: each read fails with probability 0.8. With 80 retries
        // (81 tries) a line fails for good with probability 0.8^81 < 1.5e-8,
        // 9 lines < 1.3e-7; no line needing a retry has probability
        // 0.2^9 < 5.2e-7: a false failure is less likely than 1e-6.
        let dir = ScratchFolder(prefix: "jobrun-logs-to-tsv-flaky")
        defer { dir.remove() }
        let log = dir.file("run.tsv")
        let r = runJobrun(["map", "-j", "2", "-k", "--retries", "80", "--joblog", log] + Self.inputArgs,
                          timeout: 120, environment: ["FLAKY": "0.8"])
        expectStatus(r, 0, "FLAKY=0.8 --retries 80")
        #expect(r.lines == Self.expected, "the output is what a run without FLAKY prints")
        #expect(r.stderr == "", "a failed try that is retried is not reported")
        let lines = joblogLines(log)
        #expect(lines.map(\.seq).sorted() == Array(1...Self.inputs), "\(lines)")
        #expect(lines.allSatisfy { $0.exit == "0" }, "\(lines)")
        #expect(lines.contains { $0.retries > 0 }, "some line needed a retry: \(lines)")

        // Without retries the same failures are reported, each with its line.
        let bare = runJobrun(["map", "-j", "2", "-k"] + Self.inputArgs, timeout: 60, environment: ["FLAKY": "1"])
        expectStatus(bare, Int32(Self.inputs), "FLAKY=1, no retries: every line fails")
        #expect(bare.stdout == "")
        #expect(bare.stderr.contains("logs.txt:1 ") && bare.stderr.contains("(FLAKY=1: a simulated flaky share)"), "\(bare)")
    }
}
