import Foundation
import Testing

@Suite("Dict, Value and Pipe across processes")
struct SharedStateTests {
    @Test func dictBasics() {
        let r = runScript("""
            local d = jobrun.Dict{count = 1, [2] = "two"}
            print(d.count, d[2], d[2.0], #d, d:len(), d:get("missing", "dflt"))
            d.list = {1, 2, {x = 3}}
            print(d.list[3].x)
            d.count = nil
            print(#d, d:contains("count"), d:delete("list"), d:delete("list"))
            d.get = "a key named get"
            print(type(d.get), d:get("get"))
            local ks = d:keys(); table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
            print(table.concat(ks, ","))
            local n = 0
            for k, v in pairs(d) do n = n + 1 end
            print(n, d:items()[2])
            for i = 1, 1000 do d[i] = i * i end
            print(#d, d[1000], d[500])
            d.big = string.rep("b", 3 * 1024 * 1024); print(#d.big)
            local ok, e = pcall(function() d[{}] = 1 end); print(ok, e.kind)
            ok, e = pcall(function() d.x = coroutine.create(print) end); print(ok, e.kind)
            ok, e = pcall(function() return d[0/0] end); print(ok, e.kind)
            """)
        expectStatus(r)
        expectLines(r, [
            "initial keys read back; 2.0 is the key 2; # and len count; get's default": "1\ttwo\ttwo\t2\t2\tdflt",
            "a nested table value reads back": "3",
            "a nil assignment deletes; delete says whether the key was there": "2\tfalse\ttrue\tfalse",
            "a key named like a method: d.get is the method, d:get reads the key": "function\ta key named get",
            "keys() lists every key": "2,get",
            "pairs visits every key; items() gives the values": "2\ttwo",
            "a thousand keys: the table grows and keeps them": "1001\t1000000\t250000",
            "a 3 MiB value reads back whole": "3145728",
            "a table as key is a TypeError": "false\tTypeError",
            "a coroutine as value is a TypeError": "false\tTypeError",
            "NaN as key is a TypeError": "false\tTypeError",
        ])
    }

    @Test func concurrentUpdatesLoseNothing() {
        let r = runScript("""
            local d = jobrun.Dict()
            local v = jobrun.Value(0)
            local ps = {}
            for i = 1, 4 do
              ps[i] = jobrun.Process{target = function()
                for j = 1, 300 do
                  d:update("n", function(old) return (old or 0) + 1 end)
                  v:add(1)
                end
              end}
              ps[i]:start()
            end
            for _, p in ipairs(ps) do p:join(60) end
            print(d.n, v:get())
            print(v:compare_and_swap(1200, 2.5), v:get(), v:compare_and_swap(1, 2), v:add(1))
            v:set(7); print(v:get(), math.type(v:get()))
            print(pcall(v.set, v, "x"))
            """, timeout: 120)
        expectStatus(r)
        #expect(r.stdout.hasPrefix("1200\t1200\ntrue\t2.5\tfalse\t3.5\n7\tinteger\nfalse\tjobrun.TypeError: "), "\(r.stdout)")
    }

    @Test func pipeBetweenTwoProcesses() {
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local p = jobrun.Process{target = function()
              b:send("hello"); b:send({1, 2})
              b:send("child got " .. tostring(b:recv(10)))
              b:close()
            end}
            p:start(); b:close()   -- the child has its own copy
            print(a:recv(10), a:recv(10)[2])
            a:send("back")
            print(a:recv(10))
            print(a:poll(10))
            local ok, e = pcall(a.recv, a, 10); print(ok, e.kind)
            p:join(10)
            local r, w = jobrun.Pipe(false)
            ok, e = pcall(r.send, r, 1); print(ok, e.kind)
            w:send(42); print(r:poll(0), r:recv(1), r:poll(0.01))
            ok, e = pcall(r.recv, r, 0.05); print(ok, e.kind)
            a:close(); ok, e = pcall(a.send, a, 1); print(ok, e.kind)
            """)
        expectStatus(r)
        expectLines(r, [
            "a string and a table arrive in order": "hello\t2",
            "the pipe is duplex: the child answers what main sent": "child got back",
            "poll is true when the other end closed (EOF is ready)": "true",
            "recv after the peer closed raises EOF": "false\tEOF",
            "send on the read end of a one-way pipe is a ValueError": "false\tValueError",
            "poll(0) sees a message; recv gets it; then poll times out": "true\t42\tfalse",
            "recv with a timeout and nothing sent raises Timeout": "false\tTimeout",
            "send on a closed end is a ValueError": "false\tValueError",
        ])
    }

    @Test func pipeGivesEOFWhenThePeerDied() {
        let r = runScript("""
            local x, y = jobrun.Pipe()
            local q = jobrun.Process{target = function() y:send(1); os.exit(0) end}
            q:start(); y:close(); q:join(10)
            print(x:recv(5))
            local t0 = jobrun.time()
            local ok, e = pcall(x.recv, x, 10)
            print(ok, e.kind, jobrun.time() - t0 < 2)
            """)
        expectStatus(r)
        expectLines(r, [
            "what the peer sent before it ended is still received": "1",
            "then recv raises EOF at once, not after its timeout": "false\tEOF\ttrue",
        ])
    }
}
