import Foundation
import Testing

@Suite("The script runs like lua5.4 runs it")
struct ScriptTests {
    @Test func argumentsArriveAsArgAndDots() {
        let r = runScript("""
            print(arg[0]:match("main.lua$") ~= nil, arg[1], arg[2], select('#', ...), ...)
            """, args: ["a", "b c"])
        #expect(r.status == 0)
        expectFields(r, [
            "arg[0] is the script's path": "true", "arg[1]": "a", "arg[2], spaces kept": "b c",
            "... holds as many values": "2", "first of ...": "a", "second of ...": "b c",
        ])
    }

    @Test func exitStatuses() {
        #expect(runScript("os.exit(3)").status == 3)
        #expect(runScript("os.exit(true)").status == 0)
        #expect(runScript("os.exit(false)").status == 1)
        #expect(runScript("local x = 1").status == 0)
    }

    @Test func uncaughtErrorPrintsMessageAndTraceback() {
        let r = runScript("local function f() error('boom') end\nf()")
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:1: boom"))
        #expect(r.stderr.contains("stack traceback:"))
        #expect(!r.stderr.contains("Fatal error"))
    }

    @Test func missingScriptIsAClearError() {
        let r = runJobrun(["/nonexistent/script.lua"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("cannot open /nonexistent/script.lua"))
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    @Test func syntaxErrorNamesTheLine() {
        let r = runScript("local x = 1\nlocal y = = 2\n")
        #expect(r.status == 1)
        #expect(r.stderr.contains("main.lua:2:"))
    }

    @Test func moduleIsGlobalAndRequirable() {
        let r = runScript("""
            local m = require "helper"
            print(require("jobrun") == jobrun, m.value, jobrun.is_main, type(jobrun.version))
            print(jobrun.Empty, jobrun.Full, jobrun.WorkerDied, jobrun.cpu_count() >= 1)
            """, files: ["helper.lua": "return {value = 42}"])
        expectStatus(r)
        expectLines(r, [
            "require 'jobrun' is the global; a module beside the script loads; is_main; version is a string":
                "true\t42\ttrue\tstring",
            "the error kinds are named; cpu_count() is at least 1": "Empty\tFull\tWorkerDied\ttrue",
        ])
    }
}

@Suite("Processes")
struct ProcessTests {
    @Test func forkedWorkerKeepsClosuresAndReportsExitCodes() {
        let r = runScript("""
            local captured = {n = 41}
            local ok = jobrun.Process{target = function(a, b) os.exit(captured.n + a + b) end, args = {0, 1}}
            print(ok.pid, ok.exitcode, ok.name)
            ok:start()
            print(ok:join(10), ok.exitcode, type(ok.pid))
            local bad = jobrun.Process{target = function() error("failed here") end, name = "bad-one"}
            bad:start(); bad:join(10)
            print(bad.exitcode)
            local sleeper = jobrun.Process{target = function() jobrun.sleep(30) end}
            sleeper:start()
            print(sleeper:is_alive(), sleeper:join(0.05))
            sleeper:terminate(); sleeper:join(10)
            print(sleeper.exitcode, sleeper:is_alive())
            local k = jobrun.Process{target = function() jobrun.sleep(30) end}
            k:start(); k:kill(); k:join(10); print(k.exitcode)
            """)
        expectStatus(r)
        expectLines(r, [
            "an unstarted process has no pid, no exit code and the name Process-1": "nil\tnil\tProcess-1",
            "join returns true; exitcode is os.exit's (the closure's upvalue arrived); pid is a number": "true\t42\tnumber",
            "a target that raises exits with status 1": "1",
            "a sleeping worker is alive and join(0.05) times out with false": "true\tfalse",
            "terminate: exitcode -15 (SIGTERM) and no longer alive": "-15\tfalse",
            "kill: exitcode -9 (SIGKILL)": "-9",
        ])
        #expect(r.stderr.contains("Process bad-one (pid "))
        #expect(r.stderr.contains("failed here"))
        #expect(r.stderr.contains("stack traceback"))
    }

    @Test func identityInsideWorkers() {
        let r = runScript("""
            local q = jobrun.Queue()
            local p = jobrun.Process{name = "w", daemon = false, target = function()
                local cur = jobrun.current_process()
                q:put({jobrun.is_main, cur.name, cur.pid == nil})
            end}
            p:start()
            local got = q:get(true, 10)
            p:join(10)
            print(got[1], got[2], got[3], jobrun.current_process().name, #jobrun.active_children())
            """)
        expectStatus(r)
        expectFields(r, [
            "is_main in a worker": "false", "current_process().name in a worker": "w",
            "the worker's own pid is known to it": "false", "current_process().name in main": "MainProcess",
            "active_children() after join": "0",
        ])
    }

    @Test func startingTwiceIsAProcessError() {
        let r = runScript("""
            local p = jobrun.Process{target = function() end}
            p:start()
            local ok, e = pcall(p.start, p)
            print(ok, e.kind, e.message:find("already started") ~= nil)
            p:join(10)
            """)
        #expect(r.stdout == "false\tProcessError\ttrue\n", "\(r.stderr)")
    }

    @Test func scriptWorkerGetsArgumentsAndQueues() {
        let r = runScript("""
            local q = jobrun.Queue()
            local w = jobrun.Process{script = "stage.lua", args = {q, 7, "x", {1, 2}}}
            w:start()
            print(q:get(true, 10))
            w:join(10)
            print(w.exitcode)
            """, files: ["stage.lua": """
            local q, n, s, t = ...
            q:put(string.format("%s %d %s %d %s %s", tostring(jobrun.is_main), n, s, #t, arg[0]:match("stage.lua") or "?", jobrun.current_process().name))
            """])
        expectStatus(r)
        expectLines(r, [
            "a script worker is not main and gets its args (queue, number, string, table), arg[0] and its name":
                "false 7 x 2 stage.lua Process-1",
            "the script worker exits with 0": "0",
        ])
    }

    @Test func nonDaemonChildrenAreJoinedAndDaemonsTerminatedAtExit() {
        let r = runScript("""
            local main_done = jobrun.Event()
            jobrun.Process{target = function() main_done:wait(20); print("child done") end}:start()
            local d = jobrun.Process{daemon = true, target = function() jobrun.sleep(30); print("daemon should not print") end}
            d:start()
            print("main done"); io.stdout:flush()
            main_done:set()                   -- the child prints only after main, then main waits for it
            """, timeout: 20)
        expectStatus(r)
        expectLines(r, [
            "main's chunk ends first": "main done",
            "then the run waits for the non-daemon child, and the daemon is stopped before it prints": "child done",
        ])
    }

    @Test func badProcessOptionsAreTypeErrors() {
        let r = runScript("""
            for _, opts in ipairs{ {}, {target = 5}, {target = print, script = "x.lua"}, {target = print, args = 3} } do
              local ok, e = pcall(jobrun.Process, opts)
              print(e.kind, e.message)
            end
            local ok, e = pcall(jobrun.Process, "x")
            print(e.kind)
            """)
        expectStatus(r)
        #expect(r.stdout.split(separator: "\n").allSatisfy { $0.hasPrefix("TypeError") })
        #expect(r.stdout.contains("target must be a function"))
    }
}

@Suite("Failures end the run cleanly")
struct FailureTests {
    @Test func mainErrorStopsWorkersInsteadOfWaitingForThem() {
        // The worker would wait forever for an item the failed main never sends.
        let r = runScript("""
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function() q:get() end}
            p:start()
            error("main failed before sending")
            """, timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1)
        #expect(r.stderr.contains("main failed before sending"))
    }

    @Test func badUsageExitsTwo() {
        #expect(runJobrun([]).status == 2)
        #expect(runJobrun(["--no-such-option", "x.lua"]).status == 2)
        let help = runJobrun(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: jobrun"))
        #expect(runJobrun(["--version"]).stdout.hasPrefix("0."))
    }

    @Test func scriptArgumentsMayLookLikeOptions() {
        let r = runScript("print(...)", args: ["--flag", "-x"])
        #expect(r.stdout == "--flag\t-x\n")
    }

    @Test func directoryAsScriptIsAUsageError() {
        let r = runJobrun(["/tmp"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("is a directory"))
    }

    @Test func unsendableScriptWorkerArgumentsNameThePlace() {
        let r = runScript("""
            local p = jobrun.Process{script = "w.lua", args = {1, {cb = coroutine.create(print)}}}
            local ok, e = pcall(p.start, p)
            print(ok, e.kind, e.message)
            local p2 = jobrun.Process{script = "missing.lua"}
            ok, e = pcall(p2.start, p2)
            print(ok, e.kind)
            """, files: ["w.lua": "print('never')"])
        expectStatus(r)
        #expect(r.stdout.contains("false\tTypeError\tProcess Process-1: args[2].cb: cannot send a coroutine"))
        #expect(r.stdout.contains("false\tProcessError\n"))
    }

    @Test func leavesNoProcessBehind() {
        let d = runScript("""
            for i = 1, 4 do jobrun.Process{daemon = true, target = function() jobrun.sleep(60) end}:start() end
            local pids = {}
            for _, p in ipairs(jobrun.active_children()) do pids[#pids + 1] = p.pid end
            print(table.concat(pids, " "))
            """, timeout: 30)
        #expect(d.status == 0)
        for pid in d.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            #expect(kill(pid_t(pid)!, 0) != 0, "worker \(pid) outlived the run")
        }
    }
}

@Suite("No worker outlives the run")
struct OutliveTests {
    /// A parent that dies while its child starts: the child dies with it
    /// whether the kernel's parent-death signal reaches it or it finds its
    /// parent gone first, and either way the run counts the parent's death,
    /// not the child's, as what the script must hear of (the child used to
    /// exit with status 1 in the second case, a failure "unseen").
    @Test func aChildWhoseParentDiesAsItStartsDiesWithItNotAsAFailure() {
        let r = runScript("""
            local ends = {}
            for i = 1, 20 do
              local middle = jobrun.Process{name = "middle", target = function()
                jobrun.Process{name = "child", target = function() jobrun.sleep(60) end}:start()
              end}
              middle:start(); middle:join()
              ends[middle.exitcode] = true
            end
            print(next(ends), next(ends, next(ends)))
            """, environment: ["JOBRUN_TEST_KILL_AT": "fork-started@middle"], timeout: 60)
        expectStatus(r, 0, "a child that died with its parent is no failure of its own")
        #expect(!r.stderr.contains("failed unseen"), "\(r)")
        expectLines(r, ["every middle process died at the kill point (SIGKILL)": "-9\tnil"])
    }

    @Test(arguments: [("TERM", SIGTERM), ("INT", SIGINT), ("KILL", SIGKILL)])
    func workersStopWhenTheMainProcessGetsASignal(signal: String, number: Int32) throws {
        let folder = ScratchFolder(prefix: "jobrun-sig")
        defer { folder.remove() }
        let pidFile = folder.file("pids")
        // The test sends the signal itself, once the script has written the
        // pids (main's first) and renamed the file into place.
        let sender = DispatchQueue(label: "signal sender")
        sender.async {
            var text = ""
            guard waitUntil(timeout: 20, {
                text = (try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? ""
                return !text.isEmpty
            }), let main = text.split(separator: " ").first.flatMap({ pid_t($0) }) else { return }
            kill(main, number)
        }
        let r = runScript("""
            local q = jobrun.Queue()
            local pids = {jobrun.current_process().pid}
            for i = 1, 3 do
              local p = jobrun.Process{daemon = i == 1, target = function() q:get() end}
              p:start()
              pids[#pids + 1] = p.pid
            end
            local f = io.open(arg[1] .. ".tmp", "w"); f:write(table.concat(pids, " ")); f:close()
            os.rename(arg[1] .. ".tmp", arg[1])
            jobrun.sleep(60)   -- until the signal comes (the run's timeout bounds it)
            """, args: [pidFile], timeout: 30)
        sender.sync {}
        #expect(r.status == -number, "SIG\(signal) should end the main process\n\(r)")
        let pids = try String(contentsOfFile: pidFile, encoding: .utf8).split(separator: " ").compactMap { pid_t($0) }.dropFirst()
        #expect(pids.count == 3, "the script should have written the pids of its 3 workers")
        waitUntil(timeout: 1.5) { !pids.contains(where: isRunning) }
        for pid in pids { #expect(!isRunning(pid), "worker \(pid) outlived SIG\(signal) of the main process") }
    }

    @Test func workersDieWhenTheMainProcessIsKilled() throws {
        let folder = ScratchFolder(prefix: "jobrun-pids")
        defer { folder.remove() }
        let pidFile = folder.file("pids")
        let r = runScript("""
            local pids = {}
            for i = 1, 3 do
              local p = jobrun.Process{daemon = i == 1, target = function()
                local inner = jobrun.Process{target = function() jobrun.sleep(60) end}
                inner:start()
                jobrun.sleep(60)
              end}
              p:start()
              pids[#pids + 1] = p.pid
            end
            local f = io.open(arg[1], "w"); f:write(table.concat(pids, " ")); f:close()
            os.execute("kill -KILL " .. jobrun.current_process().pid)
            jobrun.sleep(60)
            """, args: [pidFile], timeout: 30)
        #expect(r.status == -9)
        let text = try String(contentsOfFile: pidFile, encoding: .utf8)
        let pids = text.split(separator: " ").compactMap { pid_t($0) }
        #expect(pids.count == 3)
        waitUntil(timeout: 5) { !pids.contains(where: isRunning) }
        for pid in pids { #expect(!isRunning(pid), "worker \(pid) outlived a SIGKILLed main process") }
    }
}

@Suite("Nothing leaks")
struct LeakTests {
    @Test func workersHoldNoStrayDescriptorsAndTheRunLeavesNothingInDevShm() throws {
        let before = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
        let r = runScript("""
            local function fds()
              local p = io.popen("ls -l /proc/" .. jobrun.current_process().pid .. "/fd 2>/dev/null")
              local pidfds, arenas, total = 0, 0, 0
              for line in p:lines() do
                local target = line:match("%-> (.*)$")
                if target then
                  total = total + 1
                  if target:find("pidfd") then pidfds = pidfds + 1 end
                  if target:find("jobrun%-arena") then arenas = arenas + 1 end
                end
              end
              p:close()
              return pidfds, arenas
            end
            local q = jobrun.Queue()
            local siblings, checked = {}, jobrun.Event()
            for i = 1, 3 do   -- alive until the workers below have counted their descriptors
              siblings[i] = jobrun.Process{target = function() checked:wait(20) end}
              siblings[i]:start()
            end
            local p = jobrun.Process{target = function() q:put({fds()}) end}
            p:start()
            local got = q:get()
            print("fork", got[1], got[2])
            local w = jobrun.Process{script = "w.lua", args = {q}}
            w:start(); got = q:get(); print("script", got[1], got[2])
            checked:set()
            p:join(); w:join()
            for _, s in ipairs(siblings) do s:join() end
            """, files: ["w.lua": """
            local q = ...
            local p = io.popen("ls -l /proc/" .. jobrun.current_process().pid .. "/fd 2>/dev/null")
            local pidfds, arenas = 0, 0
            for line in p:lines() do
              if line:find("pidfd") then pidfds = pidfds + 1 end
              if line:find("jobrun%-arena") then arenas = arenas + 1 end
            end
            p:close()
            q:put({pidfds, arenas})
            """])
        expectStatus(r)
        // A worker holds the arena once and none of its siblings' pidfds.
        expectLines(r, [
            "a forked worker holds no sibling's pidfd and the arena once": "fork\t0\t1",
            "a script worker holds no sibling's pidfd and the arena once": "script\t0\t1",
        ])
        let after = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
        #expect(after.subtracting(before).isEmpty)
    }
}

@Suite("Lua state")
struct LuaStateTests {
    /// Every process runs Lua's generational collector; a script may switch back.
    @Test func generationalCollectorInEveryProcess() {
        let r = runScript("""
            local q = jobrun.Queue()
            jobrun.Process{target = function() q:put(collectgarbage("incremental")) end}:start()
            print(collectgarbage("incremental"), q:get(), collectgarbage("generational"))
            """, timeout: 30)
        expectStatus(r)
        expectFields(r, [
            "main runs the generational collector": "generational", "so does a worker": "generational",
            "a script may switch back to incremental": "incremental",
        ])
    }
}
