import Foundation
import Testing

// How a chunk of items travels and runs: a worker runs a whole chunk under
// one protected call, resumes after an item that raised, and sends the
// chunk's results back in one message; the caller places them in the result
// list. These pin down what must not change when that path is made faster.

@Suite("Pool chunks")
struct PoolChunkTests {
    @Test func nilResultsAndNilItemsKeepTheirPlaces() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local list = {}
            for i = 1, 30 do list[i] = i end
            local r = pool:map(function(x) if x % 3 == 0 then return nil end return x end, list, 7)
            local ok = true
            for i = 1, 30 do
              if i % 3 == 0 then ok = ok and r[i] == nil else ok = ok and r[i] == i end
            end
            print(ok)
            -- nils in the list (list.n counts them) arrive as nils
            r = pool:map(function(x) return x == nil and "none" or x end, {1, nil, 3, nil, n = 5}, 2)
            print(r[1], r[2], r[3], r[4], r[5])
            -- mixed scalars and tables, as items and as results
            r = pool:map(function(x) return x end, {1, 2.5, "three", true, false, {4}, {k = "v"}}, 3)
            print(r[1], math.type(r[2]), r[3], r[4], r[5], r[6][1], r[7].k)
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "nil results keep their places": "true",
            "nil items in a list with n arrive as nils": "1\tnone\t3\tnone\tnone",
            "scalars and tables travel as items and results": "1\tfloat\tthree\ttrue\tfalse\t4\tv",
        ])
    }

    @Test func resultsAreDecodedInPlaceOnlyForTheTaskTheyBelongTo() {
        // The caller's private receive (q:_get_into, field 5 routed by field
        // 3): a chunk's results go straight into its job's list when the
        // route {t, first, count} is known and the sizes agree; any other
        // message arrives as it was sent.
        let r = runScript("""
            local q = jobrun.Queue()
            local results = {}
            local tasks = {[7] = {results, 3, 2}}
            q:_put_slice({"r", 1, 7, false}, {"a", {b = 1}}, 1, 2)
            local m = q:_get_into(true, 1, 5, tasks, 3)
            print(m[1], m[3], m[5] == results, results[3], results[4].b, results[1], #tasks)
            q:_put_slice({"r", 1, 7, false}, {"a", "b", "c"}, 1, 3)       -- size differs
            m = q:_get_into(true, 1, 5, tasks, 3)
            print(type(m[5]), #m[5], results[5])
            q:_put_slice({"r", 1, 8, false}, {"x"}, 1, 1)                 -- unknown task
            m = q:_get_into(true, 1, 5, tasks, 3)
            print(m[5][1])
            q:put("plain")
            print(q:_get_into(false, nil, 5, tasks, 3))
            print(pcall(q._get_into, q, true, 0))
            -- a worker's take: a task's items go into its one buffer; a
            -- task's number is its place in the task queue
            local st = jobrun._pool_state(jobrun.Queue(), q, 1)
            local buf = {}
            print(st:_put({1, "f", 3, "map"}, {"x", "y", "z"}, 1, 3), st:_put({2, "f", 1, "map"}, {{k = 1}}, 1, 1), st:_put())
            local t1 = st:_take(1, 5, buf)
            print(t1[5] == buf, t1[3], buf[1], buf[2], buf[3])
            local t2 = st:_take(1, 5, buf)
            print(t2[5] == buf, buf[1].k, st:_take(1, 5, buf))
            """)
        expectStatus(r)
        #expect(r.stdout.hasPrefix("""
            r\t7\ttrue\ta\t1\tnil\t0
            table\t3\tnil
            x
            plain
            false
            """), "\(r.stdout)")
        #expect(r.stdout.hasSuffix("""
            1\t2\t3
            true\t3\tx\ty\tz
            true\t1\tnil

            """), "\(r.stdout)")
        #expect(r.stdout.contains("expected (block, timeout, field, routes table, key field before it)"), "\(r.stdout)")
    }

    @Test func aFailedItemLeavesNoValueInItsPlace() {
        // A worker writes each result over its item: an item whose call
        // raised must not come back as a result.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local step = pool:imap(function(x) if x == 3 then error("bad", 0) end return x * 10 end, {1, 2, 3, 4}, 4)
            for _ = 1, 4 do local ok, v = pcall(step); print(ok, ok and v or (v:gsub("\\n.*", ""))) end
            local a = pool:starmap_async(function(x, y) if x == 2 then error("no", 0) end return x + y end,
                                         {{1, 1}, {2, 2}, {3, 3}}, 3)
            print(a:wait(10), a:successful(), a._job.results[2], a._job.results[3])
            -- a smaller chunk after a bigger one: nothing of the old one comes back
            local big = {}
            for i = 1, 10 do big[i] = i end
            pool:map(function(x) return x end, big, 10)
            local small = pool:map(function(x) return -x end, {1, 2, 3}, 10)
            print(#small, small[3], small[4], next(small, 3))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        expectLines(r, [
            "imap over one chunk: item 1": "true\t10",
            "item 2": "true\t20",
            "item 3 raised": "false\tbad",
            "item 4 after it": "true\t40",
            "a failed starmap item leaves no value; the next one has its own": "true\tfalse\tnil\t6",
            "a smaller chunk after a bigger one brings nothing of the old one back": "3\t-3\tnil\tnil",
        ])
    }

    @Test func itemsAfterAFailingOneInTheSameChunkStillRun() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local seen = jobrun.Queue()
            local function f(x)
              seen:put(x)
              if x == 7 or x == 3 then error("bad " .. x, 0) end
              return x
            end
            local list = {}
            for i = 1, 10 do list[i] = i end
            -- one chunk of 10: the lowest failing item is raised
            local ok, e = pcall(pool.map, pool, f, list, 10)
            print(ok, (e:gsub("\\n.*", "")))
            local ran = {}
            for _ = 1, 10 do ran[#ran + 1] = seen:get(true, 5) end
            table.sort(ran)
            print(table.concat(ran, ","))
            -- stepping imap past a failing item: the results around it are in place
            local step, out = pool:imap(f, list, 10), {}
            for _ = 1, 10 do
              local fine, v = pcall(step)
              out[#out + 1] = fine and tostring(v) or (v:gsub("\\n.*", ""))
            end
            print(table.concat(out, ","))
            for _ = 1, 10 do seen:get(true, 5) end
            -- imap gives the items before the failure, then raises
            local got = {}
            ok, e = pcall(function() for v in pool:imap(f, list, 10) do got[#got + 1] = v end end)
            print(ok, table.concat(got, ","), (e:gsub("\\n.*", "")))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "one chunk of 10: the lowest failing item is raised": "false\tbad 3",
            "every item of the chunk ran": "1,2,3,4,5,6,7,8,9,10",
            "imap stepped past the failures: each result in its place": "1,2,bad 3,4,5,6,bad 7,8,9,10",
            "imap in a for loop stops at the failure": "false\t1,2\tbad 3",
        ])
    }

    @Test func errorWithLevelTwoNamesNoPoolPlace() {
        // error(msg, 2) blames fn's caller; the pool's own frame must not show.
        let r = runScript("""
            local pool = jobrun.Pool{workers = 1}
            local function check(x)
              if x == 2 then error("bad input " .. x, 2) end
              return x
            end
            local function first_line(e) return (e:gsub("\\n.*", ""):gsub("^.*main%.lua", "main.lua")) end
            local ok, e = pcall(pool.map, pool, check, {1, 2, 3})
            print(first_line(e))
            ok, e = pcall(pool.map, pool, function(x) return check(x) end, {1, 2, 3})
            print(first_line(e))
            ok, e = pcall(pool.map, pool, function(x) local v = check(x) return v end, {1, 2, 3})
            print(first_line(e))
            pool:terminate()
            """)
        expectStatus(r)
        expectLines(r, [
            "error(msg, 2) in fn blames fn's caller: the pool shows no place": "bad input 2",
            "the same when a wrapper calls fn": "bad input 2",
            "a wrapper that calls it from its own line is blamed at that line": "main.lua:11: bad input 2",
        ])
    }

    @Test func listWithAMetatableIsReadThroughIt() {
        let r = runScript("""
            local pool = jobrun.Pool{workers = 2}
            local list = setmetatable({}, {__index = function(_, i) return i * 10 end, __len = function() return 5 end})
            print(table.concat(pool:map(function(x) return x + 1 end, list, 2), ","))
            pool:close(); pool:join()
            """)
        expectStatus(r)
        #expect(r.stdout == "11,21,31,41,51\n")
    }
}
