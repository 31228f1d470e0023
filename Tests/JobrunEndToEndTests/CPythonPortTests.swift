import Foundation
import Testing

// CPython's Lib/test/_test_multiprocessing.py, ported to Lua: one file per
// CPython test class under Tests/cpython/, each a list of named cases run by
// Tests/cpython/harness.lua, and for the files listed in cpythonSpawnFiles
// once more with script workers, as CPython runs each class under fork and
// under spawn. Every case runs in a jobrun of its own (a case
// that hangs or crashes cannot take the others with it) and prints one line:
// `ok`, `FAIL`, `xfail` (a known defect, marked in the case) or `XPASS` (a
// marked defect that is fixed: remove the marker). FAIL, XPASS, a missing
// line, a timeout, or a non-zero exit after `ok` fail the test, naming the
// case.

/// The port's files, one per CPython class.
let cpythonPortFiles = [
    "test_process.lua", "test_subclassing_process.lua", "test_queue.lua", "test_lock.lua",
    "test_semaphore.lua", "test_condition.lua", "test_event.lua", "test_barrier.lua",
    "test_value.lua", "test_containers.lua", "test_connection.lua", "test_poll.lua",
    "test_pickling_connections.lua", "test_pool.lua", "test_pool_worker_errors.lua",
    "test_pool_worker_lifetime.lua", "test_sync_manager_types.lua", "test_initializers.lua",
    "test_stdin_badfiledescriptor.lua", "test_fork_aware_thread_lock.lua", "test_timeouts.lua",
    "test_start_method.lua", "test_spawned_sys_path.lua", "test_at_exit.lua", "test_misc.lua",
]

/// The files whose workers are registered with worker(), so that they also
/// run as under CPython's spawn start method (`--spawn`: script workers).
let cpythonSpawnFiles = [
    "test_process.lua", "test_subclassing_process.lua", "test_queue.lua", "test_lock.lua",
    "test_condition.lua", "test_event.lua", "test_barrier.lua", "test_value.lua", "test_connection.lua",
    "test_poll.lua", "test_pickling_connections.lua", "test_sync_manager_types.lua",
    "test_fork_aware_thread_lock.lua", "test_timeouts.lua", "test_at_exit.lua",
]

let cpythonPortDir = packageRoot.appendingPathComponent("Tests/cpython")

/// What one case's run printed, judged.
struct CPythonCaseOutcome {
    let line: String?
    let problem: String?
}

/// Judges the output of `jobrun FILE CASE`: the case's own line decides;
/// the run must also end on its own, with status 0 after `ok`.
func judgeCPythonCase(_ name: String, status: Int32, stdout: String, stderr: String, timedOut: Bool) -> CPythonCaseOutcome {
    let prefixes = ["ok ", "FAIL ", "xfail ", "XPASS "]
    func isResult(_ l: String) -> Bool {
        for p in prefixes where l == p + name || l.hasPrefix(p + name + ":") { return true }
        return false
    }
    let line: String? = stdout.split(separator: "\n").map(String.init).first(where: isResult)
    let tail = stderr.isEmpty ? "" : "\nstderr:\n\(stderr.suffix(3000))"
    guard let line else {
        let how = timedOut ? "timed out" : "ended with status \(status)"
        return CPythonCaseOutcome(line: nil, problem: "\(name): no result line (the run \(how))\(tail)")
    }
    if line.hasPrefix("FAIL ") || line.hasPrefix("XPASS ") {
        return CPythonCaseOutcome(line: line, problem: line + tail)
    }
    if timedOut { return CPythonCaseOutcome(line: line, problem: "\(name): \(line), but the run did not end\(tail)") }
    // An xfail case failed as marked; a worker of it may have failed unseen,
    // which the run's exit status reports.
    if status != 0 && line.hasPrefix("ok ") {
        return CPythonCaseOutcome(line: line, problem: "\(name): \(line), but the run exited \(status)\(tail)")
    }
    return CPythonCaseOutcome(line: line, problem: nil)
}

@Suite("CPython's _test_multiprocessing.py, ported")
struct CPythonPortTests {
    @Test("each case of a ported class passes or fails as marked", arguments: cpythonPortFiles)
    func portedClass(_ file: String) {
        let path = cpythonPortDir.appendingPathComponent(file).path
        let list = runJobrun([path, "--list"], timeout: 30)
        let names = list.stdout.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        #expect(list.status == 0 && !names.isEmpty, "\(file): cannot list its cases: \(list.stderr)")
        let modes = cpythonSpawnFiles.contains(file) ? [[], ["--spawn"]] : [[String]()]
        for mode in modes {
            for name in names {
                let r = runJobrun([path, name] + mode, timeout: 40)
                let outcome = judgeCPythonCase(name, status: r.status, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut)
                if let problem = outcome.problem {
                    Issue.record("\(file)\(mode.isEmpty ? "" : " [spawn]") \(problem)")
                }
            }
        }
    }

    @Test func spawnModeRunsWorkersAsScripts() throws {
        // A registered target sees the file's top-level locals as a fresh
        // interpreter has them under --spawn, and as the parent left them
        // when forked.
        let dir = ScratchFolder(prefix: "jobrun-spawn")
        defer { dir.remove() }
        for helper in ["harness.lua", "spawn_worker.lua"] { try dir.copy(cpythonPortDir.appendingPathComponent(helper)) }
        let path = dir.url.appendingPathComponent("test_spawncheck.lua")
        try """
            require "harness"
            local marker = "as loaded"
            local report = worker("report", function(q, x) q:put(marker .. " " .. x) end)
            case("where", function()
              marker = "as changed"
              local q = jobrun.Queue()
              local p = Process{target = report, args = {q, "x"}}
              p:start()
              print(q:get(true, 10))
              join_process(p)
            end)
            run()
            """.write(toFile: path.path, atomically: true, encoding: .utf8)
        let fork = runJobrun([path.path, "where"], timeout: 30)
        expectLines(fork, [
            "forked, the worker sees the module as changed": "as changed x",
            "the case passes": "ok where",
        ])
        let spawn = runJobrun([path.path, "where", "--spawn"], timeout: 30)
        expectLines(spawn, [
            "with --spawn the worker sees the module as loaded": "as loaded x",
            "the case passes": "ok where",
        ])
    }

    @Test func everyPortedFileIsRun() throws {
        let onDisk = try FileManager.default.contentsOfDirectory(atPath: cpythonPortDir.path)
            .filter { $0.hasPrefix("test_") && $0.hasSuffix(".lua") }
        #expect(Set(onDisk) == Set(cpythonPortFiles), "Tests/cpython files not in cpythonPortFiles, or listed but missing")
        #expect(Set(cpythonSpawnFiles).isSubset(of: Set(cpythonPortFiles)))
    }

    @Test func theHarnessReportsEachOutcome() throws {
        // A copy of the harness in a scratch folder, with a file of cases beside it.
        let dir = ScratchFolder(prefix: "jobrun-harness")
        defer { dir.remove() }
        try dir.copy(cpythonPortDir.appendingPathComponent("harness.lua"))
        let path = dir.url.appendingPathComponent("test_selfcheck.lua")
        try """
            require "harness"
            case("passes", function() assertEqual({1, {2}}, {1, {2}}) end)
            case("fails", function() assertEqual(1, 2) end)
            case("xfails", function() xfail("known: issue 0"); assertTrue(false) end)
            case("xpasses", function() xfail("known: issue 0") end)
            case("part_xfails", function() xfail("known: issue 0", function() assertTrue(false) end) end)
            case("part_xpasses", function() xfail("known: issue 0", function() end) end)
            case("raises", function() jobrun.Queue():get(false) end)
            run()
            """.write(toFile: path.path, atomically: true, encoding: .utf8)
        let r = runJobrun([path.path], timeout: 30)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        expectStatus(r)
        #expect(lines.count == 7, "\(r.stdout)\(r.stderr)")
        guard lines.count == 7 else { return }
        #expect(lines[0] == "ok passes")
        #expect(lines[1].hasPrefix("FAIL fails: 1 ~= 2 (at "), "\(lines[1])")
        #expect(lines[2].hasPrefix("xfail xfails: known: issue 0 -- "), "\(lines[2])")
        #expect(lines[3].hasPrefix("XPASS xpasses: known: issue 0"), "\(lines[3])")
        #expect(lines[4].hasPrefix("xfail part_xfails: known: issue 0 -- "), "\(lines[4])")
        #expect(lines[5].hasPrefix("XPASS part_xpasses: known: issue 0"), "\(lines[5])")
        #expect(lines[6].hasPrefix("FAIL raises: ") && lines[6].contains("jobrun.Empty"), "\(lines[6])")
        for (i, name) in ["passes", "fails", "xfails", "xpasses", "part_xfails", "part_xpasses", "raises"].enumerated() {
            let o = judgeCPythonCase(name, status: 0, stdout: lines[i] + "\n", stderr: "", timedOut: false)
            #expect((o.problem == nil) == [0, 2, 4].contains(i), "\(name): \(o.problem ?? "no problem")")
        }
        let silent = judgeCPythonCase("passes", status: -9, stdout: "", stderr: "", timedOut: true)
        #expect(silent.problem?.contains("no result line (the run timed out)") == true)
        #expect(judgeCPythonCase("passes", status: 1, stdout: "ok passes\n", stderr: "", timedOut: false).problem != nil)
        #expect(judgeCPythonCase("xfails", status: 1, stdout: lines[2] + "\n", stderr: "", timedOut: false).problem == nil)
    }
}
