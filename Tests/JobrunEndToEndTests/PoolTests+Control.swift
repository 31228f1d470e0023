import Foundation
import Testing

// Per-item control of a Pool's maps, as GNU parallel users expect:
// timeout, retries, halt, on_error, joblog and resume. Every wait is
// bounded: an item that would hang sleeps or loops until the pool kills it,
// and runScript's own time bound catches a pool that does not. No test
// asserts how long anything took.

/// The lines of a joblog that are not headers, split into columns.
private func logRows(_ path: String) -> [[String]] {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return splitLines(text).filter { !$0.hasPrefix("#") }.map { $0.components(separatedBy: "\t") }
}

private func fileLines(_ path: String) -> [String] {
    splitLines((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
}

@Suite("Pool control")
struct PoolControlTests {
    /// Appends a line to a file: how a task says it ran (every attempt counts).
    static let note = """
        local function note(path, text)
          local f = assert(io.open(path, "a")); f:write(text, "\\n"); f:close()
        end
        local function count(path)
          local n = 0
          local f = io.open(path)
          if f then for _ in f:lines() do n = n + 1 end f:close() end
          return n
        end

        """

    @Test func aTimedOutItemFailsWithTimeoutAndTheRestCompletes() {
        let r = runScript(Self.note + """
            local pool = jobrun.Pool{workers = 2}
            local pids = {}
            for _, p in ipairs(jobrun.active_children()) do pids[p.pid] = true end
            -- item 3 never ends; chunks of 3: items 1..3 run in one worker, so
            -- the items of its chunk are run again by others, not lost
            local errs = {}
            local r = pool:map(function(x) if x == 3 then while true do end end return x * 10 end, {1, 2, 3, 4, 5, 6, 7},
                               {timeout = 0.5, chunksize = 3, on_error = function(e, i, item) errs[#errs + 1] = {e, i, item} end})
            print("results", r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            local e = errs[1]
            print("on_error", #errs, e[1].kind, e[2], e[3])
            print(e[1].message:match("^Pool%.map: item 3 %('3'%): timed out after 0%.5 s %(pool worker PoolWorker%-%d+, pid %d+, was killed and replaced%)$") ~= nil)
            -- without on_error the map raises it; the pool still has 2 workers
            local ok, err = pcall(pool.map, pool, function(x) if x == 2 then jobrun.sleep(1000) end return x end, {1, 2, 3}, {timeout = 0.5})
            print("raised", ok, err.kind)
            local fresh = 0
            for _, p in ipairs(jobrun.active_children()) do if not pids[p.pid] then fresh = fresh + 1 end end
            print("replaced", fresh > 0, #jobrun.active_children())
            -- imap: the same, stepping over the item on_error took
            local got = {}
            for v, i in pool:imap(function(x) if x == 2 then while true do end end return x end, {1, 2, 3},
                                  {timeout = 0.5, on_error = function() end}) do got[#got + 1] = i .. "=" .. v end
            print("imap", table.concat(got, " "))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "every other item of the map has its result, the timed-out one nil": "results\t10\t20\tnil\t40\t50\t60\t70",
            "on_error got the Timeout with the item's index and value": "on_error\t1\tTimeout\t3\t3",
            "the message names the item, the timeout and the worker killed": "true",
            "without on_error the map raises Timeout": "raised\tfalse\tTimeout",
            "killed workers were replaced: the pool still has 2": "replaced\ttrue\t2",
            "imap skips the item that timed out": "imap\t1=1 3=3",
        ])
        #expect(!r.stderr.contains("failed"), "a worker the pool killed is no failure of the run\n\(r)")
    }

    @Test func aTimedOutItemIsRetriedAndLogged() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript(Self.note + """
            local dir = ...
            local pool = jobrun.Pool{workers = 2, timeout = 0.5}
            -- the first attempt of item 2 hangs, the second returns
            local r = pool:map(function(x)
              note(dir .. "/runs-" .. x, "ran")
              if x == 2 and count(dir .. "/runs-2") == 1 then jobrun.sleep(1000) end
              return x
            end, {1, 2, 3}, {retries = 1, joblog = dir .. "/log.tsv"})
            print(r[1], r[2], r[3], count(dir .. "/runs-2"))
            -- an async map: get raises the Timeout; the joblog says Timeout
            local a = pool:map_async(function(x) if x == 1 then while true do end end return x end, {1, 2},
                                     {joblog = dir .. "/log2.tsv"})
            local ok, e = pcall(a.get, a, 30)
            print(ok, e.kind)
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        expectLines(r, [
            "a timed-out item is run again and its second attempt counts": "1\t2\t3\t2",
            "map_async's get raises the item's Timeout": "false\tTimeout",
        ])
        let two = logRows(dir.file("log.tsv")).first { $0.first == "2" }
        #expect(two?[4] == "0" && two?[5] == "1", "item 2 ended well after 1 retry\n\(String(describing: two))")
        let one = logRows(dir.file("log2.tsv")).first { $0.first == "1" }
        #expect(one?[4] == "Timeout" && Double(one?[3] ?? "") ?? 0 > 0, "item 1: Exit Timeout, its run time\n\(String(describing: one))")
    }

    @Test func retriesSucceedOnTheSecondAttempt() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript(Self.note + """
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local r = pool:map(function(x)
              note(dir .. "/runs-" .. x, "ran")
              if x == 2 and count(dir .. "/runs-2") < 2 then error("first attempt of 2 fails") end
              return x * 10
            end, {1, 2, 3}, {retries = 2, joblog = dir .. "/log.tsv"})
            print(r[1], r[2], r[3], count(dir .. "/runs-1"), count(dir .. "/runs-2"), count(dir .. "/runs-3"))
            -- a retry goes to another worker (best effort: at least one of
            -- six does; in practice all)
            local other = 0
            for x = 1, 6 do
              local r2 = pool:map(function(x)
                note(dir .. "/pids-" .. x, jobrun.current_process().pid)
                if count(dir .. "/pids-" .. x) == 1 then error("first") end
                return x
              end, {x}, {retries = 1})
              local pids = {}
              for line in io.lines(dir .. "/pids-" .. x) do pids[#pids + 1] = line end
              if r2[1] == x and pids[1] ~= pids[2] then other = other + 1 end
            end
            print("elsewhere", other >= 1)
            -- retries on the pool: the default of each map
            local p2 = jobrun.Pool{workers = 1, retries = 1}
            print(p2:map(function(x)
              note(dir .. "/p2", "ran")
              if count(dir .. "/p2") == 1 then error("once") end
              return x end, {7})[1], count(dir .. "/p2"))
            """, args: [dir.path])
        expectStatus(r)
        expectLines(r, [
            "item 2 failed once and succeeded on its second attempt": "10\t20\t30\t1\t2\t1",
            "a retry runs on another worker": "elsewhere\ttrue",
            "a Pool{retries} applies to its maps": "7\t2",
        ])
        let rows = logRows(dir.file("log.tsv")).sorted { $0[0] < $1[0] }
        #expect(rows.map { $0[0] } == ["1", "2", "3"], "one line per item, once finished for good\n\(rows)")
        #expect(rows.map { $0[4] } == ["0", "0", "0"], "every item ended well\n\(rows)")
        #expect(rows.map { $0[5] } == ["0", "1", "0"], "Retries counts the attempts before the last\n\(rows)")
    }

    @Test func retriesExhaustedFailWithTheAttemptsInTheJoblog() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript(Self.note + """
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local ok, e = pcall(pool.map, pool, function(x)
              note(dir .. "/runs-" .. x, "ran")
              if x == 2 then error("always") end
              return x
            end, {1, 2, 3}, {retries = 2, joblog = dir .. "/log.tsv"})
            print(ok, (tostring(e):match("always")), count(dir .. "/runs-2"))
            -- a worker that dies is retried too
            local r = pool:map(function(x)
              note(dir .. "/died", "ran")
              if count(dir .. "/died") == 1 then os.exit(5) end
              return x
            end, {4}, {retries = 1})
            print(r[1], count(dir .. "/died"))
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        expectLines(r, [
            "the map raises the item's error once its 3 attempts failed": "false\talways\t3",
            "an item whose worker died is run again": "4\t2",
        ])
        let rows = logRows(dir.file("log.tsv"))
        let two = rows.first { $0.first == "2" }
        #expect(two?[4] == "Error" && two?[5] == "2", "item 2: Exit Error after 2 retries\n\(rows)")
    }

    @Test func haltSoonNowAndPercentages() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript(Self.note + """
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local items = {}
            for i = 1, 200 do items[i] = i end
            -- soon: no new item after the first failure, the running ones
            -- finish (they wait until the caller has seen it)
            local seen, gate = {}, jobrun.Event()
            local ok, e = pcall(pool.map, pool, function(x)
              note(dir .. "/soon", x)
              if x == 1 then error("item one fails") end
              gate:wait(10)
              return x
            end, items, {halt = "soon,fail=1", on_error = function(err, i) seen[#seen + 1] = i; gate:set() end})
            print("soon", ok, e.kind, e.kind == jobrun.Halted, count(dir .. "/soon") < 200, seen[1])
            print(e.message:match('^Pool%.map: halted %(halt = "soon,fail=1"%): 1 of %d+ finished items? failed; the last, item 1: .*item one fails$') ~= nil)
            -- now: running items are killed at once (they would sleep for ever)
            local ok2, e2 = pcall(pool.map, pool, function(x)
              if x == 1 then error("bad") end
              jobrun.sleep(1000)
            end, {1, 2, 3, 4}, {halt = "now,fail=1", on_error = function() end, chunksize = 1})
            print("now", ok2, e2.kind, (e2.message:match('halt = "now,fail=1"')))
            -- the pool goes on, with fresh workers
            print("after", #pool:map(function(x) return x end, {1, 2, 3}), #jobrun.active_children())
            -- a percentage of the items finished (at least 3 of them)
            local ok3, e3 = pcall(pool.map, pool, function(x) if x > 2 then error("late") end return x end,
                                  items, {halt = "soon,fail=50%", on_error = function() end})
            print("pct", ok3, e3.kind, (e3.message:match('halt = "soon,fail=50%%"')))
            local failed = 0
            local r = pool:map(function(x) if x == 200 then error("one") end return x end, items,
                               {halt = "soon,fail=10%", on_error = function() failed = failed + 1 end})
            print("under", r[199], r[200], #r, failed)
            -- imap: the items before the halt, then Halted
            local got = 0
            local ok4, e4 = pcall(function()
              for v in pool:imap(function(x) if x == 3 then error("three") end return x end, {1, 2, 3, 4, 5},
                                 {halt = "soon,fail=1", on_error = function() end, chunksize = 1, window = 1}) do got = got + 1 end
            end)
            print("imap", ok4, e4.kind, got)
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        expectLines(r, [
            "soon raises Halted after the failure, not every item ran, on_error saw it": "soon\tfalse\tHalted\ttrue\ttrue\t1",
            "the message names the policy, the count and the last failure": "true",
            "now raises at once, killing the sleeping items": "now\tfalse\tHalted\thalt = \"now,fail=1\"",
            "the pool works after a halt now": "after\t3\t2",
            "a percentage halts too": "pct\tfalse\tHalted\thalt = \"soon,fail=50%\"",
            "under the percentage the map completes": "under\t199\tnil\t199\t1",
            "imap yields the items before the halt, then raises Halted": "imap\tfalse\tHalted\t2",
        ])
    }

    @Test func onDoneAfterAHaltedMapAsyncGetsTheError() {
        // A callback added once a halted map_async is over is told of the
        // halt (error_callback), as one added before it would be.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local r = pool:map_async(function(x) if x == 2 then error("no 2", 0) end return x end, {1, 2, 3, 4},
                                     {halt = "soon,fail=1", on_error = function() end})
            print("get", pcall(r.get, r, 10) == false)
            r:on_done(function(v) print("callback", #v) end, function(e) print("error_callback", e.kind) end)
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "get raises the halt": "get\ttrue",
            "on_done afterwards runs error_callback with Halted": "error_callback\tHalted",
        ])
    }

    @Test func onErrorGoesOnPastFailures() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local errs = {}
            local function fn(x) if x % 2 == 0 then error("even " .. x, 0) end return x end
            local r = pool:map(fn, {1, 2, 3, 4, 5}, {on_error = function(e, i, item) errs[#errs + 1] = i .. ":" .. item .. ":" .. tostring(e):match("even %d") end})
            table.sort(errs)
            print("map", r[1], r[2], r[3], r[4], r[5], table.concat(errs, " "))
            local got = {}
            for v, i in pool:imap(fn, {1, 2, 3, 4, 5}, {on_error = function() end}) do got[#got + 1] = v end
            print("imap", table.concat(got, " "))
            local sum = 0
            for v in pool:imap_unordered(fn, {1, 2, 3, 4, 5}, {on_error = function() end}) do sum = sum + v end
            print("unordered", sum)
            local ok, e = pcall(pool.starmap, pool, function(a, b) if a == 2 then error("no") end return a + b end,
                                {{1, 1}, {2, 2}, {3, 3}}, {on_error = function(err, i, item) print("star", i, item[1], item[2]) end})
            print("starmap", ok, e[1], e[2], e[3])
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "map leaves nil at the failed items; on_error got index, item and error": "map\t1\tnil\t3\tnil\t5\t2:2:even 2 4:4:even 4",
            "imap skips the failed items": "imap\t1 3 5",
            "imap_unordered skips them too": "unordered\t9",
            "starmap's on_error gets the argument table": "star\t2\t2\t2",
            "starmap goes on": "starmap\ttrue\t2\tnil\t6",
        ])
    }

    @Test func theJoblogFormat() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local items = {"plain", "tab\\there\\nnewline", "\\255\\0binary", string.rep("x", 100), 42, {1, "a"}}
            pool:map(function(x) if x == 42 then error("no 42") end return x end, items,
                     {joblog = dir .. "/log.tsv", on_error = function() end})
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        let lines = fileLines(dir.file("log.tsv"))
        #expect(lines.count == 8, "two header lines and one line per item\n\(lines)")
        #expect(lines.first?.range(of: #"^# jobrun joblog 1\tjob=[0-9a-f]{16}\tfn=.*main\.lua:4$"#, options: .regularExpression) != nil,
                "the first header names the job\n\(lines)")
        #expect(lines.dropFirst().first == "#Seq\tWorker\tStart\tRunTime\tExit\tRetries\tDesc\tHash", "the columns\n\(lines)")
        let rows = logRows(dir.file("log.tsv")).sorted { Int($0[0])! < Int($1[0])! }
        #expect(rows.allSatisfy { $0.count == 8 }, "8 columns each\n\(rows)")
        guard rows.count == 6 else { return }
        for row in rows {
            #expect(Int(row[1]) != nil && Double(row[2])! > 1.7e9 && row[2].range(of: #"\.\d{3}$"#, options: .regularExpression) != nil,
                    "Worker is a pid, Start unix time with 3 decimals\n\(row)")
            #expect(row[3].range(of: #"^\d+\.\d{3}$"#, options: .regularExpression) != nil, "RunTime with 3 decimals\n\(row)")
            #expect(row[7].range(of: "^[0-9a-f]{16}$", options: .regularExpression) != nil, "Hash\n\(row)")
        }
        #expect(rows.map { $0[4] } == ["0", "0", "0", "0", "Error", "0"], "Exit\n\(rows)")
        #expect(rows[0][6] == "plain")
        #expect(rows[1][6] == #"tab\there\nnewline"#, "tabs and newlines escaped")
        #expect(rows[2][6] == #"\xff\x00binary"#, "binary bytes escaped")
        #expect(rows[3][6] == String(repeating: "x", count: 57) + "...", "cut to 60 characters")
        #expect(rows[4][6] == "42" && rows[5][6] == "{1, a}")
    }

    @Test func resumeRunsOnlyWhatAnInterruptedRunLeft() {
        let dir = ScratchFolder(["job.lua": Self.note + """
            local dir, kill = ...
            local pool = jobrun.Pool{workers = 2}
            local items = {}
            for i = 1, 40 do items[i] = "item " .. i end
            for v, i in pool:imap(function(x) note(dir .. "/runs", x); jobrun.sleep(0.01); return x end, items,
                                  {joblog = dir .. "/log.tsv", resume = true}) do
              note(dir .. "/taken", v)
              if kill == "kill" and i == 6 then os.execute("kill -KILL " .. jobrun.current_process().pid) end
            end
            print("done")
            """])
        defer { dir.remove() }
        let first = runJobrun([dir.file("job.lua"), dir.path, "kill"])
        #expect(first.status != 0 && !first.timedOut, "run 1 was SIGKILLed\n\(first)")
        let logged = Set(logRows(dir.file("log.tsv")).filter { $0[4] == "0" }.map { "item " + $0[0] })
        #expect(logged.count >= 6 && logged.count < 40, "run 1 logged some items, not all: \(logged)")
        // A torn last line, as a kill in the middle of a write leaves it: ignored.
        let handle = FileHandle(forWritingAtPath: dir.file("log.tsv"))!
        handle.seekToEndOfFile()
        handle.write("40\t999\t17".data(using: .utf8)!)
        handle.closeFile()
        try? FileManager.default.removeItem(atPath: dir.file("runs"))
        let second = runJobrun([dir.file("job.lua"), dir.path, "no"])
        expectStatus(second)
        let ran = Set(fileLines(dir.file("runs")))
        let all = Set((1...40).map { "item \($0)" })
        #expect(ran == all.subtracting(logged), "run 2 ran exactly the items run 1 had not logged done\nran \(ran)\nlogged \(logged)")
        let rows = logRows(dir.file("log.tsv"))
        #expect(rows.allSatisfy { $0.count == 8 }, "the torn line is gone, the log is whole\n\(rows)")
        #expect(Set(rows.filter { $0[4] == "0" }.map { $0[0] }).count == 40, "every item is logged done\n\(rows)")
        // Run 3: nothing left to do.
        try? FileManager.default.removeItem(atPath: dir.file("runs"))
        let third = runJobrun([dir.file("job.lua"), dir.path, "no"])
        expectStatus(third)
        #expect(fileLines(dir.file("runs")).isEmpty, "run 3 ran nothing\n\(third)")
    }

    @Test func resumeRefusesAnotherJobsLog() {
        let dir = ScratchFolder([
            "job.lua": """
                local dir, variant = ...
                local pool = jobrun.Pool{workers = 2}
                local items = {"a", "b", "c"}
                if variant == "inputs" then items[2] = "B" end
                local fn = function(x) return x end
                if variant == "fn" then fn = function(x) return x .. x end end
                local r = pool:map(fn, items, {joblog = dir .. "/log.tsv", resume = true})
                print(#r)
                """,
            "gen.lua": """
                local dir = ...
                local pool = jobrun.Pool{workers = 2}
                local list = {"a", "b", "c", "d"}
                local i = 0
                for v in pool:imap(function(x) return x:upper() end, function() i = i + 1; return list[i] end,
                                   {joblog = dir .. "/log.tsv", resume = true}) do io.write(v) end
                print()
                """,
        ])
        defer { dir.remove() }
        expectStatus(runJobrun([dir.file("job.lua"), dir.path, "same"]), 0, "run 1")
        let fn = runJobrun([dir.file("job.lua"), dir.path, "fn"])
        expectStatus(fn, 1, "another function")
        #expect(fn.stderr.contains("job.lua:7: jobrun.ValueError: \(dir.file("log.tsv")): written by another job: its function differs"), "\(fn)")
        let inputs = runJobrun([dir.file("job.lua"), dir.path, "inputs"])
        expectStatus(inputs, 1, "other inputs")
        #expect(inputs.stderr.contains("written by another job: item 2 was 'b', now 'B'"), "\(inputs)")
        // Over an iterator, the item is checked when it is read.
        let gen = runJobrun([dir.file("gen.lua"), dir.path])
        expectStatus(gen, 1, "an iterator's other function")
        // A corrupt line: the file and line are named.
        let text = fileLines(dir.file("log.tsv")).joined(separator: "\n") + "\n2\tnot a pid\t1.0\t0.1\t0\t0\tb\t00ff\n"
        try? text.write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        let corrupt = runJobrun([dir.file("job.lua"), dir.path, "same"])
        expectStatus(corrupt, 1, "a corrupt line")
        #expect(corrupt.stderr.contains("job.lua:7: jobrun.ValueError: \(dir.file("log.tsv")):6: corrupt joblog line: bad Worker \"not a pid\""), "\(corrupt)")
        try? "2\t1\t1.0\n".write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        let noHeader = runJobrun([dir.file("job.lua"), dir.path, "same"])
        expectStatus(noHeader, 1, "no header")
        #expect(noHeader.stderr.contains("log.tsv:1: not a jobrun joblog"), "\(noHeader)")
    }

    @Test func resumeOverAnIteratorChecksItemsAsTheyAreRead() {
        let dir = ScratchFolder(["gen.lua": """
            local dir, last = ...
            local pool = jobrun.Pool{workers = 2}
            local list = {"a", "b", "c", "d", "e"}
            list[4] = last
            local i = 0
            local got = {}
            local ok, e = pcall(function()
              for v in pool:imap(function(x) return x end, function() i = i + 1; return list[i] end,
                                 {joblog = dir .. "/log.tsv", resume = true}) do got[#got + 1] = v end
            end)
            print(table.concat(got), ok or e.kind)
            """])
        defer { dir.remove() }
        let one = runJobrun([dir.file("gen.lua"), dir.path, "d"])
        expectStatus(one)
        #expect(one.stdout == "abcde\ttrue\n", "\(one)")
        let two = runJobrun([dir.file("gen.lua"), dir.path, "d"])
        #expect(two.stdout == "\ttrue\n", "resumed: everything is done, nothing yielded\n\(two)")
        let other = runJobrun([dir.file("gen.lua"), dir.path, "X"])
        #expect(other.stdout == "\tValueError\n", "item 4 differs: refused\n\(other)")
    }

    @Test func terminateAlsoStopsWhatTheItemsStarted() {
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local dir = ...
            local pool = jobrun.Pool{workers = 1}
            local res = pool:apply_async(function()
              os.execute("echo $$ > " .. dir .. "/pid.tmp; mv " .. dir .. "/pid.tmp " .. dir .. "/pid; exec sleep 60")
            end)
            while not io.open(dir .. "/pid") do jobrun.sleep(0.02) end
            pool:terminate()
            print(pcall(res.get, res, 5))
            """, args: [dir.path], timeout: 30)
        expectTheItemsProcessGone(pidFile: dir.file("pid"), r, "the item's `sleep 60` was stopped with its worker")
    }

    @Test func aTimeoutAlsoKillsWhatTheItemStarted() {
        // The item's work includes the processes it started: a `sleep 60`
        // left behind would go on with it (and hold the run's stdout open).
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local r = pool:map(function(x)
              if x == 2 then os.execute("echo $$ > " .. dir .. "/pid.tmp; mv " .. dir .. "/pid.tmp " .. dir .. "/pid; exec sleep 60") end
              return x
            end, {1, 2, 3}, {timeout = 3, on_error = function(e) print(e.kind) end})
            print(r[1], r[2], r[3])
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        #expect(r.lines == ["Timeout", "1\tnil\t3"], "\(r)")
        expectTheItemsProcessGone(pidFile: dir.file("pid"), r, "the item's `sleep 60` was killed with its worker")
    }

    @Test func aSecondMapOnTheSameJoblogTakesItOverWhole() {
        // Two maps in flight at once writing one log (the pool's default
        // joblog): the second starts the file anew, so the first writes no
        // more lines to it (they would land at its old offset, tearing the
        // second's lines, and name items of another job).
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local dir = ...
            local pool = jobrun.Pool{workers = 2, joblog = dir .. "/log.tsv"}
            local go = jobrun.Event()        -- the first map's items 2 and 3 end after the second map started
            local a = pool:imap(function(x) if x ~= "first item" then go:wait(20) end return x end,
                                {"first item", "a long second item", "a long third item"})
            print(a())
            local b = pool:imap(function(x) return -x end, {1, 2, 3})
            go:set()
            for v in a do print(v) end
            for v in b do print(v) end
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        let lines = fileLines(dir.file("log.tsv"))
        #expect(lines.filter { $0.hasPrefix("# jobrun joblog") }.count == 1 && lines.first?.hasSuffix("main.lua:7") == true,
                "one header, the second map's\n\(lines)")
        let rows = logRows(dir.file("log.tsv"))
        #expect(rows.allSatisfy { $0.count == 8 } && Set(rows.map { $0[6] }) == ["1", "2", "3"],
                "whole lines, the second map's items only\n\(lines)")
    }

    @Test func theSameLogFileUnderAnotherNameIsTakenOverToo() {
        // `./log.tsv` and `log.tsv` are one file: the second map takes it
        // over as it does under the same name (before, the path strings
        // differed and both wrote to it, tearing each other's lines).
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local dir = ...
            local pool = jobrun.Pool{workers = 2}
            local go = jobrun.Event()
            local a = pool:imap(function(x) if x ~= "first item" then go:wait(20) end return x end,
                                {"first item", "a long second item", "a long third item"}, {joblog = dir .. "/log.tsv"})
            print(a())
            local b = pool:imap(function(x) return -x end, {1, 2, 3}, {joblog = dir .. "/./log.tsv"})
            go:set()
            for v in a do print(v) end
            for v in b do print(v) end
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        let lines = fileLines(dir.file("log.tsv"))
        #expect(lines.filter { $0.hasPrefix("# jobrun joblog") }.count == 1, "one header\n\(lines)")
        let rows = logRows(dir.file("log.tsv"))
        #expect(rows.allSatisfy { $0.count == 8 } && Set(rows.map { $0[6] }) == ["1", "2", "3"],
                "whole lines, the second map's items only\n\(lines)")
    }

    @Test func aCRLFJoblogResumes() throws {
        // A log edited on Windows ends its lines with \r\n: read as \n.
        let dir = ScratchFolder()
        defer { dir.remove() }
        let script = """
            local log = ... .. "/log.tsv"
            local pool = jobrun.Pool{workers = 1}
            for v in pool:imap(function(x) return x end, {"a", "b", "c"}, {joblog = log, resume = true}) do print(v) end
            pool:close(); pool:join()
            """
        expectStatus(runScript(script, args: [dir.path]))
        let text = try String(contentsOfFile: dir.file("log.tsv"), encoding: .utf8)
        let kept = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(4).joined(separator: "\r\n") + "\r\n"
        try kept.write(toFile: dir.file("log.tsv"), atomically: true, encoding: .utf8)
        let r = runScript(script, args: [dir.path])
        expectStatus(r)
        #expect(r.lines == ["c"], "a and b are logged done\n\(r)")
    }

    @Test func aResumedMapWhoseLogWasTakenOverStillChecksItsItems() {
        // Map A resumes from a log over an iterator; map B takes the log
        // over; A then reads an item the log shows otherwise: refused as
        // another job's, as without B.
        let dir = ScratchFolder()
        defer { dir.remove() }
        let r = runScript("""
            local log = ... .. "/log.tsv"
            local pool = jobrun.Pool{workers = 2}
            local f = function(x) if x == "a" then error("no a") end return x end
            pool:map(f, {"a", "b", "c"}, {joblog = log, on_error = function() end})
            local list, i = {"a", "X", "c"}, 0
            local a = pool:imap(f, function() i = i + 1 return list[i] end,
                                {joblog = log, resume = true, window = 1, chunksize = 1, on_error = function() end})
            for v in pool:imap(function(x) return -x end, {1}, {joblog = log}) do print(v) end
            local ok, e = pcall(function() for v in a do print(v) end end)
            print(ok, e.kind, (e.message:gsub("^.*/", "")))
            pool:close(); pool:join()
            """, args: [dir.path])
        expectStatus(r)
        #expect(r.lines == ["-1", "false\tValueError\tlog.tsv: written by another job: item 2 was 'b', now 'X'; remove the log to start anew"], "\(r)")
    }

    @Test func badOptionValues() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local function try(f)
              local ok, e = pcall(f)
              print(e.kind, e.where:match("[^/]*$"), e.message)
            end
            try(function() local _ = jobrun.Pool({timeout = -1}) end)
            try(function() local _ = jobrun.Pool({retries = 1.5}) end)
            try(function() local _ = pool:map(print, {1}, {timeout = 0}) end)
            try(function() local _ = pool:map(print, {1}, {timeout = "1"}) end)
            try(function() local _ = pool:map(print, {1}, {retries = -1}) end)
            try(function() local _ = pool:map(print, {1}, {halt = "bogus"}) end)
            try(function() local _ = pool:map(print, {1}, {halt = "now,fail=0"}) end)
            try(function() local _ = pool:map(print, {1}, {halt = "soon,fail=101%"}) end)
            try(function() local _ = pool:imap(print, {1}, {resume = true}) end)
            try(function() local _ = pool:map(print, {1}, {on_error = "print"}) end)
            try(function() local _ = pool:map(print, {1}, {joblog = 3}) end)
            try(function() local _ = pool:map(print, {1}, {bogus = 1}) end)
            try(function() local _ = pool:map(print, {1}, {joblog = "/dev/full"}) end)
            try(function() local _ = pool:map(print, {1}, {joblog = "/nonexistent/dir/log.tsv"}) end)
            """)
        expectStatus(r)
        expectLines(r, [
            "a negative timeout on the Pool": "ValueError\tmain.lua:6\tPool: timeout must be a positive number of seconds, got -1",
            "retries not an integer": "ValueError\tmain.lua:7\tPool: retries must be a non-negative integer, got 1.5",
            "a zero timeout on a map": "ValueError\tmain.lua:8\tPool.map: timeout must be a positive number of seconds, got 0",
            "a timeout of another type": "TypeError\tmain.lua:9\tPool.map: timeout must be a positive number of seconds, got string",
            "retries = -1": "ValueError\tmain.lua:10\tPool.map: retries must be a non-negative integer, got -1",
            "a halt policy that is none": "ValueError\tmain.lua:11\tPool.map: halt must be \"never\", \"soon,fail=N\", \"now,fail=N\", \"soon,fail=P%\" or \"now,fail=P%\" (N >= 1, 0 < P <= 100), got \"bogus\"",
            "fail=0": "ValueError\tmain.lua:12\tPool.map: halt must be…",
            "more than 100%": "ValueError\tmain.lua:13\tPool.map: halt must be…",
            "resume without a joblog": "ValueError\tmain.lua:14\tPool.imap: resume = true needs a joblog (the file that says which items are done)",
            "on_error not a function": "TypeError\tmain.lua:15\tPool.map: on_error must be a function, got string",
            "joblog not a name": "TypeError\tmain.lua:16\tPool.map: joblog must be a file name, got number",
            "an unknown option lists the new ones": "TypeError\tmain.lua:17\tPool.map: unknown option bogus (use chunksize, window, timeout, retries, halt, on_error, joblog, resume)",
            "a joblog that cannot be written": "ValueError\tmain.lua:18\tPool.map: cannot write the joblog /dev/full: No space left on device",
            "a joblog that cannot be opened": "ValueError\tmain.lua:19\tPool.map: cannot open the joblog: /nonexistent/dir/log.tsv: No such file or directory",
        ])
    }
}

/// The process whose pid an item's shell wrote to `pidFile` (`echo $$ >
/// ...; exec sleep 60`) ends within 10 s (a zombie counts as ended); killed
/// here if not, so a failing test leaves nothing behind.
func expectTheItemsProcessGone(pidFile: String, _ r: RunResult, _ comment: String) {
    let text = (try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? ""
    guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
        Issue.record("the item's shell wrote no pid: \(text)\n\(r)")
        return
    }
    func running() -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(after: close)...].hasPrefix(" Z")
    }
    let gone = waitUntil(timeout: 10) { !running() }
    if !gone { kill(pid, SIGKILL) }
    #expect(gone, "\(comment)\n\(r)")
}
