import CJobrunShims
import Glibc
import Testing
@testable import JobrunCore

/// One arena for the whole test process (it is per process by design).
let arenaReady: Bool = {
    if !Arena.isAttached {
        try! Arena.create(limit: 1 << 30)
        // The object table's first chunk, made now: no test that counts the
        // arena's bytes sees it appear.
        _ = try! ObjectTable.register(type: JR_OBJ_VALUE, offset: try! Arena.allocateZeroed(MemoryLayout<jr_value>.size), held: false)
    }
    return true
}()

private func put(_ q: SharedQueue, _ s: String, block: Bool = false, timeout: Double? = 0) -> SharedQueue.PutResult {
    var s = s
    return s.withUTF8 { q.put(UnsafeRawBufferPointer($0), block: block, deadline: Deadline(timeout: timeout)) }
}

private func get(_ q: SharedQueue, block: Bool = false, timeout: Double? = 0) -> String? {
    var scratch = ScratchBuffer(capacity: 16)
    var out: String?
    _ = q.get(block: block, deadline: Deadline(timeout: timeout), scratch: &scratch) {
        out = String(decoding: $0, as: UTF8.self)
    }
    return out
}

/// The suites that allocate from the test process's one arena and check its
/// blocks or totals run one at a time: each would see the others' blocks
/// come and go.
@Suite(.serialized) struct OneArena {}

extension OneArena {
@Suite("SharedQueue in one process")
struct SharedQueueTests {
    init() { _ = arenaReady }

    @Test func fifoAndCounts() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: true, redeliver: false))
        for i in 0..<1000 { guard case .ok = put(q, "item-\(i)") else { Issue.record("put failed"); return } }
        #expect(q.count == 1000)
        for i in 0..<1000 { #expect(get(q) == "item-\(i)") }
        #expect(get(q) == nil)
        #expect(q.unfinished == 1000)
        for _ in 0..<1000 { #expect(q.taskDone() == .ok) }
        #expect(q.taskDone() == .tooMany)
        guard case .ok = q.join(deadline: Deadline(timeout: 0)) else { Issue.record("join should succeed"); return }
    }

    @Test func wrapAroundAndGrowthKeepOrder() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        var next = 0, expected = 0
        var rng = SystemRandomNumberGenerator()
        // Interleave puts and gets of varied sizes so the ring wraps many times and grows.
        for round in 0..<200 {
            let puts = Int.random(in: 0...40, using: &rng)
            for _ in 0..<puts {
                let size = Int.random(in: 0...(round % 3 == 0 ? 30_000 : 300), using: &rng)
                _ = put(q, String(next) + ":" + String(repeating: "x", count: size))
                next += 1
            }
            let gets = Int.random(in: 0...40, using: &rng)
            for _ in 0..<gets {
                guard let s = get(q) else { break }
                #expect(s.split(separator: ":").first.map(String.init) == String(expected))
                expected += 1
            }
        }
        while let s = get(q) {
            #expect(s.split(separator: ":").first.map(String.init) == String(expected))
            expected += 1
        }
        #expect(expected == next)
    }

    @Test func boundedQueueReportsFullAndTimesOut() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 2, joinable: false, redeliver: false))
        guard case .ok = put(q, "a"), case .ok = put(q, "b") else { Issue.record("puts failed"); return }
        guard case .full = put(q, "c") else { Issue.record("expected full"); return }
        let t0 = monotonicNanos()
        guard case .full = put(q, "c", block: true, timeout: 0.1) else { Issue.record("expected full after timeout"); return }
        #expect(monotonicNanos() - t0 >= 90_000_000)
        #expect(get(q) == "a")
        guard case .ok = put(q, "c") else { Issue.record("put after get failed"); return }
        #expect(get(q) == "b"); #expect(get(q) == "c")
        let t1 = monotonicNanos()
        #expect(get(q, block: true, timeout: 0.1) == nil)
        #expect(monotonicNanos() - t1 >= 90_000_000)
    }

    /// A blocking get whose deadline has passed (a timeout of 0) on an empty
    /// queue returns at once, as a non-blocking one does: it does not spin
    /// for an item first. (It spun 4,000 rounds, yielding the CPU 47 times,
    /// so a fuzzed script looping on `pcall(q.get, q, true, 0)` ran for
    /// minutes.) Each kind's best of five rounds, interleaved, so that a
    /// preemption on a busy machine does not count.
    @Test func blockingGetWithTimeoutZeroDoesNotSpin() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        func round(block: Bool) -> Int64 {
            let t0 = monotonicNanos()
            for _ in 0..<400 { if get(q, block: block, timeout: 0) != nil { Issue.record("an item in an empty queue") } }
            return monotonicNanos() - t0
        }
        var nonBlocking = Int64.max, blocking = Int64.max
        for _ in 0..<5 {
            nonBlocking = min(nonBlocking, round(block: false))
            blocking = min(blocking, round(block: true))
        }
        #expect(blocking < 4 * nonBlocking + 2_000_000,
                "400 gets with a timeout of 0: \(blocking / 1000) µs blocking, \(nonBlocking / 1000) µs non-blocking")
    }

    @Test func closedQueueRefusesPutsAndDrains() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        _ = put(q, "last")
        q.close()
        guard case .closed = put(q, "more") else { Issue.record("expected closed"); return }
        #expect(get(q) == "last")
        var scratch = ScratchBuffer(capacity: 16)
        let r = q.get(block: true, deadline: Deadline(timeout: 5), scratch: &scratch) { _ in }
        #expect(r == .closed)
    }

    @Test func largeItemsLiveOutsideTheRingAndAreFreed() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        let before = Arena.bytesInUse
        let big = String(repeating: "b", count: 3 << 20)
        _ = put(q, big)
        #expect(Arena.bytesInUse >= before + (3 << 20))
        #expect(get(q)?.count == 3 << 20)
        // Other tests share the arena concurrently: allow for their small blocks.
        #expect(Arena.bytesInUse < before + (2 << 20))
    }

    /// A ring fills its block's size class: a new queue is charged its
    /// struct's block and one 64 KiB block (before, 64 KiB of ring plus the
    /// block header took a 128 KiB block), and a grown ring fills the next class.
    @Test func ringsAreChargedOnce() throws {
        let structBytes = UInt64(1) << Arena.sizeClass(for: MemoryLayout<jr_queue>.size)
        let before = Arena.bytesInUse
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        #expect(Arena.bytesInUse - before == structBytes + (64 << 10))
        #expect(q.q.pointee.ring_cap == (64 << 10) - 16)
        let item = String(repeating: "r", count: 8_000)
        for _ in 0..<20 { _ = put(q, item) }
        #expect(q.q.pointee.ring_cap == (256 << 10) - 16)
        #expect(Arena.bytesInUse - before == structBytes + (256 << 10))
        for _ in 0..<20 { #expect(get(q)?.count == 8_000) }
    }

    /// A dead taker's kept copies go back to the front of a redeliver queue,
    /// each large one in a block of its own. When memory runs out partway
    /// (here at the second of three), the blocks already taken are given
    /// back with the copies: nothing leaks.
    @Test func requeueThatRunsOutOfMemoryPartwayLeaksNothing() throws {
        if ProcessRegistry.record == nil { ProcessRegistry.register(name: "SharedQueueTests", parent: getppid()) }
        let me = try #require(ProcessRegistry.record)
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: true, redeliver: true))
        let big = String(repeating: "x", count: 40_000)     // past inlineLimit: 64 KiB blocks
        for _ in 0..<3 { guard case .ok = put(q, big) else { Issue.record("put"); return } }
        for _ in 0..<3 { #expect(get(q) == big) }            // kept copies, held for this process
        let before = Arena.bytesInUse
        let limit = Arena.header.pointee.limit
        Arena.header.pointee.limit = before + 70_000         // room for one more 64 KiB block
        q.processDied(me, name: "SharedQueueTests")
        Arena.header.pointee.limit = limit
        // The three copies are freed; a leak would keep the requeue's first block.
        // (Other suites may allocate a little meanwhile.)
        #expect(Arena.bytesInUse <= before - 3 * 65536 + 32768, "in use \(Arena.bytesInUse), was \(before)")
        #expect(get(q) == nil, "nothing was requeued")
    }

    @Test func arenaLimitIsReported() throws {
        let q = SharedQueue(offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false))
        // malloc'ed and never touched: the queue must refuse before copying.
        let n = Int(Arena.limit) + 1
        let p = malloc(n)!
        defer { free(p) }
        let r = q.put(UnsafeRawBufferPointer(start: p, count: n), block: false, deadline: Deadline(timeout: 0))
        guard case .noMemory(let message) = r else { Issue.record("expected noMemory"); return }
        #expect(message.contains("larger than the shared memory limit"))
    }
}
}

extension OneArena {
@Suite("Arena")
struct ArenaTests {
    init() { _ = arenaReady }

    /// Freed blocks past the per-class resident budget give their pages back;
    /// the next allocations must reuse the blocks that kept theirs, or every
    /// item would fault its pages in again.
    @Test func blocksThatKeptTheirPagesAreReusedFirst() throws {
        let payload = 5 << 20                                  // the 8 MiB class: 8 stay resident
        let blocks = try (0..<12).map { _ in try Arena.allocate(payload) }
        for b in blocks { Arena.free(b) }
        let punched = Set(blocks.suffix(4))
        let again = try (0..<8).map { _ in try Arena.allocate(payload) }
        #expect(Set(again).isDisjoint(with: punched), "a punched block was reused while resident ones were free")
        #expect(Set(again) == Set(blocks.prefix(8)))
        for b in again { Arena.free(b) }
    }
}
}

/// jr_ring_pos is `h % cap` without a division, for every capacity a ring
/// can have and positions across the whole 64-bit range (a byte count of a
/// long-lived queue passes 2^32 after 4 GiB of traffic).
@Test func ringPositionsAreRemainders() {
    var rng = SystemRandomNumberGenerator()
    var caps: [UInt64] = (4...39).map { SharedQueue.ringCapacity(atLeast: UInt64(1) << $0) }
    caps += [1, 2, 3, 7, 8, 65_520, UInt64.max, UInt64.max - 1]
    for _ in 0..<200 { caps.append(UInt64.random(in: 1...UInt64.max, using: &rng)) }
    for cap in caps {
        var hs: [UInt64] = [0, 1, cap - 1, cap, cap &+ 1, UInt64.max, UInt64.max - 1, UInt64(UInt32.max) + 1]
        for _ in 0..<500 { hs.append(UInt64.random(in: 0...UInt64.max, using: &rng)) }
        for h in hs where jr_ring_pos(h, cap) != h % cap {
            Issue.record("jr_ring_pos(\(h), \(cap)) = \(jr_ring_pos(h, cap)), expected \(h % cap)")
            return
        }
    }
}
