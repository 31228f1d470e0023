import Foundation
import Testing

// Issue 12: a name given to an object shows in tostring, its errors and
// Deadlock reports; every timeout is read one way (negative means 0, a huge
// one means none).

@Suite("Names and timeouts in messages")
struct NamesAndTimeoutsTests {
    @Test func namesShowInTostringErrorsAndDeadlockReports() {
        let r = runScript("""
            local q = jobrun.Queue{name = "results"}
            print(tostring(q))
            local ok, e = pcall(q.get, q, false); print(e.message)
            local l = jobrun.Lock{name = "guard"}
            print(tostring(l)); ok, e = pcall(l.release, l); print(e.message)
            local a, b = jobrun.Pipe{name = "ctl"}
            print(tostring(a)); a:close(); ok, e = pcall(a.send, a, 1); print(e.message)
            print(tostring(jobrun.Event{name = "go"}), tostring(jobrun.Semaphore{value = 2, name = "slots"}))
            print(tostring(jobrun.Barrier{parties = 2, name = "sync"}), tostring(jobrun.Condition{name = "cv"}))
            print(tostring(jobrun.JoinableQueue{name = "work"}), tostring(jobrun.RLock{name = "r"}))
            ok, e = pcall(q.get, q)
            print(e.kind, e.message:find('Queue#1 "results".get', 1, true) ~= nil)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "a named Queue's tostring": "Queue#1 \"results\" (0 items)",
            "a named Queue's Empty message": "Queue#1 \"results\" is empty",
            "a named Lock's tostring": "Lock#2 \"guard\" (unlocked)",
            "a named Lock's error message": "Lock#2 \"guard\".release: the lock is not held",
            "a named Pipe end's tostring": "Connection#3.a \"ctl\"",
            "a named Pipe end's error message": "Connection#3.a \"ctl\".send: this end is closed",
            "named Event and Semaphore": "Event#6 \"go\" (clear)\tSemaphore#7 \"slots\" (value 2)",
            "named Barrier and Condition": "Barrier#8 \"sync\" (0 of 2 waiting)\tCondition#10 \"cv\"",
            "named JoinableQueue and RLock": "JoinableQueue#11 \"work\" (0 items)\tRLock#12 \"r\" (unlocked)",
            "a Deadlock message names the queue by its name": "Deadlock\ttrue",
        ])
    }

    @Test func aDeadlockReportNamesTheNamedObject() {
        let r = runScript("""
            local l = jobrun.Lock{name = "guard"}
            local done = jobrun.Event{name = "done"}
            l:acquire()
            local p = jobrun.Process{target = function() l:acquire() end}
            p:start()
            local ok, e = pcall(done.wait, done)
            print(e.kind)
            print(e.message:find('Event#2 "done".wait', 1, true) ~= nil, e.message:find('Lock#1 "guard".acquire', 1, true) ~= nil)
            p:kill(); p:join(10)
            """, timeout: 30)
        expectLines(r, [
            "waiting on an Event no one can set is a Deadlock": "Deadlock",
            "the report names the named Event and the named Lock the worker waits for": "true\ttrue",
        ])
    }

    @Test func aNegativeTimeoutMeansZeroEverywhere() {
        let r = runScript("""
            local function kind(f, ...) local ok, e = pcall(f, ...); return ok and tostring(e) or e.kind end
            local q, jq = jobrun.Queue(), jobrun.JoinableQueue()
            local l, s, ev = jobrun.Lock(), jobrun.Semaphore(0), jobrun.Event()
            local c = jobrun.Condition()
            local a, b = jobrun.Pipe()
            print(kind(q.get, q, true, -1), kind(jq.put, jq, 1, true, -1), kind(jq.join, jq, -1))
            l:acquire()
            print(kind(l.acquire, l, true, -1), kind(s.acquire, s, true, -1), kind(ev.wait, ev, -1))
            c:acquire(); print(kind(c.wait, c, -1), kind(c.wait_for, c, function() return false end, -1)); c:release()
            print(kind(a.recv, a, -1), kind(a.poll, a, -1))
            local p = jobrun.Process{target = function() jobrun.sleep(20) end}
            p:start(); print(kind(p.join, p, -1)); p:kill(); p:join(10)
            local pool = jobrun.Pool{workers = 1}
            local never = jobrun.Event()
            local res = pool:apply_async(function() never:wait(20); return 1 end)   -- unfinished until terminate
            print(kind(res.get, res, -1), kind(res.wait, res, -1))
            pool:terminate()
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "Queue.get, JoinableQueue.put and join with timeout -1 return at once": "Empty\tnil\tfalse",
            "Lock.acquire, Semaphore.acquire and Event.wait with -1 return false at once": "false\tfalse\tfalse",
            "Condition.wait and wait_for with -1 return false at once": "false\tfalse",
            "Pipe recv and poll with -1 return at once": "Timeout\tfalse",
            "Process.join with -1 returns false at once": "false",
            "AsyncResult get and wait with -1 return at once": "Timeout\tfalse",
        ])
    }

    @Test func aHugeTimeoutWaitsAsIfThereWereNone() {
        let r = runScript(luaWaits + """
            local q = jobrun.Queue()
            local me = jobrun.current_process().pid
            local p = jobrun.Process{target = function() assert(asleep(me)); q:put("late") end}   -- once get waits
            p:start()
            print(q:get(true, 1e300), jobrun.Lock():acquire(true, math.huge), jobrun.Lock():acquire(true, 1e300))
            print(p:join(1e300), jobrun.Event():wait(0) )
            local a, b = jobrun.Pipe(); b:send(1); print(a:recv(1e300), a:poll(1e300 * 0), b:poll(-math.huge))
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "get with 1e300 waits for the item; acquire with math.huge and 1e300 take a free lock": "late\ttrue\ttrue",
            "join with 1e300 waits for the end; wait(0) is still zero": "true\tfalse",
            "recv with 1e300 gets the message; poll with NaN and -inf is zero": "1\tfalse\tfalse",
        ])
    }
}
