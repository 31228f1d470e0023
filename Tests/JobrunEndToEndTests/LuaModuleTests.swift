import Foundation
import Testing

/// `require "jobrun"` from plain lua5.4: the Lua C module (the jobrun-lua
/// product, installed as jobrun.so; Sources/JobrunCore/Lua/ForeignState.swift).
enum LuaModule {
    /// The system's lua5.4 (Debian's package `lua5.4`), if installed.
    static let lua: String? = ["/usr/bin/lua5.4", "/usr/local/bin/lua5.4"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// The built module: `$JOBRUN_LUA_MODULE`, else libjobrun-lua.so beside
    /// the jobrun binary under test (`swift build` links it with the rest),
    /// else scripts/build-module's `.build/lua/jobrun.so`.
    static var module: String? {
        let env = ProcessInfo.processInfo.environment["JOBRUN_LUA_MODULE"] ?? ""
        let candidates = [env,
                          URL(fileURLWithPath: jobrunBinary).deletingLastPathComponent()
                              .appendingPathComponent("libjobrun-lua.so").path,
                          packageRoot.appendingPathComponent(".build/lua/jobrun.so").path]
        return candidates.first { !$0.isEmpty && FileManager.default.fileExists(atPath: $0) }
    }


    static let luarocks: String? = ["/usr/bin/luarocks", "/usr/local/bin/luarocks"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// Runs `code` as main.lua with `lua5.4`, from a scratch folder holding
    /// the module as jobrun.so, found through LUA_CPATH_5_4 as any installed
    /// C module is. A missing module fails the test (it is built with the rest).
    static func run(_ code: String, args: [String] = [], files: [String: String] = [:], timeout: Double = 60,
                    sourceLocation: SourceLocation = #_sourceLocation) -> RunResult? {
        guard let lua else { return nil }
        guard let module else {
            Issue.record("no built Lua module: run `swift build` or scripts/build-module", sourceLocation: sourceLocation)
            return nil
        }
        let dir = ScratchFolder(files, prefix: "jobrun-luamodule")
        defer { dir.remove() }
        try? FileManager.default.copyItem(atPath: module, toPath: dir.file("jobrun.so"))
        dir.write("main.lua", code)
        return runCommand([lua, dir.file("main.lua")] + args, timeout: timeout, cwd: dir.path,
                          environment: ["LUA_CPATH_5_4": dir.path + "/?.so;;"])
    }
}

@Suite("require \"jobrun\" from plain lua5.4")
struct LuaModuleTests {
    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func loadsAndHasTheCommandsVersion() throws {
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            print(jobrun.version, jobrun.is_main, jobrun == package.loaded.jobrun, require "jobrun" == jobrun)
            print(math.type(jobrun.cpu_count()), jobrun.current_process().name)
            """))
        let version = runJobrun(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        expectStatus(r)
        expectLines(r, [
            "the module's version is the command's": "\(version)\ttrue\ttrue\ttrue",
            "the main process is lua5.4's": "integer\tMainProcess",
        ])
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func theScriptsStateIsRespected() throws {
        // A coroutine made before the require (lua5.4 leaves its extra space
        // uninitialised) and a strict mode on the globals (left in place).
        let r = try #require(LuaModule.run("""
            local before = coroutine.wrap(function()
              coroutine.yield()
              local q = package.loaded.jobrun.Queue()
              q:put("from an older coroutine")
              return q:get()
            end)
            before()
            setmetatable(_G, {__newindex = function(_, k) error("strict: assignment to " .. k, 2) end})
            local jobrun = coroutine.wrap(function() return require "jobrun" end)()
            print(before())
            local ok, e = pcall(function() undeclared = 1 end)
            print(ok, e:match("strict: .*"))
            local p = jobrun.Process{target = function()
              print("child", jobrun.is_main)
              local f = io.open("/proc/self/cmdline")
              print("title", (f:read("a"):gsub("%z.*", ""))); f:close()
            end}
            p:start(); p:join()
            """))
        expectStatus(r)
        expectLines(r, [
            "a coroutine older than the module uses it": "from an older coroutine",
            "the script's strict mode still holds": "false\tstrict: assignment to undeclared",
            "a worker forks from a module required in a coroutine": "child\tfalse",
            "its process title names it and the script, as with the command": "title\tjobrun: Process-1 (main.lua)",
        ])
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func theReadmeExampleRuns() throws {
        // README, "From plain Lua": its Lua block prints what its `-->` says.
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "## From plain Lua"), "no section \"From plain Lua\" in README.md")
        let open = try #require(readme.range(of: "```lua\n", range: section.upperBound..<readme.endIndex))
        let close = try #require(readme.range(of: "```", range: open.upperBound..<readme.endIndex))
        let code = String(readme[open.upperBound..<close.lowerBound])
        let expected = code.split(separator: "\n").compactMap { line in
            line.range(of: "--> ").map { String(line[$0.upperBound...]) }
        }
        let r = try #require(LuaModule.run(code))
        expectStatus(r)
        #expect(!expected.isEmpty && r.lines == expected, "\(code)\n\(r)")
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func aPipelineRunsInForkedWorkers() throws {
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local q, out = jobrun.JoinableQueue(), jobrun.Queue()
            local function consumer(q, out)
              while true do
                local item = q:get()
                if item == nil then q:task_done() break end
                out:put({jobrun.current_process().name, item * item})
                q:task_done()
              end
            end
            local workers = {}
            for i = 1, 2 do
              workers[i] = jobrun.Process{target = consumer, args = {q, out}, name = "consumer-" .. i}
              workers[i]:start()
            end
            for i = 1, 1000 do q:put(i) end
            q:put(nil); q:put(nil)
            q:join()
            local sum, by = 0, {}
            for _ = 1, 1000 do
              local r = out:get()
              sum = sum + r[2]; by[r[1]] = true
            end
            for _, w in ipairs(workers) do w:join() end
            print("sum", sum, workers[1].exitcode, workers[2].exitcode, by["consumer-1"] ~= nil or by["consumer-2"] ~= nil)
            print("pids", workers[1].pid ~= workers[2].pid, workers[1].pid ~= jobrun.current_process().pid)
            local pool = jobrun.Pool(2)
            print("map", table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3, 4, 5}), ","))
            pool:close(); pool:join()
            """))
        expectStatus(r)
        expectLines(r, [
            "1000 items through 2 forked consumers, each processed once": "sum\t333833500\t0\t0\ttrue",
            "the workers are processes of their own": "pids\ttrue\ttrue",
            "a Pool maps in order": "map\t2,4,6,8,10",
        ])
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func aKilledWorkerIsReportedToTheJoiner() throws {
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local q = jobrun.JoinableQueue()
            local p = jobrun.Process{name = "victim", args = {q}, target = function(q)
              q:get()
              os.execute("kill -9 " .. jobrun.current_process().pid)
              jobrun.sleep(30)
            end}
            p:start()
            q:put(1)
            local ok, err = pcall(q.join, q)
            print(ok, err.kind, err.message:match("victim %(pid %d+%) was killed by signal 9") ~= nil)
            p:join()
            print(p.exitcode)
            """))
        expectStatus(r)
        expectLines(r, [
            "join raises WorkerDied naming the killed worker": "false\tWorkerDied\ttrue",
            "its exit code is minus the signal": "-9",
        ])
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func aDeadlockIsDetected() throws {
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local q = jobrun.Queue()
            local ok, err = pcall(q.get, q)
            print(ok, err.kind)
            """))
        expectStatus(r)
        expectLines(r, ["a get no process can satisfy raises Deadlock": "false\tDeadlock"])
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func theRunEndsWhenLuaEnds() throws {
        // Non-daemon children are joined and daemons stopped at the end of
        // the script, as with the command; no process of the run is left.
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local d = jobrun.Process{daemon = true, target = function() jobrun.sleep(60) end}
            d:start()
            local n = jobrun.Process{target = function() jobrun.sleep(0.2); print("non-daemon done") end}
            n:start()
            print("daemon", d.pid)
            print("main ends")
            """))
        expectStatus(r)
        #expect(r.lines.last == "non-daemon done", "\(r)")
        let daemon = r.lines.first { $0.hasPrefix("daemon\t") }.flatMap { pid_t($0.dropFirst(7)) }
        let pid = try #require(daemon, "\(r)")
        #expect(waitUntil(timeout: 10) { !isRunning(pid) }, "the daemon (pid \(pid)) outlived the run")
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func ctrlCEndsTheRunAtOnce() throws {
        // lua.c's SIGINT handler only raises when Lua code runs next; a
        // join waits in jobrun. SIGINT must end lua5.4 then and there, and
        // the monitor the worker.
        let r = try #require(LuaModule.run(luaWaits + """
            local jobrun = require "jobrun"
            local main = jobrun.current_process().pid
            local p = jobrun.Process{target = function()
              asleep(main)
              print("worker", jobrun.current_process().pid); io.stdout:flush()
              os.execute("kill -INT " .. main)
              jobrun.sleep(30)
            end}
            p:start()
            p:join()
            print("joined", p.exitcode)
            """, timeout: 20))
        #expect(!r.timedOut && r.status == -2, "lua5.4 ends by SIGINT while it joins\n\(r)")
        let worker = r.lines.first { $0.hasPrefix("worker\t") }.flatMap { pid_t($0.dropFirst(7)) }
        let pid = try #require(worker, "\(r)")
        #expect(waitUntil(timeout: 10) { !isRunning(pid) }, "the worker (pid \(pid)) outlived the run")
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func exitStatusesAsWithTheCommand() throws {
        let exit = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local p = jobrun.Process{target = function() jobrun.sleep(0.1); print("child") end}
            p:start()
            os.exit(3)
            """))
        expectStatus(exit, 3, "os.exit(3) joins the child first")
        #expect(exit.lines == ["child"], "\(exit)")
        let unseen = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            jobrun.Process{name = "bad", target = function() error("boom") end}:start()
            """))
        expectStatus(unseen, 1, "a worker that failed unseen fails the run")
        #expect(unseen.stderr.contains("Process bad (pid "), "\(unseen)")
        #expect(unseen.stderr.contains("jobrun: 1 worker failed unseen: bad (pid "), "\(unseen)")
    }

    @Test(.enabled(if: LuaModule.lua != nil, "lua5.4 is not installed (scripts/setup installs it)"))
    func scriptWorkersAreLuaStartedAgain() throws {
        // Process{script = ...}: lua5.4 started again, loading the module,
        // at any depth; relative paths resolve against the main script's folder.
        let r = try #require(LuaModule.run("""
            local jobrun = require "jobrun"
            local q = jobrun.Queue()
            local p = jobrun.Process{script = "stage.lua", args = {q, 21}, name = "stage"}
            p:start()
            print(q:get(), q:get())
            p:join()
            print(p.exitcode)
            """, files: [
                "stage.lua": """
                    local q, n = ...
                    local jobrun = require "jobrun"
                    q:put(jobrun.current_process().name .. " " .. n * 2)
                    local inner = jobrun.Process{script = "inner.lua", args = {q}}
                    inner:start(); inner:join()
                    """,
                "inner.lua": "local q = ...; q:put('inner ' .. tostring(jobrun.is_main))",
            ]))
        expectStatus(r)
        expectLines(r, [
            "a script worker gets its arguments and the module, and starts its own": "stage 42\tinner false",
            "and exits 0": "0",
        ])
    }

    @Test(.enabled(if: LuaModule.lua != nil && LuaModule.luarocks != nil,
                   "lua5.4 or luarocks is not installed (scripts/setup installs both)"))
    func luarocksMakeInstallsIt() throws {
        let lua = try #require(LuaModule.lua), luarocks = try #require(LuaModule.luarocks)
        let module = try #require(LuaModule.module, "no built Lua module: run `swift build` or scripts/build-module")
        // The rockspec at the root carries the command's version.
        let version = runJobrun(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let rockspecs = (try FileManager.default.contentsOfDirectory(atPath: packageRoot.path))
            .filter { $0.hasPrefix("jobrun-") && $0.hasSuffix(".rockspec") }
        #expect(rockspecs == ["jobrun-\(version)-1.rockspec"], "rockspecs at the root: \(rockspecs)")
        let tree = ScratchFolder([:], prefix: "jobrun-rocktree")
        defer { tree.remove() }
        // `swift build` cannot run inside `swift test`: the build command
        // installs the module this suite tests (JOBRUN_MODULE_PREBUILT).
        let make = runCommand([luarocks, "make", "--lua-version", "5.4", "--tree", tree.path,
                               "jobrun-\(version)-1.rockspec"],
                              timeout: 120, cwd: packageRoot.path, environment: ["JOBRUN_MODULE_PREBUILT": module])
        expectStatus(make, 0, "luarocks make")
        let installed = tree.file("lib/lua/5.4/jobrun.so")
        #expect(FileManager.default.fileExists(atPath: installed), "\(make)")
        // A plain lua5.4 with that tree's cpath, from a folder without the module.
        let run = runCommand([lua, "-e", """
            local jobrun = require "jobrun"
            print(jobrun.version, package.searchpath("jobrun", package.cpath))
            local p = jobrun.Pool(2)
            print(table.concat(p:map(function(x) return x + 1 end, {1, 2, 3}), ","))
            p:close(); p:join()
            """], cwd: tree.path, environment: ["LUA_CPATH_5_4": tree.path + "/lib/lua/5.4/?.so;;"])
        expectStatus(run)
        expectLines(run, [
            "the installed module loads from the tree": "\(version)\t\(installed)",
            "and runs a Pool": "2,3,4",
        ])
    }
}
