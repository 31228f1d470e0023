import Foundation
import Glibc
import Testing
@testable import Jobrun
@testable import JobrunCore

/// Whether this test process runs RuntimeTests alone (started by HostRuntimeInItsOwnProcess).
enum RuntimeTestProcess {
    static let variable = "JOBRUN_RUNTIME_TESTS_PROCESS"
    static var isOwn: Bool { getenv(variable) != nil }
}

/// Runs RuntimeTests in a test process of their own: a runtime is one per
/// process and owns the process's arena, which the JobrunCoreTests suites
/// (OneArena) also make in the test process, once, for good. The child is
/// this same test binary (the `swift test` runner), filtered to
/// RuntimeTests: its workers are it, re-entered.
@Suite struct HostRuntimeInItsOwnProcess {
    @Test(.enabled(if: !RuntimeTestProcess.isOwn)) func runtimeTests() async throws {
        try await Self.runOwn("RuntimeTests")
    }

    @Test(.enabled(if: !RuntimeTestProcess.isOwn)) func pluginHostTests() async throws {
        try await Self.runOwn("PluginHostTests")
    }

    /// Runs `suite` in a child test process with `variable` set (which
    /// enables it there and disables the runners).
    static func runOwn(_ suite: String, variable: String = RuntimeTestProcess.variable) async throws {
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        p.arguments = ["--testing-library", "swift-testing", "--filter", suite]
        var env = ProcessInfo.processInfo.environment
        env[variable] = "1"
        p.environment = env
        // Output to a file, not a pipe: a pipe's end would also be inherited
        // by whatever other tests of this process start meanwhile, and its
        // end of file would wait for them.
        let path = NSTemporaryDirectory() + "jobrun-runtime-tests-\(getpid())-\(suite).txt"
        FileManager.default.createFile(atPath: path, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let out = try #require(FileHandle(forWritingAtPath: path))
        p.standardOutput = out
        p.standardError = out
        try p.run()
        try out.close()
        // Bounded: a child still running after 300 s is killed.
        let end = Date().addingTimeInterval(300)
        // Task.sleep, not usleep: a blocked cooperative thread stalls the other suites.
        while p.isRunning && Date() < end { try? await Task.sleep(for: .milliseconds(10)) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        // Decoded leniently: a plug-in's output in it may be any bytes.
        let text = String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("\(suite):") { print(line) }
        #expect(p.terminationStatus == 0 && p.terminationReason == .exit, "\(suite) failed in their own process:\n\(text)")
        #expect(text.contains("Suite \(suite) passed"), "\(text)")
    }
}

/// The runtime of a Swift host (JobrunCore Runtime): workers and the
/// monitor are this test binary re-entered (CJobrunEntry's constructor),
/// started with posix_spawn from a multi-threaded process. Serialized: one
/// runtime per process, and each test shuts its own down. They run only
/// in a test process of their own (HostRuntimeInItsOwnProcess starts it):
/// `swift test --filter HostRuntimeInItsOwnProcess`.
@Suite(.serialized, .enabled(if: RuntimeTestProcess.isOwn)) struct RuntimeTests {
    /// What the process holds of jobrun's: descriptors (the arena memfd,
    /// pidfds, the epoll and eventfd of the reaper thread), mappings of the
    /// arena, and children.
    struct Holdings: Equatable {
        var arenaFDs = 0, pidfds = 0, epolls = 0, eventfds = 0, arenaMaps = 0

        static func now() -> Holdings {
            var h = Holdings()
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            for fd in fds {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { continue }
                if target.hasPrefix("/memfd:jobrun-arena") { h.arenaFDs += 1 }
                if target == "anon_inode:[pidfd]" { h.pidfds += 1 }
                if target == "anon_inode:[eventpoll]" { h.epolls += 1 }
                if target == "anon_inode:[eventfd]" { h.eventfds += 1 }
            }
            let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
            h.arenaMaps = maps.split(separator: "\n").filter { $0.contains("jobrun-arena") }.count
            return h
        }
    }

    /// This process's children (every thread's), by pid.
    static func children() -> Set<pid_t> {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        var out: Set<pid_t> = []
        for t in tasks {
            let text = (try? String(contentsOfFile: "/proc/self/task/\(t)/children", encoding: .utf8)) ?? ""
            for w in text.split(separator: " ") { if let p = pid_t(w.trimmingCharacters(in: .whitespacesAndNewlines)) { out.insert(p) } }
        }
        return out
    }

    /// Whether `pid` still runs (a zombie does not).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    /// Polls `condition` every millisecond for up to `seconds`.
    static func eventually(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if try condition() { return true }
            usleep(1000)
        }
        return try condition()
    }

    static var buildDirectory: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")).map { ($0 as NSString).deletingLastPathComponent } ?? ".build/debug"
    }

    @Test func fourWorkersFromSeveralTasksPassItemsAndShutdownLeavesNothing() async throws {
        let before = Holdings.now()
        let childrenBefore = Self.children()
        let t0 = DispatchTime.now().uptimeNanoseconds
        let rt = try Runtime.shared()
        let (input, output) = try rt.withIPC { ipc in (try ipc.makeJoinableQueue(), try ipc.makeJoinableQueue()) }
        let env = ["JOBRUN_ECHO_IN": String(input), "JOBRUN_ECHO_OUT": String(output)]
        // Started concurrently from four tasks (the runtime's locks).
        let workers = try await withThrowingTaskGroup(of: Runtime.Worker.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let w = try rt.spawnWorker(role: "echo", environment: env)
                    #expect(rt.waitUntilRunning(w, timeout: 10), "\(w) takes over its record")
                    return w
                }
            }
            var all: [Runtime.Worker] = []
            for try await w in group { all.append(w) }
            return all
        }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        print("RuntimeTests: runtime with 4 warm workers started in \(String(format: "%.1f", ms)) ms")
        #expect(Set(workers.map(\.pid)).count == 4)
        #expect(rt.monitorPid > 0 && Self.isAlive(rt.monitorPid))
        // Items put from several tasks at once, each taken by some worker and echoed.
        let n = 400
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    for i in stride(from: t, to: n, by: 4) {
                        let ok = try rt.withIPC { $0.put(Array("item \(i)".utf8), on: input) }
                        #expect(ok)
                    }
                }
            }
            try await group.waitForAll()
        }
        var got: Set<String> = []
        _ = try Self.eventually(20) {
            while let item = try rt.withIPC({ $0.get(from: output) }) { got.insert(String(decoding: item, as: UTF8.self)) }
            return got.count == n
        }
        #expect(got == Set((0..<n).map { "item \($0)" }))
        // A worker marks an item done after it put the echo: the last may lag.
        #expect(try Self.eventually(10) { try rt.withIPC { $0.tasks(of: input) }.unfinished == 0 })
        // An empty item ends a worker; the host hears of each end (pidfd).
        for _ in workers { #expect(try rt.withIPC { $0.put([], on: input) }) }
        for w in workers { #expect(rt.waitForExit(w, timeout: 10) == 0, "\(w) ends with status 0") }
        let exits = await withTaskGroup(of: Int32.self) { group in
            for w in workers { group.addTask { await rt.exited(w) } }
            return await group.reduce(into: [Int32]()) { $0.append($1) }
        }
        #expect(exits == [0, 0, 0, 0])
        let monitor = rt.monitorPid
        rt.shutdown()
        #expect(Holdings.now() == before, "no descriptor or mapping of jobrun's is left")
        let left = Self.children().subtracting(childrenBefore)
        #expect(left.isEmpty, "no child is left: \(left)")
        #expect(!Self.isAlive(monitor))
        #expect(Runtime.running == nil)
        #expect(throws: JobrunCore.JobrunError.self) { try rt.withIPC { _ in 1 } }
    }

    @Test func shutdownEndsBusyWorkersAndAStartAfterShutdownWorks() throws {
        let before = Holdings.now()
        let childrenBefore = Self.children()
        let rt = try Runtime.shared()
        let idle = try (0..<3).map { _ in try rt.spawnWorker(role: "idle") }
        for w in idle { #expect(rt.waitUntilRunning(w, timeout: 10)) }
        rt.shutdown(grace: 0.5)
        for w in idle { #expect(rt.exitCode(of: w) == -SIGTERM, "\(w) was asked to stop") }
        #expect(Holdings.now() == before)
        #expect(Self.children().subtracting(childrenBefore).isEmpty)
        // Again, in the same process: a new arena, a new monitor.
        let again = try Runtime.shared()
        #expect(again !== rt)
        let (input, output) = try again.withIPC { ipc in (try ipc.makeJoinableQueue(), try ipc.makeJoinableQueue()) }
        let w = try again.spawnWorker(role: "echo", environment: ["JOBRUN_ECHO_IN": String(input), "JOBRUN_ECHO_OUT": String(output)])
        #expect(try again.withIPC { $0.put(Array("again".utf8), on: input) })
        var item: [UInt8]?
        #expect(try Self.eventually(10) { item = try again.withIPC { $0.get(from: output) }; return item != nil })
        #expect(item == Array("again".utf8))
        #expect(try again.withIPC { $0.put([], on: input) })
        #expect(again.waitForExit(w, timeout: 10) == 0)
        again.shutdown()
        #expect(Holdings.now() == before)
        #expect(Self.children().subtracting(childrenBefore).isEmpty)
    }

    @Test func aWorkerKilledMidItemIsSeenAndItsItemFailedOrRedelivered() throws {
        let rt = try Runtime.shared()
        defer { rt.shutdown() }
        for redeliver in [false, true] {
            let (input, output) = try rt.withIPC { ipc in (try ipc.makeJoinableQueue(redeliver: redeliver), try ipc.makeJoinableQueue()) }
            let w = try rt.spawnWorker(role: "echo", environment: ["JOBRUN_ECHO_IN": String(input), "JOBRUN_ECHO_OUT": String(output)])
            #expect(try rt.withIPC { $0.put(EchoRole.hangItem, on: input) })
            #expect(try Self.eventually(10) { try rt.withIPC { $0.itemCount(input) } == 0 }, "the worker took the item")
            rt.signal(w, SIGKILL)
            #expect(rt.waitForExit(w, timeout: 10) == -SIGKILL, "the host sees the worker's death")
            if redeliver {
                // The monitor puts the item back at the front of its queue.
                var item: [UInt8]?
                #expect(try Self.eventually(10) { item = try rt.withIPC { $0.get(from: input) }; return item != nil })
                #expect(item == EchoRole.hangItem)
                try rt.withIPC { $0.taskDone(input) }
            } else {
                // The monitor fails its task: a join no longer waits for it.
                #expect(try Self.eventually(10) { try rt.withIPC { $0.tasks(of: input) }.failed == 1 })
            }
        }
    }

    /// A monitor that dies is replaced (as the command line does), and the
    /// new one supervises: a worker killed afterwards has its item failed.
    @Test func aDeadMonitorIsReplaced() throws {
        let rt = try Runtime.shared()
        defer { rt.shutdown() }
        let first = rt.monitorPid
        kill(first, SIGKILL)
        #expect(Self.eventually(10) { rt.monitorPid != 0 && rt.monitorPid != first })
        #expect(rt.monitorsLost == 1)
        let (input, output) = try rt.withIPC { ipc in (try ipc.makeJoinableQueue(), try ipc.makeJoinableQueue()) }
        let w = try rt.spawnWorker(role: "echo", environment: ["JOBRUN_ECHO_IN": String(input), "JOBRUN_ECHO_OUT": String(output)])
        #expect(try rt.withIPC { $0.put(EchoRole.hangItem, on: input) })
        #expect(try Self.eventually(10) { try rt.withIPC { $0.itemCount(input) } == 0 })
        rt.signal(w, SIGKILL)
        #expect(rt.waitForExit(w, timeout: 10) == -SIGKILL)
        #expect(try Self.eventually(10) { try rt.withIPC { $0.tasks(of: input) }.failed == 1 })
    }

    /// A process that already has an arena (the command line's, a
    /// worker's) refuses a runtime, and keeps its arena.
    @Test func aProcessWithAnArenaRefusesARuntimeAndKeepsIt() throws {
        try Arena.create(limit: 1 << 20)
        let base = Arena.base
        #expect(throws: JobrunCore.JobrunError.self) { try Runtime.shared() }
        #expect(Arena.base == base && Arena.base != nil, "the arena is still mapped")
        munmap(Arena.base, Int(Arena.reservedBytes))
        close(Arena.fd)
        ProcessContext.current.forgetRun()
        #expect(Holdings.now().arenaFDs == 0)
        let rt = try Runtime.shared()
        rt.shutdown()
    }

    /// The plug-in role: a PluginWorker in a re-entered worker, called
    /// through the queues as the PluginHost will call it.
    @Test func aPluginWorkerAnswersThroughTheRuntime() throws {
        let dir = NSTemporaryDirectory() + "jobrun-runtime-plugins-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "return { add = function(t) return t.a + t.b end }\n".write(toFile: dir + "/calc.lua", atomically: true, encoding: .utf8)
        let rt = try Runtime.shared()
        defer { rt.shutdown() }
        let (requests, responses) = try rt.withIPC { ipc in (try ipc.makeJoinableQueue(), try ipc.makeJoinableQueue()) }
        let w = try rt.spawnWorker(role: "plugin", environment: ["JOBRUN_PLUGIN_DIR": dir, "JOBRUN_PLUGIN_REQUESTS": String(requests),
                                                                  "JOBRUN_PLUGIN_RESPONSES": String(responses)])
        for (id, fn) in [(Int64(1), "add"), (2, "missing")] {
            let request = try PluginWire.request(id: id, plugin: "calc", function: fn, argument: ["a": 2, "b": 40])
            #expect(try rt.withIPC { $0.put(request, on: requests) })
            var bytes: [UInt8]?
            #expect(try Self.eventually(10) { bytes = try rt.withIPC { $0.get(from: responses) }; return bytes != nil })
            let response = try PluginWire.response(try #require(bytes))
            if id == 1 {
                #expect(response == .success(id: 1, result: 42))
            } else if case .failure(let got, let failure) = response {
                #expect(got == 2 && failure.code == "functionMissing", "\(failure)")
            } else {
                Issue.record("expected a failure, got \(response)")
            }
        }
        // A plug-in's Process{script = ...} re-enters the host's executable
        // as a script worker (never the host's main).
        try "os.exit(tonumber(arg[1]) + 2)\n".write(toFile: dir + "/child.lua", atomically: true, encoding: .utf8)
        try """
            return { run = function(t)
              local p = jobrun.Process{script = t.script, args = {5}}
              p:start(); p:join()
              return p.exitcode
            end }

            """.write(toFile: dir + "/spawner.lua", atomically: true, encoding: .utf8)
        let request = try PluginWire.request(id: 3, plugin: "spawner", function: "run", argument: ["script": "\(dir)/child.lua"])
        #expect(try rt.withIPC { $0.put(request, on: requests) })
        var bytes: [UInt8]?
        #expect(try Self.eventually(20) { bytes = try rt.withIPC { $0.get(from: responses) }; return bytes != nil })
        #expect(try PluginWire.response(try #require(bytes)) == .success(id: 3, result: 7))
        #expect(try rt.withIPC { $0.put([], on: requests) })
        #expect(rt.waitForExit(w, timeout: 10) == 0)
    }

    final class Box: @unchecked Sendable { var worker: Runtime.Worker?; var thread: pthread_t? }

    /// PR_SET_PDEATHSIG fires when the thread that started a child ends: a
    /// worker asked for by a thread that then ends (as Dispatch retires its
    /// idle threads) must live on (the runtime's own thread spawns it).
    @Test func aWorkerOutlivesTheThreadThatAskedForIt() throws {
        let rt = try Runtime.shared()
        defer { rt.shutdown() }
        let box = Box()
        let thread = Thread { box.worker = try? rt.spawnWorker(role: "idle") }
        thread.start()
        #expect(Self.eventually(10) { thread.isFinished })
        let w = try #require(box.worker)
        #expect(rt.waitUntilRunning(w, timeout: 10))
        #expect(rt.waitForExit(w, timeout: 1) == nil, "\(w) still runs after the thread that asked for it ended")
    }

    /// Runs jobrun-test-host (a plain executable host) with `arguments`.
    static func startHost(_ arguments: [String]) throws -> (Foundation.Process, FileHandle) {
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: buildDirectory + "/jobrun-test-host")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        return (p, out.fileHandleForReading)
    }

    @Test func aPlainExecutableHostReentersItself() throws {
        let (p, out) = try Self.startHost(["echo", "1000"])
        let text = String(decoding: out.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(text.hasPrefix("ok 1000 "), "\(text)")
        print("RuntimeTests: jobrun-test-host: \(text)")
    }

    @Test func aSIGKILLedHostLeavesNoWorker() throws {
        try Self.expectSIGKILLedHostLeavesNoWorker(["wait"])
    }

    /// Starts jobrun-test-host with `arguments` (it prints "pids" and three
    /// pids: its monitor and workers), SIGKILLs it, and expects those
    /// processes to end with it.
    static func expectSIGKILLedHostLeavesNoWorker(_ arguments: [String],
                                                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (p, out) = try startHost(arguments)
        var line = Data()
        let end = Date().addingTimeInterval(20)
        while !line.contains(UInt8(ascii: "\n")) && Date() < end {
            let chunk = out.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        #expect(words.first == "pids" && words.count == 4, "\(words)", sourceLocation: sourceLocation)
        let pids = words.dropFirst().compactMap { pid_t($0) }
        for pid in pids { #expect(isAlive(pid), sourceLocation: sourceLocation) }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(eventually(10) { pids.allSatisfy { !isAlive($0) } }, "the monitor and the workers end with their host",
                sourceLocation: sourceLocation)
    }
}
