import Foundation
import Testing

// Issue 12: Condition.wait returns holding its lock, always, and notify(n)
// wakes at most n of the waiters.

@Suite("Condition keeps its lock and counts notify")
struct ConditionTests {
    @Test func aTimedWaitReturnsHoldingTheLockEvenWhenReacquiringTakesLonger() {
        // The waiter times out after 0.2 s while a child holds the lock for
        // 0.8 s: wait returns only once it has the lock back.
        let r = runScript("""
            local c = jobrun.Condition()
            local ready, held = jobrun.Event(), jobrun.Event()
            local p = jobrun.Process{target = function()
              ready:set(); c:acquire(); held:set(); jobrun.sleep(0.8); c:release()   -- the long hold is the case
            end}
            c:acquire(); p:start(); ready:wait(10)
            local t0 = jobrun.time()
            local notified = c:wait(0.2)
            local waited = jobrun.time() - t0
            print(notified, c:_lock():_is_owned(), held:is_set(), not held:is_set() or waited >= 0.6)
            c:release(); p:join(10); print(p.exitcode)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "the timed wait returns false, holding the lock again, only after the child released it": "false\ttrue\ttrue\ttrue",
            "the child ends with 0": "0",
        ])
    }

    @Test func notifyOneWakesOneOfThreeWaiters() {
        let r = runScript("""
            local c = jobrun.Condition()
            local woke = jobrun.Value(0)
            local waiting = jobrun.Semaphore(0)
            local procs = {}
            for i = 1, 3 do
              procs[i] = jobrun.Process{target = function()
                c:acquire(); waiting:release()
                local notified = c:wait(20)
                woke:add(1); c:release()
              end}
              procs[i]:start()
            end
            for _ = 1, 3 do assert(waiting:acquire(true, 10)) end
            c:acquire(); c:notify(1); c:release()
            local t0 = jobrun.time()
            while woke:get() < 1 and jobrun.time() - t0 < 10 do jobrun.sleep(0.01) end
            jobrun.sleep(1.5)   -- a window longer than any sleep slice: no one else may wake
            print(woke:get())
            c:acquire(); c:notify(2); c:release()
            for _, p in ipairs(procs) do p:join(20) end
            print(woke:get())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "notify(1) wakes exactly one of three waiters": "1",
            "notify(2) wakes the other two": "3",
        ])
    }
}
