import Foundation
import Testing

// jobrun.Pool (lua-api.md, "Pool"): the Python-like API, and what Python's
// pool does not do: a worker that dies fails its task with WorkerDied and is
// replaced, instead of leaving the caller waiting forever. Every wait in the
// scripts has a timeout or ends because the pool raises; runScript bounds the
// whole run.

@Suite("Pool")
struct PoolTests {
    @Test func mapKeepsOrderOverManyItems() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 4}
            local list = {}
            for i = 1, 1000 do list[i] = i end
            local squares = pool:map(function(x) return x * x end, list)
            local ok = #squares == 1000
            for i = 1, 1000 do ok = ok and squares[i] == i * i end
            print(ok, math.type(squares[7]))
            print(#pool:map(function(x) return x end, {}))
            -- upvalues travel with the function; globals resolve in the worker
            local k = 10
            print(table.concat(pool:map(function(x) return x + k end, {1, 2, 3}), ","))
            print(table.concat(pool:map(string.upper, {"a", "b"}), ","))
            pool:close(); pool:join()
            print(#jobrun.active_children())
            """)
        expectStatus(r)
        expectLines(r, [
            "map over 1000 items keeps their order and integer type": "true\tinteger",
            "map over an empty list returns an empty list": "0",
            "a task's upvalues travel with it": "11,12,13",
            "a C function works as a task": "A,B",
            "close and join leave no worker": "0",
        ])
    }

    @Test func chunksizeSendsItemsInChunks() {
        // Each result names the pid that computed it: with chunksize 25, the
        // items of one chunk share a pid.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 3}
            local list = {}
            for i = 1, 100 do list[i] = i end
            local r = pool:map(function(x) jobrun.sleep(0.001); return {x, jobrun.current_process().pid} end, list, 25)
            local same = true
            for c = 0, 3 do
              for i = c * 25 + 1, c * 25 + 25 do same = same and r[i][2] == r[c * 25 + 1][2] and r[i][1] == i end
            end
            print(#r, same)
            local ok, e = pcall(pool.map, pool, print, list, 0)
            print(e.kind, e.message)
            ok, e = pcall(pool.map, pool, print, list, "2")
            print(e.kind, e.message)
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "chunksize 25: four chunks of 25 items, each computed by one worker": "100\ttrue",
            "chunksize 0 is a ValueError": "ValueError\tPool.map: chunksize must be a positive integer, got 0",
            "a string chunksize is a TypeError": "TypeError\tPool.map: chunksize must be a positive integer, got string",
        ])
    }

    @Test func imapYieldsInOrderAndImapUnorderedYieldsEverything() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 3}
            local list = {}
            for i = 1, 50 do list[i] = i end
            local got = {}
            -- later items finish first: imap still yields them in order
            for v, i in pool:imap(function(x) jobrun.sleep((50 - x) * 0.0005); return x * 2 end, list) do
              got[#got + 1] = v .. "@" .. i
            end
            print(#got, got[1], got[50])
            local inorder = true
            for i = 1, 50 do inorder = inorder and got[i] == (i * 2) .. "@" .. i end
            print(inorder)
            local seen, count = {}, 0
            for v, i in pool:imap_unordered(function(x) jobrun.sleep((x % 5) * 0.002); return -x end, list, 3) do
              count = count + 1
              if v == -i then seen[i] = true end
            end
            local all = count == 50
            for i = 1, 50 do all = all and seen[i] end
            print(all)
            local n = 0
            for _ in pool:imap(print, {}) do n = n + 1 end
            print(n)
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "imap yields every item with its index": "50\t2@1\t100@50",
            "in order, though later items finish first": "true",
            "imap_unordered yields every item": "true",
            "imap of an empty list yields nothing": "0",
        ])
    }

    @Test func starmapSpreadsArgumentLists() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local r = pool:starmap(function(a, b, c) return a .. b .. tostring(c) end,
                                   {{"x", 1}, {"y", 2, true}, table.pack("z", 3, nil)})
            print(r[1], r[2], r[3])
            local ok, e = pcall(pool.starmap, pool, print, {{1}, 2})
            print(e.kind, e.message)
            local a = pool:starmap_async(math.max, {{1, 5, 3}, {7, 2}})
            print(table.concat(a:get(10), ","))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "starmap spreads each table as arguments, nil kept": "x1nil\ty2true\tz3nil",
            "an item not a table is a TypeError": "TypeError\tPool.starmap: list[2] must be a table of arguments, got number",
            "starmap_async's get returns the results": "5,7",
        ])
    }

    @Test func applyAsyncGetReadySuccessfulAndTimeout() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local go = jobrun.Event()   -- the task ends only once main has seen it unfinished
            local slow = pool:apply_async(function(a, b) go:wait(20); return a + b, "two", nil, 4 end, 1, 2)
            print(slow:ready())
            local ok, e = pcall(slow.successful, slow)
            print(ok, e.kind)
            local t0 = jobrun.time()
            ok, e = pcall(slow.get, slow, 0.1)
            local waited = jobrun.time() - t0
            print(ok, e.kind, e.kind == jobrun.Timeout, waited >= 0.09 and waited < 2)
            go:set()
            print(select("#", slow:get(10)), slow:get(10))
            print(slow:ready(), slow:successful())
            local bad = pool:apply_async(function() error("nope", 0) end)
            print(bad:wait(10), bad:ready(), bad:successful())
            ok, e = pcall(bad.get, bad)
            print(ok, (e:gsub("\\n.*", "")))
            print(pool:apply(string.rep, "ab", 3))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "a running task is not ready": "false",
            "successful() before it is ready is a ValueError": "false\tValueError",
            "get with a short timeout raises Timeout after it": "false\tTimeout\ttrue\ttrue",
            "get returns all of fn's results, nil among them": "4\t3\ttwo\tnil\t4",
            "then it is ready and successful": "true\ttrue",
            "a task that raised: wait, ready, not successful": "true\ttrue\tfalse",
            "get raises the task's error": "false\tnope",
            "apply returns fn's result": "ababab",
        ])
    }

    @Test func initRunsOnceInEveryWorkerWithItsArguments() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 3, init = function(prefix, n)
              INIT_COUNT = (INIT_COUNT or 0) + 1
              TAG = prefix .. n
            end, init_args = {"w", 7}}
            local r = pool:map(function(x) jobrun.sleep(0.01)
              return {TAG, INIT_COUNT, jobrun.current_process().pid} end, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 1)
            local ok, pids = true, {}
            for _, v in ipairs(r) do ok = ok and v[1] == "w7" and v[2] == 1; pids[v[3]] = true end
            local n = 0
            for _ in pairs(pids) do n = n + 1 end
            print(ok, n <= 3)
            pool:close(); pool:join()
            local broken = jobrun.Pool{workers = 2, init = function() error("no config", 0) end}
            local ok2, e = pcall(broken.map, broken, print, {1, 2})
            print(ok2, e.kind, e.message:match("^Pool: init failed in pool worker PoolWorker%-%d+ %(pid %d+%): no config") ~= nil)
            ok2, e = pcall(broken.apply_async, broken, print)
            print(ok2, e.kind)
            broken:close(); broken:join()
            print(#jobrun.active_children())
            """)
        expectStatus(r)
        expectLines(r, [
            "init ran once in every worker with its arguments": "true\ttrue",
            "a failing init breaks the pool: map raises it as ProcessError": "false\tProcessError\ttrue",
            "apply_async on a broken pool raises too": "false\tProcessError",
            "the broken pool's workers are gone after join": "0",
        ])
    }

    @Test func maxTasksRecyclesWorkers() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2, max_tasks = 2}
            local list = {}
            for i = 1, 12 do list[i] = i end
            local r = pool:map(function(x) return {x, jobrun.current_process().pid} end, list, 1)
            local pids, n, ok = {}, 0, true
            for i, v in ipairs(r) do
              ok = ok and v[1] == i
              if not pids[v[2]] then pids[v[2]] = true; n = n + 1 end
            end
            print(#r, ok, n >= 6)   -- at most 2 tasks per worker
            pool:close(); pool:join()
            print(#jobrun.active_children())
            """)
        expectStatus(r)
        expectLines(r, [
            "max_tasks = 2 recycles workers: at least 6 pids for 12 tasks, results in order": "12\ttrue\ttrue",
            "close and join leave no worker": "0",
        ])
    }

    @Test func taskErrorIsRaisedInTheCallerWithTheWorkersTraceback() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local function check(x)
              if x == 3 then error("bad item " .. x) end
              return x
            end
            local ok, e = pcall(pool.map, pool, check, {1, 2, 3, 4})
            print(ok, type(e))
            print(e:match("^[^\\n]*main%.lua:3: bad item 3\\nstack traceback %(pool worker PoolWorker%-%d+, pid %d+%):\\n") ~= nil)
            print(e:find("main.lua:3: in", 1, true) ~= nil, e:find("jobrun.Pool:", 1, true) == nil)
            -- a jobrun error keeps its kind
            ok, e = pcall(pool.map, pool, function(x) local q = jobrun.Queue(1); q:put(1); q:put(2, false) end, {1})
            print(ok, e.kind, e.where:match("main%.lua:%d+$") ~= nil, e.message:find("stack traceback", 1, true) ~= nil)
            -- a plain table is raised as it is
            ok, e = pcall(pool.map, pool, function(x) error({code = 42}) end, {1})
            print(ok, type(e), e.code)
            -- imap raises at the failing item, after the ones before it
            local got = {}
            ok, e = pcall(function()
              for v in pool:imap(function(x) if x == 3 then error("third", 0) end return x end, {1, 2, 3, 4}) do got[#got + 1] = v end
            end)
            print(ok, table.concat(got, ","), (e:gsub("\\n.*", "")))
            -- the pool still works, and an uncaught task error ends the script
            print(table.concat(pool:map(check, {1, 2}), ","))
            pool:map(check, {3})
            """)
        expectStatus(r, 1)
        expectLines(r, [
            "a task's error string is raised in the caller": "false\tstring",
            "with the worker's traceback after the message": "true",
            "naming the task's line, not the pool's code": "true\ttrue",
            "a jobrun error keeps its kind, where, and gains no traceback": "false\tFull\ttrue\ttrue",
            "a plain table error is raised as it is": "false\ttable\t42",
            "imap yields the items before the failing one, then raises": "false\t1,2\tthird",
            "the pool still works after task errors": "1,2",
        ])
        #expect(r.stderr.contains("main.lua:3: bad item 3\nstack traceback (pool worker PoolWorker-"))
        #expect(r.stderr.contains("main.lua:24: in main chunk"), "\(r.stderr)")
    }

    @Test func workerThatExitsFailsItsTaskWithWorkerDiedAndIsReplaced() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local t0 = jobrun.time()
            local ok, e = pcall(pool.map, pool, function(x)
              if x == 5 then os.exit(3) end
              jobrun.sleep(0.01); return x
            end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
            print(ok, e.kind, e.kind == jobrun.WorkerDied, jobrun.time() - t0 < 10)
            print(e.message:match("^pool worker PoolWorker%-%d+ %(pid %d+%) exited with status 3 while running map item 5 of 8$") ~= nil, e.message)
            -- later tasks run on the replacement
            print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3, 4}), ","))
            print(#jobrun.active_children())
            -- apply_async: get raises it too
            local a = pool:apply_async(function() os.exit(7) end)
            ok, e = pcall(a.get, a, 20)
            print(ok, e.kind, e.message:find("exited with status 7 while running apply_async", 1, true) ~= nil)
            print(a:ready(), a:successful())
            pool:close(); pool:join()
            print(#jobrun.active_children())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a worker's os.exit fails map with WorkerDied, within seconds": "false\tWorkerDied\ttrue\ttrue",
            "the message names the worker, its status and the item": "true\t…",
            "later tasks run on the replacement": "2,4,6,8",
            "the pool has its two workers again": "2",
            "apply_async's get raises WorkerDied too": "false\tWorkerDied\ttrue",
            "the result is ready, not successful": "true\tfalse",
            "close and join leave no worker": "0",
        ])
    }

    @Test func workerKilledBySignalFailsItsTaskWithinSeconds() {
        let r = runScript(luaWaits + """
            local pool = jobrun.Pool{workers = 2}
            local t0 = jobrun.time()
            local ok, e = pcall(pool.map, pool, function(x)
              if x == 2 then os.execute("kill -9 " .. jobrun.current_process().pid); jobrun.sleep(30) end
              return x
            end, {1, 2, 3}, 1)
            print(ok, e.kind, jobrun.time() - t0 < 10)
            print(e.message:find("was killed by signal 9 (SIGKILL) while running map item 2 of 3", 1, true) ~= nil, e.message)
            -- an idle worker killed from outside is replaced too
            local idle = jobrun.active_children()[1]
            idle:kill()
            assert(wait_until(function() return not idle:is_alive() end))
            local r = pool:map(function(x) return x + 1 end, {1, 2, 3, 4, 5, 6}, 1)
            print(table.concat(r, ","), #jobrun.active_children())
            pool:terminate()
            print(#jobrun.active_children())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a worker killed by SIGKILL fails map with WorkerDied, within seconds": "false\tWorkerDied\ttrue",
            "the message names the signal and the item": "true\t…",
            "an idle worker killed from outside is replaced: map works, two workers": "2,3,4,5,6,7\t2",
            "terminate leaves no worker": "0",
        ])
    }

    /// Signal names come from glibc (sigabbrev_np) on both sides: Pool's
    /// messages had a table of its own, with "?" for SIGUSR1, and the Swift
    /// one had no SIGHUP.
    @Test func everySignalIsNamedTheSameWayByPoolAndByQueues() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local ok, e = pcall(pool.map, pool, function(x)
              os.execute("kill -USR1 " .. jobrun.current_process().pid); jobrun.sleep(30)
            end, {1}, 1)
            print(e.message:match("was killed by signal %d+ %(%w+%)"))
            pool:terminate()
            local q = jobrun.JoinableQueue()
            local k = jobrun.Process{name = "hup", target = function()
              q:get(); os.execute("kill -HUP " .. jobrun.current_process().pid); jobrun.sleep(30)
            end}
            q:put("y"); k:start(); k:join()
            ok, e = pcall(q.join, q)
            print(e.message:match("was killed by signal %d+ %(%w+%)"))
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "Pool names SIGUSR1 as glibc does": "was killed by signal \(SIGUSR1) (SIGUSR1)",
            "a JoinableQueue join names SIGHUP as glibc does": "was killed by signal \(SIGHUP) (SIGHUP)",
        ])
    }

    @Test func closeJoinAndTerminate() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local ok, e = pcall(pool.join, pool)
            print(ok, e.kind, e.message)
            local results = {}
            -- tasks that take a while, so that some are still queued at close
            for i = 1, 6 do results[i] = pool:apply_async(function(x) jobrun.sleep(0.05); return x * x end, i) end
            pool:close()
            ok, e = pcall(pool.map, pool, print, {1})
            print(ok, e.kind, e.message)
            ok, e = pcall(pool.apply_async, pool, print)
            print(ok, e.kind)
            pool:join()          -- waits for the queued tasks
            local sum = 0
            for i = 1, 6 do sum = sum + results[i]:get(0) end
            print(sum, #jobrun.active_children())
            pool:close(); pool:join()   -- again: no-ops

            local p2 = jobrun.Pool{workers = 2}
            local long = p2:apply_async(function() jobrun.sleep(30) end)   -- runs until terminated
            local t0 = jobrun.time()
            p2:terminate()
            print(jobrun.time() - t0 < 5, #jobrun.active_children())
            ok, e = pcall(long.get, long, 5)
            print(ok, e.kind, e.message)
            ok, e = pcall(p2.map, p2, print, {1})
            print(ok, e.kind, e.message)
            p2:join(); p2:terminate()

            do
              local p3 <close> = jobrun.Pool{workers = 2}
              print(p3:apply(function() return "inside" end), #jobrun.active_children())
            end
            print(#jobrun.active_children())
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "join before close or terminate is a ValueError": "false\tValueError\tPool.join: call pool:close() or pool:terminate() first",
            "map after close is refused": "false\tValueError\tPool not running (it was closed)",
            "apply_async after close is refused": "false\tValueError",
            "join waits for the queued tasks; the workers are gone after": "91\t0",
            "terminate does not wait for a running task and ends the workers": "true\t0",
            "a task cut short by terminate fails with ValueError": "false\tValueError\tPool was terminated before the task finished",
            "map after terminate is refused": "false\tValueError\tPool not running (it was terminated)",
            "a <close> pool works in its block": "inside\t2",
            "and is gone after it": "0",
        ])
    }

    @Test func workersEndWithTheScript() {
        // A pool never closed: its daemon workers go when the main chunk ends.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 3}
            print(#pool:map(function(x) return x end, {1, 2, 3}), #jobrun.active_children())
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "a pool never closed: its workers run until the main chunk ends": "3\t3",
        ])
        #expect(!r.stderr.contains("still running"), "\(r.stderr)")
    }

    @Test func argumentErrorsNameTheArgumentAndTheCallersLine() {
        let r = runScript("""
            local function try(f, ...)
              local ok, e = pcall(f, ...)
              print(e.kind, e.message)
            end
            try(jobrun.Pool, {workers = 0})
            try(jobrun.Pool, {workers = 1.5})
            try(jobrun.Pool, {workers = "4"})
            try(jobrun.Pool, {worker = 4})
            try(jobrun.Pool, "x")
            try(jobrun.Pool, {init = 5})
            try(jobrun.Pool, {init = print, init_args = 5})
            try(jobrun.Pool, {max_tasks = 0})
            local pool = jobrun.Pool(1)
            try(pool.map, pool, 5, {})
            try(pool.map, pool, print, "list")
            try(pool.imap, pool, print, {}, -1)
            try(pool.map, print, {})
            try(pool.apply_async, pool, nil)
            local co = coroutine.create(print)
            try(pool.map, pool, function() return co end, {1})
            try(pool.map, pool, tostring, {1, 2, co})   -- (items 1 and 2 were queued and run)
            local a = pool:apply_async(tostring)
            try(a.get, a, 0/0)
            local ok, e = pcall(pool.map, pool, function() return coroutine.create(print) end, {1})
            print(e.kind, e.message)
            ok, e = pcall(pool.apply, pool, function() return 1, coroutine.create(print) end)
            print(e.kind, e.message)
            ok, e = pcall(function() pool:map(nil, {}) end)
            print(e.where:match("main%.lua:%d+$"))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "workers = 0 is a ValueError": "ValueError\tPool: workers must be a positive integer, got 0",
            "workers = 1.5 is a ValueError": "ValueError\tPool: workers must be a positive integer, got 1.5",
            "workers as a string is a TypeError": "TypeError\tPool: workers must be a positive integer, got string",
            "an unknown option is named with the known ones": "TypeError\tPool: unknown option worker (use workers, init, init_args, max_tasks, timeout, retries, halt, on_error, joblog, resume)",
            "options not in a table": "TypeError\tPool: expected a table of options, e.g. Pool{workers = 4}, got string",
            "init not a function": "TypeError\tPool: init must be a function, got number",
            "init_args not a table": "TypeError\tPool: init_args must be a table, got number",
            "max_tasks = 0 is a ValueError": "ValueError\tPool: max_tasks must be a positive integer, got 0",
            "map's fn not a function": "TypeError\tPool.map: fn must be a function, got number",
            "map's list not a table": "TypeError\tPool.map: list must be a table, got string",
            "imap's chunksize of -1": "ValueError\tPool.imap: chunksize must be a positive integer, got -1",
            "map called with . instead of :": "TypeError\tPool.map: expected a Pool as self (use pool:map(...)), got function",
            "apply_async without fn": "TypeError\tPool.apply_async: fn must be a function, got nil",
            "a task whose upvalue cannot be sent names the upvalue": "TypeError\tPool.map: cannot send the task to the workers: fn (upvalue co): cannot send a coroutine",
            "a list item that cannot be sent names the item": "TypeError\tPool.map: cannot send the task to the workers: list[3]: cannot send a coroutine",
            "get with a NaN timeout": "ValueError\tAsyncResult.get: timeout must be a number of seconds, got nan",
            "a result that cannot be sent back names the item": "TypeError\tPool.map: cannot send the result for list[1] back: result: cannot send a coroutine",
            "apply's second result cannot be sent back": "TypeError\tcannot send the result back: result[2]: cannot send a coroutine",
            "the error's where is the caller's line": "main.lua:28",
        ])
    }
}
