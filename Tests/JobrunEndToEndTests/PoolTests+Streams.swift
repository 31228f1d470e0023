import Foundation
import Testing

// A Pool over an iterator (io.lines, a generator, a coroutine.wrap): read in
// the caller only as results come back, at most `window` chunks out at once,
// so a long input keeps a bounded number of items in memory; callbacks; and
// jobrun.wait / jobrun.as_completed as in concurrent.futures. Every wait is
// bounded: by a timeout in the script, or by runScript's.

@Suite("Pool streams")
struct PoolStreamTests {
    /// A generator that counts the items pulled from it, in every script.
    static let counting = """
        local pulled = 0
        local function gen(n)
          local i = 0
          return function()
            if i < n then i = i + 1; pulled = pulled + 1; return i end
          end
        end

        """

    @Test func anIteratorIsReadOnlyAsResultsAreTaken() {
        let r = runScript(Self.counting + """
            local pool = jobrun.Pool{workers = 2}
            -- item 1 is slow: the results after it are held back for order,
            -- and they count against the window, so nothing more is read
            local ev = jobrun.Event()
            local it = pool:imap(function(x) if x == 1 then ev:wait(10) end return x * 10 end,
                                 gen(1000), {chunksize = 2, window = 3})
            print("after the call", pulled)
            ev:set()
            local v, k = it()
            print("after the first step", pulled, v, k)
            local ok, ahead = true, 0
            for v, k in it do
              ok = ok and v == k * 10
              if pulled - k > ahead then ahead = pulled - k end
            end
            print("in order", ok, "ahead at most", ahead, "pulled", pulled)
            -- the default window is twice the workers; chunks are of 1 item
            -- until a worker has said how long one takes
            pulled = 0
            local it2 = pool:imap(function(x) return x end, gen(100000))
            print("default", pulled)
            local n = 0
            for v, k in it2 do n = n + 1; if pulled - k > ahead then ahead = pulled - k end end
            print("bounded", n, ahead <= 4 * 1024)
            -- map_async reads as results are settled; map returns the table
            pulled = 0
            local r = pool:map_async(function(x) ev:wait(10); return x end, gen(50), {chunksize = 5, window = 2})
            print("map_async", pulled, #r:get(10), pulled)
            local sq = pool:map(function(x) return x * x end, gen(300), 7)
            print("map", #sq, sq[1], sq[300])
            local n2, sum = 0, 0
            for v in pool:imap_unordered(function(x) return x end, gen(500), 3) do n2 = n2 + 1; sum = sum + v end
            print("unordered", n2, sum)
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "the first window is read at the call: 3 chunks of 2": "after the call\t6",
            "held-back results keep the window full: nothing more is read": "after the first step\t6\t10\t1",
            "imap over a generator keeps order, never more than 6 items ahead": "in order\ttrue\tahead at most\t6\tpulled\t1000",
            "the default reads 4 chunks of 1 item before any result": "default\t4",
            "the default stays within 4 chunks of at most 1024": "bounded\t100000\ttrue",
            "map_async reads 2 chunks of 5 at first, all by the end": "map_async\t10\t50\t50",
            "map over a generator returns the table": "map\t300\t1\t90000",
            "imap_unordered over a generator yields every result": "unordered\t500\t125250",
        ])
    }

    @Test func kindsOfIterators() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local path = os.tmpname()
            local f = io.open(path, "w")
            for i = 1, 1000 do f:write("line ", i, "\\n") end
            f:close()
            local n, last = 0
            for v, k in pool:imap(string.upper, io.lines(path)) do n = n + 1; last = v end
            print("io.lines", n, last)
            os.remove(path)
            local words = pool:map(function(w) return #w end, ("a bb ccc"):gmatch("%a+"))
            print("gmatch", table.concat(words, ","))
            local co = coroutine.wrap(function() for i = 1, 5 do coroutine.yield({i, i * 2}) end end)
            print("starmap over a coroutine", table.concat(pool:starmap(function(a, b) return a + b end, co), ","))
            -- an imap is an iterator too
            local chained = pool:map(function(x) return x + 1 end, pool:imap(function(x) return x * 2 end, {1, 2, 3}))
            print("chained", table.concat(chained, ","))
            -- items of any sendable value
            local items = {1, 2.5, "s", true, false, {k = "v"}}
            local i = 0
            local got = pool:map(function(x) return type(x) end, function() i = i + 1; return items[i] end)
            print("values", table.concat(got, ","))
            print("empty", #pool:map(print, function() return nil end))
            -- a generic-for triple is refused, saying why
            local ok, e = pcall(pool.imap, pool, print, pairs({a = 1}))
            print(e.kind, e.message:find("generic-for triple", 1, true) ~= nil)
            ok, e = pcall(pool.imap, pool, print, ipairs({1}))
            print(e.kind, e.message:find("generic-for triple", 1, true) ~= nil)
            ok, e = pcall(pool.map, pool, print, function() end, "x")
            print(e.kind, e.message:find("generic-for triple", 1, true) ~= nil)
            ok, e = pcall(pool.imap, pool, print, function() end, {window = 0})
            print(e.kind, e.message)
            -- argument errors name the caller's line
            ok, e = pcall(function() pool:map(print, function() end, {bogus = 1}) end)
            print(e.kind, e.where:match("main.lua:%d+$"))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "io.lines through imap, in order": "io.lines\t1000\tLINE 1000",
            "string.gmatch": "gmatch\t1,2,3",
            "coroutine.wrap through starmap": "starmap over a coroutine\t3,6,9,12,15",
            "the iterator of an imap feeds a map": "chained\t3,5,7",
            "scalars and tables as items": "values\tnumber,number,string,boolean,boolean,table",
            "an iterator that ends at once": "empty\t0",
            "pairs(t) is refused with a reason": "TypeError\ttrue",
            "ipairs(t) too": "TypeError\ttrue",
            "a function and a string": "TypeError\ttrue",
            "window must be positive": "ValueError\tPool.imap: window must be a positive integer, got 0",
            "an unknown option, at the caller's line": "TypeError\tmain.lua:33",
        ])
    }

    @Test func memoryStaysFlatOverALongFile() {
        // 20,000 then 200,000 lines through imap: the Lua heap of the caller
        // grows by about as much for both (a window of chunks), not tenfold.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local path = os.tmpname()
            local f = io.open(path, "w")
            for i = 1, 200000 do f:write(("line %d of the file, with some text\\n"):format(i)) end
            f:close()
            local function run(limit)
              collectgarbage(); collectgarbage()
              local base, peak, n = collectgarbage("count"), 0, 0
              local lines, i = io.lines(path), 0
              local function first(limit) return function() i = i + 1; if i <= limit then return lines() end end end
              for v in pool:imap(function(s) return #s end, first(limit)) do
                n = n + 1
                if n % 1000 == 0 then peak = math.max(peak, collectgarbage("count")) end
              end
              return n, peak - base
            end
            local n1, grew1 = run(20000)
            local n2, grew2 = run(200000)
            print(n1, n2, grew2 < 2 * grew1 + 512, math.floor(grew1), math.floor(grew2))
            os.remove(path)
            pool:terminate()
            """, timeout: 120)
        expectStatus(r)
        #expect(r.stdout.hasPrefix("20000\t200000\ttrue\t"), "\(r.stdout)")
    }

    @Test func anIteratorThatRaises() {
        let r = runScript(Self.counting + """
            local pool = jobrun.Pool{workers = 2}
            local function failing(at)
              local i = 0
              return function() i = i + 1; if i == at then error("no item " .. at, 0) end return i end
            end
            local got = 0
            local ok, e = pcall(function()
              for v in pool:imap(function(x) return x end, failing(50), 4) do got = got + 1 end
            end)
            print("imap", got, e)
            print("map", pcall(pool.map, pool, function(x) return x end, failing(30)))
            local r = pool:map_async(function(x) return x end, failing(3), 1)
            print("map_async", r:wait(10), r:successful(), select(2, pcall(r.get, r)))
            -- the error is the iterator's own value: a table stays a table
            ok, e = pcall(pool.map, pool, print, function() error({code = 7}) end)
            print("table", type(e), e.code)
            -- a starmap item that is no table, an item that cannot be sent
            local co = coroutine.create(print)
            local items = {1, 2, 3, 4, 5, 6, co, 8}
            local i = 0
            got = 0
            ok, e = pcall(function()
              for v in pool:imap(function(x) return x end, function() i = i + 1; return items[i] end, 3) do got = got + 1 end
            end)
            print("unsendable", got, e.kind, e.message)
            ok, e = pcall(pool.starmap, pool, print, gen(3))
            print("starmap", e.kind, e.message)
            -- the pool goes on
            print("after", table.concat(pool:map(function(x) return -x end, gen(3)), ","))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "imap yields the items before the error, then raises it": "imap\t49\tno item 50",
            "map raises it": "map\tfalse\tno item 30",
            "map_async fails with it": "map_async\ttrue\tfalse\tno item 3",
            "an error value that is a table arrives as it is": "table\ttable\t7",
            "an item that cannot be sent is named by its place": "unsendable\t6\tTypeError\tPool.imap: cannot send the task to the workers: item 7: cannot send a coroutine",
            "starmap needs tables as items": "starmap\tTypeError\tPool.starmap: item 1 must be a table of arguments, got number",
            "the pool is still usable": "after\t-1,-2,-3",
        ])
    }

    @Test func aWorkerDyingMidStreamFailsOnlyItsItem() {
        // imap raises WorkerDied at that item's place; called again, the
        // iterator goes on with the next items, from a replacement worker.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local i = 0
            local it = pool:imap(function(x) if x == 30 then os.exit(3) end return x end,
                                 function() i = i + 1; if i <= 60 then return i end end, 1)
            local got, errors, where = 0, {}, {}
            while true do
              local ok, v, k = pcall(it)
              if not ok then errors[#errors + 1] = v.kind; where[#where + 1] = got
              elseif v == nil then break
              else got = got + 1 end
            end
            print(got, table.concat(errors, ","), where[1])
            local j = 0
            print(#pool:map(function(x) return x end, function() j = j + 1; if j <= 59 then return j end end))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "59 results and one WorkerDied, at item 30": "59\tWorkerDied\t29",
            "the pool still runs a map over an iterator": "59",
        ])
    }

    @Test func closeAndTerminateWithAStreamOpen() {
        // close() lets a stream already started be read to its end (join
        // waits for it); terminate() fails what was not done.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local i = 0
            local r = pool:map_async(function(x) return x end, function() i = i + 1; if i <= 1000 then return i end end, 10)
            pool:close(); pool:join()
            print("joined", r:ready(), #r:get(1), i)
            local other = jobrun.Pool{workers = 2}
            local j = 0
            local endless = other:map_async(function(x) return x end, function() j = j + 1; return j end, 10)
            other:terminate()
            local ok, e = pcall(endless.get, endless, 1)
            print("terminated", endless:ready(), e.kind, e.message)
            """)
        expectStatus(r)
        expectLines(r, [
            "join waits until the input is read and run": "joined\ttrue\t1000\t1001",
            "terminate fails the rest": "terminated\ttrue\tValueError\tPool was terminated before the task finished",
        ])
    }

    @Test func callbacksRunInTheCallerWhenItWaits() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local me = jobrun.current_process().pid
            local log = {}
            local function note(...)
              local t = table.pack(...)
              for k = 1, t.n do t[k] = tostring(t[k]):match("^[^\\n]*") end   -- an error's first line
              log[#log + 1] = table.concat(t, " ", 1, t.n)
            end
            local r = pool:apply_async(function(a, b) return a + b, a * b end, 3, 4)
              :on_done(function(s, p) note("apply", s, p, jobrun.current_process().pid == me) end)
            print("before waiting", #log)
            r:wait(10)
            print(log[1])
            -- Python's positional form, and the options form
            local r2 = pool:map_async(function(x) if x == 3 then error("three", 0) end return x end, {1, 2, 3}, nil,
                                      function() note("not called") end, function(e) note("error", e) end)
            r2:wait(10)
            local r3 = pool:map_async(function(x) return x * 2 end, {1, 2, 3},
                                      {chunksize = 1, callback = function(l) note("map", table.concat(l, ",")) end})
            r3:get(10)
            -- registered after the result is in: runs at once
            r3:on_done(function(l) note("late", #l) end)
            print(log[2], "|", log[3], "|", log[4], "|", #log)
            -- an error in a callback is raised by the call that was waiting; the pool goes on
            local r4 = pool:apply_async(function() return 1 end):on_done(function() error("callback failed", 0) end)
            print(pcall(r4.wait, r4, 10))
            print(pool:apply(function() return "usable" end))
            print(pcall(pool.map_async, pool, print, {}, {callback = 1}))
            print(pcall(r.on_done, r, "x"))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "no callback before the caller waits": "before waiting\t0",
            "apply_async's callback gets fn's results, in the caller": "apply 7 12 true",
            "error_callback, map callback, a late callback": "error three\t|\tmap 2,4,6\t|\tlate 3\t|\t4",
            "an error in a callback reaches the waiting call": "false\tcallback failed",
            "the pool is still usable": "usable",
            "a callback that is no function": "false\tjobrun.TypeError: Pool.map_async: callback must be a function, got number",
            "on_done checks too": "false\tjobrun.TypeError: AsyncResult.on_done: callback must be a function, got string",
        ])
    }

    @Test func waitAndAsCompleted() {
        // The slow task waits on an Event the script sets: no timing guesses.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local other = jobrun.Pool{workers = 1}
            local ev = jobrun.Event()
            local fast = pool:apply_async(function() return "fast" end)
            local slow = pool:apply_async(function() ev:wait(10); return "slow" end)
            local done, pending = jobrun.wait({slow, fast}, {first = true, timeout = 10})
            print("first", #done, #pending, done[1] == fast, pending[1] == slow)
            done, pending = jobrun.wait({slow, fast}, {timeout = 0.1})
            print("timeout", #done, #pending, done[1] == fast)
            local ok, e = pcall(function() for r in jobrun.as_completed({slow}, 0.1) do end end)
            print("as_completed timeout", e.kind)
            local third = other:apply_async(function() return "other pool" end)
            local order = {}
            for r, i in jobrun.as_completed({slow, third, fast}, 10) do
              order[#order + 1] = r:get() .. "@" .. i
              if #order == 2 then ev:set() end
            end
            -- the two done ones first (in either order), then the slow one
            print("as_completed", #order, order[3], (order[1] .. order[2]):find("fast@3", 1, true) ~= nil)
            done, pending = jobrun.wait({slow, fast, third})
            print("all", #done, #pending)
            print("none", #jobrun.wait({}))
            print(pcall(jobrun.wait, {1}))
            print("negative timeout", #jobrun.wait({fast}, {timeout = -1}))
            print(pcall(jobrun.wait, {fast}, {first = true, until_ = 1}))
            pool:terminate(); other:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "first: returns once one is done": "first\t1\t1\ttrue\ttrue",
            "timeout: returns what is done": "timeout\t1\t1\ttrue",
            "as_completed raises Timeout past its timeout": "as_completed timeout\tTimeout",
            "as_completed yields as they finish, across pools": "as_completed\t3\tslow@1\ttrue",
            "all\t3\t0": "all\t3\t0",
            "an empty list": "none\t0",
            "a list of something else": "false\tjobrun.TypeError: jobrun.wait: results[1] must be an AsyncResult, got number",
            "a negative timeout is 0, as in Python": "negative timeout\t1",
            "unknown options": "false\tjobrun.TypeError: jobrun.wait: unknown option until_ (use timeout, first)",
        ])
    }
}
