import Foundation
import Testing

/// Shared objects live as long as some process holds a handle to them, or
/// an encoded handle is on its way (a queued item, a Dict value, a worker's
/// arguments), and no longer: their memory comes back (docs/architecture.md,
/// "The object table").
@Suite("Objects with a lifetime")
struct ObjectLifetimeTests {
    /// A handle in flight keeps its object alive after every process that
    /// held it dropped it; a worker's objects are freed when it ends; and
    /// once nothing refers to them, everything made comes back.
    @Test func handlesInFlightKeepTheirObjectsAndTheRestIsFreed() {
        let r = runScript("""
            local first = jobrun.Lock()          -- the object table's first chunk is made now
            do                                   -- and this process's list of held objects grown
              local t = {}
              for i = 1, 100 do t[i] = jobrun.Lock() end
              for i = 1, 100 do t[i]:close() end
            end
            local base = jobrun._shm_in_use()
            local outer = jobrun.Queue()
            do
              local inner = jobrun.Queue(); inner:put("through a queue")
              outer:put(inner); inner:close()
            end
            collectgarbage(); collectgarbage()
            local p = jobrun.Process{target = function() local inner = outer:get(); print(inner:get()) end}
            p:start(); p:join()
            local d = jobrun.Dict()
            do local q = jobrun.Queue(); q:put("in a Dict"); d.q = q; q:close() end
            collectgarbage()
            p = jobrun.Process{target = function() print(d.q:get()) end}; p:start(); p:join()
            d.q = nil
            local ev = jobrun.Event()
            do
              local q = jobrun.Queue(); q:put("inherited by fork")
              p = jobrun.Process{target = function() ev:wait(); print(q:get()) end}
              p:start()
            end
            p.target = nil
            collectgarbage(); collectgarbage()
            ev:set(); p:join()
            p = jobrun.Process{target = function() local keep = {} for i = 1, 200 do keep[i] = jobrun.Queue() end end}
            p:start(); p:join()
            do local q = jobrun.Queue(); q:put("a worker's argument"); p = jobrun.Process{script = "child.lua", args = {q}}; p:start() end
            collectgarbage(); collectgarbage()
            p:join()
            do
              local rq = jobrun.JoinableQueue{redeliver = true}
              local l = jobrun.Lock(); rq:put(l); l:close()
              local got = rq:get(); rq:task_done()
              print("redelivered queue item:", got:acquire())
            end
            do
              -- items never taken: freed with their queue, and what they hold with them
              local q = jobrun.Queue()
              for i = 1, 3 do q:put({lock = jobrun.Lock(), dict = jobrun.Dict{n = jobrun.Queue()}}) end
              q:put(string.rep("x", 100000))
            end
            outer = nil; d = nil; ev = nil; p = nil
            collectgarbage(); collectgarbage()
            print("left in use:", jobrun._shm_in_use() - base)
            """, files: ["child.lua": "local q = ...; print(q:get())"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == """
            through a queue
            in a Dict
            inherited by fork
            a worker's argument
            redelivered queue item:\ttrue
            left in use:\t0

            """)
    }

    /// Cycles between shared objects are freed once no process can reach
    /// them, whichever object's last handle goes last, by `close()`,
    /// `<close>` or the collector: a queue holding itself, a Dict and a
    /// queue holding each other, Pipe ends sent through their pipe, a
    /// redeliver queue whose kept copy names it. A cycle some process still
    /// reaches, through an object outside it, stays.
    @Test func cyclesAreFreedWhenNoProcessReachesThem() {
        let r = runScript("""
            do local first <close> = jobrun.Lock() end   -- the object table's first chunk is made now
            do local a, b = jobrun.Pipe() end            -- and this process's list of held Pipe ends
            collectgarbage()
            local base = jobrun._shm_in_use()
            local function left(what) collectgarbage(); collectgarbage(); print(what, jobrun._shm_in_use() - base) end
            do local q <close> = jobrun.Queue(); q:put(q); q:put({again = q}) end
            left("queue holding itself:")
            do
              local d = jobrun.Dict(); local q <close> = jobrun.Queue()
              d.q = q; q:put({d = d}); q:put("more")
              d:close()
            end
            left("dict and queue, the dict closed first:")
            do
              local d <close> = jobrun.Dict(); local q = jobrun.Queue()
              d.q = q; q:put(d)
              local keep = jobrun.Dict(); keep.d = d
              local outside <close> = jobrun.Queue(); outside:put(keep); keep:close()
              do local q2 <close> = q end
              d:close()
              local reached = outside:get()
              print("reached from outside:", reached.d.q:get() == reached.d)
            end
            left("dict and queue, the queue closed first:")
            do local a, b = jobrun.Pipe(); a:send(b); b:send(a); a:send({a, b}) end
            left("pipe ends sent through their pipe:")
            do
              local rq <close> = jobrun.JoinableQueue{redeliver = true}
              rq:put(rq); local got <close> = rq:get()
            end
            left("kept copy naming its queue:")
            -- Leaked, their rings alone would need 1.25 GiB; what stays is
            -- this process's list of the handles it held at once.
            for i = 1, 20000 do
              local q = jobrun.Queue(); local d = jobrun.Dict{q = q}; q:put(d); q:put(q)
            end
            collectgarbage(); collectgarbage()
            print("20000 cycles dropped:", jobrun._shm_in_use() - base < 64 * 1024)
            """, options: ["--shm-limit", "4"], timeout: 300)
        expectStatus(r)
        expectLines(r, [
            "a queue holding itself is freed with its last handle": "queue holding itself:\t0",
            "a Dict and a queue holding each other: the Dict closed first": "dict and queue, the dict closed first:\t0",
            "a cycle reached through an object outside it stays": "reached from outside:\ttrue",
            "the queue closed first: freed once the object outside goes too": "dict and queue, the queue closed first:\t0",
            "Pipe ends sent through their own pipe": "pipe ends sent through their pipe:\t0",
            "a redeliver queue whose kept copy names it": "kept copy naming its queue:\t0",
            "20,000 cycles dropped by the collector fit in 4 MiB": "20000 cycles dropped:\ttrue",
        ])
    }

    /// Cycles made in two processes and dropped in two others, at the same
    /// time: 12,000 objects in 4,000 cycles (a Dict and a queue holding
    /// each other, the queue holding itself too) through a queue of 20.
    /// Leaked, they would need far more than 32 MiB; a look that finds a
    /// lock busy (its own cycle's, held by the other process's look) is
    /// made again, so none is left.
    @Test func cyclesDroppedByOtherProcessesAreFreed() {
        let r = runScript("""
            do local first <close> = jobrun.Lock() end
            collectgarbage()
            local base = jobrun._shm_in_use()
            local Q = jobrun.Queue(20)
            local N = 3000
            local ps = {}
            for w = 1, 2 do
              ps[#ps + 1] = jobrun.Process{target = function()
                for i = 1, N do
                  local c <close> = jobrun.Queue(); local d <close> = jobrun.Dict()
                  d.c = c; c:put(d); c:put(c)
                  Q:put(c)
                end
              end}
              ps[#ps + 1] = jobrun.Process{target = function()
                for i = 1, N do
                  local c <close> = Q:get()
                  local d <close> = c:get()
                  local c2 <close> = c:get()
                  assert(c2 == c and d.c == c)
                  c:put(d)                                   -- still a cycle
                  if i % 3 == 0 then d.c = nil end           -- or broken by hand
                  if i % 50 == 0 then collectgarbage() end   -- the handles d.c made
                end
              end}
            end
            for _, p in ipairs(ps) do p:start() end
            local ok = true
            for _, p in ipairs(ps) do p:join(); ok = ok and p.exitcode == 0 end
            print("every worker ended well:", ok)
            Q = nil; collectgarbage(); collectgarbage()
            print("left in use:", jobrun._shm_in_use() - base)
            """, options: ["--shm-limit", "32"], timeout: 300)
        expectStatus(r)
        expectLines(r, [
            "no worker met a freed object or ran out of memory": "every worker ended well:\ttrue",
            "every cycle was freed": "left in use:\t0",
        ])
    }

    /// `close()`, `<close>` and `__gc` release a handle once; a closed
    /// handle cannot be used or sent. A Queue's `close()` keeps its meaning
    /// (end of stream): `<close>` releases its handle.
    @Test func closedHandlesAreClearErrors() {
        let r = runScript("""
            do local first <close> = jobrun.Lock() end   -- the object table's first chunk is made now
            local base = jobrun._shm_in_use()
            local l = jobrun.Lock(); l:close(); l:close()
            print(pcall(l.acquire, l))
            local q = jobrun.Queue()
            local ok, e = pcall(function() local l2 = jobrun.Lock(); l2:close(); q:put(l2) end)
            print(ok, e.kind, e.message)
            do
              local d <close> = jobrun.Dict()
              local q2 <close> = jobrun.Queue()
              q2:put(1)
            end
            local v = jobrun.Value(3); v:close()
            print(pcall(v.get, v))
            print(tostring(v), tostring(l))
            q:close(); q = nil; collectgarbage()
            print("left in use:", jobrun._shm_in_use() - base)
            """)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == """
            false\tjobrun.TypeError: acquire: expected a Lock or RLock as self (use obj:acquire(...)), got a closed handle (jobrun.Lock: close() or <close> released it)
            false\tTypeError\tQueue#3.put: item: cannot send a closed handle (close() or <close> released it)
            false\tjobrun.TypeError: get: expected a Value as self (use v:get(...)), got a closed handle (jobrun.Value: close() or <close> released it)
            jobrun.Value (closed handle)\tjobrun.Lock (closed handle)
            left in use:\t0

            """)
    }

    /// Made and dropped in a loop, 200,000 objects (queues holding an item,
    /// dicts holding a queue, locks, conditions) and 100 pools fit in 4 MiB
    /// of shared memory: without freeing, the queues' rings alone would need
    /// 2.5 GiB. No script closes them: handles are collected, and a
    /// constructor short of memory collects garbage before it gives up.
    @Test func makingAndDroppingObjectsRunsInBoundedMemory() {
        let r = runScript("""
            local made = 0
            for i = 1, 40000 do
              local q = jobrun.Queue(); q:put(i)
              local d = jobrun.Dict(); d.q = q
              local l = jobrun.Lock()
              local c = jobrun.Condition(l)
              made = made + 5                     -- c's lock link, d's update lock: no more
            end
            for i = 1, 100 do
              local pool = jobrun.Pool{workers = 1}
              assert(pool:map(function(x) return x + 1 end, {1, 2})[2] == 3)
              pool:close(); pool:join()
            end
            print(made, jobrun._shm_in_use() <= 4 * 1024 * 1024)
            """, options: ["--shm-limit", "4"], timeout: 300)
        #expect(!r.timedOut)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "200000\ttrue\n")
    }

    /// 100,000 Pipes made, each with a message sent through it, and
    /// dropped: their ends are freed once no process holds them (their
    /// queues' rings alone would need far more than 4 MiB), and the
    /// holders' lists do not grow. No script closes them: handles are
    /// collected. Half of them are sent to a child, which reads them after
    /// the parent dropped its handles (a reference per holding process).
    @Test func pipesAreFreedWhenTheirLastHolderDropsThem() {
        let r = runScript("""
            local made = 0
            for i = 1, 100000 do
              local a, b = jobrun.Pipe(i % 2 == 0)
              b:send(i)
              assert(a:recv() == i)
              made = made + 1
            end
            local q = jobrun.Queue()
            local done = jobrun.Event()
            local p = jobrun.Process{target = function()
              local got = 0
              for i = 1, 20 do
                local a = q:get()
                got = got + a:recv()
                assert(not pcall(a.recv, a, 0))  -- EOF: the parent dropped the other end
              end
              print("child read", got)
            end}
            p:start()
            for i = 1, 20 do
              local a, b = jobrun.Pipe()
              b:send(i)
              q:put(a)
            end
            collectgarbage(); collectgarbage()   -- the parent's handles to both ends go
            p:join()
            do
              local a, b = jobrun.Pipe()
              local child = jobrun.Process{target = function() b:send("from a fork"); print("fork got", b:recv()) end}
              child:start()
              b = nil; collectgarbage(); collectgarbage()   -- the child still holds its copy of b
              print(a:recv()); a:send("back")
              child:join()
            end
            q = nil; p = nil
            collectgarbage(); collectgarbage()
            print(made, jobrun._shm_in_use() <= 4 * 1024 * 1024)
            """, options: ["--shm-limit", "4"], timeout: 300)
        #expect(!r.timedOut)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "child read\t210\nfrom a fork\nfork got\tback\n100000\ttrue\n")
    }

    /// --stats still counts the queues freed during the run, summed by
    /// where they were made and their name; the main process's own objects
    /// are not freed at its end (they show as they are).
    @Test func statsCountFreedQueues() {
        let r = runScript("""
            for i = 1, 3 do
              local q <close> = jobrun.Queue{name = "scratch"}
              q:put(i); q:get()
            end
            local kept = jobrun.Queue{name = "kept"}
            kept:put(1)
            """, options: ["--stats"])
        #expect(r.status == 0, "\(r.stderr)")
        let rows = r.stderr.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(rows.contains { $0.hasPrefix("kept ") && $0.contains("main.lua:5 1 ") }, "\(r.stderr)")
        #expect(rows.contains { $0.hasPrefix("scratch (3 freed) ") && $0.contains("main.lua:2 3 ") }, "\(r.stderr)")
    }

    /// The kept copy of a redeliver queue's item holds the references of
    /// its handles: the taker dropped its handle to the lock and was killed,
    /// no one else held it, and the item delivered again still names it.
    @Test func aKeptCopyKeepsItsObjectsAcrossItsTakersDeath() {
        let r = runScript("""
            local q = jobrun.JoinableQueue{redeliver = true}
            do local l = jobrun.Lock(); q:put({lock = l}); l:close() end
            collectgarbage()
            local got = jobrun.Event()
            local p = jobrun.Process{name = "taker", target = function()
              local item = q:get(); item.lock = nil; collectgarbage(); got:set(); jobrun.sleep(60)
            end}
            p:start()
            assert(got:wait(30))
            p:kill(); p:join()
            local item = q:get(true, 30)
            print("delivered again:", item.lock:acquire(false))
            q:task_done()
            """)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "delivered again:\ttrue\n")
    }

    /// A process killed with SIGKILL drops nothing itself: the monitor
    /// drops the references it held (listed in the arena, jr_obj_holdings),
    /// so what only it held is freed.
    @Test func whatAKilledProcessHeldIsFreed() {
        let r = runScript("""
            do local first <close> = jobrun.Lock() end
            local ready = jobrun.Event()
            local base = jobrun._shm_in_use()
            local p = jobrun.Process{name = "holder", target = function()
              local keep = {}
              for i = 1, 50 do keep[i] = jobrun.Queue(); keep[i]:put(i) end
              keep.d = jobrun.Dict{q = keep[1]}
              ready:set(); jobrun.sleep(60)
            end}
            p:start(); assert(ready:wait(30)); p:kill(); p:join()
            -- the monitor settles the death on its own time: poll, bounded
            local deadline = jobrun.time() + 30
            while jobrun._shm_in_use() ~= base and jobrun.time() < deadline do jobrun.sleep(0.01) end
            print("exit", p.exitcode, "left in use:", jobrun._shm_in_use() - base)
            """)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "exit\t-9\tleft in use:\t0\n")
    }

    /// A process killed while it frees an object (the last reference gone,
    /// its blocks going back) leaves the object's remains allocated, never
    /// a damaged allocator: the run goes on making and freeing objects.
    @Test func killedWhileFreeingAnObject() {
        let r = runScript("""
            local p = jobrun.Process{name = "victim", target = function()
              local q = jobrun.Queue(); q:put("x"); q = nil
              collectgarbage(); collectgarbage()
            end}
            p:start(); p:join()
            print("exit", p.exitcode)
            do local first <close> = jobrun.Lock() end   -- the object table's first chunk is made now
            local base = jobrun._shm_in_use()
            for i = 1, 2000 do local q <close> = jobrun.Queue(); q:put(i) end
            -- The monitor settles the victim's death on its own time, maybe
            -- after `base` (freeing what it left): only less can be left.
            print("left in use:", math.max(0, jobrun._shm_in_use() - base))
            """, options: ["--shm-limit", "2"], environment: ["JOBRUN_TEST_KILL_AT": "object-free@victim"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "exit\t-9\nleft in use:\t0\n")
    }
}
