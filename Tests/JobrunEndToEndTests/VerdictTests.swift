import Foundation
import Testing

/// A Deadlock or WorkerDied verdict is raised once, in the waits it
/// concerns; a script that catches it goes on, and later waits are judged
/// afresh.
@Suite("Verdicts a script can recover from")
struct VerdictTests {
    @Test func aCaughtWorkerDiedInJoinDoesNotPoisonLaterJoins() {
        let r = runScript("""
            local q = jobrun.JoinableQueue()
            local taken = jobrun.Event()
            local c = jobrun.Process{name = "consumer-1", target = function() q:get(); taken:set(); jobrun.sleep(30) end}
            c:start()
            q:put("a"); q:put("b")
            print(taken:wait(10))
            c:kill()
            -- "b" is queued and no one can take it: the monitor's verdict
            local ok, e = pcall(q.join, q)
            print(ok, e.kind, e.message:find("consumer-1 (pid " .. c.pid .. ") was killed by signal 9", 1, true) ~= nil)
            local function consumer() for _ in q:items() do end end
            local c2 = jobrun.Process{name = "consumer-2", target = consumer, daemon = true}
            c2:start()
            print(q:join())                         -- "a" was reported: it counts as done now
            -- a consumer that dies holding the only unfinished item: join raises at once, once
            c2:terminate(); c2:join()
            q:put("c")
            local c3 = jobrun.Process{name = "consumer-3", target = function() q:get(); os.exit(3) end}
            c3:start(); c3:join()
            ok, e = pcall(q.join, q)
            print(ok, e.kind, e.message:match("1 item will never be marked done: consumer%-3") ~= nil)
            print(q:join())
            q:put("d")
            local c4 = jobrun.Process{name = "consumer-4", target = consumer, daemon = true}
            c4:start()
            print(q:join())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the consumer took an item": "true",
            "join raises WorkerDied naming consumer-1 killed by signal 9": "false\tWorkerDied\ttrue",
            "a later join succeeds once a new consumer drains the queue": "true",
            "a consumer that exits holding the only unfinished item: join raises at once": "false\tWorkerDied\ttrue",
            "once: the next join succeeds": "true",
            "a new item and consumer: join succeeds": "true",
        ])
    }

    @Test func aCaughtDeadlockInGetLeavesTheQueueUsable() {
        let r = runScript(luaWaits + """
            local q = jobrun.Queue()
            local ok, e = pcall(q.get, q)
            print(ok, e.kind)
            q:put("mine")
            print(q:get())
            local me = jobrun.current_process().pid
            local p = jobrun.Process{target = function() assert(asleep(me)); q:put("late") end}
            p:start()
            print(q:get())                           -- waits for it: judged afresh
            p:join()
            ok, e = pcall(q.get, q)                   -- and a new deadlock is found again
            print(ok, e.kind)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "get on an empty queue no one feeds is a Deadlock": "false\tDeadlock",
            "the queue still works after": "mine",
            "a later get waits for a worker's put: judged afresh": "late",
            "and a new deadlock is found again": "false\tDeadlock",
        ])
    }

    /// The main process joins a worker that waits on an empty queue: the
    /// verdict is raised in both, twice, and the worker is still joinable.
    @Test func aVerdictInAJoinOfAProcessLeavesItJoinable() {
        let r = runScript("""
            local q, back = jobrun.Queue(), jobrun.Queue()
            local w = jobrun.Process{name = "worker", target = function()
              for i = 1, 2 do back:put(select(2, pcall(q.get, q)).kind) end
              error("gave up", 0)                    -- ends with status 1: seen by the join below
            end}
            w:start()
            for i = 1, 2 do
              local ok, e = pcall(w.join, w)
              print(ok, e.kind, back:get())
            end
            print(w:join(), w.exitcode)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the worker's get and main's join both get a Deadlock": "false\tDeadlock\tDeadlock",
            "again on the second try": "false\tDeadlock\tDeadlock",
            "the worker is still joinable; its exit code is 1": "true\t1",
        ])
    }

    /// A party that gets a verdict leaves the barrier: the next two parties
    /// open it together.
    @Test func aBarrierPartyThatCatchesADeadlockLeavesTheBarrier() {
        let r = runScript("""
            local b = jobrun.Barrier(2)
            print(select(2, pcall(b.wait, b)).kind, b:n_waiting())
            local got = jobrun.Queue()
            local w = jobrun.Process{target = function() got:put(b:wait()) end}
            w:start()
            local mine = b:wait()
            print(mine + got:get(), b:broken())
            w:join()
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a lone party's wait is a Deadlock and leaves the barrier": "Deadlock\t0",
            "the next two parties open it together, unbroken": "1\tfalse",
        ])
    }

    /// After a verdict, a script that retries a timed get (a worker's usual
    /// loop) waits each timeout out instead of spinning: the verdict is not
    /// a run-wide flag that turns every later sleep into a return.
    @Test func nothingSpinsAfterAVerdict() {
        let r = runScript("""
            local q = jobrun.Queue()
            print(select(2, pcall(q.get, q)).kind)
            local t0, c0, tries, kinds = jobrun.time(), os.clock(), 0, {}
            while jobrun.time() - t0 < 0.6 do
              local ok, e = pcall(q.get, q, true, 0.1)
              tries = tries + 1
              kinds[e.kind] = true
            end
            local cpu = os.clock() - c0
            print(kinds.Empty, kinds.Deadlock, tries <= 7, cpu < 0.1, tries, cpu)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the first get is a Deadlock": "Deadlock",
            "timed gets after it end with Empty, no Deadlock, at most 7 tries and 0.1 s of CPU in 0.6 s": "true\tnil\ttrue\ttrue\t…",
        ])
    }

    /// A verdict names every waiter of one deadlock. The main process that
    /// raises its own and ends lets a child judged with it write its own
    /// report first (JOBRUN_TEST_PAUSE_AT holds the child half a second just
    /// before it raises: before the fix, the main process's end stopped it).
    @Test func aChildJudgedInTheSameDeadlockWritesItsOwnReport() {
        let r = runScript("""
            local q = jobrun.Queue()
            local c = jobrun.Process{target = function() q:get() end, name = "starved"}
            c:start()
            c:join()
            """, environment: ["JOBRUN_TEST_PAUSE_AT": "verdict-raising@starved"], timeout: 60)
        expectStatus(r, 1)
        #expect(r.stderr.contains("jobrun.Deadlock: join of starved: every process of the run is waiting"), "\(r.stderr)")
        #expect(r.stderr.contains("Process starved (pid "), "the child's own report: \(r.stderr)")
        #expect(r.stderr.contains("jobrun.Deadlock: Queue#1.get: every process of the run is waiting"), "\(r.stderr)")
    }

    /// A process that caught its verdict and feeds the queue a judged waiter
    /// slept on does not feed that waiter: the verdict is raised in every
    /// wait it names before any process acts on it (JOBRUN_TEST_PAUSE_AT
    /// holds the worker half a second after the verdict woke it: before the
    /// fix, the stuck task took "fed" and the next task starved).
    @Test func aWaiterJudgedInADeadlockRaisesItBeforeOthersGoOn() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local q = jobrun.Queue()
            local ok, e = pcall(pool.map, pool, function() return q:get() end, {1})
            print(ok, e.kind)
            q:put("fed")
            print(pool:apply(function() return q:get() end))
            pool:close(); pool:join()
            """, environment: ["JOBRUN_TEST_PAUSE_AT": "verdict-woken@PoolWorker-1"], timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the task blocked on a queue nobody feeds is a Deadlock": "false\tDeadlock",
            "the item put after the verdict goes to the next task": "fed",
        ])
    }
}

/// A waiter that was released and then stopped (SIGSTOP) before it could run
/// is not stuck: it goes on when continued, so no Deadlock is declared.
@Suite("No false alarm for a stopped, released waiter")
struct StoppedWaiterTests {
    /// `setup` makes `w` (a Process waiting in `wait`) and releases it with
    /// `release` while it is stopped; `done` is set by `w` once released. The
    /// main process's `done:wait()` has no timeout on purpose: only an
    /// untimed wait is judged by the monitor (the test's own timeout bounds it).
    private func run(_ setup: String, release: String) -> RunResult {
        runScript(luaWaits + """
            local done = jobrun.Event()
            \(setup)
            w:start()
            assert(asleep(w.pid), "the waiter never slept")
            os.execute("kill -STOP " .. w.pid)
            \(release)
            -- Stopped for a second, the behaviour under test: long enough for the
            -- monitor to look (it must not call the released waiter stuck).
            os.execute("(sleep 1; kill -CONT " .. w.pid .. ") &")
            print(done:wait())
            w:join()
            """, timeout: 60)
    }

    @Test func barrier() {
        let r = run("""
            local b = jobrun.Barrier(2)
            local w = jobrun.Process{name = "party", target = function() b:wait(); done:set() end}
            """, release: "b:wait()")
        expectStatus(r)
        #expect(r.stdout == "true\n")
    }

    @Test func condition() {
        let r = run("""
            local cond = jobrun.Condition()
            local w = jobrun.Process{name = "waiter", target = function()
              cond:with(function() cond:wait() end); done:set()
            end}
            """, release: "cond:with(function() cond:notify() end)")
        expectStatus(r)
        #expect(r.stdout == "true\n")
    }

    /// A set then clear releases the waiters, as CPython's Event does.
    @Test func eventSetThenCleared() {
        let r = run("""
            local e = jobrun.Event()
            local w = jobrun.Process{name = "waiter", target = function() e:wait(); done:set() end}
            """, release: "e:set(); e:clear()")
        expectStatus(r)
        #expect(r.stdout == "true\n")
    }
}

/// The exit status tells the truth: a worker that failed without the script
/// being told makes the run fail, with a one-line summary.
@Suite("Failed workers the script never saw")
struct UnseenFailureTests {
    @Test func unseenFailuresMakeTheRunFail() {
        let r = runScript("""
            local started = jobrun.Event()
            local a = jobrun.Process{name = "consumer-1", target = function() error("boom") end}
            local b = jobrun.Process{name = "consumer-2", target = function() started:set(); jobrun.sleep(30) end}
            a:start(); b:start()
            started:wait(10)
            os.execute("kill -9 " .. b.pid)       -- not through b:kill(): the script did not send it
            print("main ends")
            """, timeout: 60)
        expectStatus(r, 1)
        #expect(r.stdout == "main ends\n")
        // One line, last; the workers in the order of their records.
        let last = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("jobrun: 2 workers failed unseen: "), "\(r.stderr)")
        #expect(last.range(of: #"consumer-1 \(pid \d+\) exited with status 1(, |$)"#, options: .regularExpression) != nil, "\(r.stderr)")
        #expect(last.range(of: #"consumer-2 \(pid \d+\) was killed by signal 9 \(SIGKILL\)(, |$)"#, options: .regularExpression) != nil, "\(r.stderr)")
    }

    @Test func failuresTheScriptSawOrCausedLeaveTheRunGood() {
        let r = runScript(luaWaits + """
            local started = jobrun.Event()
            local function sleeper() started:set(); jobrun.sleep(30) end
            local a = jobrun.Process{target = function() error("boom") end}
            a:start(); a:join()                         -- seen through join
            local b = jobrun.Process{target = function() os.exit(4) end}
            b:start()
            assert(wait_until(function() return b.exitcode ~= nil end))   -- seen through exitcode
            local c = jobrun.Process{target = sleeper}
            c:start(); started:wait(10); started:clear()
            c:kill()                                    -- the script's own signal
            local d = jobrun.Process{target = sleeper}
            d:start(); started:wait(10); started:clear()
            d:terminate()
            local e = jobrun.Process{target = sleeper, daemon = true}
            e:start(); started:wait(10)                 -- stopped at the end of the run
            -- a pool worker killed while running a task: its WorkerDied is raised in the caller
            local pool = jobrun.Pool{workers = 1}
            local pids = pool:map(function() return jobrun.current_process().pid end, {1})
            local ok, err = pcall(pool.map, pool, function() os.execute("kill -9 " .. jobrun.current_process().pid); jobrun.sleep(30) end, {1})
            print(ok, err.kind)
            pool:close(); pool:join()
            """, timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "false\tWorkerDied\n")
        #expect(!r.stderr.contains("failed unseen"), "\(r.stderr)")
    }

    /// Two consumers die holding items: join's WorkerDied names both, and a
    /// script that catches it and goes on ends with status 0.
    @Test func aWorkerDiedInJoinTellsOfEveryConsumerThatDied() {
        let r = runScript("""
            local q = jobrun.JoinableQueue()
            local taken = jobrun.Semaphore(0)
            local cs = {}
            for i = 1, 2 do
              cs[i] = jobrun.Process{name = "consumer-" .. i, target = function() q:get(); taken:release(); jobrun.sleep(30) end}
              cs[i]:start()
            end
            q:put(1); q:put(2)
            for i = 1, 2 do assert(taken:acquire(true, 10)) end
            for i = 1, 2 do os.execute("kill -9 " .. cs[i].pid) end
            local ok, e = pcall(q.join, q)
            print(ok, e.kind, e.message:match("^JoinableQueue#1.join: 2 items will never be marked done: ") ~= nil)
            for i = 1, 2 do
              print(e.message:find("consumer-" .. i .. " (pid " .. cs[i].pid .. ") was killed by signal 9 (SIGKILL)", 1, true) ~= nil)
            end
            print(q:join())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "join raises one WorkerDied for two items": "false\tWorkerDied\ttrue",
            "it names consumer-1 killed by SIGKILL": "true",
            "it names consumer-2 killed by SIGKILL": "true",
            "a later join succeeds: those items count as done": "true",
        ])
    }

    /// Twelve consumers die holding items, more than join's message names
    /// (8): the WorkerDied tells of all of them ("4 more"), so none is
    /// reported again as failed unseen once the script caught it.
    @Test func aWorkerDiedAboutMoreThanEightConsumersMarksEveryOneSeen() {
        let r = runScript("""
            local q = jobrun.JoinableQueue()
            local taken = jobrun.Semaphore(0)
            local cs = {}
            for i = 1, 12 do
              cs[i] = jobrun.Process{name = "consumer-" .. i, target = function() q:get(); taken:release(); jobrun.sleep(30) end}
              cs[i]:start()
            end
            for i = 1, 12 do q:put(i) end
            for i = 1, 12 do assert(taken:acquire(true, 10)) end
            for i = 1, 12 do os.execute("kill -9 " .. cs[i].pid) end
            local raised = 0
            repeat                                     -- the deaths may be told in more than one WorkerDied
              local ok, e = pcall(q.join, q)
              if not ok then assert(e.kind == "WorkerDied", tostring(e)); raised = raised + 1 end
            until ok or raised > 12
            print(raised >= 1 and raised <= 12)
            """, timeout: 60)
        #expect(!r.timedOut)
        #expect(r.stdout == "true\n", "\(r.stderr)")
        expectStatus(r)
        #expect(!r.stderr.contains("failed unseen"), "\(r.stderr)")
    }

    /// Past 4,096 processes the records of ended ones are reused: a failure
    /// the script never saw is still counted once its record is reused.
    @Test func unseenFailuresWhoseRecordsWereReusedAreCounted() {
        let r = runScript(luaWaits + """
            for i = 1, 4100 do
              local p = jobrun.Process{name = "failing-" .. i, target = function() os.exit(3) end}
              p:start()
              assert(wait_until(function() return not p:is_alive() end))   -- ended, not seen how
            end
            print("main ends")
            """, timeout: 240)
        #expect(!r.timedOut)
        #expect(r.status == 1, "\(r.stderr.suffix(2000))")
        #expect(r.stdout == "main ends\n")
        let last = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("jobrun: 4100 workers failed unseen: "), "\(last.prefix(300))")
        #expect(last.hasSuffix(", and 4090 more"), "\(last.suffix(300))")
        #expect(last.count < 1000, "one short line names the first ten: \(last.prefix(300))")
    }

    @Test func aFailureHiddenFromTheScriptTurnsOsExitZeroIntoOne() {
        let r = runScript(luaWaits + """
            local p = jobrun.Process{name = "quiet", target = function() error("boom") end}
            p:start()
            assert(wait_until(function() return not p:is_alive() end))   -- is_alive tells that it ended, not how
            os.exit(0)
            """, timeout: 60)
        expectStatus(r, 1)
        #expect(r.stderr.contains("jobrun: 1 worker failed unseen: quiet (pid "), "\(r.stderr)")
    }
}
