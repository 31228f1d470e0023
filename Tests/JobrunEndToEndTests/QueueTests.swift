import Foundation
import Testing

@Suite("Queues across real processes")
struct QueueTests {
    @Test func fifoValuesAndNilItems() {
        let r = runScript("""
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function()
              q:put(1); q:put(nil); q:put(2.5); q:put(-0.0); q:put("a\\0b"); q:put({x = {1, 2, 3}, [true] = "t"})
              q:put(math.maxinteger); q:put(0/0)
            end}
            p:start()
            local a = q:get(true, 10)
            local b = q:get(true, 10)
            local c = q:get(true, 10)
            local d = q:get(true, 10)
            print(math.type(a), a, b, math.type(c), c, 1/d)
            local s = q:get(true, 10)
            print(#s, s:byte(2))
            local t = q:get(true, 10)
            print(#t.x, t.x[3], t[true])
            local m, nan = q:get(true, 10), q:get(true, 10)
            print(m == math.maxinteger, nan ~= nan)
            p:join(10)
            """)
        expectStatus(r)
        expectLines(r, [
            "integer, nil, float and -0.0 keep their type and sign": "integer\t1\tnil\tfloat\t2.5\t-inf",
            "a string with an embedded zero arrives whole": "3\t0",
            "a nested table and a boolean key arrive": "3\t3\tt",
            "maxinteger and NaN arrive": "true\ttrue",
        ])
    }

    @Test func stringsOfEverySizeAroundTheRingLimitArriveWhole() {
        // Small strings are encoded straight into the ring, big ones into a
        // block of their own: both sides of the line, through a real process.
        let r = runScript("""
            local q = jobrun.Queue(4)
            local lens = {0, 1, 127, 128, 16377, 16378, 16379, 16380, 16381, 16384, 70000}
            local function make(n, salt)
              local t = {}
              for i = 1, n do t[i] = string.char((i * 7 + salt) % 256) end
              return table.concat(t)
            end
            local p = jobrun.Process{target = function()
              for k, n in ipairs(lens) do q:put(make(n, k)) end
            end}
            p:start()
            local bad = 0
            for k, n in ipairs(lens) do
              local s = q:get(true, 10)
              if s ~= make(n, k) then bad = bad + 1; print("bad", n, #s) end
            end
            p:join(10)
            print("bad strings:", bad)
            """)
        expectStatus(r)
        #expect(r.stdout == "bad strings:\t0\n")
    }

    @Test func fullAndEmptyWithTimeouts() {
        let r = runScript("""
            local q = jobrun.Queue(2)
            q:put(1); q:put(2)
            print(q:full(), q:qsize(), q:empty())
            local t0 = jobrun.time()
            local ok, e = pcall(q.put, q, 3, true, 0.3)
            local waited = jobrun.time() - t0
            print(ok, e.kind, e.kind == jobrun.Full, waited >= 0.25 and waited < 5)
            ok, e = pcall(q.put_nowait, q, 3)
            print(ok, e.kind, tostring(e):match("^jobrun.Full: ") ~= nil)
            print(q:get(), q:get())
            ok, e = pcall(q.get, q, true, 0.2)
            print(ok, e.kind)
            ok, e = pcall(q.get_nowait, q)
            print(ok, e.kind)
            ok, e = pcall(q.get, q, false)
            print(ok, e.kind)
            """)
        expectStatus(r)
        expectLines(r, [
            "a full Queue(2): full, qsize, not empty": "true\t2\tfalse",
            "a put with a timeout waits it out, then raises Full": "false\tFull\ttrue\ttrue",
            "put_nowait raises Full at once": "false\tFull\ttrue",
            "gets return the items in order": "1\t2",
            "get with a timeout raises Empty": "false\tEmpty",
            "get_nowait raises Empty": "false\tEmpty",
            "get(false) raises Empty": "false\tEmpty",
        ])
    }

    @Test func blockedPutResumesWhenAConsumerTakes() {
        let r = runScript("""
            local q = jobrun.Queue(1)
            local p = jobrun.Process{target = function() for i = 1, 200 do q:put(i) end end}
            p:start()
            local sum = 0
            for i = 1, 200 do sum = sum + q:get(true, 10) end
            p:join(10)
            print(sum)
            """)
        #expect(r.stdout == "20100\n", "\(r.stderr)")
    }

    @Test func joinableQueueCountsTasks() {
        let r = runScript("""
            local q = jobrun.JoinableQueue()
            for i = 1, 100 do q:put(i) end
            print(q:join(0.1))
            local consumers = {}
            local results = jobrun.Queue()
            for c = 1, 3 do
              local p = jobrun.Process{daemon = true, target = function()
                while true do local v = q:get(); results:put(v * 2); q:task_done() end
              end}
              p:start()
            end
            print(q:join(30))
            local sum = 0
            for i = 1, 100 do sum = sum + results:get(true, 10) end
            print(sum)
            local ok, e = pcall(q.task_done, q)
            print(ok, e.kind, e.message:find("task_done%(%) called too many times") ~= nil)
            """)
        expectStatus(r)
        expectLines(r, [
            "join with a timeout and unfinished items returns false": "false",
            "join returns true once consumers marked all done": "true",
            "every item was delivered": "10100",
            "one task_done too many is a ValueError": "false\tValueError\ttrue",
        ])
    }

    @Test func closeEndsTheStream() {
        let r = runScript("""
            local q = jobrun.JoinableQueue()
            local out = jobrun.Queue()
            local p = jobrun.Process{target = function()
              local n = 0
              for item in q:items() do n = n + item end
              out:put(n)
            end}
            p:start()
            for i = 1, 1000 do q:put(i) end
            q:close()
            local ok, e = pcall(q.put, q, 1)
            print(ok, e.kind)
            print(out:get(true, 20), q:join(20))
            ok, e = pcall(q.get, q)
            print(ok, e.kind)
            p:join(10)
            """)
        expectStatus(r)
        expectLines(r, [
            "put after close raises Closed": "false\tClosed",
            "items() ends after the last item; join then returns true": "500500\ttrue",
            "get on a closed, drained queue raises Closed": "false\tClosed",
        ])
    }

    @Test func twoProducersTwoConsumersDeliverEachItemOnce() {
        let r = runScript("""
            local q = jobrun.JoinableQueue(64)
            local results = jobrun.Queue()
            local N = 20000
            local producers, consumers = {}, {}
            for p = 1, 2 do
              producers[p] = jobrun.Process{target = function()
                for i = 1, N do q:put({p = p, i = i, pad = string.rep("x", i % 50)}) end
              end}
              producers[p]:start()
            end
            for c = 1, 2 do
              consumers[c] = jobrun.Process{target = function()
                local sum, count, last = 0, 0, {0, 0}
                local ordered = true
                for item in q:items() do
                  sum = sum + item.i; count = count + 1
                  if item.i <= last[item.p] then ordered = false end
                  last[item.p] = item.i
                end
                results:put({sum = sum, count = count, ordered = ordered})
              end}
              consumers[c]:start()
            end
            for _, p in ipairs(producers) do p:join(60) end
            print(q:join(60))
            q:close()
            local sum, count, ordered = 0, 0, true
            for c = 1, 2 do
              local r = results:get(true, 60)
              sum = sum + r.sum; count = count + r.count; ordered = ordered and r.ordered
            end
            for _, c in ipairs(consumers) do c:join(60) end
            print(count, sum == 2 * N * (N + 1) // 2, ordered)
            """, timeout: 120)
        expectStatus(r)
        expectLines(r, [
            "join returns once every item was marked done": "true",
            "each of 40000 items delivered once, in each producer's order": "40000\ttrue\ttrue",
        ])
    }

    @Test func largeItemsAndWrapAround() {
        let r = runScript("""
            local q = jobrun.Queue(4)
            local p = jobrun.Process{target = function()
              for i = 1, 300 do q:put(string.rep(string.char(65 + i % 26), (i * 7919) % 70000)) end
              q:put(string.rep("z", 64 * 1024 * 1024))
            end}
            p:start()
            local ok = true
            for i = 1, 300 do
              local s = q:get(true, 20)
              if #s ~= (i * 7919) % 70000 or (#s > 0 and s:sub(-1) ~= string.char(65 + i % 26)) then ok = false end
            end
            local big = q:get(true, 60)
            print(ok, #big, big:sub(1, 1), big:sub(-1))
            p:join(20)
            """, timeout: 120)
        expectStatus(r)
        expectFields(r, [
            "300 items of up to 70,000 bytes wrap around a ring of 4 and arrive whole": "true",
            "a 64 MiB item arrives whole": "67108864", "its first byte": "z", "its last byte": "z",
        ])
    }

    @Test func queueSentThroughAQueueReachesARunningProcess() {
        let r = runScript("""
            local control = jobrun.Queue()
            local p = jobrun.Process{target = function()
              local reply = control:get(true, 10)
              reply:put("hello through a queue")
            end}
            p:start()
            local reply = jobrun.Queue()
            control:put(reply)
            print(reply:get(true, 10))
            p:join(10)
            """)
        #expect(r.stdout == "hello through a queue\n", "\(r.stderr)")
    }

    @Test func badArgumentsAreClearErrors() {
        let r = runScript("""
            local q = jobrun.Queue()
            local cases = {
              function() q:get(true, 0/0) end,
              function() q:put(1, "yes") end,
              function() q:put(coroutine.create(print)) end,
              function() q:put({cb = {on_done = coroutine.create(print)}}) end,
              function() q.get(42) end,
              function() jobrun.Queue("big") end,
              function() jobrun.JoinableQueue():join(0/0) end,
              function() jobrun.Queue{redeliver = true} end,
            }
            for i, f in ipairs(cases) do
              local ok, e = pcall(f)
              print(i, ok, e.kind, e.message)
            end
            """)
        expectStatus(r)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 8)
        #expect(lines[0].contains("ValueError") && lines[0].contains("timeout must be a number of seconds, got "))
        #expect(lines[1].contains("TypeError") && lines[1].contains("block must be a boolean"))
        #expect(lines[2].contains("item: cannot send a coroutine"))
        #expect(lines[3].contains("item.cb.on_done: cannot send a coroutine"))
        #expect(lines[4].contains("TypeError") && lines[4].contains("expected a Queue"))
        #expect(lines[5].contains("TypeError") && lines[5].contains("maxsize"))
        #expect(lines[6].contains("ValueError") && lines[6].contains("timeout"))
        #expect(lines[7].contains("ValueError"))
    }

    @Test func uncaughtQueueErrorNamesTheLine() {
        let r = runScript("local q = jobrun.Queue()\n\nq:get(false)\n")
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:3: jobrun.Empty:"), "\(r.stderr)")
    }
}

@Suite("Shared memory limit")
struct MemoryLimitTests {
    @Test func producersWaitForMemoryAndOversizedItemsAreRefused() {
        let r = runScript("""
            local q = jobrun.Queue()
            local c = jobrun.Process{target = function()
              local n = 0
              -- a slow consumer: the behaviour is that puts wait for memory meanwhile
              for i = 1, 6 do jobrun.sleep(0.05); n = n + #q:get(true, 30) end
              print("consumer got", n)
            end}
            c:start()
            -- 6 items of 3 MiB through an 8 MiB limit: puts wait for the consumer.
            for i = 1, 6 do q:put(string.rep("m", 3 * 1024 * 1024)) end
            c:join(30)
            local ok, e = pcall(q.put, q, string.rep("x", 9 * 1024 * 1024))
            print(ok, e.kind, e.message:find("larger than the shared memory limit") ~= nil)
            -- Blocks come in power-of-two sizes: three 1.5 MiB items take 6 of the 8 MiB.
            local item = string.rep("y", 1536 * 1024)
            q:put(item); q:put(item); q:put(item)
            ok, e = pcall(q.put, q, item, false)
            print(ok, e.kind, e.message:find("shared memory limit reached") ~= nil)
            """, options: ["--shm-limit", "8"], timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the consumer got all six 3 MiB items through an 8 MiB limit (puts waited for memory)": "consumer got\t18874368",
            "an item larger than the limit is a ValueError": "false\tValueError\ttrue",
            "a put that would pass the limit, not blocking, raises Full": "false\tFull\ttrue",
        ])
    }
}
