import Foundation
import Testing

/// Lua: `a_zombie_child()` is true once a child of the main process has ended
/// and waits to be reaped (state Z), e.g. an io.popen child that exited.
private let luaZombieChild = luaWaits + """
    local me = jobrun.current_process().pid
    local function a_zombie_child()
      local f = io.open("/proc/" .. me .. "/task/" .. me .. "/children")
      local list = f and f:read("a") or ""
      if f then f:close() end
      for pid in list:gmatch("%d+") do
        local s = io.open("/proc/" .. pid .. "/stat")
        local st = s and s:read("a"):match("%) (%a)")
        if s then s:close() end
        if st == "Z" then return true end
      end
      return false
    end

    """

@Suite("A process's life: start, identity, reaping, exit")
struct ProcessLifeTests {
    /// A worker's uncaught error goes through its own io.stderr, forked or
    /// `script` alike: into the file it pointed io.stderr at, or, once
    /// io.stderr is no open file, on descriptor 2 (never lost, never
    /// replaced by the error of writing it).
    @Test func aWorkersUncaughtErrorGoesThroughItsIoStderr() {
        let r = runScript("""
            local log = os.tmpname()
            local function run(p) p:start(); p:join(30); assert(p.exitcode == 1, tostring(p.exitcode)) end
            run(jobrun.Process{name = "forked-file", target = function() io.stderr = assert(io.open(log, "a")); error("into the file") end})
            run(jobrun.Process{name = "script-file", script = "w.lua", args = {log, "file"}})
            run(jobrun.Process{name = "forked-closed", target = function() local c = io.tmpfile(); c:close(); io.stderr = c; error("on descriptor 2") end})
            run(jobrun.Process{name = "script-closed", script = "w.lua", args = {log, "closed"}})
            local f = assert(io.open(log)); local text = f:read("a"); f:close(); os.remove(log)
            for _, who in ipairs{"forked-file", "script-file"} do
              print(who, text:find("Process " .. who .. " (pid ", 1, true) ~= nil and text:find("into the file", 1, true) ~= nil)
            end
            print(text:find("descriptor 2", 1, true) == nil)
            """, files: ["w.lua": """
                local log, how = ...
                if how == "file" then io.stderr = assert(io.open(log, "a")); error("into the file") end
                io.stderr = nil; error("on descriptor 2")
                """], timeout: 60)
        #expect(!r.timedOut)
        expectLines(r, [
            "a forked worker's error goes to the file it set as io.stderr": "forked-file\ttrue",
            "a script worker's too": "script-file\ttrue",
            "nothing about descriptor 2 went into the file": "true",
        ])
        for who in ["forked-closed", "script-closed"] {
            #expect(r.stderr.contains("Process \(who) (pid ") && r.stderr.range(of: "Process \(who) \\(pid \\d+\\): [^\n]*on descriptor 2", options: .regularExpression) != nil,
                    "\(who): \(r.stderr)")
        }
        #expect(!r.stderr.contains("into the file"), "\(r.stderr)")
        #expect(!r.stderr.contains("closed file"), "\(r.stderr)")
    }

    /// Whatever raises between fork and the target call ends the child with
    /// status 1: it never returns into the parent's code.
    @Test func childStartupErrorEndsTheChild() {
        let r = runScript("""
            local p = jobrun.Process{name = "w", target = function() print("target ran") end, args = {n = 2000000}}
            print("start", pcall(p.start, p))
            print("joined", p:join(10), p.exitcode)
            local ok, e = pcall(jobrun.Process, {target = print, args = {n = "many"}})
            print(ok, e.kind, e.message)
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "an args.n too big to unpack: start still succeeds in the parent": "start\ttrue",
            "the child ends with status 1": "joined\ttrue\t1",
            "a non-integer args.n is a TypeError": "false\tTypeError\tProcess: args.n must be an integer >= 0, got string",
        ])
        #expect(r.stderr.contains("Process w (pid "), "\(r.stderr)")
        #expect(r.stderr.contains("too many results to unpack"), "\(r.stderr)")
        // A target that yields (start() ran inside a coroutine) and one
        // that breaks the error report itself: each child still ends here.
        let odd = runScript("""
            local y = jobrun.Process{name = "yielder", target = coroutine.yield}
            local co = coroutine.wrap(function() y:start(); return "started" end)
            print(co())
            print("joined", y:join(10), y.exitcode)
            local b = jobrun.Process{name = "broken", target = function() io.stderr = {}; error("inner") end}
            b:start()
            print("joined", b:join(10), b.exitcode)
            """, timeout: 30)
        expectStatus(odd)
        expectLines(odd, [
            "a target started inside a coroutine: start returns in the parent": "started",
            "the yielding child ends with status 1": "joined\ttrue\t1",
            "a child whose error report itself fails ends with status 1": "joined\ttrue\t1",
        ])
        #expect(odd.stderr.contains("Process yielder (pid "), "\(odd.stderr)")
        #expect(odd.stderr.contains("attempt to yield across a C-call boundary"), "\(odd.stderr)")
        #expect(odd.stderr.contains("Process broken (pid "), "\(odd.stderr)")
    }

    /// As Python: only the parent joins; a sibling reads is_alive and
    /// exitcode from the run's records.
    @Test func siblingCannotJoinButSeesState() {
        let r = runScript("""
            local go, go2 = jobrun.Event(), jobrun.Event()
            local p = jobrun.Process{target = function() go:wait(20) end}
            p:start()
            local s = jobrun.Process{target = function()
              local ok, e = pcall(p.join, p, 5)
              print(ok, e.kind, e.message:find("can only join a child process", 1, true) ~= nil)
              print(p:is_alive(), p.exitcode)
            end}
            local s2 = jobrun.Process{target = function()
              go2:wait(20)
              print(p:is_alive(), p.exitcode)
              local ok, e = pcall(jobrun.current_process().join, jobrun.current_process())
              print(ok, e.kind)
            end}
            s:start(); s2:start()
            s:join(20)
            go:set(); p:join(20)
            go2:set(); s2:join(20)
            print(s.exitcode, s2.exitcode)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a sibling cannot join": "false\tProcessError\ttrue",
            "a sibling sees it alive, no exit code yet": "true\tnil",
            "a sibling sees its end and exit code": "false\t0",
            "a process cannot join itself": "false\tProcessError",
            "both siblings end with 0": "0\t0",
        ])
    }

    /// jobrun reaps only its own processes: io.popen's and os.execute's
    /// children stay theirs.
    @Test func popenChildrenAreNotReaped() {
        // Each popen child has ended (a zombie) before jobrun sleeps or joins.
        let r = runScript(luaZombieChild + """
            local f = io.popen("echo hi"); assert(wait_until(a_zombie_child)); jobrun.sleep(0.01); print(f:read("a"), f:close())
            local g = io.popen("echo there"); assert(wait_until(a_zombie_child))
            local p = jobrun.Process{target = function() end}
            p:start(); print(p:join(10), p.exitcode)
            print(g:read("a"), g:close())
            local h = io.popen("exit 3"); assert(wait_until(a_zombie_child))
            local w = jobrun.Process{target = function() end}
            w:start(); print(w:join(10))
            print(h:close())
            print(os.execute("exit 4"))
            """, timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "an ended popen child's output survives a jobrun sleep": "hi",
            "and its status stays for its own close": "\ttrue\texit\t0",
            "a Process join reaps only the Process": "true\t0",
            "another ended popen child's output survives that join": "there",
            "and its status": "\ttrue\texit\t0",
            "join while a popen child that exits 3 has ended": "true",
            "its exit code 3 stays for close": "nil\texit\t3",
            "os.execute gets its own exit code": "nil\texit\t4",
        ])
    }

    /// An orphan adopted by the main process (its worker parent died) is
    /// still reaped: no zombie stays behind (a guard for the fix above).
    @Test func adoptedOrphansAreReaped() {
        let r = runScript(luaZombieChild + """
            local f = io.popen("true")    -- a foreign zombie hides the others from waitid(P_ALL)
            assert(wait_until(a_zombie_child))
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function()
              -- c announces itself once it runs (and so has its record).
              local c = jobrun.Process{target = function() q:put(jobrun.current_process().pid); jobrun.sleep(30) end}
              c:start()
              jobrun.sleep(30)
            end}
            p:start()
            local pid = q:get(true, 10)
            p:kill(); p:join(10)      -- c gets SIGKILL as its parent dies, and main adopts it
            local st
            wait_until(function()     -- each sleep reaps what has ended
              local f = io.open("/proc/" .. pid .. "/stat")
              st = f and f:read("a"):match("^%d+ %b() (%a)") or "gone"
              if f then f:close() end
              return st == "gone"
            end, 4)
            print(st, f:close())
            """, timeout: 30)
        expectStatus(r)
        #expect(r.stdout == "gone\ttrue\texit\t0\n")
    }

    /// Each forked worker has its own random sequence; the parent's goes on.
    @Test func forkedWorkersGetFreshRandomSeeds() {
        let r = runScript("""
            math.randomseed(42)
            local a = math.random(1e9)
            local q = jobrun.Queue()
            for i = 1, 2 do jobrun.Process{target = function() q:put(math.random(1e9)) end}:start() end
            local x, y = q:get(true, 10), q:get(true, 10)
            local p1 = jobrun.Pool{workers = 1}
            local p2 = jobrun.Pool{workers = 1}
            local draw = function() return math.random(1e9) end
            local u, v = p1:map(draw, {1})[1], p2:map(draw, {1})[1]
            p1:close(); p1:join(); p2:close(); p2:join()
            local b = math.random(1e9)
            math.randomseed(42)
            print(x ~= y, u ~= v, a == math.random(1e9), b == math.random(1e9))
            """, timeout: 30)
        expectStatus(r)
        expectFields(r, [
            "two forked workers draw different numbers": "true", "two pools' workers draw different numbers": "true",
            "the parent's sequence is the seeded one": "true", "and goes on as seeded after the forks": "true",
        ])
    }

    /// A script worker finds modules beside its own script first, and what
    /// the parent added to package.path and package.cpath.
    @Test func scriptWorkerPackagePath() {
        let r = runScript("""
            package.path = "{dir}/libs/?.lua;" .. package.path
            package.cpath = "/nonexistent/?.so;" .. package.cpath
            local p = jobrun.Process{script = "stages/stage.lua"}
            p:start(); p:join(20)
            print(p.exitcode)
            """, files: [
                "stages/stage.lua": """
                    print(require("helper"), require("extra"), package.path:find("{dir}/stages/?.lua", 1, true) == 1,
                          package.cpath:find("/nonexistent/?.so", 1, true) ~= nil)
                    """,
                "stages/helper.lua": "return 'helper beside stage'",
                "helper.lua": "return 'helper beside main'",
                "libs/extra.lua": "return 'extra from libs'",
            ], timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "a script worker requires a module beside its script before main's, and from a path main added": "helper beside stage\textra from libs\ttrue\ttrue",
            "it ends with 0": "0",
        ])
    }

    /// current_process() is a Process object in every kind of process.
    @Test func currentProcessIsAProcess() {
        let r = runScript("""
            local me = jobrun.current_process()
            print(tostring(me):match("^<Process name='MainProcess'") ~= nil, me.name, math.type(me.pid), me.daemon,
                  me:is_alive(), me.exitcode, me == jobrun.current_process())
            local q = jobrun.Queue()
            local function report()
              local c = jobrun.current_process()
              q:put({c.name, c.pid, c.daemon, c:is_alive(), c.exitcode == nil, c == jobrun.current_process(),
                     tostring(c):match("^<Process") ~= nil})
            end
            local p = jobrun.Process{name = "forked", target = report}
            p:start(); local t = q:get(true, 10); p:join(10)
            print(t[1], t[2] == p.pid, t[3], t[4], t[5], t[6], t[7])
            local s = jobrun.Process{name = "scripted", daemon = true, script = "w.lua", args = {q}}
            s:start(); t = q:get(true, 10); s:join(10)
            print(t[1], t[2] == s.pid, t[3], t[4], t[5], t[6], t[7])
            """, files: ["w.lua": """
                local q = ...
                local c = jobrun.current_process()
                q:put({c.name, c.pid, c.daemon, c:is_alive(), c.exitcode == nil, c == jobrun.current_process(),
                       tostring(c):match("^<Process") ~= nil})
                """], timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "in main: a Process named MainProcess, integer pid, not daemon, alive, no exit code, the same object each call":
                "true\tMainProcess\tinteger\tfalse\ttrue\tnil\ttrue",
            "in a forked worker: its name, its pid, daemon flag, alive, the same object each call":
                "forked\ttrue\tfalse\ttrue\ttrue\ttrue\ttrue",
            "in a script worker: the same": "scripted\ttrue\ttrue\ttrue\ttrue\ttrue\ttrue",
        ])
    }

    /// Files the script opened and jobrun's --stats-json file are not open
    /// in a script worker; the --stats-json file is not open in a forked one.
    @Test func workersDoNotInheritDescriptors() {
        let r = runScript("""
            local f = assert(io.open("{dir}/opened.txt", "w"))
            local function fds() local l = io.popen("ls -l /proc/$PPID/fd"); local s = l:read("a"); l:close(); return s end
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function() q:put(fds()) end}
            p:start(); local forked = q:get(true, 10); p:join(10)
            local s = jobrun.Process{script = "w.lua", args = {q}}
            s:start(); local scripted = q:get(true, 10); s:join(10)
            print(forked:find("opened.txt", 1, true) ~= nil, forked:find("stats.json", 1, true) ~= nil)
            print(scripted:find("opened.txt", 1, true) ~= nil, scripted:find("stats.json", 1, true) ~= nil,
                  scripted:find("memfd", 1, true) ~= nil)
            print(fds():find("stats.json", 1, true) ~= nil)
            f:close()
            """, files: ["w.lua": """
                local q = ...
                local l = io.popen("ls -l /proc/$PPID/fd"); q:put(l:read("a")); l:close()
                """], options: ["--stats-json", "{dir}/stats.json"], timeout: 30)
        expectStatus(r)
        // A forked worker is a copy of its parent: the script's own files
        // stay open in it, as in Python's fork.
        expectLines(r, [
            "a forked worker keeps the script's open files (a copy, as in fork) but not the stats file": "true\tfalse",
            "a script worker has neither, only the arena memfd": "false\tfalse\ttrue",
            "main holds its stats file": "true",
        ])
    }

    /// The main process closes its state at exit as lua5.4 does.
    @Test func mainClosesItsStateAtExit() {
        let plain = runScript("""
            setmetatable({}, {__gc = function() print("gc") end})
            local c <close> = setmetatable({}, {__close = function() print("closed") end})
            print("end")
            """)
        expectStatus(plain)
        expectLines(plain, [
            "the chunk ends": "end",
            "then its <close> variables close": "closed",
            "then the state's finalizers run": "gc",
        ])
        let failed = runScript("""
            setmetatable({}, {__gc = function() print("gc") end})
            error("boom")
            """)
        #expect(failed.status == 1)
        #expect(failed.stdout == "gc\n")
        let closing = runScript("""
            setmetatable({}, {__gc = function() print("gc") end})
            local c <close> = setmetatable({}, {__close = function() print("closed") end})
            os.exit(3, true)
            """)
        #expect(closing.status == 3)
        expectLines(closing, [
            "os.exit(3, true) closes <close> variables": "closed",
            "then runs finalizers": "gc",
        ])
        // lua5.4's os.exit without `close` leaves the state as it is.
        let abrupt = runScript("""
            setmetatable({}, {__gc = function() print("gc") end})
            os.exit(0)
            """)
        #expect(abrupt.status == 0)
        #expect(abrupt.stdout == "")
    }

    /// A forked worker runs in a copy of its parent's state and does not
    /// close it: its target's <close> variables close, inherited finalizers
    /// stay the parent's, inherited output is written once. A script
    /// worker's state is its own and closes as the main one does.
    @Test func whatRunsAtAWorkersExit() {
        let r = runScript("""
            io.write("x")
            setmetatable({}, {__gc = function() print("parent gc") end})
            local p = jobrun.Process{target = function()
              local c <close> = setmetatable({}, {__close = function() print("worker closed") end})
              setmetatable({}, {__gc = function() print("worker gc") end})
            end}
            p:start(); p:join(10)
            local s = jobrun.Process{script = "w.lua"}
            s:start(); s:join(10)
            print("end")
            """, files: ["w.lua": """
                setmetatable({}, {__gc = function() print("script gc") end})
                local c <close> = setmetatable({}, {__close = function() print("script closed") end})
                """], timeout: 30)
        expectStatus(r)
        expectLines(r, [
            "the forked worker's <close> runs, its finalizer does not, and the parent's pending 'x' is written once": "xworker closed",
            "the script worker's state closes: <close> first": "script closed",
            "then its finalizers": "script gc",
            "main's chunk ends": "end",
            "then main's state closes": "parent gc",
        ])
    }
}
