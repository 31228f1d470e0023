import Atomics
import CJobrunShims
import Glibc

/// Queue and JoinableQueue in shared memory, after CPython's queues.py: a
/// queue is a FIFO of encoded items plus, when joinable, an unfinished-tasks
/// counter. Unlike CPython there is no feeder thread and no pipe: producers
/// copy records into a byte ring in the arena under the queue's robust mutex,
/// and consumers copy them out. A side that must wait spins briefly (the other
/// side is usually about to act) and then sleeps on a futex word; a wake-up
/// system call is made only when someone sleeps.
///
/// A JoinableQueue also keeps who holds its items (taken, not yet done) in
/// a taker table of its own, under the same mutex, with the kept copies of
/// a redeliver queue. Every change of more than one step writes its intent
/// in the process's record first (jobrun_shims.h), so the next locker after
/// a SIGKILL (EOWNERDEAD: `repair`), or the monitor, settles it exactly.
/// Kill points (TestHooks) name the steps for the tests.
struct SharedQueue {
    let q: UnsafeMutablePointer<jr_queue>

    init(offset: UInt64) { q = Arena.pointer(offset).assumingMemoryBound(to: jr_queue.self) }

    /// A ring fills its block's size class exactly (2^k bytes less the
    /// block header), so its bytes are charged once against --shm-limit: a
    /// 64 KiB ring used to take a 128 KiB block. Positions are therefore
    /// taken modulo the capacity, which is a multiple of 8 but not a power
    /// of two; a wrap marker always moves a count to a multiple of it.
    static let initialRing: UInt64 = ringCapacity(atLeast: 64 * 1024 - 16)

    /// The largest ring of the smallest size class holding `n` bytes.
    static func ringCapacity(atLeast n: UInt64) -> UInt64 {
        (UInt64(1) << Arena.sizeClass(for: Int(n))) - UInt64(MemoryLayout<jr_block>.size)
    }
    /// Items larger than this live in their own block; the ring holds a reference.
    static let inlineLimit = 16 * 1024
    static let spinIterations = 4000
    /// Longest single sleep: waits re-check their conditions at least this often.
    static let sleepSlice: Int64 = 1_000_000_000

    /// A new queue. `label` (the user's `name`) and `site` ("file:line") name
    /// it in the progress line and --stats; a `listed` queue appears there.
    static func create(maxsize: Int64, joinable: Bool, redeliver: Bool,
                       label: String = "", site: String = "", listed: Bool = true) throws(Arena.AllocFailure) -> UInt64 {
        let (off, q) = try Arena.newObject(jr_queue.self, type: joinable ? JR_OBJ_JOINABLE_QUEUE : JR_OBJ_QUEUE)
        _ = jr_mutex_init(&q.pointee.lock)
        q.pointee.maxsize = maxsize
        q.pointee.flags = (joinable ? UInt32(JR_QUEUE_JOINABLE) : 0) | (redeliver ? UInt32(JR_QUEUE_REDELIVER) : 0)
            | (listed ? UInt32(JR_QUEUE_LISTED) : 0)
        q.pointee.ring_off = try Arena.allocate(Int(initialRing))
        q.pointee.ring_cap = initialRing
        copyCString(label, into: &q.pointee.label)
        copyCString(site, into: &q.pointee.site)
        return off
    }

    /// Every listed queue alive, oldest first (from the object table, read
    /// without locks: for the progress line and --stats, which only read).
    static func all() -> [SharedQueue] {
        ObjectTable.liveOffsets([UInt32(JR_OBJ_QUEUE), UInt32(JR_OBJ_JOINABLE_QUEUE)])
            .map { SharedQueue(offset: $0) }
            .filter { $0.q.pointee.flags & UInt32(JR_QUEUE_LISTED) != 0 }
            .sorted { $0.id < $1.id }
    }

    /// Calls `body` with every JoinableQueue alive, each kept alive meanwhile (the monitor).
    static func withJoinables(_ body: (SharedQueue) -> Void) {
        ObjectTable.withLive(UInt32(JR_OBJ_JOINABLE_QUEUE)) { body(SharedQueue(offset: $0)) }
    }

    /// Items are decoded once, by their getter, who adopts their handles'
    /// references; on a redeliver queue the kept copy holds them, and the
    /// getter takes new ones.
    var itemsAreHandedOver: Bool { q.pointee.flags & UInt32(JR_QUEUE_REDELIVER) == 0 }

    /// The last reference is gone (ObjectTable): frees the ring, the items
    /// still in it, the kept copies and the taker table, and drops the
    /// references the items held. The queue's own block is the table's to free.
    func destroy() {
        var dropped = ObjectTable.DroppedReferences()
        ObjectTable.retire(self)
        lock()
        discardItemsLocked(&dropped)
        Arena.free(q.pointee.ring_off, clearingOffset: &q.pointee.ring_off)
        if q.pointee.takers_off != 0 { Arena.free(q.pointee.takers_off, clearingOffset: &q.pointee.takers_off) }
        if q.pointee.failed_more_off != 0 { Arena.free(q.pointee.failed_more_off, clearingOffset: &q.pointee.failed_more_off) }
        unlock()
        dropped.release()
    }

    /// Calls `body` with the bytes of every item the queue holds, queued or
    /// kept for redelivery, and the block holding them apart from the ring
    /// (0: none). Lock held. `detaching`: each kept list is unlinked from
    /// its taker before it is walked (the caller frees the blocks).
    func forEachItemLocked(detaching: Bool = false, _ body: (UnsafeRawBufferPointer, UInt64) -> Void) {
        forEachRecord { record, _ in
            let r = record.assumingMemoryBound(to: jr_record.self)
            if r.pointee.kind == UInt32(JR_REC_EXTERNAL) {
                let p = (record + 8).assumingMemoryBound(to: UInt64.self)
                body(UnsafeRawBufferPointer(start: Arena.pointer(p[0]), count: Int(p[1])), p[0])
            } else {
                body(UnsafeRawBufferPointer(start: record + 8, count: Int(r.pointee.length)), 0)
            }
        }
        guard let t = takers else { return }
        for i in 0..<Int(q.pointee.takers_cap) {
            var cur = t[i].held_head
            if detaching {
                t[i].held_head = 0
                t[i].held_tail = 0
            }
            while cur != 0 {
                let h = Arena.pointer(cur).assumingMemoryBound(to: jr_held.self)
                let next = h.pointee.next
                body(UnsafeRawBufferPointer(start: UnsafeRawPointer(h + 1), count: Int(h.pointee.length)), cur)
                cur = next
            }
        }
    }

    /// Frees every item and kept copy (lock held); their references go
    /// into `dropped`.
    private func discardItemsLocked(_ dropped: inout ObjectTable.DroppedReferences) {
        forEachItemLocked(detaching: true) { bytes, block in
            dropped.add(handlesIn: bytes)
            if block != 0 { Arena.free(block) }
        }
        q.atomic(\.head).store(q.pointee.tail, ordering: .releasing)
        q.atomic(\.count).store(0, ordering: .releasing)
    }

    /// Empties a queue no process can reach any more (a garbage cycle's, ObjectTable+Cycles.swift).
    func discardItems() {
        var dropped = ObjectTable.DroppedReferences()
        lock()
        defer { unlock(); dropped.release() }
        discardItemsLocked(&dropped)
    }

    /// The lock if it is free (the cycle collector, which must not wait).
    func tryLockForCollector() -> Bool { RobustMutex.tryLock(&q.pointee.lock) { repair() } }
    var lockWord: UnsafeMutablePointer<pthread_mutex_t> { withUnsafeMutablePointer(to: &q.pointee.lock) { $0 } }

    var label: String { cString(&q.pointee.label) }
    var site: String { cString(&q.pointee.site) }

    var id: UInt32 { q.pointee.hdr.id }
    var isJoinable: Bool { q.pointee.flags & UInt32(JR_QUEUE_JOINABLE) != 0 }
    var maxsize: Int64 { q.pointee.maxsize }
    var count: UInt64 { q.atomic(\.count).load(ordering: .acquiring) }
    var isClosed: Bool { q.atomic(\.closed).load(ordering: .acquiring) != 0 }

    @inline(__always) private func lock() {
        RobustMutex.lock(&q.pointee.lock) { repair() }
    }

    /// Calls `body` with the start and size of each live record, oldest
    /// first, skipping wrap markers. Lock held.
    private func forEachRecord(_ body: (UnsafeMutableRawPointer, Int) -> Void) {
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var h = q.pointee.head
        while h < q.pointee.tail {
            let pos = jr_ring_pos(h, cap)
            let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
            if r.pointee.kind == UInt32(JR_REC_WRAP) { h += cap - pos; continue }
            let size = 8 + Int(SharedQueue.padded(Int(r.pointee.length)))
            body(ring + Int(pos), size)
            h += UInt64(size)
        }
    }

    // MARK: growth (model step "grow")

    /// Replaces the ring by a new one of `cap` bytes: `front` writes records
    /// at its start (requeued items) and returns their size, then the live
    /// records follow. Lock held. With `intent` (the caller's record), a
    /// SIGKILL at any step is repaired exactly (finishGrow): the new ring is
    /// allocated and filled while the queue still uses the old one, published
    /// by one store of `ring_off`, and only then is the old one freed. Without
    /// (the monitor), the order alone keeps every item. The protocol, with a
    /// death between any two steps, is checked by docs/model/ring_growth.pml.
    private func growRing(to cap: UInt64, intent me: UnsafeMutablePointer<jr_process_record>?,
                          front: (UnsafeMutableRawPointer) -> Int = { _ in 0 }) -> Bool {
        let old = q.pointee.ring_off
        let newOff: UInt64
        if let me {
            me.pointee.grow_queue = offset
            me.pointee.grow_kind = UInt32(JR_GROW_RING)
            me.pointee.grow_old = old
            me.atomic(\.grow_new).store(0, ordering: .releasing)
            me.atomic(\.grow_stage).store(1, ordering: .releasing)
            guard let off = try? Arena.allocate(Int(cap), recordingIn: &me.pointee.grow_new) else {
                me.atomic(\.grow_stage).store(0, ordering: .releasing)
                return false
            }
            newOff = off
        } else {
            guard let off = try? Arena.allocate(Int(cap)) else { return false }
            newOff = off
        }
        TestHooks.killPoint("ring-grow-allocated")
        let new = Arena.pointer(newOff)
        var w = front(new)
        forEachRecord { record, size in
            memcpy(new + w, record, size)
            w += size
        }
        if let me {
            me.pointee.grow_cap = cap
            me.atomic(\.grow_tail).store(UInt64(w), ordering: .releasing)
        }
        TestHooks.killPoint("ring-grow-copied")
        q.atomic(\.ring_off).store(newOff, ordering: .releasing)          // published
        TestHooks.killPoint("ring-grow-published")
        q.pointee.ring_cap = cap
        q.pointee.head = 0
        q.pointee.tail = UInt64(w)
        if let me { Arena.free(old, clearing: &me.pointee.grow_stage) } else { Arena.free(old) }
        return true
    }

    /// The taker table, or nil before the first get.
    private var takers: UnsafeMutablePointer<jr_taker>? {
        let off = q.pointee.takers_off
        return off == 0 ? nil : Arena.pointer(off).assumingMemoryBound(to: jr_taker.self)
    }

    /// Doubles the taker table (or makes the first), as growRing does the ring.
    private func growTakers(intent me: UnsafeMutablePointer<jr_process_record>?) -> Bool {
        let old = q.pointee.takers_off
        let oldCap = Int(q.pointee.takers_cap)
        let cap = max(8, oldCap * 2)
        let bytes = cap * MemoryLayout<jr_taker>.size
        let newOff: UInt64
        if let me {
            me.pointee.grow_queue = offset
            me.pointee.grow_kind = UInt32(JR_GROW_TAKERS)
            me.pointee.grow_old = old
            me.pointee.grow_cap = UInt64(cap)
            me.atomic(\.grow_new).store(0, ordering: .releasing)
            me.atomic(\.grow_stage).store(1, ordering: .releasing)
            guard let off = try? Arena.allocate(bytes, recordingIn: &me.pointee.grow_new) else {
                me.atomic(\.grow_stage).store(0, ordering: .releasing)
                return false
            }
            newOff = off
        } else {
            guard let off = try? Arena.allocate(bytes) else { return false }
            newOff = off
        }
        memset(Arena.pointer(newOff), 0, bytes)
        if old != 0 { memcpy(Arena.pointer(newOff), Arena.pointer(old), oldCap * MemoryLayout<jr_taker>.size) }
        q.atomic(\.takers_off).store(newOff, ordering: .releasing)        // published
        q.pointee.takers_cap = UInt64(cap)
        if old != 0 {
            if let me { Arena.free(old, clearing: &me.pointee.grow_stage) } else { Arena.free(old) }
        } else if let me {
            me.atomic(\.grow_stage).store(0, ordering: .releasing)
        }
        return true
    }

    /// Record slot number (index + 1) of `r`.
    private static func slotNumber(_ r: UnsafeMutablePointer<jr_process_record>) -> UInt32 {
        UInt32(ProcessRegistry.slots().distance(to: r) + 1)
    }

    /// The calling process's record slot number (kept beside its record:
    /// every get and task_done asks).
    @inline(__always)
    private static var ownSlotNumber: UInt32 { ProcessContext.processHot.pointee.recordSlot }

    /// The index of `slot`'s entry in the taker table, if it has one. Lock held.
    private func entryIndex(slot: UInt32) -> Int? {
        guard let t = takers else { return nil }
        for i in 0..<Int(q.pointee.takers_cap) where t[i].slot == slot { return i }
        return nil
    }

    /// The calling process's entry, if it has one. Lock held.
    @inline(__always)
    private func existingOwnEntry() -> Int? {
        let slot = SharedQueue.ownSlotNumber
        // This process's last entry, per queue (ProcessContext.objects):
        // entries of a live process never move or go.
        let cached = ProcessContext.processHot.pointee.cachedEntry
        if ProcessContext.processHot.pointee.cachedQueue == offset, let t = takers, cached < Int(q.pointee.takers_cap),
           t[cached].slot == slot {
            return cached
        }
        return entryIndex(slot: slot)
    }

    /// The calling process's entry, made if it has none (nil: no memory for
    /// a bigger table). Lock held.
    private func ownEntry(_ me: UnsafeMutablePointer<jr_process_record>) -> Int? {
        var found = existingOwnEntry()
        let slot = SharedQueue.ownSlotNumber
        if found == nil {
            var free: Int? = nil
            if let t = takers { for i in 0..<Int(q.pointee.takers_cap) where t[i].slot == 0 { free = i; break } }
            if free == nil {
                let n = Int(q.pointee.takers_cap)
                guard growTakers(intent: me) else { return nil }
                free = n
            }
            let e = takers! + free!
            e.pointee.count = 0
            e.pointee.held_head = 0
            e.pointee.held_tail = 0
            e.pointee.pid = me.pointee.pid
            e.atomic(\.slot).store(slot, ordering: .releasing)
            found = free
        }
        ProcessContext.processHot.pointee.cachedQueue = offset
        ProcessContext.processHot.pointee.cachedEntry = found!
        return found
    }

    /// Counts one more item taken by entry `e`. Lock held.
    private func countTaken(_ e: UnsafeMutablePointer<jr_taker>) {
        if e.pointee.count == 0 {
            q.pointee.take_seq += 1
            e.pointee.since = q.pointee.take_seq
        }
        e.pointee.count += 1
    }

    /// Writes the kept copy of an item into `node` and links it last on `e`'s list. Lock held.
    private func link(_ node: UInt64, bytes: UnsafeRawBufferPointer, to e: UnsafeMutablePointer<jr_taker>) {   // model: link
        let h = Arena.pointer(node).assumingMemoryBound(to: jr_held.self)
        h.pointee.next = 0
        h.pointee.queue = offset
        h.pointee.length = UInt64(bytes.count)
        if bytes.count > 0 { memcpy(UnsafeMutableRawPointer(h + 1), bytes.baseAddress!, bytes.count) }
        if e.pointee.held_tail != 0 {
            Arena.pointer(e.pointee.held_tail).assumingMemoryBound(to: jr_held.self).pointee.next = node
        } else {
            e.pointee.held_head = node
        }
        e.pointee.held_tail = node
    }

    // MARK: repair

    /// A process died holding the lock (EOWNERDEAD; also run by the monitor
    /// through `settle`). Each operation that changes the queue in several
    /// steps wrote its intent in the process's record first; only the dead
    /// owner can have one naming this queue, since intents live within the
    /// lock (a large put's block excepted: see `abandonPut`). Finish or undo
    /// it, then recount the items between head and tail.
    private func repair() {   // model: repair
        let all = ProcessRegistry.slots()
        let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
        let me = offset
        for i in 0..<n where (all + i).atomic(\.grow_stage).load(ordering: .acquiring) != 0 && all[i].grow_queue == me {
            finishGrow(all + i)
        }
        for i in 0..<n where (all + i).atomic(\.put_stage).load(ordering: .acquiring) != 0 && all[i].put_queue == me {
            finishPut(all + i)   // model: finishPut
        }
        for i in 0..<n where (all + i).atomic(\.get_stage).load(ordering: .acquiring) != 0 && all[i].get_queue == me {
            finishGet(all + i)   // model: finishGet
        }
        for i in 0..<n where (all + i).atomic(\.done_stage).load(ordering: .acquiring) != 0 && all[i].done_queue == me {
            finishTaskDone(all + i)   // model: finishTaskDone
        }
        var count: UInt64 = 0
        forEachRecord { _, _ in count += 1 }
        q.atomic(\.count).store(count, ordering: .releasing)   // model: R4
    }

    /// Growth: published (the queue names the new block) means roll forward
    /// and free the old one; else free the new one, if it was allocated.
    private func finishGrow(_ r: UnsafeMutablePointer<jr_process_record>) {
        let old = r.pointee.grow_old, new = r.atomic(\.grow_new).load(ordering: .acquiring)
        let ring = r.pointee.grow_kind == UInt32(JR_GROW_RING)
        let published = new != 0 && (ring ? q.pointee.ring_off : q.pointee.takers_off) == new
        if published {
            if ring {
                q.pointee.ring_cap = r.pointee.grow_cap
                q.pointee.head = 0
                q.pointee.tail = r.pointee.grow_tail
            } else {
                q.pointee.takers_cap = r.pointee.grow_cap
            }
            // Unless it died inside the free that clears the stage.
            if old != 0 && Arena.isAllocated(old) { Arena.free(old) }
        } else if new != 0 {
            Arena.free(new)
        }
        r.atomic(\.grow_stage).store(0, ordering: .releasing)
    }

    /// A put died writing its record: committed iff the tail moved (one
    /// store); `unfinished` and the item's block follow that.
    private func finishPut(_ r: UnsafeMutablePointer<jr_process_record>) {
        let committed = q.pointee.tail != r.pointee.put_tail
        if isJoinable {
            q.pointee.unfinished = r.pointee.put_unfinished + (committed ? 1 : 0)
        }
        if committed {
            r.atomic(\.put_block).store(0, ordering: .releasing)
        } else if r.pointee.put_block != 0 {
            Arena.free(r.pointee.put_block, clearingOffset: &r.pointee.put_block)
        }
        r.atomic(\.put_stage).store(0, ordering: .releasing)
    }

    /// A get died under the lock: if the item had left the ring (head moved
    /// past it), it is that process's, taken and (on a redeliver queue) kept,
    /// as if the get had finished, so the monitor fails or delivers it again;
    /// if not, it is still in the queue and the kept copy's block is freed.
    /// Nothing has touched the queue since the death: the bytes are intact.
    private func finishGet(_ r: UnsafeMutablePointer<jr_process_record>) {
        let left = q.atomic(\.head).load(ordering: .acquiring) >= r.pointee.get_item_end   // model: R1
        let node = r.pointee.get_held_block
        let cap = q.pointee.ring_cap
        let rec = Arena.pointer(q.pointee.ring_off) + Int(jr_ring_pos(r.pointee.get_item_head, cap))
        let header = rec.assumingMemoryBound(to: jr_record.self)
        let external = header.pointee.kind == UInt32(JR_REC_EXTERNAL) ? (rec + 8).assumingMemoryBound(to: UInt64.self) : nil
        if left {
            if isJoinable, let i = entryIndex(slot: SharedQueue.slotNumber(r)) {
                let e = takers! + i
                if e.pointee.count == r.pointee.get_taken { countTaken(e) }
                if node != 0 && e.pointee.held_tail == r.pointee.get_held_tail {   // model: R2
                    let bytes = external.map { UnsafeRawBufferPointer(start: Arena.pointer($0[0]), count: Int($0[1])) }
                        ?? UnsafeRawBufferPointer(start: rec + 8, count: Int(header.pointee.length))
                    link(node, bytes: bytes, to: e)
                }
            }
            // Its block would have been freed by the dead process once read.
            if let p = external {
                if r.pointee.get_block == p[0] { Arena.free(p[0], clearingOffset: &r.pointee.get_block) } else { Arena.free(p[0]) }
            }
        } else if node != 0 {
            Arena.free(node)
        }
        r.pointee.get_held_block = 0
        r.atomic(\.get_stage).store(0, ordering: .releasing)
    }

    /// A task_done died under the lock: roll forward each step not yet done.
    private func finishTaskDone(_ r: UnsafeMutablePointer<jr_process_record>) {
        let node = r.pointee.done_node
        if r.pointee.done_entry != 0, let t = takers {
            let e = t + Int(r.pointee.done_entry - 1)
            // Head and tail are checked apart: the death may fall between
            // taskDone's two stores (T2, T3), with the head moved on and the
            // tail still on the node, which is then the list's only one.
            if node != 0 && e.pointee.held_head == node {
                e.pointee.held_head = Arena.pointer(node).assumingMemoryBound(to: jr_held.self).pointee.next
            }
            if node != 0 && e.pointee.held_tail == node { e.pointee.held_tail = 0 }
            if e.pointee.count == r.pointee.done_count { e.pointee.count -= 1 }
        }
        if q.pointee.unfinished == r.pointee.done_unfinished { q.pointee.unfinished -= 1 }
        if node != 0 && Arena.isAllocated(node) { Arena.free(node) }
        r.atomic(\.done_stage).store(0, ordering: .releasing)
    }

    /// The monitor, after `r`'s process died: settles what its intents name
    /// on this queue, then frees its large item's block if the put had not
    /// got it into the ring.
    func abandonPut(_ r: UnsafeMutablePointer<jr_process_record>) {
        lock()
        if r.pointee.put_block != 0 { Arena.free(r.pointee.put_block, clearingOffset: &r.pointee.put_block) }
        unlock()
    }

    /// The monitor, after `r`'s process died: its kept copies go back to the
    /// front of the queue to be delivered again (their tasks are no longer
    /// its); the items it took and kept no copy of will never be marked done.
    func processDied(_ r: UnsafeMutablePointer<jr_process_record>, name: String) {   // model: M2-M4
        // Only the process itself makes its entry, so a look without the
        // lock tells whether there is one: a queue it never took from is
        // not locked at all.
        let slot = SharedQueue.slotNumber(r)
        if let t = takers {
            var has = false
            for i in 0..<Int(q.pointee.takers_cap) where (t + i).atomic(\.slot).load(ordering: .acquiring) == slot { has = true; break }
            if !has { return }
        } else {
            return
        }
        var dropped = ObjectTable.DroppedReferences()
        lock()
        defer { unlock(); dropped.release() }
        guard let i = entryIndex(slot: SharedQueue.slotNumber(r)) else { return }
        let e = takers! + i
        var items: [UnsafeRawBufferPointer] = []
        var nodes: [UInt64] = []
        var cur = e.pointee.held_head
        while cur != 0 {
            let h = Arena.pointer(cur).assumingMemoryBound(to: jr_held.self)
            items.append(UnsafeRawBufferPointer(start: UnsafeRawPointer(h + 1), count: Int(h.pointee.length)))
            nodes.append(cur)
            cur = h.pointee.next
        }
        if !items.isEmpty && requeueFrontLocked(items) {
            // The copies' references go with their bytes, back into the ring.
            e.pointee.count -= min(e.pointee.count, UInt64(items.count))
            for node in nodes { Arena.free(node) }
        } else {
            for item in items { dropped.add(handlesIn: item) }
            for node in nodes { Arena.free(node) }
        }
        e.pointee.held_head = 0
        e.pointee.held_tail = 0
        // A process that ended normally (status 0) holding items may have
        // handed them on: they stay unfinished, for any process to mark
        // done, as in Python (and a join that no one can satisfy is a
        // Deadlock). One that died (an error, a signal) lost them: they fail.
        let endedNormally = r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 && r.pointee.exit_code == 0
        if e.pointee.count > 0 && !endedNormally {
            failTasksLocked(e.pointee.count, pid: r.pointee.pid,
                            code: r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 ? r.pointee.exit_code : Int32.min, name: name)
            e.pointee.count = 0
        }
        e.atomic(\.slot).store(0, ordering: .releasing)
    }

    @inline(__always) private func unlock() { jr_mutex_unlock(&q.pointee.lock) }

    /// Takes and releases the lock: if its holder died, the repair runs now.
    func settle() { lock(); unlock() }

    enum PutResult { case ok, full, closed, noMemory(String), failed(JobrunError) }
    enum GetResult: Equatable { case ok, empty, closed, noMemory(String, lasting: Bool), failed(JobrunError) }
    enum JoinResult { case ok, timedOut, failed(JobrunError), workerDied(String) }

    var offset: UInt64 { Arena.offset(of: q) }

    @inline(__always) private static func padded(_ n: Int) -> UInt64 { (UInt64(n) + 7) & ~7 }

    /// Puts one encoded item. `bytes` is copied; the caller keeps it.
    func put(_ bytes: UnsafeRawBufferPointer, block: Bool, deadline: Deadline) -> PutResult {
        if bytes.count > SharedQueue.inlineLimit {
            return putExternal(count: bytes.count, block: block, deadline: deadline) {
                memcpy($0, bytes.baseAddress!, bytes.count)
            }
        }
        return enqueue(count: bytes.count, external: 0, block: block, deadline: deadline) {
            if bytes.count > 0 { memcpy($0, bytes.baseAddress!, bytes.count) }
        }
    }

    /// Puts an item of `count` (at most `inlineLimit`) encoded bytes that
    /// `fill` writes straight into the ring, under the lock: a small string
    /// item is encoded in place, with no copy through the encoder's buffer.
    func putInline(count: Int, block: Bool, deadline: Deadline, fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        enqueue(count: count, external: 0, block: block, deadline: deadline, fill: fill)
    }

    /// Puts an item of `count` encoded bytes (more than `inlineLimit`) that
    /// `fill` writes straight into the item's own arena block: a big string
    /// is copied once on its way in, not into a buffer and then again.
    ///
    /// The block is named in the process's record (put_block) from its
    /// allocation until its record is in the ring, so a SIGKILL meanwhile
    /// (while the put waits for room in a full queue, say) does not keep its
    /// memory for the rest of the run: the monitor frees it (abandonPut).
    func putExternal(count: Int, block: Bool, deadline: Deadline, fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        let me = ProcessRegistry.record
        if let me {
            me.atomic(\.put_stage).store(0, ordering: .releasing)
            me.pointee.put_queue = offset
        }
        let external: UInt64
        switch Arena.allocateWaiting(count, block: block, deadline: deadline,
                                     recordingIn: me.map { ProcessRegistry.field($0, \.put_block) }) {
        case .success(let off): external = off
        case .full: return .full
        case .noMemory(let message): return .noMemory(message)
        case .failed(let f): return .failed(f)
        }
        fill(Arena.pointer(external))
        TestHooks.killPoint("put-filled")
        return enqueue(count: count, external: external, block: block, deadline: deadline) { _ in }
    }

    /// Frees a large put's block that did not make it into the ring.
    private func dropBlock(_ external: UInt64) {
        if external == 0 { return }
        if let me = ProcessRegistry.record { Arena.free(external, clearingOffset: &me.pointee.put_block) } else { Arena.free(external) }
    }

    /// Adds a record for an item of `count` bytes: inline, written by `fill`
    /// into the ring, or a reference to `external` (the block holding the
    /// bytes, which is freed if the put fails; `fill` is not called).
    ///
    /// Model step "put": the record (and a wrap marker before it) is written
    /// past the tail and committed by one store of `tail`; on a JoinableQueue
    /// `unfinished` rises first, so the intent (put_tail, put_unfinished)
    /// tells the repair which way to settle both (finishPut).
    @inline(__always)
    private func enqueue(count: Int, external: UInt64, block: Bool, deadline: Deadline,
                         fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        let payload = external != 0 ? 16 : count
        let need = UInt64(MemoryLayout<jr_record>.size) + SharedQueue.padded(payload)
        lock()
        while true {
            if q.pointee.closed != 0 {
                unlock(); dropBlock(external)
                return .closed
            }
            if q.pointee.maxsize <= 0 || Int64(q.pointee.count) < q.pointee.maxsize { break }
            if !block || deadline.expired {
                unlock(); dropBlock(external)
                return .full
            }
            let t0 = monotonicNanos()
            TestHooks.killPoint("put-waits")
            let verdict = waitLocked(&q.pointee.space_seq, waiters: &q.pointee.put_waiters, deadline: deadline, kind: JR_WAIT_PUT)
            q.pointee.put_wait_ns &+= UInt64(max(0, monotonicNanos() - t0))
            if let f = verdict, q.pointee.closed == 0, Int64(q.pointee.count) >= q.pointee.maxsize {
                unlock(); dropBlock(external)
                return .failed(f)
            }
        }
        if !ensureRoom(need) {
            unlock(); dropBlock(external)
            return .noMemory("out of shared memory growing the queue's buffer")
        }
        let joinable = isJoinable
        let me = ProcessRegistry.record
        let tail = q.pointee.tail
        if let me, joinable || external != 0 {
            me.pointee.put_queue = offset
            me.pointee.put_tail = tail
            me.pointee.put_unfinished = q.pointee.unfinished
            me.atomic(\.put_stage).store(1, ordering: .releasing)   // model: P3
        }
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var pos = jr_ring_pos(tail, cap)
        var newTail = tail
        if pos + need > cap {
            // Not enough contiguous room before the end: mark the rest as skipped.
            let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
            r.pointee.kind = UInt32(JR_REC_WRAP)
            r.pointee.length = UInt32(cap - pos - 8)
            newTail += cap - pos
            pos = 0
        }
        let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
        if external != 0 {
            r.pointee.kind = UInt32(JR_REC_EXTERNAL)
            r.pointee.length = 16
            let p = (ring + Int(pos) + 8).assumingMemoryBound(to: UInt64.self)
            p[0] = external
            p[1] = UInt64(count)
        } else {
            r.pointee.kind = UInt32(JR_REC_INLINE)
            r.pointee.length = UInt32(count)
            fill(ring + Int(pos) + 8)
        }
        if joinable { q.atomic(\.unfinished).store(q.pointee.unfinished + 1, ordering: .releasing) }   // model: P5
        q.atomic(\.tail).store(newTail + need, ordering: .releasing)      // committed   // model: P6
        let depth = q.pointee.count + 1
        q.atomic(\.count).store(depth, ordering: .releasing)
        if let me, joinable || external != 0 {
            if external != 0 { me.atomic(\.put_block).store(0, ordering: .releasing) }
            me.atomic(\.put_stage).store(0, ordering: .releasing)   // model: P8
        }
        q.pointee.total_put += 1
        q.pointee.total_bytes &+= UInt64(count)
        if depth > q.pointee.peak_count { q.pointee.peak_count = depth }
        let waiters = q.pointee.get_waiters
        var wakeQueue = false, wakeHost = false
        if waiters > 0 {
            q.pointee.items_seq &+= 1
            let host = q.pointee.host_get_waiters
            wakeQueue = waiters > host
            wakeHost = host > 0
        }
        unlock()
        if wakeQueue { _ = jr_futex_wake(&q.pointee.items_seq, 1) }
        if wakeHost { SharedQueue.wakeHost() }
        ProcessRegistry.countPut()
        return .ok
    }

    /// Makes room for `need` more bytes (plus a possible wrap) by growing the ring.
    private func ensureRoom(_ need: UInt64) -> Bool {
        let cap = q.pointee.ring_cap
        let used = q.pointee.tail - q.pointee.head
        if used + need * 2 <= cap { return true }
        var newCap = SharedQueue.ringCapacity(atLeast: cap + 1)
        while used + need * 2 > newCap { newCap = SharedQueue.ringCapacity(atLeast: newCap + 1) }
        return growRing(to: newCap, intent: ProcessRegistry.record)
    }

    /// Takes one item and hands its bytes to `consume` (outside the lock).
    /// `scratch` is the caller's reusable buffer for small items.
    ///
    /// Model step "get": from a JoinableQueue the item leaves the ring (one
    /// store of `head`) and is counted as the taker's in the queue's taker
    /// table in one critical section, with the intent (get_stage) written
    /// first; on a redeliver queue the block for its kept copy is allocated
    /// before the item leaves: if shared memory is short the get waits for
    /// memory (a wait the monitor sees) or fails, and the item stays queued.
    ///
    /// Always inlined, as `take` is: with QueueBindings.get, the per-item
    /// path is one function. Left to the inliner, it is one only while get
    /// stays under its size threshold, which a few more SIL instructions
    /// per atomic access (SharedWord.swift) crossed: 67 instructions more
    /// per item under callgrind.
    @inline(__always)
    func get(block: Bool, deadline: Deadline, scratch: inout ScratchBuffer, recv: Bool = false, spin: Bool = true,
             consume: (UnsafeRawBufferPointer) -> Void) -> GetResult {
        // Time spent waiting is measured only when there is a wait.
        var waitedSince: Int64 = 0
        if block && q.atomic(\.count).load(ordering: .acquiring) == 0 {
            waitedSince = monotonicNanos()
            if spin { spinUntilItems(deadline) }
        }
        let joinable = isJoinable
        let redeliver = q.pointee.flags & UInt32(JR_QUEUE_REDELIVER) != 0
        let me = ProcessRegistry.record
        // This process's taker entry on a JoinableQueue (one `take` below,
        // inlined once: the per-item path stays small).
        var entry: Int? = nil
        lock()
        while true {
            while q.pointee.count == 0 {
                if q.pointee.closed != 0 { unlock(); return .closed }
                if !block || deadline.expired { unlock(); return .empty }
                if waitedSince == 0 { waitedSince = monotonicNanos() }
                let verdict = waitLocked(&q.pointee.items_seq, waiters: &q.pointee.get_waiters, deadline: deadline, kind: recv ? JR_WAIT_RECV : JR_WAIT_GET)
                if let f = verdict, q.pointee.count == 0, q.pointee.closed == 0 { unlock(); return .failed(f) }
            }
            if !joinable || me == nil { break }
            // Room for this process's entry and the item's kept copy first.
            let r = me!
            let need = redeliver ? MemoryLayout<jr_held>.size + nextItemLength() : 0
            r.pointee.get_held_block = 0
            // What could not be allocated: the kept copy, or a bigger taker table.
            var failed = need
            if let e = ownEntry(r) {
                if !redeliver { entry = e; break }
                // The intent names the block as soon as it exists; the item
                // has not left (get_item_end unreachable), so a repair frees it.
                r.pointee.get_queue = offset
                r.pointee.get_item_end = UInt64.max   // model: G1
                r.atomic(\.get_stage).store(1, ordering: .releasing)
                if (try? Arena.allocate(need, recordingIn: &r.pointee.get_held_block)) != nil {   // model: G1, alloc
                    TestHooks.killPoint("get-held-allocated")
                    entry = e
                    break
                }
                r.atomic(\.get_stage).store(0, ordering: .releasing)
            } else {
                failed = max(8, Int(q.pointee.takers_cap) * 2) * MemoryLayout<jr_taker>.size
            }
            unlock()
            let limit = Arena.limit
            if (UInt64(1) << Arena.sizeClass(for: failed)) > limit {
                return .noMemory("the copy kept for redelivery of the next item (\(need) bytes) is larger than the shared memory limit (\(limit >> 20) MiB); it stays in the queue", lasting: true)
            }
            switch Arena.waitForMemory(failed, block: block, deadline: deadline) {
            case .success: break
            case .full:
                return .noMemory("no shared memory for the copy kept for redelivery of the next item (\(Arena.bytesInUse >> 20) of \(limit >> 20) MiB in use); it stays in the queue", lasting: false)
            case .noMemory(let m): return .noMemory(m, lasting: true)
            case .failed(let f): return .failed(f)
            }
            lock()
        }
        return take(entry: entry, scratch: &scratch, waitedSince: waitedSince, consume: consume)
    }

    /// Encoded bytes of the item at the head (lock held, count > 0).
    private func nextItemLength() -> Int {
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var pos = jr_ring_pos(q.pointee.head, cap)
        var r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
        if r.pointee.kind == UInt32(JR_REC_WRAP) { pos = 0; r = ring.assumingMemoryBound(to: jr_record.self) }
        if r.pointee.kind == UInt32(JR_REC_EXTERNAL) { return Int((ring + Int(pos) + 8).assumingMemoryBound(to: UInt64.self)[1]) }
        return Int(r.pointee.length)
    }

    /// The second half of `get`: takes the item at the head (lock held, count
    /// > 0; released on return). `entry`: the taker entry of this process on
    /// a JoinableQueue, with the kept copy's block in get_held_block on a
    /// redeliver queue.
    @inline(__always)
    private func take(entry: Int?, scratch: inout ScratchBuffer, waitedSince: Int64,
                      consume: (UnsafeRawBufferPointer) -> Void) -> GetResult {
        if waitedSince != 0 { q.pointee.get_wait_ns &+= UInt64(max(0, monotonicNanos() - waitedSince)) }
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var pos = jr_ring_pos(q.pointee.head, cap)
        var r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
        if r.pointee.kind == UInt32(JR_REC_WRAP) {
            q.pointee.head += cap - pos
            pos = 0
            r = ring.assumingMemoryBound(to: jr_record.self)
        }
        let length = Int(r.pointee.length)
        let isExternal = r.pointee.kind == UInt32(JR_REC_EXTERNAL)
        let me = (entry != nil || isExternal) ? ProcessRegistry.record : nil
        let e = entry.map { takers! + $0 }
        if let me {
            // Noted so that a SIGKILL from here to the end of the critical
            // section is finished or undone by the next locker (finishGet).
            me.pointee.get_queue = offset
            me.pointee.get_item_head = q.pointee.head
            me.pointee.get_item_end = q.pointee.head + 8 + SharedQueue.padded(length)
            me.pointee.get_taken = e?.pointee.count ?? 0
            me.pointee.get_held_tail = e?.pointee.held_tail ?? 0   // model: G2
            if entry == nil { me.pointee.get_held_block = 0 }
            me.atomic(\.get_stage).store(1, ordering: .releasing)
        }
        var external: UInt64 = 0
        var externalLength = 0
        if isExternal {
            let p = (ring + Int(pos) + 8).assumingMemoryBound(to: UInt64.self)
            external = p[0]
            externalLength = Int(p[1])
        } else {
            scratch.reserve(length)
            if length > 0 { memcpy(scratch.base, ring + Int(pos) + 8, length) }
        }
        q.atomic(\.head).store(q.pointee.head + 8 + SharedQueue.padded(length), ordering: .releasing)   // the item left   // model: G4
        q.atomic(\.count).store(q.pointee.count - 1, ordering: .releasing)
        q.pointee.total_got += 1
        if let me {
            if external != 0 { me.atomic(\.get_block).store(external, ordering: .releasing) }
            me.atomic(\.get_stage).store(2, ordering: .releasing)   // model: G6
            if let e {
                countTaken(e)   // model: G7
                let node = me.pointee.get_held_block
                if node != 0 {
                    let bytes = external != 0
                        ? UnsafeRawBufferPointer(start: Arena.pointer(external), count: externalLength)
                        : UnsafeRawBufferPointer(start: scratch.base, count: length)
                    link(node, bytes: bytes, to: e)   // model: G8
                }
                TestHooks.killPoint("get-taken")
            }
            me.pointee.get_held_block = 0            // model: G9
            me.atomic(\.get_stage).store(0, ordering: .releasing)   // model: G10
        }
        let wake = q.pointee.put_waiters > 0
        if wake { q.pointee.space_seq &+= 1 }
        unlock()
        if wake { _ = jr_futex_wake(&q.pointee.space_seq, 1) }
        ProcessRegistry.countGot()
        if external != 0 {
            consume(UnsafeRawBufferPointer(start: Arena.pointer(external), count: externalLength))
            if let me { Arena.free(external, clearingOffset: &me.pointee.get_block) } else { Arena.free(external) }
        } else {
            consume(UnsafeRawBufferPointer(start: scratch.base, count: length))
        }
        return .ok
    }

    /// Waits until an item is there or the queue is closed; false on timeout.
    func waitForItems(deadline: Deadline) -> Bool {
        lock()
        defer { unlock() }
        while q.pointee.count == 0 && q.pointee.closed == 0 {
            if deadline.expired { return false }
            if waitLocked(&q.pointee.items_seq, waiters: &q.pointee.get_waiters, deadline: deadline, kind: JR_WAIT_RECV) != nil { return true }
        }
        return true
    }

    /// Pipe.poll: as waitForItems, and `verdict` is the monitor's verdict
    /// when one ended the wait with still nothing to read.
    func waitForItems(deadline: Deadline, verdict: inout JobrunError?) -> Bool {
        lock()
        defer { unlock() }
        while q.pointee.count == 0 && q.pointee.closed == 0 {
            if deadline.expired { return false }
            if let f = waitLocked(&q.pointee.items_seq, waiters: &q.pointee.get_waiters, deadline: deadline, kind: JR_WAIT_RECV),
               q.pointee.count == 0, q.pointee.closed == 0 {
                verdict = f
                return true
            }
        }
        return true
    }

    /// Spins a while for an item before the get sleeps, no longer than
    /// `deadline`: a get with a timeout of 0 (or one that has passed) does
    /// not spin at all, and returns at once.
    private func spinUntilItems(_ deadline: Deadline) {
        var i = 0
        while i < SharedQueue.spinIterations {
            if q.atomic(\.count).load(ordering: .acquiring) != 0 || q.atomic(\.closed).load(ordering: .acquiring) != 0 { return }
            if i & 63 == 0 && deadline.expired { return }
            // As jr_mutex_lock: past a while, let a producer that is not
            // running have the CPU.
            if i >= 1000 && i & 63 == 0 { sched_yield() } else { jr_cpu_relax() }
            i += 1
        }
    }

    /// Called with the lock held; returns with it held. Sleeps on `word` until
    /// it changes, the deadline passes, or a slice elapses. Returns the
    /// monitor's verdict on this sleep, if it gave one: the caller raises it
    /// when what it waits for has still not happened.
    @discardableResult
    private func waitLocked(_ word: UnsafeMutablePointer<UInt32>, waiters: UnsafeMutablePointer<UInt32>,
                            deadline: Deadline, kind: Int) -> JobrunError? {
        let seq = word.pointee
        waiters.pointee += 1
        ProcessRegistry.willWait(kind, object: q, word: word, value: seq, timed: deadline.at != nil)
        unlock()
        let remaining = deadline.remaining
        let r = jr_futex_wait(word, seq, remaining < 0 ? SharedQueue.sleepSlice : min(remaining, SharedQueue.sleepSlice))
        if TestHooks.pauseArmed, let me = ProcessRegistry.record, me.atomic(\.verdict).load(ordering: .acquiring) != 0 {
            TestHooks.pausePoint("verdict-woken")   // woken by a verdict, before it looks again
        }
        lock()
        ProcessRegistry.didWait(r)
        waiters.pointee -= 1
        return ProcessRegistry.takeVerdict()
    }

    enum TaskDoneResult { case ok, tooMany }

    /// Marks one taken item done, under the lock, whoever calls it (Python
    /// lets the taker hand the item to another process, which calls
    /// task_done): the caller's own taken item if it holds any, else the
    /// oldest taker's. On a redeliver queue that taker's oldest kept copy
    /// goes with it, so its later death delivers nothing twice.
    ///
    /// Model step "task_done": the intent (the entry, its count, the kept
    /// copy and `unfinished` before) is noted first; the repair rolls each
    /// step forward (finishTaskDone); freeing the copy clears the intent.
    /// Checked with a death between any two steps by docs/model/task_done.pml.
    func taskDone() -> TaskDoneResult {
        lock()
        if q.pointee.unfinished == 0 { unlock(); return .tooMany }
        let me = ProcessRegistry.record
        var entry: Int? = nil
        if let t = takers {
            let cap = Int(q.pointee.takers_cap)
            if me != nil, let own = existingOwnEntry(), t[own].count > 0 {
                entry = own
            } else {
                for i in 0..<cap where t[i].slot != 0 && t[i].count > 0 {
                    if entry == nil || t[i].since < t[entry!].since { entry = i }
                }
            }
        }
        let e = entry.map { takers! + $0 }
        let node = e?.pointee.held_head ?? 0
        if let me {
            me.pointee.done_queue = offset
            me.pointee.done_entry = entry.map { UInt64($0 + 1) } ?? 0
            me.pointee.done_node = node
            me.pointee.done_count = e?.pointee.count ?? 0
            me.pointee.done_unfinished = q.pointee.unfinished   // model: T1
            me.atomic(\.done_stage).store(1, ordering: .releasing)
        }
        TestHooks.killPoint("task-done-noted")
        if let e {
            if node != 0 {
                e.pointee.held_head = Arena.pointer(node).assumingMemoryBound(to: jr_held.self).pointee.next   // model: T2
                TestHooks.killPoint("task-done-unlinked")
                if e.pointee.held_tail == node { e.pointee.held_tail = 0 }   // model: T3
            }
            e.pointee.count -= 1   // model: T4
        }
        TestHooks.killPoint("task-done-counted")
        let left = q.pointee.unfinished - 1
        q.atomic(\.unfinished).store(left, ordering: .releasing)   // model: T5
        // The kept copy's references go once it is freed (a death before
        // that leaves them held: the repair frees the copy, never drops twice).
        var dropped = ObjectTable.DroppedReferences()
        if node != 0 {
            let h = Arena.pointer(node).assumingMemoryBound(to: jr_held.self)
            dropped.add(handlesIn: UnsafeRawBufferPointer(start: UnsafeRawPointer(h + 1), count: Int(h.pointee.length)))
        }
        if node != 0 {
            if let me { Arena.free(node, clearing: &me.pointee.done_stage) } else { Arena.free(node) }   // model: T6, T7
        } else if let me {
            me.atomic(\.done_stage).store(0, ordering: .releasing)
        }
        var wakeQueue = false, wakeHost = false
        if left <= q.pointee.failed_tasks {
            q.pointee.done_seq &+= 1
            let host = q.pointee.host_join_waiters
            wakeQueue = q.pointee.join_waiters > host
            wakeHost = host > 0
        }
        unlock()
        if wakeQueue { _ = jr_futex_wake(&q.pointee.done_seq, Int32.max) }
        if wakeHost { SharedQueue.wakeHost() }
        dropped.release()
        return .ok
    }

    /// Waits until every item put has been marked done, or was taken by a
    /// process that died before marking it (then `.workerDied`).
    ///
    /// Items that can never be done (their taker died) never make join wait;
    /// each process is told of them once (`.workerDied`, or the monitor's
    /// WorkerDied verdict naming the dead), and from then on they count as
    /// done for its later joins (ProcessContext.objects.failedTold).
    func join(deadline: Deadline) -> JoinResult {
        lock()
        defer { unlock() }
        while q.atomic(\.unfinished).load(ordering: .acquiring) > q.pointee.failed_tasks {   // model: J1
            if deadline.expired { return .timedOut }
            let verdict = waitLocked(&q.pointee.done_seq, waiters: &q.pointee.join_waiters, deadline: deadline, kind: JR_WAIT_JOIN)
            if let f = verdict, q.atomic(\.unfinished).load(ordering: .acquiring) > q.pointee.failed_tasks {
                let told = ProcessContext.current.objects.failedTold[offset, default: 0]
                if q.pointee.failed_tasks > told { return .failed(JobrunError(f.code, "\(f.message)\n\(tellFailedTasks(since: told))")) }
                return .failed(f)
            }
        }
        let told = ProcessContext.current.objects.failedTold[offset, default: 0]
        if q.pointee.failed_tasks > told { return .workerDied(tellFailedTasks(since: told)) }
        return .ok
    }

    /// With the lock held: "2 items will never be marked done: consumer-1
    /// (pid 41) was killed by signal 9 (SIGKILL), consumer-2 (pid 42) exited
    /// with status 1 while holding them", about the failed tasks this process
    /// has not been told of (`since` of them it has). They are told now: the
    /// script has heard of those processes' ends, and later joins count the
    /// tasks as done.
    private func tellFailedTasks(since told: UInt64) -> String {
        let n = q.pointee.failed_tasks - told
        let ctx = ProcessContext.current
        ctx.objects.failedTold[offset] = q.pointee.failed_tasks
        let total = q.pointee.failed_pid_count
        let from = ctx.objects.failedPidsTold[offset, default: 0]
        ctx.objects.failedPidsTold[offset] = total
        var who: [String] = []
        withUnsafeMutableBytes(of: &q.pointee.failed_pids) { raw in
            let pids = raw.bindMemory(to: Int32.self)
            for i in Int(from)..<Int(min(total, UInt32(JR_QUEUE_FAILED_PIDS))) {
                let pid = pids[i]
                ProcessRegistry.markReported(pid)
                guard let r = ProcessRegistry.find(pid) else { who.append("pid \(pid)"); continue }
                let code = r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 ? r.pointee.exit_code : Int32.min
                who.append("\(ProcessRegistry.name(of: r)) (pid \(pid)) \(describeExit(code))")
            }
        }
        // Those past the listed ones are told too (as "N more"): reported.
        let listed = UInt32(JR_QUEUE_FAILED_PIDS)
        if total > listed && q.pointee.failed_more_off != 0 {
            let more = Arena.pointer(q.pointee.failed_more_off).assumingMemoryBound(to: Int32.self)
            let stored = UInt32(min(UInt64(total - listed), q.pointee.failed_more_cap))
            for i in (max(from, listed) - listed)..<stored where more[Int(i)] > 0 { ProcessRegistry.markReported(more[Int(i)]) }
        }
        if total > UInt32(JR_QUEUE_FAILED_PIDS) && total > from {
            who.append("\(total - max(from, UInt32(JR_QUEUE_FAILED_PIDS))) more")
        }
        return "\(n) item\(n == 1 ? "" : "s") will never be marked done: \(who.joined(separator: ", ")) while holding \(n == 1 ? "it" : "them")"
    }

    /// Called by the monitor (lock held): puts items a dead process held
    /// back at the front of the queue, in their order, to be delivered again.
    /// `unfinished` already counts them. Rare, so the ring is simply rebuilt.
    private func requeueFrontLocked(_ items: [UnsafeRawBufferPointer]) -> Bool {
        var records: [(UInt64, Int, UnsafeRawBufferPointer)] = []   // (external, length, inline bytes)
        var need: UInt64 = 0
        for item in items {
            if item.count > SharedQueue.inlineLimit {
                guard let ext = try? Arena.allocate(item.count) else {
                    for (e, _, _) in records where e != 0 { Arena.free(e) }
                    return false
                }
                memcpy(Arena.pointer(ext), item.baseAddress!, item.count)
                records.append((ext, item.count, item))
                need += 8 + 16
            } else {
                records.append((0, item.count, item))
                need += 8 + SharedQueue.padded(item.count)
            }
        }
        let cap = q.pointee.ring_cap
        let used = q.pointee.tail - q.pointee.head
        var newCap = cap
        while used + need * 2 > newCap { newCap = SharedQueue.ringCapacity(atLeast: newCap + 1) }
        let grown = growRing(to: newCap, intent: nil) { new in
            var w = 0
            for (ext, length, bytes) in records {
                let r = (new + w).assumingMemoryBound(to: jr_record.self)
                if ext != 0 {
                    r.pointee.kind = UInt32(JR_REC_EXTERNAL); r.pointee.length = 16
                    let p = (new + w + 8).assumingMemoryBound(to: UInt64.self)
                    p[0] = ext; p[1] = UInt64(length)
                    w += 24
                } else {
                    r.pointee.kind = UInt32(JR_REC_INLINE); r.pointee.length = UInt32(length)
                    if length > 0 { memcpy(new + w + 8, bytes.baseAddress!, length) }
                    w += 8 + Int(SharedQueue.padded(length))
                }
            }
            return w
        }
        if !grown {
            for (e, _, _) in records where e != 0 { Arena.free(e) }
            return false
        }
        q.atomic(\.count).store(q.pointee.count + UInt64(items.count), ordering: .releasing)
        q.pointee.items_seq &+= 1
        _ = jr_futex_wake(&q.pointee.items_seq, Int32.max)
        if q.pointee.host_get_waiters > 0 { SharedQueue.wakeHost() }
        return true
    }

    /// Called by the monitor (lock held): `n` items taken by a process that
    /// died will never be marked done.
    private func failTasksLocked(_ n: UInt64, pid: Int32, code: Int32, name: String) {
        q.pointee.failed_tasks += n
        if q.pointee.failed_pid_count < UInt32(JR_QUEUE_FAILED_PIDS) {
            withUnsafeMutableBytes(of: &q.pointee.failed_pids) { $0.bindMemory(to: Int32.self)[Int(q.pointee.failed_pid_count)] = pid }
        } else {
            storeMoreFailedPid(pid, at: Int(q.pointee.failed_pid_count - UInt32(JR_QUEUE_FAILED_PIDS)))
        }
        q.pointee.failed_pid_count += 1
        q.pointee.failed_pid = pid
        q.pointee.failed_code = code
        withUnsafeMutableBytes(of: &q.pointee.failed_name) { buf in
            let bytes = Array(name.utf8.prefix(buf.count - 1))
            buf.copyBytes(from: bytes)
            buf[bytes.count] = 0
        }
        q.pointee.done_seq &+= 1
        _ = jr_futex_wake(&q.pointee.done_seq, Int32.max)
        if q.pointee.host_join_waiters > 0 { SharedQueue.wakeHost() }
    }

    /// Lock held (monitor): the `i`-th pid past the listed ones, into
    /// failed_more (grown by doubling: the new copy is published before the
    /// old is freed). Without memory for it, that process is only counted.
    private func storeMoreFailedPid(_ pid: Int32, at i: Int) {
        if UInt64(i) >= q.pointee.failed_more_cap {
            let old = q.pointee.failed_more_off
            let oldCap = Int(q.pointee.failed_more_cap)
            let cap = max(16, oldCap * 2)
            guard let new = try? Arena.allocateZeroed(cap * MemoryLayout<Int32>.size) else { return }
            if old != 0 { memcpy(Arena.pointer(new), Arena.pointer(old), oldCap * MemoryLayout<Int32>.size) }
            q.atomic(\.failed_more_off).store(new, ordering: .releasing)
            q.pointee.failed_more_cap = UInt64(cap)
            if old != 0 { Arena.free(old) }
        }
        Arena.pointer(q.pointee.failed_more_off).assumingMemoryBound(to: Int32.self)[i] = pid
    }

    var unfinished: UInt64 { lock(); defer { unlock() }; return q.pointee.unfinished }

    /// Items taken so far (put minus queued), read under the lock, so that a
    /// taker's death inside it is repaired first. For Pool's task queue,
    /// which only the pool's caller puts to (SharedPool's ledger).
    var takenSoFar: UInt64 { lock(); defer { unlock() }; return q.pointee.total_put &- q.pointee.count }

    // MARK: a Swift host's waits

    /// What a Swift host waits for on a queue: items (get) or task_done (join).
    enum HostWaitKind { case items, done }

    /// Which word a host's waiting thread sleeps on.
    enum HostWaitWord {
        /// The queue's own (`items_seq` or `done_seq`): a thread that waits
        /// for this one queue (PluginPool's, Runtime.waitForItems).
        case queue
        /// The arena's `host_seq`, which every wait of the host shares: the
        /// runtime's one waiter thread (Runtime+Waits.swift). The queue
        /// bumps and wakes it too while such a waiter is counted.
        case host
    }

    /// For a thread of a Swift host that sleeps outside every lock: counts
    /// it as a waiter for `kind`, so that the next change that may end the
    /// wait (a put, a close, a task_done that finishes the queue's work, a
    /// dead taker's items failed or delivered again) wakes `word`, and
    /// returns the word's value to sleep on. nil, counting nothing, when the
    /// wait may be over already (items there or the queue closed; no task
    /// left but failed ones): the caller looks again instead of sleeping.
    /// `endHostWait` uncounts it. The host's waits are not registered in its
    /// ledger record here (several tasks of a host may wait at once).
    func beginHostWait(_ kind: HostWaitKind, on word: HostWaitWord) -> (word: UnsafeMutablePointer<UInt32>, value: UInt32)? {
        lock()
        defer { unlock() }
        let host = word == .host
        switch kind {
        case .items:
            if q.pointee.count != 0 || q.pointee.closed != 0 { return nil }
            q.pointee.get_waiters += 1
            if host { q.pointee.host_get_waiters += 1 }
        case .done:
            if q.pointee.unfinished <= q.pointee.failed_tasks { return nil }
            q.pointee.join_waiters += 1
            if host { q.pointee.host_join_waiters += 1 }
        }
        if host { return (SharedQueue.hostWord, SharedQueue.hostWord.atomic.load(ordering: .acquiring)) }
        let w = self.word(kind)
        return (w, w.pointee)
    }

    func endHostWait(_ kind: HostWaitKind, on word: HostWaitWord) {
        lock()
        let host = word == .host
        switch kind {
        case .items:
            q.pointee.get_waiters -= 1
            if host { q.pointee.host_get_waiters -= 1 }
        case .done:
            q.pointee.join_waiters -= 1
            if host { q.pointee.host_join_waiters -= 1 }
        }
        unlock()
    }

    /// The queue's own word for `kind`, read without the lock by the
    /// host's waiter to tell that nothing happened since it last looked.
    func word(_ kind: HostWaitKind) -> UnsafeMutablePointer<UInt32> {
        switch kind {
        case .items: return withUnsafeMutablePointer(to: &q.pointee.items_seq) { $0 }
        case .done: return withUnsafeMutablePointer(to: &q.pointee.done_seq) { $0 }
        }
    }

    /// The arena's `host_seq`.
    static var hostWord: UnsafeMutablePointer<UInt32> {
        let h = Arena.header
        return withUnsafeMutablePointer(to: &h.pointee.host_seq) { $0 }
    }

    /// Bumps and wakes `host_seq`: a change a host's wait may be waiting for.
    static func wakeHost() {
        let w = hostWord
        w.atomic.wrappingIncrement(ordering: .acquiringAndReleasing)
        _ = jr_futex_wake(w, Int32.max)
    }

    func close() {
        lock()
        q.pointee.closed = 1
        q.pointee.items_seq &+= 1
        q.pointee.space_seq &+= 1
        let wakeHost = q.pointee.host_get_waiters > 0
        unlock()
        _ = jr_futex_wake(&q.pointee.items_seq, Int32.max)
        _ = jr_futex_wake(&q.pointee.space_seq, Int32.max)
        if wakeHost { SharedQueue.wakeHost() }
    }
}

/// A per-process growable buffer reused across calls, so the hot path does not allocate.
struct ScratchBuffer {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init(capacity: Int = 64 * 1024) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    @inline(__always)
    mutating func reserve(_ n: Int) {
        if n <= capacity { return }
        var c = capacity * 2
        while c < n { c *= 2 }
        let nb = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
        base.deallocate()
        base = nb
        capacity = c
    }
}
