import Foundation
import Testing

/// A started Process sent through a queue or as a `script` worker's
/// argument arrives as a Process object that asks the run's records, not as
/// a plain table (codec tag 0x0D).
@Suite("A Process sent to another process")
struct SentProcessTests {
    @Test func throughAQueue() {
        let r = runScript("""
            local q, back, ended = jobrun.Queue(), jobrun.Queue(), jobrun.Event()
            local release = jobrun.Event()
            local w = jobrun.Process{name = "worker", target = function() release:wait(30) end}
            w:start()
            local c = jobrun.Process{name = "checker", target = function()
              local p = q:get(true, 30)
              print("got", tostring(p):match("^<Process name='worker'") ~= nil, p.name, p.daemon, p:is_alive(), p.exitcode)
              local ok, e = pcall(p.join, p)
              print("join", ok, e.kind, e.message:match("can only join a child process") ~= nil)
              release:set()
              ended:wait(30)
              print("ended", p:is_alive(), p.exitcode)
              back:put({me = jobrun.current_process(), w = p, again = p})
            end}
            c:start()
            q:put(w)
            w:join(30)
            ended:set()
            local t = back:get(true, 30)
            print("back", t.me.name, t.me.pid == c.pid, rawequal(t.w, t.again), t.w.pid == w.pid)
            print("parent joins", t.me:join(30), t.me.exitcode, c:join(30), c.exitcode)
            """)
        expectStatus(r)
        expectLines(r, [
            "a Process got from a queue has its tostring, name, daemon flag and liveness": "got\ttrue\tworker\tfalse\ttrue\tnil",
            "only its parent may join it": "join\tfalse\tProcessError\ttrue",
            "its end and exit code show in the receiver": "ended\tfalse\t0",
            "current_process() and a process sent twice in one item arrive as the same object": "back\tchecker\ttrue\ttrue\ttrue",
            "the parent joins a Process object it got back": "parent joins\ttrue\t0\ttrue\t0",
        ])
    }

    @Test func asAScriptWorkersArgument() {
        let r = runScript("""
            local release = jobrun.Event()
            local w = jobrun.Process{name = "sleeper", daemon = true, target = function() release:wait(30) end}
            w:start()
            local s = jobrun.Process{script = "child.lua", args = {w, release}}
            s:start(); s:join(30)
            print(s.exitcode, w:join(30), w.exitcode)
            """, files: ["child.lua": """
            local w, release = ...
            print(w.name, w.daemon, w:is_alive(), select(2, pcall(w.join, w)).kind)
            release:set()
            """])
        expectStatus(r)
        expectLines(r, [
            "a script worker gets the Process: name, daemon, alive, and join is refused": "sleeper\ttrue\ttrue\tProcessError",
            "the script worker ends with 0 and its parent joins the sleeper": "0\ttrue\t0",
        ])
    }

    @Test func anUnstartedProcessIsRefused() {
        let r = runScript("""
            local q = jobrun.Queue()
            local ok, e = pcall(q.put, q, {job = jobrun.Process{target = print}})
            print(ok, e.kind, e.message)
            """)
        expectStatus(r)
        #expect(r.stdout == "false\tTypeError\tQueue#1.put: item.job: cannot send a Process that has not been started (send it after p:start())\n", "\(r.stdout)")
    }
}
