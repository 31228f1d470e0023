import Foundation
import Testing

@Suite("Locks, semaphores, events, barriers, conditions across processes")
struct SyncTests {
    @Test func lockBasicsAndOwnerDeath() {
        let r = runScript("""
            local l = jobrun.Lock()
            print(l:acquire(), l:locked(), l:acquire(false), l:acquire(true, 0.05))
            l:release(); print(l:locked())
            local ok, e = pcall(l.release, l); print(ok, e.kind)
            local p = jobrun.Process{target = function() l:acquire(); os.exit(0) end}
            p:start(); p:join(10)
            print(l:locked(), l:acquire(true, 5))
            l:release()
            print(l:with(function(a, b) return a + b end, 1, 2), l:locked())
            ok, e = pcall(l.with, l, function() error("inside", 0) end)
            print(ok, e, l:locked())
            """)
        expectStatus(r)
        expectLines(r, [
            "acquire takes a free lock; a second acquire fails at once or after its timeout": "true\ttrue\tfalse\tfalse",
            "release frees it": "false",
            "releasing an unlocked Lock is a ValueError": "false\tValueError",
            "a lock whose holder died is taken over with the note 'owner died'": "true\ttrue\towner died",
            "with() returns the function's results and releases": "3\tfalse",
            "with() releases when the function raises, and raises its error": "false\tinside\tfalse",
        ])
    }

    @Test func lockGivesMutualExclusionAcrossProcesses() {
        // Read-modify-write of a file under the lock, as in the ticket lesson.
        let r = runScript("""
            local path = os.tmpname()
            local f = io.open(path, "w"); f:write("0"); f:close()
            local l = jobrun.Lock()
            local workers = {}
            for i = 1, 4 do
              workers[i] = jobrun.Process{target = function()
                for _ = 1, 50 do
                  l:with(function()
                    local f = io.open(path); local n = tonumber(f:read("a")); f:close()
                    f = io.open(path, "w"); f:write(tostring(n + 1)); f:close()
                  end)
                end
              end}
              workers[i]:start()
            end
            for _, w in ipairs(workers) do w:join(60) end
            local f = io.open(path); print(f:read("a")); f:close(); os.remove(path)
            """, timeout: 90)
        #expect(r.stdout == "200\n", "\(r.stderr)")
    }

    @Test func rlockAndSemaphores() {
        let r = runScript(luaWaits + """
            local rl = jobrun.RLock()
            rl:acquire(); rl:acquire(); rl:release(); print(rl:locked()); rl:release(); print(rl:locked())
            rl:acquire()
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function()
              local ok, e = pcall(rl.release, rl); q:put(e.kind)
              q:put(rl:acquire(true, 0.05))
            end}
            p:start(); print(q:get(true, 10), q:get(true, 10)); p:join(10)
            local s = jobrun.BoundedSemaphore(2)
            print(s:acquire(), s:acquire(), s:acquire(false), s:value())
            s:release(); s:release()
            local ok, e = pcall(s.release, s); print(ok, e.kind)
            local u = jobrun.Semaphore(0)
            local me = jobrun.current_process().pid
            jobrun.Process{target = function() assert(asleep(me)); u:release() end}:start()
            print(u:acquire(true, 10), u:value())
            print(pcall(jobrun.Semaphore, -1))
            """)
        expectStatus(r)
        expectLines(r, [
            "an RLock taken twice and released once is still locked": "true",
            "released twice it is free": "false",
            "another process cannot release or take main's RLock": "ValueError\tfalse",
            "a BoundedSemaphore(2) gives two and refuses a third": "true\ttrue\tfalse\t0",
            "releasing it past its bound is a ValueError": "false\tValueError",
            "a Semaphore(0) is acquired once another process releases it": "true\t0",
            "a negative Semaphore is a ValueError": "false\tjobrun.ValueError: Semaphore: value must be >= 0…",
        ])
    }

    @Test func eventsBarriersAndConditions() {
        let r = runScript(luaWaits + """
            local e = jobrun.Event()
            local me = jobrun.current_process().pid
            jobrun.Process{target = function() assert(asleep(me)); e:set() end}:start()   -- once main waits
            print(e:is_set(), e:wait(10), e:is_set(), e:wait(0))
            e:clear(); print(e:wait(0.05))

            local b = jobrun.Barrier(3)
            local out = jobrun.Queue()
            for i = 1, 2 do jobrun.Process{target = function() out:put(b:wait(10)) end}:start() end
            local idx = {b:wait(10), out:get(true, 10), out:get(true, 10)}
            table.sort(idx); print(table.concat(idx, ","))
            local b2 = jobrun.Barrier(2)
            local ok, err = pcall(b2.wait, b2, 0.05); print(ok, err.kind, b2:broken())
            print(pcall(jobrun.Barrier, 0))

            local c = jobrun.Condition()
            local items = jobrun.Queue()
            local waiter = jobrun.Process{target = function()
              c:with(function()
                items:put("waiting")
                items:put(c:wait_for(function() return items:qsize() == 0 end, 10))
              end)
            end}
            waiter:start()
            print(items:get(true, 10))
            c:with(function() c:notify_all() end)
            print(items:get(true, 10))
            waiter:join(10)
            local ok2, e2 = pcall(c.notify, c); print(ok2, e2.kind)
            c:acquire(); print(c:wait(0.05)); c:release()
            """)
        expectStatus(r)
        expectLines(r, [
            "an Event set by another process while main waits: wait returns true and it stays set": "false\ttrue\ttrue\ttrue",
            "a cleared Event's wait times out with false": "false",
            "a Barrier of 3 gives its parties the indices 0, 1 and 2": "0,1,2",
            "a Barrier wait that times out raises Timeout and breaks the barrier": "false\tTimeout\ttrue",
            "a Barrier of 0 parties is a ValueError": "false\tjobrun.ValueError: Barrier: parties must be >= 1, got 0",
            "the condition's waiter runs its predicate under the lock": "waiting",
            "notify_all wakes wait_for, whose predicate is then true": "true",
            "notify without holding the lock is a ValueError": "false\tValueError",
            "a Condition wait with a timeout and no notify returns false": "false",
        ])
    }
}
