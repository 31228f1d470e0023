import Foundation
import Testing

// Messages about the user's code, not jobrun's: tracebacks without
// jobrun's own frames, a hint for a global defined after a worker started,
// daemons stopped at the end shown as such, `jobrun -` naming "stdin".

@Suite("Messages about the user's code")
struct MessagesTests {
    /// Lines of a traceback that name jobrun's own code.
    private func internalFrames(_ text: String) -> [String] {
        splitLines(text).filter {
            $0.contains("jobrun/prelude/") || $0.contains("child_main") || $0.contains("in field 'fork'")
                || $0.contains("in function 'xpcall'") || $0.range(of: #"^\s*jobrun:\d+:"#, options: .regularExpression) != nil
        }
    }

    @Test func tracebacksShowOnlyTheUsersFrames() {
        let code = """
            local function work(x)
              local y = nil
              return y.z + x
            end
            local p = jobrun.Process{target = work, args = {1}, name = "worker"}
            p:start(); p:join()
            local q = jobrun.Process{target = function() jobrun.Process{target = print}:join("x") end, name = "joiner"}
            q:start(); q:join()
            local function main() jobrun.Process{target = print}:join(-1) end
            main()
            """
        let dir = ScratchFolder(["main.lua": code])
        defer { dir.remove() }
        let r = runJobrun(["main.lua"], timeout: 60, cwd: dir.path)   // short names in messages
        expectStatus(r, 1)
        let err = r.stderr
        #expect(internalFrames(err).isEmpty, "jobrun's own frames shown: \(internalFrames(err))\n\(err)")
        // The worker's traceback ends at its target: not the parent's stack at the fork.
        #expect(err.contains("main.lua:3: attempt to index a nil value (local 'y')\nstack traceback:\n\tmain.lua:3: in function <main.lua:1>\nProcess joiner"),
                "\(err)")
        // An error raised inside jobrun's Lua names the user's line, and
        // its traceback starts at the user's code.
        #expect(err.contains("Process joiner (pid "), "\(err)")
        #expect(err.contains("main.lua:7: jobrun.ProcessError: Process joiner:1: can only join a started process\nstack traceback:\n\tmain.lua:7: in function <main.lua:7>\n"),
                "\(err)")
        #expect(err.contains("stack traceback:\n\tmain.lua:9: in local 'main'\n\tmain.lua:10: in main chunk"), "\(err)")
        #expect(!err.contains("[C]: in ?"), "\(err)")
    }

    @Test func aGlobalDefinedAfterTheWorkerStartedGetsAHint() {
        let code = """
            local p = jobrun.Process{target = function() helper() end, name = "consumer-1"}
            p:start()
            function helper() print("helped") end
            p:join()
            local q = jobrun.Process{target = function() never_defined() end, name = "consumer-2"}
            q:start()
            q:join()
            local r = jobrun.Process{target = function() helper() end, name = "consumer-3"}
            r:start()
            r:join()
            print(p.exitcode, q.exitcode, r.exitcode)
            """
        let r = runScript(code, timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "helped\n1\t1\t0\n", "\(r)")
        let hints = splitLines(r.stderr).filter { $0.contains("hint:") }
        #expect(hints.count == 1, "one hint, for consumer-1 only: \(hints)")
        #expect(hints.first?.hasPrefix("Process consumer-1 (pid ") == true, "\(hints)")
        #expect(hints.first?.contains("hint: helper was defined after the worker started") == true, "\(hints)")
    }

    @Test func theHintComesAlsoWhenTheScriptNeverJoins() {
        // The end of the run joins the worker: the parent learns then.
        let code = """
            jobrun.Process{target = function() later() end, name = "w"}:start()
            function later() end
            """
        let r = runScript(code, timeout: 60)
        #expect(r.status == 1, "an unseen failure: \(r)")
        #expect(r.stderr.contains("Process w (pid "), "\(r)")
        #expect(r.stderr.contains("hint: later was defined after the worker started"), "\(r)")
    }

    /// A Pool task that fails on a global defined after the pool's workers
    /// were forked gets the hint in the error its caller sees; a global
    /// no one defined gets none.
    @Test func aPoolTaskOnAGlobalDefinedAfterThePoolGetsAHint() {
        let code = """
            local pool = jobrun.Pool(2)
            function double(x) return 2 * x end
            local ok, e = pcall(pool.map, pool, function(x) return double(x) end, {1, 2})
            print(ok, (tostring(e):find("hint: double was defined after the pool's workers started", 1, true)) ~= nil)
            ok, e = pcall(pool.map, pool, function(x) return nowhere(x) end, {1})
            print(ok, (tostring(e):find("was defined after", 1, true)) ~= nil)
            pool:close(); pool:join()
            """
        let r = runScript(code, timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "false\ttrue\nfalse\tfalse\n", "\(r)")
    }

    @Test func daemonsStoppedAtTheEndSaySo() throws {
        let dir = ScratchFolder(["main.lua": """
            local d = jobrun.Process{target = function() jobrun.sleep(60) end, daemon = true, name = "watcher"}
            d:start()
            local k = jobrun.Process{target = function() jobrun.sleep(60) end, name = "killed"}
            k:start(); k:terminate(); k:join()
            """])
        defer { dir.remove() }
        let json = dir.file("stats.json")
        let r = runJobrun(["--stats", "--stats-json", json, dir.file("main.lua")], timeout: 60)
        expectStatus(r)
        #expect(r.stderr.range(of: #"watcher +\d+ +stopped at end of run"#, options: .regularExpression) != nil, "\(r)")
        #expect(r.stderr.range(of: #"killed +\d+ +signal 15"#, options: .regularExpression) != nil,
                "a worker the script terminated is not stopped by the end: \(r)")
        let data = try #require(FileManager.default.contents(atPath: json))
        let stats = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let rows = try #require(stats["processes"] as? [[String: Any]])
        let watcher = try #require(rows.first { $0["name"] as? String == "watcher" })
        #expect(watcher["exit"] as? Int == -15)
        #expect(watcher["stopped_at_end_of_run"] as? Bool == true)
        #expect(rows.first { $0["name"] as? String == "killed" }?["stopped_at_end_of_run"] as? Bool == false)
    }

    @Test func aScriptFromStdin() {
        let r = runJobrun(["-", "a", "b"], stdin: """
            print(arg[0], ...)
            local p = jobrun.Process{target = function() print("worker") end}
            p:start(); p:join()
            error("boom")
            """, timeout: 60)
        expectStatus(r, 1)
        #expect(r.stdout == "-\ta\tb\nworker\n", "\(r)")
        #expect(r.stderr.hasPrefix("jobrun: stdin:4: boom\nstack traceback:\n"), "\(r)")
        // With an option first, through the full parser.
        let parsed = runJobrun(["--prefix", "-"], stdin: "print(arg[0])", timeout: 60)
        expectStatus(parsed)
        #expect(parsed.stdout == "-\n")
        let syntax = runJobrun(["-"], stdin: "x = = 1", timeout: 60)
        expectStatus(syntax, 1)
        #expect(syntax.stderr.hasPrefix("jobrun: stdin:1: "), "\(syntax)")
    }
}
