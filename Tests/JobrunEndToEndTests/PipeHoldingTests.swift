import Foundation
import Testing

// Issue 12: a Pipe end is held per process, as a file descriptor is in
// Python; close closes the caller's copy, EOF comes once no process holds
// the other end, and waits on a Pipe are seen by the deadlock check.

@Suite("Pipe ends held per process")
struct PipeHoldingTests {
    @Test func parentClosesTheChildsEndAfterStart() {
        // Python's classic: a, b = Pipe(); p = Process(target=f, args=(b,)); p.start(); b.close()
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local p = jobrun.Process{target = function(c)
              c:send("hi")
              c:send("child got " .. tostring(c:recv(10)))
              c:close()
            end, args = {b}}
            p:start()
            b:close()
            print(b:closed(), a:closed())
            print(a:recv(10)); a:send("back"); print(a:recv(10))
            local ok, e = pcall(a.recv, a, 10); print(ok, e.kind)
            p:join(10); print(p.exitcode)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "main's copy of the child's end is closed, its own is not": "true\tfalse",
            "the child's message": "hi",
            "the pipe works both ways": "child got back",
            "EOF once the child closed its end": "false\tEOF",
            "the child ends with 0": "0",
        ])
    }

    @Test func eofOnlyWhenNoProcessHoldsTheOtherEnd() {
        // p1 used b and ended; p2 still holds b (inherited), so no EOF yet.
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local go = jobrun.Event()
            local p1 = jobrun.Process{target = function() b:send(1) end}
            local p2 = jobrun.Process{target = function() go:wait(20); b:send(2) end}
            p1:start(); p2:start(); b:close()
            print(a:recv(10)); p1:join(10)
            local ok, e = pcall(a.recv, a, 0.3); print(ok, e.kind)
            go:set(); print(a:recv(10))
            p2:join(10)
            ok, e = pcall(a.recv, a, 10); print(ok, e.kind)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "the first child's message": "1",
            "no EOF while the second child holds the end": "false\tTimeout",
            "the second child's message": "2",
            "EOF once it ended": "false\tEOF",
        ])
    }

    @Test func eofWhenTheLastHolderIsKilled() {
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local p = jobrun.Process{target = function() b:send("up"); jobrun.sleep(30) end}
            p:start(); b:close()
            print(a:recv(10)); p:kill()
            local t0 = jobrun.time()
            local ok, e = pcall(a.recv, a, 20); print(ok, e.kind, jobrun.time() - t0 < 5)
            ok, e = pcall(a.send, a, 1); print(ok, e.kind)
            p:join(10)
            """, timeout: 40)
        expectStatus(r)
        expectLines(r, [
            "what the killed child sent arrives": "up",
            "then EOF at once": "false\tEOF\ttrue",
            "send to a peer that is gone raises EOF": "false\tEOF",
        ])
    }

    @Test func aChildKilledAsItStartsReleasesTheEndsItInherited() {
        // Killed before it could even register: the ends its parent handed
        // it at fork are released all the same.
        let r = runScript("""
            local eof = 0
            for _ = 1, 5 do
              local a, b = jobrun.Pipe()
              local p = jobrun.Process{target = function() b:send(1); jobrun.sleep(10) end}
              p:start(); b:close(); p:kill()
              local ok, e = pcall(a.recv, a, 3)
              if ok then ok, e = pcall(a.recv, a, 3) end
              if not ok and e.kind == "EOF" then eof = eof + 1 end
              p:join(5)
            end
            print(eof)
            """, timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "5\n", "\(r.stdout)\(r.stderr)")
    }

    @Test func anEndSentThroughAQueueIsHeldByItsReceiver() {
        // The child gets b only from the queue, then closes its copy while it
        // still runs: EOF comes from that close, not from its exit.
        let r = runScript("""
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function()
              local c = q:get(true, 10)
              c:send("got it"); c:send(c:recv(10) * 2); c:close()
              jobrun.sleep(30)
            end}
            p:start()
            local a, b = jobrun.Pipe(); q:put(b)
            print(a:recv(10)); b:close(); a:send(21); print(a:recv(10))
            local ok, e = pcall(a.recv, a, 10); print(ok, e.kind)
            p:kill(); p:join(10)
            """, timeout: 40)
        expectStatus(r)
        expectLines(r, [
            "the child got the end from the queue and answers": "got it",
            "the end works both ways": "42",
            "EOF from the child's close while it still runs": "false\tEOF",
        ])
    }

    @Test func aScriptWorkerHoldsTheEndsInItsArguments() {
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local p = jobrun.Process{script = "w.lua", args = {b}}
            p:start(); b:close()
            print(a:recv(10))
            local ok, e = pcall(a.recv, a, 10); print(ok, e.kind)
            p:join(10); print(p.exitcode)
            """, files: ["w.lua": "local c = ...; c:send('from script'); c:close()"], timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "the script worker's message arrives": "from script",
            "EOF once the script worker closed its end": "false\tEOF",
            "it ends with 0": "0",
        ])
    }

    @Test func pollOnASendOnlyEndRaisesAsRecvDoes() {
        let r = runScript("""
            local r, w = jobrun.Pipe(false)
            local ok, e = pcall(w.recv, w, 0); print(ok, e.kind)
            ok, e = pcall(w.poll, w, 0); print(ok, e.kind, e.message)
            """)
        expectStatus(r)
        expectLines(r, [
            "recv on a send-only end is a ValueError": "false\tValueError",
            "poll on it too, with a message that says so": "false\tValueError\tConnection#1.b.poll: this end of a one-way Pipe only sends",
        ])
    }

    @Test func twoProcessesInRecvOnEachOtherRaiseDeadlock() {
        let r = runScript("""
            local a, b = jobrun.Pipe()
            local p = jobrun.Process{target = function()
              local ok, e = pcall(b.recv, b); print("child", ok, e.kind)
            end}
            p:start()
            local ok, e = pcall(a.recv, a); print("main", ok, e.kind)
            print(e.message:find("Connection#1.a.recv (nothing to read)", 1, true) ~= nil, e.message:find("Connection#1.b.recv", 1, true) ~= nil)
            p:join(10)
            """, timeout: 30)
        // (The run's exit status after a declared deadlock is not this test's business.)
        #expect(!r.timedOut, "hung: \(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("main\tfalse\tDeadlock\n"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("child\tfalse\tDeadlock\n"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("true\ttrue\n"), "\(r.stdout)\(r.stderr)")
    }
}
