import Foundation
import Testing

/// A pipeline with known counts: main puts `n` items on "tasks", two
/// consumers move each to "results", main takes them all back.
private let countedPipeline = """
    local n = tonumber(arg[1])
    local tasks = jobrun.JoinableQueue{name = "tasks"}
    local results = jobrun.Queue{name = "results", maxsize = 50}
    local function consumer()
      for item in tasks:items() do results:put(item * 2) end
    end
    local ps = {}
    for i = 1, 2 do
      ps[i] = jobrun.Process{target = consumer, name = "consumer-" .. i}
      ps[i]:start()
    end
    local sum = 0
    for i = 1, n do
      tasks:put(i)
      jobrun.progress("sent", i, n)
    end
    for i = 1, n do sum = sum + results:get() end
    tasks:join()
    tasks:close()
    for _, p in ipairs(ps) do p:join() end
    local quitter = jobrun.Process{target = function() os.exit(3) end, name = "quitter"}
    quitter:start(); quitter:join()
    local up = jobrun.Event()
    local victim = jobrun.Process{target = function() up:set(); jobrun.sleep(60) end, name = "victim"}
    victim:start(); assert(up:wait(20)); victim:kill(); victim:join()
    print("sum", sum)
    """

private func parseJSON(_ path: String) -> [String: Any]? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
}

@Suite("--stats and --stats-json")
struct StatsTests {
    @Test func jsonMatchesTheRunsRealCounts() throws {
        let n = 3000
        let folder = ScratchFolder(prefix: "jobrun-stats")
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let r = runScript(countedPipeline, args: [String(n)], options: ["--stats-json", json], timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "sum\t\(n * (n + 1))\n")
        #expect(!r.stderr.contains("run statistics"), "no table without --stats")
        let stats = try #require(parseJSON(json), "not JSON: \((try? String(contentsOfFile: json, encoding: .utf8)) ?? "missing")")
        let processes = try #require(stats["processes"] as? [[String: Any]])
        func process(_ name: String) -> [String: Any]? { processes.first { $0["name"] as? String == name } }
        let main = try #require(process("MainProcess"))
        #expect(main["items_put"] as? Int == n)
        #expect(main["items_got"] as? Int == n)
        #expect(main["exit"] as? Int == 0)
        let consumers = processes.filter { ($0["name"] as? String ?? "").hasPrefix("consumer-") }
        #expect(consumers.count == 2)
        // Each consumer got its items plus the end-of-stream it saw (items() ends on close).
        #expect(consumers.map { $0["items_put"] as? Int ?? -1 }.reduce(0, +) == n)
        #expect(consumers.map { $0["items_got"] as? Int ?? -1 }.reduce(0, +) == n)
        for c in consumers {
            #expect(c["exit"] as? Int == 0)
            #expect((c["peak_rss_kib"] as? Int ?? 0) > 0)
            #expect((c["user_seconds"] as? Double) != nil)
            #expect((c["wall_seconds"] as? Double ?? -1) >= 0)
        }
        #expect(process("quitter")?["exit"] as? Int == 3)
        #expect(process("victim")?["exit"] as? Int == -9)

        let queues = try #require(stats["queues"] as? [[String: Any]])
        let tasks = try #require(queues.first { $0["name"] as? String == "tasks" })
        #expect(tasks["kind"] as? String == "JoinableQueue")
        #expect(tasks["items"] as? Int == n)
        #expect(tasks["got"] as? Int == n)
        #expect(tasks["done"] as? Int == n)
        #expect(tasks["queued"] as? Int == 0)
        #expect((tasks["bytes"] as? Int ?? 0) >= 2 * n)
        #expect((tasks["site"] as? String ?? "").hasSuffix("main.lua:2"))
        let results = try #require(queues.first { $0["name"] as? String == "results" })
        #expect(results["items"] as? Int == n)
        let peak = results["peak_depth"] as? Int ?? -1
        #expect(peak >= 1 && peak <= 50, "bounded queue: peak depth \(peak)")
        let counters = try #require(stats["counters"] as? [[String: Any]])
        #expect(counters.first?["name"] as? String == "sent")
        #expect(counters.first?["done"] as? Int == n)
        #expect(counters.first?["total"] as? Int == n)
    }

    /// The main process's peak is its own: a parent that held 150 MiB before
    /// it started jobrun (os.execute: sh exec's jobrun) does not show in it.
    /// getrusage's ru_maxrss would say >= 150 MiB here (the kernel keeps
    /// the replaced program's peak across exec); VmHWM says jobrun's own.
    @Test func theMainProcesssPeakIsNotItsParents() throws {
        let folder = ScratchFolder(["small.lua": "print(#string.rep('y', 1000))\n"])
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let parent = """
            local big = string.rep("x", 150 * 1024 * 1024)   -- written, so resident
            local ok = os.execute(("exec %q --stats-json %q %q"):format(arg[1], arg[2], arg[3]))
            print(ok, #big)
            """
        let r = runScript(parent, args: [jobrunBinary, json, folder.file("small.lua")], timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "1000\ntrue\t\(150 * 1024 * 1024)\n")
        let stats = try #require(parseJSON(json))
        let processes = try #require(stats["processes"] as? [[String: Any]])
        let main = try #require(processes.first { $0["name"] as? String == "MainProcess" })
        let peak = try #require(main["peak_rss_kib"] as? Int)
        #expect(peak > 0 && peak < 100 * 1024, "main process's peak \(peak) KiB: its parent's 150 MiB counted")
    }

    @Test func tableOnStderrNamesEveryProcessAndQueue() {
        let r = runScript(countedPipeline, args: ["500"], options: ["--stats"], timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "sum\t\(500 * 501)\n", "the table goes to stderr only")
        #expect(r.stderr.contains("jobrun: run statistics ("))
        for word in ["process", "pid", "exit", "cpu s", "peak MiB", "MainProcess", "consumer-1", "consumer-2",
                     "signal 9", "queue", "made at", "peak depth", "put wait s", "get wait s", "tasks", "results",
                     "counter", "sent"] {
            #expect(r.stderr.contains(word), "missing \(word) in:\n\(r.stderr)")
        }
        #expect(r.stderr.contains(where: { $0 == "\u{1B}" }) == false, "no escape codes when not on a terminal")
    }

    @Test func manyProcessesAreSummedUpAfterTheFirstRows() throws {
        let folder = ScratchFolder(prefix: "jobrun-stats")
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let r = runScript("""
            for i = 1, 60 do
              local p = jobrun.Process{target = function() if i == 60 then os.exit(5) end end, name = "w" .. i}
              p:start(); p:join()
            end
            """, options: ["--stats", "--stats-json", json], timeout: 60)
        expectStatus(r)
        #expect(r.stderr.contains("... and 22 more processes ("), "\(r.stderr)")
        #expect(r.stderr.contains("1 ended with an error or a signal)"), "\(r.stderr)")
        #expect(r.stderr.contains("w38") && !r.stderr.contains("w39 "), "39 rows: main and w1..w38")
        let stats = try #require(parseJSON(json))
        #expect((stats["processes"] as? [[String: Any]])?.count == 61, "the JSON has every process")
    }

    /// A Pool's queues carry the script's line that made the pool, in their
    /// name and as the place they were made at, not jobrun's own pool.lua.
    @Test func aPoolsQueuesAreNamedAfterTheLineThatMadeThePool() throws {
        let folder = ScratchFolder(prefix: "jobrun-stats")
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let r = runScript("""
            local n = 3
            local pool = jobrun.Pool(2)
            assert(#pool:map(function(x) return x end, {1, 2, n}) == n)
            pool:close(); pool:join()
            """, options: ["--stats", "--stats-json", json], timeout: 60)
        expectStatus(r)
        #expect(r.stderr.contains("main.lua:2 Pool tasks") && !r.stderr.contains("prelude"), "\(r.stderr)")
        let stats = try #require(parseJSON(json))
        let queues = try #require(stats["queues"] as? [[String: Any]])
        for kind in ["tasks", "results"] {
            let q = queues.first { ($0["name"] as? String ?? "").hasSuffix("main.lua:2 Pool \(kind)") }
            #expect((q?["site"] as? String ?? "").hasSuffix("main.lua:2"), "\(queues)")
        }
    }

    @Test func statsAreWrittenAfterOsExitAndAnError() throws {
        let folder = ScratchFolder(prefix: "jobrun-stats")
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let r = runScript("local q = jobrun.Queue(); q:put(1); q:get(); os.exit(4)", options: ["--stats-json", json], timeout: 30)
        expectStatus(r, 4)
        let stats = try #require(parseJSON(json))
        let main = (stats["processes"] as? [[String: Any]])?.first
        #expect(main?["exit"] as? Int == 4)
        let e = runScript("error('boom')", options: ["--stats"], timeout: 30)
        #expect(e.status == 1)
        #expect(e.stderr.contains("boom"))
        #expect(e.stderr.contains("run statistics"))
    }

    @Test func unwritableJSONPathIsReportedBeforeTheRun() {
        let r = runScript("print('ran')", options: ["--stats-json", "/nonexistent-dir/x.json"], timeout: 30)
        #expect(r.status == 2)
        #expect(r.stdout == "", "nothing runs")
        #expect(r.stderr == "jobrun: --stats-json: cannot write /nonexistent-dir/x.json: No such file or directory\n")
        let dir = runScript("print('ran')", options: ["--stats-json", "/tmp"], timeout: 30)
        #expect(dir.status == 2)
        #expect(dir.stderr.contains("cannot write /tmp: Is a directory"))
    }
}

/// Runs `command` under a pseudo-terminal 200 columns wide (util-linux
/// `script`); returns everything the terminal received.
private func underTerminal(_ jobrunArgs: [String], timeout: Double = 60) -> (status: Int32, output: String) {
    let bin = jobrunBinary
    let quoted = ([bin] + jobrunArgs).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
    let r = runCommand(["/usr/bin/script", "-qfec", "stty cols 200 rows 40; exec " + quoted, "/dev/null"], timeout: timeout)
    return (r.status, r.stdout)
}

private let slowPipeline = """
    local tasks = jobrun.JoinableQueue{name = "tasks"}
    local function consumer()
      for item in tasks:items() do jobrun.sleep(0.002) end   -- slow enough to be drawn
    end
    local ps = {}
    for i = 1, 2 do ps[i] = jobrun.Process{target = consumer, name = "c" .. i}; ps[i]:start() end
    for i = 1, 600 do
      tasks:put(i)
      jobrun.progress("fed", i, 600)
      if i % 200 == 0 then print("line " .. i) end
      if i % 100 == 0 then jobrun.sleep(0.1) end   -- the progress line redraws on a timer
    end
    tasks:join(); tasks:close()
    for _, p in ipairs(ps) do p:join() end
    print("finished")
    """

@Suite("the status line")
struct ProgressTests {
    /// `code` as main.lua in a scratch folder (removed by the caller).
    private func script(_ code: String) -> ScratchFolder { ScratchFolder(["main.lua": code], prefix: "jobrun-progress") }

    @Test func drawnOnATerminalAndWipedBeforeOtherOutput() throws {
        let dir = script(slowPipeline)
        defer { dir.remove() }
        let path = dir.file("main.lua")
        let r = underTerminal([path])
        #expect(r.status == 0, "\(r.output)")
        let out = r.output
        #expect(out.contains("\rjobrun "), "no status line in:\n\(out.debugDescription)")
        #expect(out.contains("tasks 600 put") || out.contains("tasks "), "\(out.debugDescription)")
        #expect(out.contains("fed "), "\(out.debugDescription)")
        #expect(out.contains("/600 ["), "a bar for a counter with a total: \(out.debugDescription)")
        #expect(out.contains(" processes"))
        #expect(out.contains("\u{1B}[K"))
        // Every output line starts on a wiped line, so none is glued to a status.
        for line in ["line 200", "line 400", "line 600", "finished"] {
            #expect(out.contains("\r\u{1B}[K" + line), "\(line) not on a wiped line: \(out.debugDescription)")
        }
        // The last thing on the screen is not a status line.
        let tail = out.components(separatedBy: "\rjobrun ").last ?? ""
        #expect(tail.contains("finished") || out.hasSuffix("\r\u{1B}[K") || out.hasSuffix("\r\u{1B}[K\r\n"),
                "status left on screen: \(out.suffix(300).debugDescription)")
    }

    @Test func noProgressTurnsItOffOnATerminal() {
        let dir = script(slowPipeline)
        defer { dir.remove() }
        let path = dir.file("main.lua")
        let r = underTerminal(["--no-progress", path])
        #expect(r.status == 0)
        #expect(!r.output.contains("\rjobrun "))
        #expect(!r.output.contains("\u{1B}["))
        #expect(r.output.contains("line 200\r\n"))
    }

    @Test func offWhenPipedUnlessAskedFor() {
        let plain = runScript(slowPipeline, timeout: 60)
        #expect(plain.status == 0)
        #expect(!plain.stderr.contains("jobrun "), "no status line on a pipe: \(plain.stderr.debugDescription)")
        expectLines(plain, [
            "the output of a pipe without --progress: first line": "line 200",
            "second line": "line 400",
            "third line": "line 600",
            "the end": "finished",
        ])
        let forced = runScript(slowPipeline, options: ["--progress"], timeout: 60)
        #expect(forced.status == 0)
        #expect(forced.stderr.contains("\rjobrun "), "\(forced.stderr.debugDescription)")
        expectLines(forced, [
            "a pipe gets no escape codes: first line": "line 200",
            "second line": "line 400",
            "third line": "line 600",
            "the end": "finished",
        ])
    }

    @Test func progressArgumentsAreChecked() {
        let cases: [(String, String)] = [
            ("jobrun.progress(nil, 1)", "jobrun.progress: name must be a non-empty string of at most 47 bytes, got nil"),
            ("jobrun.progress('', 1)", "jobrun.progress: name must be a non-empty string"),
            ("jobrun.progress('x', 'a')", "jobrun.progress: done must be a number, got string"),
            ("jobrun.progress('x', -1)", "jobrun.progress: done must be a whole number >= 0, got -1"),
            ("jobrun.progress('x', 1.5)", "jobrun.progress: done must be a whole number >= 0, got 1.5"),
            ("jobrun.progress('x', 1, {})", "jobrun.progress: total must be a number, got table"),
            ("for i = 1, 17 do jobrun.progress('c' .. i, 1) end", "jobrun.progress: too many counters (at most 16 names per run)"),
            ("jobrun.Queue{name = 5}", "Queue: name must be a non-empty string of at most 47 bytes, got number"),
        ]
        for (code, message) in cases {
            let r = runScript(code, timeout: 30)
            #expect(r.status == 1, "\(code)")
            #expect(r.stderr.contains(message), "\(code): \(r.stderr)")
            #expect(r.stderr.contains("main.lua:1:"), "\(code) names the place: \(r.stderr)")
        }
    }

    /// Counts up to 2^64 on the status line: the rate, bar and ETA are
    /// clamped, never a trap in the monitor; deadlocks are still found after.
    @Test func hugeProgressCountsDoNotCrashTheMonitor() {
        let r = runScript("""
            jobrun.progress("x", 1, math.maxinteger)
            jobrun.progress("y", 3, 2^63 * 1.9)
            jobrun.progress("z", 2^63 * 1.9)
            local t = jobrun.time()
            while jobrun.time() - t < 1.2 do end
            local q = jobrun.Queue()
            q:get()
            """, options: ["--progress"], timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1)
        #expect(r.stderr.contains(" ETA "), "\(r.stderr)")
        #expect(!r.stderr.contains("monitor"), "\(r.stderr)")
        #expect(r.stderr.contains("jobrun.Deadlock: Queue#1.get"), "\(r.stderr)")
    }
}
