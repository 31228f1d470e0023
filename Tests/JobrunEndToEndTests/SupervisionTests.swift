import Foundation
import Testing

/// Where Python's multiprocessing hangs forever, jobrun reports.
@Suite("Nothing hangs silently")
struct SupervisionTests {
    @Test func putOnAFullQueueWithNoConsumerIsADeadlock() {
        let r = runScript("local q = jobrun.Queue(2); q:put(1); q:put(2); q:put(3)", timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:1: jobrun.Deadlock: Queue#1.put: every process of the run is waiting"))
        #expect(r.stderr.contains("MainProcess (pid "))
        #expect(r.stderr.contains("waits in Queue#1.put (the queue is full: 2 of 2)"))
    }

    @Test func joinWithNoConsumerIsADeadlock() {
        let r = runScript("local q = jobrun.JoinableQueue(); q:put(1); print(q:join())", timeout: 30)
        #expect(!r.timedOut && r.status == 1)
        #expect(r.stderr.contains("jobrun.Deadlock"))
        #expect(r.stderr.contains("JoinableQueue#1.join (1 item not marked done, 1 still queued)"))
    }

    @Test func consumerThatDiesHoldingATaskMakesJoinRaiseWorkerDied() {
        let r = runScript(luaWaits + """
            local q = jobrun.JoinableQueue()
            local c = jobrun.Process{name = "consumer-1", target = function() q:get(); os.exit(3) end}
            c:start(); q:put("x"); c:join()
            local ok, e = pcall(q.join, q)
            print(ok, e.kind)
            print(e.message)
            local k = jobrun.Process{name = "killed", target = function() q:get(); jobrun.sleep(30) end}
            q:put("y"); k:start()
            assert(wait_until(function() return q:qsize() == 0 end))   -- k holds "y"
            k:kill(); k:join()
            ok, e = pcall(q.join, q)
            print(e.message:match("killed %(pid %d+%) was killed by signal 9 %(SIGKILL%)") ~= nil)
            """, timeout: 30)
        expectStatus(r)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "false\tWorkerDied")
        #expect(lines.count == 3 && lines[1].contains("1 item will never be marked done: consumer-1 (pid ") && lines[1].contains("exited with status 3"))
        #expect(lines.last == "true")
    }

    @Test func everyProcessBlockedIsReportedWithWhatEachWaitsFor() {
        let r = runScript("""
            local q = jobrun.Queue()
            local l = jobrun.Lock()
            l:acquire()
            local w = jobrun.Process{name = "worker", target = function() l:acquire() end}
            w:start()
            local g = jobrun.Process{name = "getter", target = function() q:get() end}
            g:start()
            w:join()
            """, timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1)
        #expect(r.stderr.contains("worker (pid "))
        #expect(r.stderr.contains("waits in Lock#2.acquire (held by MainProcess (pid "))
        #expect(r.stderr.contains("getter (pid "))
        #expect(r.stderr.contains("waits in Queue#1.get (the queue is empty)"))
        #expect(r.stderr.contains("MainProcess (pid ") && r.stderr.contains("waits in join of process worker"))
    }

    @Test func noFalseAlarmWhileAnyProcessWorksSleepsOrHasADeadline() {
        let r = runScript("""
            local q = jobrun.Queue()
            -- a worker that sleeps, then one that computes: the behaviour under test
            local p = jobrun.Process{target = function() jobrun.sleep(0.6); q:put("slept") end}
            p:start(); print(q:get()); p:join()
            local busy = jobrun.Process{target = function()
              local t = jobrun.time(); while jobrun.time() - t < 0.6 do end; q:put("busy")
            end}
            busy:start(); print(q:get()); busy:join()
            local ok, e = pcall(q.get, q, true, 0.6); print(e.kind)
            -- ping-pong: both sides often wait at once, yet progress is made
            local a, b = jobrun.Queue(), jobrun.Queue()
            local pong = jobrun.Process{target = function() for i = 1, 3000 do b:put(a:get() + 1) end end}
            pong:start()
            local v = 0
            for i = 1, 3000 do a:put(v); v = b:get() end
            pong:join()
            print(v)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a worker that sleeps is no deadlock": "slept",
            "a worker that computes is no deadlock": "busy",
            "a get with a deadline ends with Empty, not Deadlock": "Empty",
            "a ping-pong where both sides often wait makes progress": "3000",
        ])
    }

    /// A consumer that ends normally holding an item may have handed it on
    /// (CPython's test_shutdown_nonempty): the item stays unfinished for any
    /// process to mark done, and a join no one can satisfy is a Deadlock.
    /// One killed holding an item lost it: join raises WorkerDied.
    @Test func itemsOfAConsumerThatEndedNormallyStayForOthersToMarkDone() {
        let r = runScript(luaWaits + """
            local q, back = jobrun.JoinableQueue(), jobrun.Queue()
            q:put("a"); q:put("b")
            local taker = jobrun.Process{name = "taker", target = function() back:put(q:get()) end}
            taker:start(); taker:join()
            print(back:get(), taker.exitcode, q:join(0.5))
            q:task_done()
            local quitter = jobrun.Process{name = "quitter", target = function() q:get() end}
            quitter:start(); quitter:join()
            local ok, e = pcall(q.join, q)
            print(ok, e.kind)
            q:task_done()
            local killed = jobrun.Process{name = "killed", target = function() q:get(); jobrun.sleep(60) end}
            q:put("c")
            killed:start()
            assert(wait_until(function() return q:qsize() == 0 end))   -- killed holds "c"
            killed:kill()
            ok, e = pcall(q.join, q, 10)
            print(ok, e.kind)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "a consumer that ended normally holding an item: join with a timeout is false": "a\t0\tfalse",
            "a join no one can satisfy is a Deadlock": "false\tDeadlock",
            "a consumer killed holding an item: join raises WorkerDied": "false\tWorkerDied",
        ])
    }
}

@Suite("Long runs")
struct LongRunTests {
    /// A run that starts more processes than there are records (4096) reuses
    /// the records of ended ones: a process started after that is still
    /// supervised (its deadlock is found) and counted in --stats.
    @Test func moreProcessesThanRecordsStaySupervised() throws {
        let folder = ScratchFolder(prefix: "jobrun-long")
        defer { folder.remove() }
        let json = folder.file("stats.json")
        let r = runScript("""
            for i = 1, 4150 do
              local p = jobrun.Process{target = function() end}
              p:start(); p:join()
            end
            local q = jobrun.Queue()
            local c = jobrun.Process{target = function() q:get() end, name = "starved"}
            c:start()
            c:join()
            print(c.exitcode)
            """, options: ["--stats-json", json], timeout: 120)
        #expect(!r.timedOut, "the starved process was not supervised")
        #expect(r.status == 1, "a deadlocked run ends with status 1: \(r.stderr)")
        #expect(r.stdout == "", "the verdict is raised in the join too")
        #expect(r.stderr.contains("jobrun.Deadlock: join of starved: every process of the run is waiting"), "\(r.stderr)")
        #expect(r.stderr.contains("Process starved (pid "), "\(r.stderr)")
        #expect(r.stderr.contains("jobrun.Deadlock: Queue#1.get: every process of the run is waiting"), "\(r.stderr)")
        let data = try #require(FileManager.default.contents(atPath: json))
        let stats = try #require((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])
        let earlier = try #require(stats["earlier_processes"] as? [String: Any])
        let reused = earlier["count"] as? Int ?? 0
        let listed = (stats["processes"] as? [[String: Any]])?.count ?? 0
        #expect(reused > 0)
        #expect(reused + listed == 4152, "every process is counted once: \(reused) + \(listed)")
    }
}

@Suite("Redelivery")
struct RedeliveryTests {
    @Test func itemsHeldByAKilledConsumerAreDeliveredAgain() {
        let r = runScript("""
            local q = jobrun.JoinableQueue{redeliver = true}
            local seen = jobrun.Dict()
            for i = 1, 20 do q:put(i) end
            q:put(string.rep("big", 20000))   -- a large item is redelivered too
            local holding = jobrun.Event()
            local victim = jobrun.Process{name = "victim", target = function()
              local a = q:get(); q:get()
              seen:update(a, function(n) return (n or 0) + 1 end)
              holding:set()
              jobrun.sleep(30)   -- holds its two items until killed
            end}
            victim:start()
            assert(holding:wait(20))
            victim:kill(); victim:join()
            local c = jobrun.Process{name = "consumer", daemon = true, target = function()
              for item in q:items() do
                local key = type(item) == "string" and "big" or item
                seen:update(key, function(n) return (n or 0) + 1 end)
              end
            end}
            c:start()
            print(q:join(20))
            local all = 0
            for i = 1, 20 do if seen[i] then all = all + 1 end end
            print(all, seen[1], seen[2], seen.big)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "join returns once the items held by the killed consumer were delivered again": "true",
            "all 20 seen; the two it held twice; the big item too": "20\t2\t1\t1",
        ])
    }
}

@Suite("Kill test")
struct KillTests {
    /// scripts/kill-trial.lua SIGKILLs a random consumer mid-run; scripts/killtest runs many more trials.
    @Test(arguments: [true, false])
    func randomConsumerKilledMidRun(redeliver: Bool) {
        let trial = packageRoot.appendingPathComponent("scripts/kill-trial.lua").path
        var outcomes: [String] = []
        for seed in 1...6 {
            let r = runJobrun([trial, redeliver ? "1" : "0", String(seed * 7919)], timeout: 60)
            #expect(!r.timedOut, "trial \(seed) hung")
            let last = r.stdout.split(separator: "\n").last.map(String.init) ?? "(no output, status \(r.status)) \(r.stderr)"
            outcomes.append(last)
            if redeliver {
                #expect(last == "ok 10000/10000", "trial \(seed): \(last)")
            } else {
                #expect(last == "ok 10000/10000" || (last.hasPrefix("workerdied: ") && last.contains("was killed by signal 9 (SIGKILL)")),
                        "trial \(seed): \(last)")
            }
        }
    }
}
