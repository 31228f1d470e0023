import Foundation
import Glibc
import Testing
@testable import Jobrun
@testable import JobrunCore

/// PluginHost (Jobrun): plug-ins called from Swift through warm workers,
/// every bad input a typed error, the host working on. Like RuntimeTests
/// they run in a test process of their own (HostRuntimeInItsOwnProcess).
@Suite(.serialized, .enabled(if: RuntimeTestProcess.isOwn)) struct PluginHostTests {
    final class Folder {
        let path = NSTemporaryDirectory() + "jobrun-host-plugins-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        init() { try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        func write(_ name: String, _ text: String) { try? text.write(toFile: path + "/" + name, atomically: true, encoding: .utf8) }
    }

    static func plugins() -> Folder {
        let f = Folder()
        f.write("calc.lua", """
            local calls = 0
            return {
              add = function(t) calls = calls + 1; return t.a + t.b end,
              calls = function() return calls end,
              echo = function(v) return v end,
              rep = function(n) return #string.rep("x", n) end,
              pid = function() return tonumber(io.open("/proc/self/stat"):read("l"):match("^(%d+)")) end,
            }

            """)
        f.write("bad.lua", """
            return {
              loop = function() while true do end end,
              grow = function() local t = {} while true do t[#t + 1] = string.rep("x", 1000000) .. #t end end,
              exit = function() os.exit(3) end,
              raise = function() error({message = "a table"}) end,
              co = function() return coroutine.create(function() end) end,
              ud = function() return io.open("/dev/null") end,
              -- A signal from outside: the Swift runtime's backtracer in the worker
              -- (a re-entered Swift executable) catches a SIGSEGV sent by kill
              -- and lets it go on, so the crash is a SIGKILL here.
              crash = function() os.execute("kill -KILL $PPID") return "survived" end,
              garbage = function() io.stdout:write("\\0\\255 garbage\\n") print("more") return "fine" end,
              -- The worker's real descriptor 1, past the Lua-level output.
              stdout = function() local f = io.open("/dev/stdout", "a") f:write("\\0\\255 raw garbage\\n") f:close() return "fine" end,
              -- abort(3) called as a lua_CFunction: a crash in C.
              abort = function() package.loadlib("libc.so.6", "abort")() end,
              huge = function() return #string.rep("x", 2^30) end,   -- 1 GiB
              spin = function(marker) io.open(marker, "w"):close() while true do end end,
            }

            """)
        f.write("broken.lua", "return {\n  f = function( end\n}\n")
        f.write("number.lua", "return 42\n")
        f.write("slow.lua", "return { nap = function(s) jobrun.sleep(s) return 'rested' end }\n")
        symlink("loop.lua", f.path + "/loop.lua")
        return f
    }

    /// Calls and expects a failure with `code` that names the plug-in and
    /// the function, and a worker unless `worker` is false (a call that
    /// reached none). Returns the error.
    @discardableResult
    static func expectError(_ host: PluginHost, _ plugin: String, _ function: String, _ code: JobrunError.Code,
                            _ containing: String = "", worker: Bool = true,
                            sourceLocation: SourceLocation = #_sourceLocation) async -> JobrunError? {
        do {
            let v = try await host.call(plugin, function)
            Issue.record("\(plugin).\(function) returned \(v), expected \(code)", sourceLocation: sourceLocation)
            return nil
        } catch {
            #expect(error.code == code && (containing.isEmpty || error.message.contains(containing)) && error.plugin == plugin && error.function == function,
                    "\(error)", sourceLocation: sourceLocation)
            #expect((error.worker != nil) == worker, "\(error)", sourceLocation: sourceLocation)
            return error
        }
    }

    @Test func callsBadInputAndShutdownLeavesNothing() async throws {
        let before = RuntimeTests.Holdings.now()
        let childrenBefore = RuntimeTests.children()
        let f = Self.plugins()
        let t0 = DispatchTime.now().uptimeNanoseconds
        let host = try PluginHost(directory: f.path, workers: 2,
                                  limits: .init(memory: .mebibytes(64), callTimeout: .seconds(2)))
        print("PluginHostTests: host with 2 warm workers started in \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)) ms")
        #expect(try await host.call("calc", "add", ["a": 2, "b": 40]) == 42)
        // Codable in, Codable out.
        struct Pair: Codable { var a: Int; var b: Int }
        let sum: Int = try await host.call("calc", "add", Pair(a: 1, b: 2))
        #expect(sum == 3)
        await Self.expectError(host, "missing", "f", .pluginNotFound)
        await Self.expectError(host, "loop", "f", .pluginNotReadable)
        await Self.expectError(host, "broken", "f", .syntaxError, "broken.lua:2")
        await Self.expectError(host, "number", "f", .notATable)
        await Self.expectError(host, "calc", "nope", .functionMissing)
        await Self.expectError(host, "bad", "co", .unsendableResult)
        await Self.expectError(host, "bad", "ud", .unsendableResult)
        await Self.expectError(host, "bad", "exit", .luaError, "os.exit is not allowed")
        await Self.expectError(host, "bad", "raise", .luaError, "a table")
        await Self.expectError(host, "bad", "grow", .limitExceeded)
        #expect(try await host.call("bad", "garbage") == "fine", "a plug-in's stdout is not the channel")
        let workersBefore = Set(host.workers.map(\.pid))
        let timedOut = await Self.expectError(host, "bad", "loop", .timedOut)
        let died = await Self.expectError(host, "bad", "crash", .workerDied, "SIGKILL")
        let workersNow = host.workers.map(\.pid)
        for e in [timedOut, died] {
            #expect(e?.worker.map { !workersNow.contains($0.pid) && $0.name.hasPrefix("plugin-") } == true,
                    "names the worker that was killed (and replaced): \(String(describing: e)), workers now \(workersNow)")
        }
        #expect(Set(host.workers.map(\.pid)) != workersBefore, "the killed workers were replaced")
        #expect(host.workers.count == 2)
        #expect(try await host.call("calc", "add", ["a": 1, "b": 1]) == 2, "the host works on")
        // A plug-in that kills its worker at every call: each call fails,
        // the slot waits a little before its next worker, the host works on.
        for _ in 0..<PluginPool.quickDeaths { await Self.expectError(host, "bad", "crash", .workerDied) }
        #expect(try await host.call("calc", "add", ["a": 1, "b": 1]) == 2)
        #expect(RuntimeTests.eventually(10) { host.workers.count == 2 }, "the slot has a worker again")
        // 1,000 concurrent calls, 2 workers.
        let results = try await withThrowingTaskGroup(of: (Int, LuaValue).self) { group in
            for i in 0..<1000 { group.addTask { (i, try await host.call("calc", "echo", .integer(Int64(i)))) } }
            var all: [Int: LuaValue] = [:]
            for try await (i, v) in group { all[i] = v }
            return all
        }
        #expect(results.count == 1000 && results.allSatisfy { $0.value == .integer(Int64($0.key)) })
        let pids = host.workers.map(\.pid)
        await host.shutdown()
        await Self.expectError(host, "calc", "add", .hostShutDown, worker: false)
        #expect(RuntimeTests.eventually(10) { pids.allSatisfy { !RuntimeTests.isAlive($0) } })
        #expect(RuntimeTests.Holdings.now() == before, "no descriptor or mapping of jobrun's is left")
        #expect(RuntimeTests.children().subtracting(childrenBefore).isEmpty)
        #expect(Runtime.running == nil)
    }

    /// docs/embedding.md's PluginHost snippets (EmbeddingDocTests.snippetsAreHere checks they are here).
    @Test func embeddingGuideSnippets() async throws {
        let plugins = Self.plugins()
        let folder = plugins.path
        let host = try PluginHost(directory: folder, workers: 2,
                                  limits: .init(memory: .mebibytes(64), callTimeout: .seconds(5)))
        let sum = try await host.call("calc", "add", ["a": 2, "b": 40])       // .integer(42)
        struct Pair: Codable { var a: Int; var b: Int }
        let typed: Int = try await host.call("calc", "add", Pair(a: 1, b: 2))  // Codable in, Codable out
        #expect(sum == 42 && typed == 3)
        do {
            _ = try await host.call("calc", "nope")
        } catch {
            print(error)   // calc.nope: functionMissing: plug-in "calc" has no function "nope" [plugin-1 (pid 4242)]
            #expect(error.code == .functionMissing)
        }
        do { _ = try await host.call("calc", "nope") } catch {
            #expect(error.description.hasPrefix(#"calc.nope: functionMissing: plug-in "calc" has no function "nope" [plugin-"#))
        }
        await host.shutdown()
    }

    /// A plain executable with a PluginHost, SIGKILLed: its monitor and
    /// plug-in workers end with it.
    @Test func aSIGKILLedPluginHostLeavesNoWorker() throws {
        let f = Self.plugins()
        try RuntimeTests.expectSIGKILLedHostLeavesNoWorker(["plugins", f.path])
    }

    static let cc: String? = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first { (path: String) in access(path, X_OK) == 0 }

    /// A real crash in a C module (a NULL write in its luaopen): the call
    /// fails `workerDied` naming SIGSEGV, the worker is replaced.
    @Test(.enabled(if: cc != nil)) func aCrashInACModuleIsWorkerDiedWithTheSignal() async throws {
        let f = Self.plugins()
        f.write("crash.c", "int luaopen_crash(void *L) { (void)L; *(volatile int *)0 = 1; return 0; }\n")
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: Self.cc!)
        p.arguments = ["-shared", "-fPIC", "-o", f.path + "/crash.so", f.path + "/crash.c"]
        try p.run()
        #expect(RuntimeTests.eventually(60) { !p.isRunning })
        try #require(!p.isRunning && p.terminationStatus == 0, "cc could not build the module")
        f.write("native.lua", """
            local _, path = ...
            package.cpath = path:match("^.*/") .. "?.so"
            return { crash = function() return require("crash") end }

            """)
        let host = try PluginHost(directory: f.path, workers: 1)
        let before = host.workers.map(\.pid)
        await Self.expectError(host, "native", "crash", .workerDied, "SIGSEGV")
        #expect(host.workers.map(\.pid) != before)
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3, "the new worker serves")
        await host.shutdown()
    }

    /// The address-space cap (RLIMIT_AS) of a worker, soft, as /proc shows it.
    static func addressSpaceCap(_ pid: Int32) -> String? {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("Max address space") }
            .map { String($0.split(separator: " ")[3]) }
    }

    /// What a process maps now (/proc/PID/statm), in bytes.
    static func mapped(_ pid: Int32) -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8)) ?? ""
        return (text.split(separator: " ").first.flatMap { Int($0) } ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Limits.addressSpace: RLIMIT_AS in each worker, counted from what it
    /// maps at its start (its shared-memory arena alone reserves hundreds
    /// of GiB); by default 1.5 × memory + 64 MiB; an allocation past it is
    /// a typed error and the worker serves on.
    @Test func anAddressSpaceCapIsATypedErrorAndTheWorkerServesOn() async throws {
        let before = RuntimeTests.Holdings.now()
        let f = Self.plugins()
        let open = try PluginHost(directory: f.path, workers: 1)
        #expect(Self.addressSpaceCap(open.workers[0].pid) == "unlimited")
        await open.shutdown()

        let derived = try PluginHost(directory: f.path, workers: 1, limits: .init(memory: .mebibytes(64)))
        let pid = derived.workers[0].pid
        // Set as the worker's role starts, just after it counts as running.
        #expect(RuntimeTests.eventually(30) { Self.addressSpaceCap(pid) != "unlimited" })
        let cap = try #require(Self.addressSpaceCap(pid).flatMap { Int($0) })
        let room = cap - Self.mapped(pid)
        #expect(room > 128 << 20 && room <= 160 << 20, "cap \(cap), room \(room >> 20) MiB past what the worker maps")
        await derived.shutdown()

        // No Lua limit: the cap is what stops string.rep's 1 GiB buffer.
        let capped = try PluginHost(directory: f.path, workers: 1, limits: .init(addressSpace: .mebibytes(256)))
        let worker = capped.workers[0].pid
        await Self.expectError(capped, "bad", "huge", .limitExceeded, "not enough memory")
        #expect(capped.workers.map(\.pid) == [worker], "the worker serves on")
        #expect(try await capped.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await capped.shutdown()
        #expect(RuntimeTests.Holdings.now() == before)
        #expect(Runtime.running == nil)
    }

    /// The cap holds a C module's malloc too, which Lua's allocator never sees.
    @Test(.enabled(if: cc != nil)) func anAddressSpaceCapHoldsACModulesMalloc() async throws {
        let f = Self.plugins()
        f.write("hog.c", """
            #include <stdlib.h>
            void lua_pushboolean(void *L, int b);
            int luaopen_hog(void *L) { void *p = malloc((size_t)1 << 30); lua_pushboolean(L, p != NULL); free(p); return 1; }

            """)
        try Self.compile(f, "hog")
        f.write("native.lua", """
            local _, path = ...
            package.cpath = path:match("^.*/") .. "?.so"
            return { hog = function() return require("hog") end }

            """)
        let free = try PluginHost(directory: f.path, workers: 1)
        #expect(try await free.call("native", "hog") == true, "1 GiB of address space without a cap")
        await free.shutdown()
        let capped = try PluginHost(directory: f.path, workers: 1, limits: .init(addressSpace: .mebibytes(256)))
        #expect(try await capped.call("native", "hog") == false, "malloc(1 GiB) fails past a 256 MiB cap")
        #expect(try await capped.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await capped.shutdown()
    }

    static func compile(_ f: Folder, _ name: String) throws {
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: Self.cc!)
        p.arguments = ["-shared", "-fPIC", "-o", f.path + "/\(name).so", f.path + "/\(name).c"]
        try p.run()
        #expect(RuntimeTests.eventually(60) { !p.isRunning })
        try #require(!p.isRunning && p.terminationStatus == 0, "cc could not build the module")
    }

    /// A call's timeout runs from when its worker takes it, not from when
    /// it was queued: a worker slow to start (a loaded machine; here a
    /// test hook makes each start take 1.5 s) costs the call nothing,
    /// at the host's start and after a timeout replaced the worker.
    @Test func aWorkersStartDoesNotCountAgainstTheCallsTimeout() async throws {
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1, limits: .init(callTimeout: .seconds(1)), pluginLimits: [:],
                                  restricted: false, allowedFolders: [], workerEnvironment: ["JOBRUN_TEST_PLUGIN_START_DELAY_MS": "1500"])
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3, "the first call waits for the worker's start")
        await Self.expectError(host, "bad", "loop", .timedOut)
        #expect(try await host.call("calc", "add", ["a": 2, "b": 2]) == 4, "a call queued while the replacement starts")
        await host.shutdown()
    }

    /// pluginLimits: a plug-in's own timeout and memory, the host's for
    /// what it leaves nil.
    @Test func aPluginsLimitsReplaceTheHostsForItsCalls() async throws {
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1, limits: .init(callTimeout: .seconds(2)),
                                  pluginLimits: ["slow": .init(callTimeout: .seconds(60)), "bad": .init(memory: .mebibytes(16))])
        #expect(try await host.call("slow", "nap", 2.5) == "rested", "slow has 60 s")
        await Self.expectError(host, "bad", "loop", .timedOut, "timeout of 2.0 s")     // bad keeps the host's timeout
        await Self.expectError(host, "bad", "grow", .limitExceeded)
        #expect(try await host.call("calc", "rep", .integer(32 << 20)) == .integer(32 << 20), "calc has no memory limit")
        await host.shutdown()
    }

    /// A cancelled task's call fails `cancelled` wherever it is: waiting in
    /// the host, queued on a worker (its response is dropped), or running
    /// (its worker is killed and replaced).
    @Test func aCancelledCallFailsCancelledWhereverItIs() async throws {
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1)
        let marker = f.path + "/spinning"
        let spinning = Task { try await host.call("bad", "spin", .string(marker)) }
        #expect(RuntimeTests.eventually(30) { access(marker, F_OK) == 0 }, "the call runs")
        let worker = host.workers[0].pid
        // 15 queued behind it on the worker, 5 waiting in the host.
        let queued = (0..<20).map { i in Task { try await host.call("calc", "echo", .integer(Int64(i))) } }
        #expect(RuntimeTests.eventually(30) { host.pool.held.calls == 21 })
        for t in queued { t.cancel() }
        for t in queued {
            do { _ = try await t.value; Issue.record("a cancelled call returned") } catch let e as JobrunError {
                #expect(e.code == .cancelled, "\(e)")
            }
        }
        #expect(host.pool.held.calls == 16, "the 5 waiting calls are gone; 15 stay on the worker's queue")
        #expect(host.workers.map(\.pid) == [worker], "calls that had not started kill nothing")
        spinning.cancel()
        do { _ = try await spinning.value; Issue.record("the spinning call returned") } catch let e as JobrunError {
            #expect(e.code == .cancelled && e.message.contains("killed"), "\(e)")
        }
        #expect(RuntimeTests.eventually(30) { host.workers.count == 1 && host.workers[0].pid != worker }, "its worker was replaced")
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3, "the host works on")
        #expect(RuntimeTests.eventually(30) { host.pool.held == (0, 0) }, "nothing is left of the cancelled calls")
        // Cancelled before it calls.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await host.call("calc", "add", ["a": 1, "b": 2])
        }
        do { _ = try await early.value; Issue.record("a call of a cancelled task returned") } catch let e as JobrunError {
            #expect(e.code == .cancelled, "\(e)")
        }
        #expect(try await host.call("calc", "add", ["a": 2, "b": 2]) == 4)
        #expect(RuntimeTests.eventually(30) { host.pool.held == (0, 0) })
        await host.shutdown()
    }

    /// A crash in C without a module of one's own (abort as a
    /// lua_CFunction), which restricted mode refuses; output written to the
    /// worker's real descriptor 1, which is its stderr, never the host's stdout.
    @Test func aCrashThroughACFunctionAndGarbageOnTheRealStdout() async throws {
        let before = RuntimeTests.Holdings.now()
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1)
        let pid = host.workers[0].pid
        let out = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/1")
        #expect(out == (try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")))
        #expect(try await host.call("bad", "stdout") == "fine")
        await Self.expectError(host, "bad", "abort", .workerDied, "SIGABRT")
        #expect(RuntimeTests.eventually(30) { host.workers.count == 1 && host.workers[0].pid != pid })
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await host.shutdown()
        let restricted = try PluginHost(directory: f.path, workers: 1, restricted: true)
        await Self.expectError(restricted, "bad", "abort", .luaError, "package.loadlib is not allowed in restricted mode")
        #expect(try await restricted.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await restricted.shutdown()
        #expect(RuntimeTests.Holdings.now() == before)
    }

    /// A process that also made a Queue keeps its runtime when its last
    /// host shuts down (the queue goes on working).
    @Test func aHostsShutdownLeavesTheRuntimeOfASwiftQueue() async throws {
        let f = Self.plugins()
        let q = try Queue()
        let host = try PluginHost(directory: f.path, workers: 1)
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await host.shutdown()
        let rt = try #require(Runtime.running, "the runtime still runs")
        try await q.put(7)
        #expect(try await q.get() == 7)
        rt.shutdown()
    }

    /// A Codable conversion that fails is `badValue` naming the plug-in
    /// and the function, and the worker when the call reached one (the
    /// result's conversion).
    @Test func codableConversionFailuresNameTheCallAndTheWorker() async throws {
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1)
        struct Pair: Codable { var a: Int; var b: Int }
        do {
            let s: String = try await host.call("calc", "add", Pair(a: 1, b: 2))
            Issue.record("decoded \(s)")
        } catch {
            #expect(error.code == .badValue && error.message.hasPrefix("the result as String"), "\(error)")
            #expect(error.plugin == "calc" && error.function == "add", "\(error)")
            #expect(error.worker != nil && error.worker == host.workers.first, "\(error)")
        }
        struct Refuses: Encodable {
            func encode(to encoder: any Encoder) throws {
                throw EncodingError.invalidValue(0, .init(codingPath: [], debugDescription: "refused"))
            }
        }
        do {
            let v: Int = try await host.call("calc", "echo", Refuses())
            Issue.record("sent, got \(v)")
        } catch {
            #expect(error.code == .badValue && error.message.hasPrefix("the argument"), "\(error)")
            #expect(error.plugin == "calc" && error.function == "echo" && error.worker == nil, "not sent: no worker: \(error)")
        }
        #expect(try await host.call("calc", "add", ["a": 1, "b": 2]) == 3)
        await host.shutdown()
    }

    /// Plug-in failures and queue failures are one type: a host catches
    /// `JobrunError` and switches over its code (docs/embedding.md, "Errors").
    @Test func pluginAndQueueFailuresAreOneErrorTypeWithACode() async throws {
        func advice(_ error: any Error) -> String {
            guard let error = error as? JobrunError else { return "not jobrun's: \(error)" }
            switch error.code {
            case .pluginNotFound, .functionMissing: return "check the plug-in's name"
            case .timedOut, .workerDied: return "try again: the worker was replaced"
            case .closed: return "the queue is closed"
            default: return "\(error.code): \(error.message)"   // Code is a struct: keep a default
            }
        }
        let f = Self.plugins()
        let host = try PluginHost(directory: f.path, workers: 1)
        let q = try Queue(name: "closed")
        try q.close()
        var seen: [JobrunError] = []
        do { _ = try await host.call("missing", "f"); Issue.record("called") } catch {
            seen.append(error)
            #expect(advice(error) == "check the plug-in's name")
        }
        do { try await q.put("late"); Issue.record("put") } catch {
            seen.append(error)
            #expect(advice(error) == "the queue is closed")
        }
        do { _ = try await q.get(); Issue.record("got") } catch { #expect(advice(error) == "the queue is closed", "a closed, empty queue's get") }
        #expect(seen.map(\.code) == [.pluginNotFound, .closed])
        #expect(seen[0].plugin == "missing" && seen[0].worker != nil && seen[1].plugin == "" && seen[1].worker == nil)
        #expect(seen[1].description == "closed: put on a closed queue")
        await host.shutdown()
        let rt = try #require(Runtime.running, "the queue keeps the runtime")
        rt.shutdown()
        do { try await q.put("after"); Issue.record("put after shutdown") } catch {
            #expect(error.code == .runtimeUnavailable, "\(error)")
            #expect(advice(error) == "runtimeUnavailable: \(error.message)")
        }
        #expect(advice(CancellationError()).hasPrefix("not jobrun's"))
    }

    @Test func aFolderThatIsMissingOrUnreadableIsATypedError() throws {
        let f = Folder()
        symlink("self", f.path + "/self")
        #expect { try PluginHost(directory: f.path + "/none") } throws: { ($0 as? JobrunError)?.code == .pluginNotFound }
        #expect { try PluginHost(directory: f.path + "/self") } throws: { ($0 as? JobrunError)?.code == .pluginNotReadable }
    }

    /// The fast path (PluginPool's note on speed): a caller alone on the
    /// workers waits a few µs for its response on its own thread. A call
    /// slower than that wait, calls beside it, and calls from the main
    /// actor (PluginHost.call runs on the caller's executor) all answer.
    @Test func callsSlowerThanTheSpinBesideFastOnesAndFromTheMainActorAnswer() async throws {
        let f = Self.plugins()
        f.write("slow.lua", """
            return { wait = function(ms) local t = os.clock() + ms / 1000 while os.clock() < t do end return ms end }

            """)
        let host = try PluginHost(directory: f.path, workers: 1, limits: .init(callTimeout: .seconds(20)))
        for i in 0..<200 { #expect(try await host.call("calc", "echo", .integer(Int64(i))) == .integer(Int64(i))) }
        #expect(try await host.call("slow", "wait", 5) == 5, "past the spin: the pool's thread answers")
        for i in 0..<200 { #expect(try await host.call("calc", "add", ["a": .integer(Int64(i)), "b": 1]) == .integer(Int64(i + 1))) }
        // A slow call and fast calls at once, on one worker: the fast ones
        // queue behind it, their callers do not spin for long.
        async let slow = host.call("slow", "wait", 20)
        var fast: [LuaValue] = []
        for i in 0..<50 { fast.append(try await host.call("calc", "echo", .integer(Int64(i)))) }
        #expect(try await slow == 20)
        #expect(fast == (0..<50).map { .integer(Int64($0)) })
        let onMain = try await Self.callOnTheMainActor(host, 100)
        #expect(onMain == (0..<100).map { .integer(Int64($0)) })
        await host.shutdown()
    }

    @MainActor static func callOnTheMainActor(_ host: PluginHost, _ n: Int) async throws -> [LuaValue] {
        var out: [LuaValue] = []
        for i in 0..<n { out.append(try await host.call("calc", "echo", .integer(Int64(i)))) }
        return out
    }

    @Test func callsInFlightAtShutdownFailHostShutDownAndDeinitEndsWorkers() async throws {
        let f = Self.plugins()
        var host: PluginHost? = try PluginHost(directory: f.path, workers: 1, limits: .init(callTimeout: .seconds(30)))
        let h = host!
        // The call says when its worker runs it, then loops.
        f.write("slow.lua", "return { spin = function(path) io.open(path, 'w'):close() while true do end end }\n")
        let started = f.path + "/started"
        let worker = try #require(h.workers.first)
        let pending = Task { try await h.call("slow", "spin", .string(started)) }
        #expect(RuntimeTests.eventually(10) { access(started, F_OK) == 0 }, "the worker runs the call")
        await h.shutdown()
        do { _ = try await pending.value; Issue.record("the call returned") } catch let e as JobrunError {
            #expect(e.code == .hostShutDown, "\(e)")
            #expect(e.plugin == "slow" && e.function == "spin" && e.worker == worker, "names the worker that ran it: \(e)")
        }
        host = nil
        // deinit as the fallback: a second host, dropped without shutdown.
        let before = RuntimeTests.Holdings.now()
        var other: PluginHost? = try PluginHost(directory: f.path, workers: 2)
        let pids = other!.workers.map(\.pid)
        #expect(try await other!.call("calc", "add", ["a": 1, "b": 2]) == 3)
        other = nil
        #expect(pids.allSatisfy { !RuntimeTests.isAlive($0) })
        _ = before
        #expect(Runtime.running == nil)
    }
}
