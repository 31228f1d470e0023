import Foundation
import Glibc
import Testing
import CJobrunShims
@testable import Jobrun
@testable import JobrunCore

/// Whether this test process runs SwiftQueueTests alone (started by SwiftQueuesInTheirOwnProcess).
enum SwiftQueueTestProcess {
    static let variable = "JOBRUN_SWIFT_QUEUE_TESTS_PROCESS"
    static var isOwn: Bool { getenv(variable) != nil }
}

/// Runs SwiftQueueTests in a test process of their own, as
/// HostRuntimeInItsOwnProcess runs RuntimeTests (one runtime per process,
/// which owns the process's arena).
@Suite struct SwiftQueuesInTheirOwnProcess {
    @Test(.enabled(if: !SwiftQueueTestProcess.isOwn && !RuntimeTestProcess.isOwn)) func swiftQueueTests() async throws {
        try await HostRuntimeInItsOwnProcess.runOwn("SwiftQueueTests", variable: SwiftQueueTestProcess.variable)
    }
}

/// JoinableQueue and ScriptWorker (Jobrun's public API): a Swift host feeds
/// Lua script workers (this test binary re-entered) and collects their
/// results. Each test shuts the runtime down; a watchdog shuts it down
/// early if a test outlives its bound, which makes every pending wait throw.
@Suite(.serialized, .enabled(if: SwiftQueueTestProcess.isOwn)) struct SwiftQueueTests {
    /// A Lua script written to a temporary file.
    static func script(_ name: String, _ text: String) throws -> String {
        let dir = NSTemporaryDirectory() + "jobrun-swift-queue-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let squarer = """
        local inbox, results = ...
        while true do
          local x = inbox:get()
          if x == "stop" then inbox:task_done() break end
          results:put(x * x)
          inbox:task_done()
        end
        """

    /// Runs `body` with the runtime shut down after it, or after `seconds`
    /// if it is still running then (a pending get or join then throws).
    static func bounded(_ seconds: Double, _ body: () async throws -> Void) async throws {
        let watchdog = Task.detached {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            print("SwiftQueueTests: a test outlived its \(seconds) s: shutting the runtime down")
            Runtime.running?.shutdown(grace: 0.2)
        }
        defer {
            watchdog.cancel()
            Runtime.running?.shutdown(grace: 0.5)
        }
        try await body()
    }

    @Test func swiftFeedsTenThousandItemsToTwoLuaWorkersAndCollectsTheSquares() async throws {
        try await Self.bounded(120) {
            let path = try Self.script("square.lua", Self.squarer)
            let inbox = try JoinableQueue(name: "numbers")
            let results = try JoinableQueue(name: "squares")
            let t0 = Date()
            let workers = try (1...2).map { i in
                try ScriptWorker.start(script: path, arguments: [.queue(inbox), .queue(results)], name: "squarer-\(i)")
            }
            let n = 10_000
            // Fed from one task while another collects.
            let feeder = Task {
                for i in 1...n { try await inbox.put(.integer(Int64(i))) }
                for _ in workers { try await inbox.put("stop") }
            }
            var sum: Int64 = 0, count = 0
            var seen = Set<Int64>()
            for _ in 0..<n {
                let v = try await results.get()
                guard case .integer(let s) = v else { Issue.record("not an integer: \(v)"); return }
                sum += s; count += 1; seen.insert(s)
                try results.taskDone()
            }
            try await feeder.value
            try await inbox.join()
            let expected = (1...Int64(n)).reduce(0) { $0 + $1 * $1 }
            #expect(count == n && seen.count == n && sum == expected)
            for w in workers { #expect(await w.wait() == 0, "\(w.name) ends with status 0") }
            print("SwiftQueueTests: 10,000 items squared by 2 Lua workers in \(String(format: "%.2f", Date().timeIntervalSince(t0))) s")
        }
    }

    @Test func aWorkerSIGKILLedMidRunOnARedeliverQueueLosesNothing() async throws {
        try await Self.bounded(60) {
            let holdAndHang = try Self.script("hold.lua", """
                local inbox, told = ...
                local x = inbox:get()
                told:put(x)
                jobrun.sleep(600)
                """)
            let path = try Self.script("square_forever.lua", """
                local inbox, results = ...
                while true do
                  local x = inbox:get()
                  results:put(x * x)
                  inbox:task_done()
                end
                """)
            let inbox = try JoinableQueue(redeliver: true, name: "work")
            let told = try JoinableQueue(name: "told")
            let results = try JoinableQueue(name: "results")
            let n = 200
            for i in 1...n { try await inbox.put(.integer(Int64(i))) }
            let victim = try ScriptWorker.start(script: holdAndHang, arguments: [.queue(inbox), .queue(told)], name: "victim")
            let held = try await told.get()
            #expect(held == .integer(1))
            victim.kill(SIGKILL)
            #expect(await victim.wait() == -SIGKILL)
            let worker = try ScriptWorker.start(script: path, arguments: [.queue(inbox), .queue(results)], name: "survivor")
            var got = Set<Int64>()
            for _ in 0..<n {
                if case .integer(let s) = try await results.get() { got.insert(s) }
            }
            #expect(got == Set((1...Int64(n)).map { $0 * $0 }), "every item, the victim's too, squared once")
            try await inbox.join()   // nothing failed: the victim's item was redelivered
            worker.kill()
            _ = await worker.wait()
        }
    }

    @Test func joinAfterAWorkerDiedWithoutTaskDoneThrowsNamingIt() async throws {
        try await Self.bounded(60) {
            let path = try Self.script("take_and_die.lua", """
                local inbox = ...
                inbox:get()
                os.exit(3)
                """)
            let inbox = try JoinableQueue(name: "jobs")
            try await inbox.put("job")
            let w = try ScriptWorker.start(script: path, arguments: [.queue(inbox)], name: "careless")
            #expect(await w.wait() == 3)
            do {
                try await inbox.join()
                Issue.record("join returned")
            } catch let e as JobrunError {
                #expect(e.code == .workerDied)
                #expect(e.message.contains("careless (pid \(w.pid))"), "\(e)")
            }
            // Told once: a later join counts the item as done.
            try await inbox.join()
        }
    }

    struct Order: Codable, Equatable {
        var id: Int
        var customer: String
        var lines: [Line]
        var total: Double?
        struct Line: Codable, Equatable { var sku: String; var quantity: Int; var price: Double }
    }

    @Test func codableStructsGoThroughTheQueueAsLuaTablesAndBack() async throws {
        try await Self.bounded(60) {
            let path = try Self.script("total.lua", """
                local inbox, results = ...
                while true do
                  local order = inbox:get()
                  assert(type(order) == "table" and type(order.lines) == "table", "a table")
                  local total = 0
                  for _, line in ipairs(order.lines) do total = total + line.quantity * line.price end
                  order.total = total
                  order.customer = order.customer:upper()
                  results:put(order)
                  inbox:task_done()
                end
                """)
            let inbox = try JoinableQueue(), results = try JoinableQueue()
            let w = try ScriptWorker.start(script: path, arguments: [.queue(inbox), .queue(results)])
            let orders = (1...20).map { i in
                Order(id: i, customer: "customer \(i)", lines: (1...i % 4 + 1).map { Order.Line(sku: "sku-\($0)", quantity: $0, price: 1.5) }, total: nil)
            }
            for o in orders { try await inbox.put(o) }
            var back: [Order] = []
            for _ in orders { back.append(try await results.get(as: Order.self)) }
            try await inbox.join()
            let expected = orders.map { o -> Order in
                var o = o
                o.customer = o.customer.uppercased()
                o.total = o.lines.reduce(0) { $0 + Double($1.quantity) * $1.price }
                return o
            }
            #expect(back == expected)
            // A value that cannot cross is a typed error, and the queue goes on.
            try await results.put("not an order")
            await #expect(throws: JobrunError.self) { _ = try await results.get(as: Order.self) }
            try await inbox.put(orders[0])
            #expect(try await results.get(as: Order.self) == expected[0])
            w.kill()
            _ = await w.wait()
        }
    }
}

extension SwiftQueueTests {
    @Test func aWaitingGetEndsWhenItsTaskIsCancelledOrTheRuntimeShutsDown() async throws {
        try await Self.bounded(30) {
            let q = try JoinableQueue(name: "empty")
            let waiting = Task { try await q.get() }
            try await Task.sleep(nanoseconds: 50_000_000)
            waiting.cancel()
            let cancelled: Result<LuaValue, Error> = await waiting.result
            #expect(throws: CancellationError.self) { try cancelled.get() }
            // The queue still works after it.
            try await q.put("after")
            #expect(try await q.get() == "after")
            // A get waiting while the runtime shuts down throws .runtimeUnavailable.
            let pending = Task { try await q.get() }
            try await Task.sleep(nanoseconds: 50_000_000)
            Runtime.running?.shutdown(grace: 0.2)
            do {
                _ = try await pending.value
                Issue.record("get returned after shutdown")
            } catch let e as JobrunError {
                #expect(e.code == .runtimeUnavailable, "\(e)")
            }
            await #expect(throws: JobrunError.self) { try await q.put("late") }
            // Also once a new runtime (a new arena) runs: the old queue is no object of it.
            let fresh = try JoinableQueue(name: "fresh")
            await #expect(throws: JobrunError.self) { try await q.put("late") }
            try await fresh.put(1)
            #expect(try await fresh.get() == 1)
        }
    }
}

extension SwiftQueueTests {
    @Test func aDeadlockIsReportedToAWaitThatAsksForIt() async throws {
        try await Self.bounded(60) {
            // The worker waits for work that never comes; the host waits for its result.
            let path = try Self.script("starved.lua", """
                local inbox, results = ...
                results:put(inbox:get())
                """)
            let inbox = try JoinableQueue(name: "inbox"), results = try JoinableQueue(name: "results")
            let w = try ScriptWorker.start(script: path, arguments: [.queue(inbox), .queue(results)], name: "starved")
            do {
                _ = try await results.get(detectDeadlock: true)
                Issue.record("get returned")
            } catch let e as JobrunError {
                #expect(e.code == .deadlock, "\(e)")
                #expect(e.message.contains("starved (pid \(w.pid)) waits in"), "\(e)")
                #expect(e.message.contains("host (pid \(getpid())) waits in"), "\(e)")
            }
            // The worker was told too (its get raised Deadlock).
            #expect(await w.wait() == 1)
        }
    }
}

extension SwiftQueueTests {
    @Test func aPlainQueueCarriesItemsBothWaysAndCloses() async throws {
        try await Self.bounded(60) {
            let path = try Self.script("plain.lua", """
                local inbox, outbox = ...
                for item in inbox:items() do outbox:put(#item) end
                outbox:put("done")
                """)
            let inbox = try Queue(name: "words"), outbox = try Queue(name: "lengths")
            let w = try ScriptWorker.start(script: path, arguments: [.queue(inbox), .queue(outbox)])
            try await inbox.put(contentsOf: ["a", "bb", "ccc"])
            try inbox.close()
            await #expect(throws: JobrunError.self) { try await inbox.put("late") }
            var lengths: [LuaValue] = []
            for _ in 0..<4 { lengths.append(try await outbox.get()) }
            #expect(lengths == [1, 2, 3, "done"])
            #expect(await w.wait() == 0)
        }
    }
}

extension SwiftQueueTests {
    @Test func manyTasksGetAndJoinAtOnceWhileALuaWorkerProduces() async throws {
        try await Self.bounded(60) {
            let path = try Self.script("produce.lua", """
                local out, n = ...
                for i = 1, n do
                  out:put(i)
                  if i % 100 == 0 then jobrun.sleep(0.001) end
                end
                """)
            let out = try JoinableQueue(name: "produced")
            let n = 2000
            // Eight takers wait before anything is put (a wait's thread each).
            let takers = (0..<8).map { _ in
                Task { () throws -> [Int64] in
                    var mine: [Int64] = []
                    for _ in 0..<(n / 8) {
                        if case .integer(let i) = try await out.get() { mine.append(i) }
                        try out.taskDone()
                    }
                    return mine
                }
            }
            let w = try ScriptWorker.start(script: path, arguments: [.queue(out), .value(.integer(Int64(n)))], name: "producer")
            // Two joiners once the first item is in (they wait for the takers' task_done).
            while try out.ipc({ $0.tasks(of: out.handle.offset) }).unfinished == 0 && w.exitCode == nil { await Task.yield() }
            let joiners = (0..<2).map { _ in Task { try await out.join() } }
            var all: [Int64] = []
            for t in takers { all += try await t.value }
            for j in joiners { try await j.value }
            #expect(all.count == n && Set(all) == Set(1...Int64(n)), "each item taken once")
            #expect(await w.wait() == 0)
        }
    }
}

extension SwiftQueueTests {
    /// Threads of this process now (/proc/self/task).
    static func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
    }

    /// 500 tasks awaiting `get` at once cost the runtime's one waiter
    /// thread, not a thread each; every one gets an item once they come.
    @Test func fiveHundredAwaitingGetsCostNoThreadEach() async throws {
        try await Self.bounded(60) {
            let q = try JoinableQueue(name: "many")
            let other = try JoinableQueue(name: "joined")
            try await other.put("pending")
            let before = Self.threadCount()
            let n = 500
            let takers = (0..<n).map { _ in Task { try await q.get() } }
            let joiners = (0..<20).map { _ in Task { try await other.join() } }
            // Every wait has been added.
            let entered = Deadline(timeout: 20)
            while q.runtime.waiter.pending < n + 20 && !entered.expired { try await Task.sleep(nanoseconds: 1_000_000) }
            #expect(q.runtime.waiter.pending == n + 20)
            // The queue counts the host's waits once, however many.
            func counted() throws -> UInt32 { try q.ipc { _ in SharedQueue(offset: q.handle.offset).q.pointee.host_get_waiters } }
            while try counted() == 0 && !entered.expired { try await Task.sleep(nanoseconds: 1_000_000) }
            #expect(try counted() == 1)
            let during = Self.threadCount()
            #expect(during - before <= 4, "threads before \(before), while 520 tasks wait \(during)")
            for i in 0..<n { try await q.put(.integer(Int64(i))) }
            var got = Set<Int64>()
            for t in takers { if case .integer(let i) = try await t.value { got.insert(i) } }
            #expect(got == Set(0..<Int64(n)), "each item taken once")
            _ = try await other.get()
            try other.taskDone()
            for j in joiners { try await j.value }
            // Nothing is counted any more (uncounted before the last get returned): a put wakes no one.
            #expect(try counted() == 0)
            print("SwiftQueueTests: threads before \(before), with 520 waiting tasks \(during)")
        }
    }

    /// A timeout ends a get (or a join) that finds nothing in time with
    /// `.timedOut`, while a get without one goes on waiting, and the queue
    /// works afterwards; a timeout of 0 only looks.
    @Test func aGetOrJoinWithATimeoutEndsInTime() async throws {
        try await Self.bounded(30) {
            let q = try JoinableQueue(name: "slow")
            let patient = Task { try await q.get() }
            let t0 = ContinuousClock.now
            do {
                _ = try await q.get(timeout: .milliseconds(200))
                Issue.record("get returned")
            } catch let e as JobrunError {
                #expect(e.code == .timedOut, "\(e)")
            }
            let waited = ContinuousClock.now - t0
            #expect(waited >= .milliseconds(200) && waited < .seconds(5), "\(waited)")
            await #expect(throws: JobrunError.self) { _ = try await q.get(timeout: .zero) }
            try await q.put("one")
            #expect(try await patient.value == "one")
            try await q.put("two")
            #expect(try await q.get(timeout: .seconds(5)) == "two")
            // Two items taken, none done: join times out, then returns once they are.
            do {
                try await q.join(timeout: .milliseconds(100))
                Issue.record("join returned")
            } catch let e as JobrunError {
                #expect(e.code == .timedOut, "\(e)")
            }
            try q.taskDone(); try q.taskDone()
            try await q.join(timeout: .seconds(5))
        }
    }

    /// Cancelling one of many waiting tasks ends that one only, at once.
    @Test func cancellingOneWaitLeavesTheOthersWaiting() async throws {
        try await Self.bounded(30) {
            let q = try JoinableQueue(name: "cancel-one")
            let waiting = (0..<10).map { _ in Task { try await q.get() } }
            try await Task.sleep(nanoseconds: 50_000_000)
            waiting[3].cancel()
            let r = await waiting[3].result
            #expect(throws: CancellationError.self) { try r.get() }
            for i in 0..<9 { try await q.put(.integer(Int64(i))) }
            var got = Set<Int64>()
            for (i, t) in waiting.enumerated() where i != 3 {
                if case .integer(let v) = try await t.value { got.insert(v) }
            }
            #expect(got == Set(0..<9))
            // A task cancelled before it waits never waits.
            let early = Task { () async throws -> LuaValue in
                withUnsafeCurrentTask { $0?.cancel() }
                return try await q.get()
            }
            await #expect(throws: CancellationError.self) { _ = try await early.value }
        }
    }
}

extension SwiftQueueTests {
    /// A queue made from Swift leaves shared memory when its last Swift
    /// reference goes: 10,000 made and dropped one after the other fit an
    /// arena limited to 4 MiB more than in use (room for ~60 queues at
    /// once), and leave the arena and the object table as they found them.
    @Test func queuesDroppedInSwiftLeaveSharedMemory() async throws {
        try await Self.bounded(120) {
            let first = try JoinableQueue(name: "first")   // the runtime runs
            let rt = first.runtime
            let (inUse, objects, limit) = try rt.withOwnIPC { _ in
                (Arena.bytesInUse, Arena.header.pointee.objects_used, Arena.header.pointee.limit)
            }
            try rt.withOwnIPC { _ in Arena.header.pointee.limit = inUse + (4 << 20) }
            defer { _ = try? rt.withOwnIPC { _ in Arena.header.pointee.limit = limit } }
            for i in 0..<10_000 {
                let q = i % 2 == 0 ? try JoinableQueue(name: "dropped") : try Queue(name: "dropped")
                try await q.put(.integer(Int64(i)))   // an item in it, freed with it
            }
            let (after, objectsAfter) = try rt.withOwnIPC { _ in (Arena.bytesInUse, Arena.header.pointee.objects_used) }
            #expect(after == inUse, "bytes in use before \(inUse), after 10,000 queues \(after)")
            #expect(objectsAfter <= objects + 1, "object table slots used before \(objects), after \(objectsAfter)")
            _ = first
        }
    }

    /// A queue the program dropped stays while a worker holds it (it was
    /// the worker's argument), and goes once the worker ends.
    @Test func aDroppedQueueStaysWhileAWorkerHoldsIt() async throws {
        try await Self.bounded(60) {
            let path = try Self.script("own_queue.lua", """
                local mine, report, go = ...
                go:get()
                mine:put("kept")
                report:put(mine:get())
                """)
            let report = try JoinableQueue(name: "report"), go = try JoinableQueue(name: "go")
            let rt = report.runtime
            var mine: JoinableQueue? = try JoinableQueue(name: "mine")
            let (slot, generation) = (mine!.handle.slot, mine!.handle.generation)
            func alive() throws -> Bool {
                try rt.withOwnIPC { _ in
                    let e = ObjectTable.entry(slot)!
                    return e.pointee.state == UInt32(JR_SLOT_LIVE) && e.pointee.generation == generation
                }
            }
            let w = try ScriptWorker.start(script: path, arguments: [.queue(mine!), .queue(report), .queue(go)], name: "holder")
            mine = nil
            #expect(try alive(), "the worker's argument holds it")
            try await go.put(true)
            #expect(try await report.get(timeout: .seconds(20)) == "kept")
            #expect(await w.wait() == 0)
            // The worker's reference went as it ended (or with the monitor's settling).
            let gone = Deadline(timeout: 10)
            while try alive() && !gone.expired { try await Task.sleep(nanoseconds: 5_000_000) }
            #expect(try !alive(), "freed once no process holds it")
        }
    }
}
