import Atomics
import CJobrunShims
import Glibc

/// The run's object table: every shared object a script can hold a handle
/// to has an entry (jr_object_entry), and a handle names it as (slot,
/// generation). The entry counts the object's references across processes;
/// when the last one goes, the object's memory is freed and the slot's
/// generation bumped, so every handle still naming it is stale: the decoder
/// refuses it with an error instead of handing out freed memory.
///
/// The reference rule (docs/architecture.md, "The object table"):
///
/// - a process holds one reference per object it has handles to, however
///   many (`holdings` counts its userdata; the first takes the reference,
///   the last one released by `__gc`, `__close` or `close()` drops it). A
///   forked child inherits its parent's userdata, so the parent takes one
///   more reference per held object for the child before fork;
/// - every encoded copy of a handle in shared memory holds one: the encoder
///   takes it as it writes the handle, and the caller keeps it once the
///   bytes are stored (a put that fails drops it). Decoding a consumed copy
///   (a queue item, a worker's arguments) hands its reference to the new
///   userdata; decoding a copy that stays (a Dict value, a redeliver queue's
///   item, whose kept copy holds the reference) takes a new one. Bytes
///   discarded undecoded (a freed queue's items, a replaced Dict value, a
///   kept copy marked done) drop theirs;
/// - an object that names another (a Condition its lock, a Dict its update
///   lock, a Pool its queues, a Pipe's end 1 its end 0) holds one on it,
///   dropped when it is freed.
///
/// A SIGKILLed process drops nothing itself: the monitor drops what its
/// list in the arena names (jr_obj_holdings, `dropHoldings`). A death in
/// the middle of freeing an object leaves its entry DYING: the rest of it
/// is never freed and the slot never reused, but every block is freed or
/// not as a whole (the allocator's own intent), so nothing is corrupted.
enum ObjectTable {
    static let chunkEntries = UInt32(JR_OBJECT_CHUNK_ENTRIES)

    /// This process's handles, the list of them in the arena and the
    /// objects it is freeing: ProcessContext.objects and .dying.
    private static var ctx: ProcessContext { ProcessContext.current }

    private static var h: UnsafeMutablePointer<jr_arena_header> { Arena.header }

    /// A holder that died leaves nothing half done: every change under the
    /// lock is committed by its last store (a count, a state, a list head),
    /// and one cut short before it leaves a reference or a slot lost, never
    /// an entry that is wrong.
    static func lock() { RobustMutex.lock(&h.pointee.objects_lock, ownerDied: RobustMutex.nothingToRepair) }
    static func unlock() { RobustMutex.unlock(&h.pointee.objects_lock) }

    private static func chunkHeads() -> UnsafeMutablePointer<UInt64> {
        withUnsafeMutablePointer(to: &h.pointee.object_chunks) { UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt64.self) }
    }

    /// The entry of `slot`, or nil if the slot was never taken.
    static func entry(_ slot: UInt32) -> UnsafeMutablePointer<jr_object_entry>? {
        guard slot < h.atomic(\.objects_used).load(ordering: .acquiring) else { return nil }
        let chunk = (chunkHeads() + Int(slot / chunkEntries)).atomic.load(ordering: .acquiring)
        guard chunk != 0 else { return nil }
        return Arena.pointer(chunk).assumingMemoryBound(to: jr_object_entry.self) + Int(slot % chunkEntries)
    }

    enum Failure: Error { case outOfMemory, full }

    /// Enters a new object (its block at `offset`, its header's `slot` set
    /// here) with one reference: the creating process's holding, or (not
    /// `held`) the linking object's.
    static func register(type: Int, offset: UInt64, held: Bool = true) throws(Failure) -> (slot: UInt32, generation: UInt32) {
        lock()
        defer { unlock() }
        var slot: UInt32
        let e: UnsafeMutablePointer<jr_object_entry>
        let free = h.pointee.objects_free
        if free != 0 {
            slot = free - 1
            e = entry(slot)!
        } else {
            slot = h.pointee.objects_used
            let c = Int(slot / chunkEntries)
            guard c < Int(JR_OBJECT_CHUNKS) else { throw .full }
            let head = chunkHeads() + c
            if head.atomic.load(ordering: .acquiring) == 0 {
                let bytes = Int(chunkEntries) * MemoryLayout<jr_object_entry>.size
                guard (try? Arena.allocate(bytes, recordingIn: head)) != nil else { throw .outOfMemory }
            }
            e = Arena.pointer(head.atomic.load(ordering: .acquiring)).assumingMemoryBound(to: jr_object_entry.self) + Int(slot % chunkEntries)
            e.pointee.generation = 1
        }
        // The entry is filled, taken by one store (objects_free or
        // objects_used), then made LIVE: a death before the first store
        // leaves the slot free, one before the last a slot lost, never a
        // free-listed entry that looks alive.
        e.pointee.type = UInt32(type)
        e.pointee.offset = offset
        e.pointee.refs = 1
        Arena.pointer(offset).assumingMemoryBound(to: jr_object_header.self).pointee.slot = slot
        if free != 0 {
            h.atomic(\.objects_free).store(e.pointee.next_free, ordering: .releasing)
        } else {
            h.atomic(\.objects_used).store(slot + 1, ordering: .releasing)
        }
        e.atomic(\.state).store(UInt32(JR_SLOT_LIVE), ordering: .releasing)
        let generation = e.pointee.generation
        if held {
            ctx.objects.holdings[slot] = 1
            list(holding: slot)
        }
        return (slot, generation)
    }

    /// Why (slot, generation) does not name a live object of `type`, or its offset.
    static func lookup(slot: UInt32, generation: UInt32, type: UInt32) -> Result<UInt64, LookupError> {
        guard let e = entry(slot) else { return .failure(.noSuchSlot) }
        lock()
        defer { unlock() }
        if e.pointee.generation != generation || e.pointee.state != UInt32(JR_SLOT_LIVE) { return .failure(.stale) }
        if e.pointee.type != type { return .failure(.mistyped(e.pointee.type)) }
        return .success(e.pointee.offset)
    }

    enum LookupError: Error, Equatable { case noSuchSlot, stale, mistyped(UInt32) }

    /// One more reference to an object the caller holds one to.
    static func retain(_ slot: UInt32) {
        guard let e = entry(slot) else { return }
        lock()
        e.pointee.refs += 1
        unlock()
    }

    /// One more reference per handle in `bytes` (a copy of encoded bytes
    /// that hold references: its decoder adopts them), taken under the lock
    /// of the object holding them, so none can be freed meanwhile.
    @inline(__always)
    static func retain(handlesIn bytes: UnsafeRawBufferPointer) {
        if ValueScan.mayHoldObjects(bytes) { ValueScan.forEachObject(bytes) { retain($0) } }
    }

    /// One more reference if (slot, generation) is still live; false if not.
    static func retain(_ slot: UInt32, generation: UInt32) -> Bool {
        guard let e = entry(slot) else { return false }
        lock()
        defer { unlock() }
        guard e.pointee.generation == generation, e.pointee.state == UInt32(JR_SLOT_LIVE) else { return false }
        e.pointee.refs += 1
        return true
    }

    /// Drops a reference; the last one frees the object (here, now).
    /// `lookForCycles` false: the caller still holds the object (its
    /// process has a handle to it), so no cycle through it can be garbage.
    static func release(_ slot: UInt32, lookForCycles: Bool = true) {
        guard let e = entry(slot) else { return }
        lock()
        releaseLocked(e, slot, lookForCycles: lookForCycles)
    }

    /// The references held by encoded bytes an object discards (a freed
    /// queue's items, a replaced Dict value, a kept copy marked done),
    /// gathered under the object's lock and dropped once it is unlocked:
    /// dropping the last one frees an object, which takes that object's
    /// lock (maybe the same one: a queue holding a handle to itself).
    ///
    ///     var dropped = ObjectTable.DroppedReferences()
    ///     lock()
    ///     defer { unlock(); dropped.release() }
    ///     dropped.add(handlesIn: bytes)
    ///
    /// On the per-item paths most items hold no handle: they cost a test of
    /// their first byte, and nothing is allocated or called.
    struct DroppedReferences {
        private var slots: [UInt32]? = nil

        @inline(__always) init() {}

        @inline(__always)
        mutating func add(handlesIn bytes: UnsafeRawBufferPointer) {
            if ValueScan.mayHoldObjects(bytes) { addScanning(bytes) }
        }

        @inline(never)
        private mutating func addScanning(_ bytes: UnsafeRawBufferPointer) {
            ValueScan.forEachObject(bytes) { add($0) }
        }

        mutating func add(_ slot: UInt32) {
            if slots == nil { slots = [slot] } else { slots!.append(slot) }
        }

        /// Drops them (the lock released).
        @inline(__always)
        mutating func release() {
            if slots != nil { releaseGathered() }
        }

        @inline(never)
        private mutating func releaseGathered() {
            let s = slots ?? []
            slots = nil
            for slot in s { ObjectTable.release(slot) }
        }
    }

    /// Drops the reference an encoded handle holds, if it still names a
    /// live object of its type and generation (a failed decode's handles
    /// it did not reach): one that does not holds none, and dropping one
    /// by its slot alone could take another object's.
    static func release(_ h: ValueScan.Handle) {
        guard let e = entry(h.slot) else { return }
        lock()
        guard e.pointee.generation == h.generation, e.pointee.type == h.type else { unlock(); return }
        releaseLocked(e, h.slot, lookForCycles: true)
    }

    /// The lock held: drops a reference to a live object, unlocks, and frees
    /// the object if that was the last; else, if it has held handles, looks
    /// for a cycle through it (ObjectTable+Cycles.swift), unless the
    /// reference was a moment's (`lookForCycles` false).
    private static func releaseLocked(_ e: UnsafeMutablePointer<jr_object_entry>, _ slot: UInt32, lookForCycles: Bool) {
        guard e.pointee.state == UInt32(JR_SLOT_LIVE), e.pointee.refs > 0 else { unlock(); return }
        e.pointee.refs -= 1
        let last = e.pointee.refs == 0
        if last { e.atomic(\.state).store(UInt32(JR_SLOT_DYING), ordering: .releasing) }
        let candidate = !last && lookForCycles && e.pointee.offset != 0
            && Arena.pointer(e.pointee.offset).assumingMemoryBound(to: jr_object_header.self).atomic(\.held_handles).load(ordering: .acquiring) != 0
        let generation = e.pointee.generation
        unlock()
        if last { drain(adding: slot) } else if candidate { collectCycles(through: slot, generation: generation) }
    }

    /// A Pipe end's last handle in this process goes (or the process ends):
    /// its copy of the end is released first (PipeHolders: EOF for the other
    /// end once no process holds it), while the reference still keeps the pipe.
    private static func lettingGoOfPipeEnd(_ slot: UInt32) {
        guard let e = entry(slot), e.pointee.type == UInt32(JR_OBJ_PIPE_END0) || e.pointee.type == UInt32(JR_OBJ_PIPE_END1) else { return }
        PipeHolders.release(e.pointee.offset, e.pointee.type == UInt32(JR_OBJ_PIPE_END0) ? 0 : 1)
    }

    /// Frees the objects whose last reference went, one after another (an
    /// object's contents may drop the last reference of others: no recursion).
    private static func drain(adding first: UInt32) {
        pthread_mutex_lock(ctx.dyingLock)
        ctx.dying.slots.append(first)
        if ctx.dying.draining { pthread_mutex_unlock(ctx.dyingLock); return }
        ctx.dying.draining = true
        pthread_mutex_unlock(ctx.dyingLock)
        while true {
            pthread_mutex_lock(ctx.dyingLock)
            guard let slot = ctx.dying.slots.popLast() else {
                ctx.dying.draining = false
                pthread_mutex_unlock(ctx.dyingLock)
                return
            }
            pthread_mutex_unlock(ctx.dyingLock)
            guard let e = entry(slot) else { continue }
            let off = e.pointee.offset
            switch Int(e.pointee.type) {
            case JR_OBJ_QUEUE, JR_OBJ_JOINABLE_QUEUE: SharedQueue(offset: off).destroy()
            case JR_OBJ_DICT: SharedDict(offset: off).destroy()
            case JR_OBJ_CONDITION: release(SharedSync(offset: off).linkedSlot)
            case JR_OBJ_POOL: SharedPool(offset: off).destroy()
            case JR_OBJ_PIPE_END0:
                // The pipe itself (end 1's entry, gone first, held a reference to this one).
                for q in pipeQueues(off) {
                    SharedQueue(offset: q).destroy()
                    Arena.free(q)
                }
            case JR_OBJ_PIPE_END1:
                release(Arena.pointer(off).assumingMemoryBound(to: jr_pipe.self).pointee.hdr.slot)
            default: break
            }
            TestHooks.killPoint("object-free")
            if e.pointee.type == UInt32(JR_OBJ_PIPE_END1) {
                e.pointee.offset = 0   // the block is end 0's
            } else {
                Arena.free(off, clearingOffset: &e.pointee.offset)
            }
            lock()
            e.pointee.generation &+= 1
            if e.pointee.generation == 0 { e.pointee.generation = 1 }
            e.pointee.state = UInt32(JR_SLOT_FREE)
            e.pointee.next_free = h.pointee.objects_free
            h.atomic(\.objects_free).store(slot + 1, ordering: .releasing)
            unlock()
        }
    }

    // MARK: this process's holdings

    // MARK: the list the monitor reads (jr_obj_holdings)


    private static func list(_ off: UInt64) -> UnsafeMutablePointer<jr_obj_holdings> {
        Arena.pointer(off).assumingMemoryBound(to: jr_obj_holdings.self)
    }

    private static func entries(_ l: UnsafeMutablePointer<jr_obj_holdings>) -> UnsafeMutablePointer<UInt32> {
        (UnsafeMutableRawPointer(l) + MemoryLayout<jr_obj_holdings>.size).assumingMemoryBound(to: UInt32.self)
    }

    private static let inline = Int(JR_HELD_INLINE)

    /// Entry `i` of `r`'s list: in the record for the first JR_HELD_INLINE,
    /// then in its block (which must be there).
    private static func entry(_ r: UnsafeMutablePointer<jr_process_record>, _ i: Int) -> UnsafeMutablePointer<UInt32> {
        if i < inline {
            return withUnsafeMutablePointer(to: &r.pointee.held) { UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt32.self) } + i
        }
        return entries(list(r.pointee.obj_holdings)) + (i - inline)
    }

    /// Notes in the arena that this process holds a reference to `slot`
    /// (taken already). Without a record or memory for the list, the
    /// reference is simply not listed: a kill then leaks it.
    private static func list(holding slot: UInt32) {
        guard let me = ProcessRegistry.record else { return }
        if ctx.objects.holdingsListFree.isEmpty && !growList(me) { return }
        let i = ctx.objects.holdingsListFree.removeLast()
        entry(me, i).atomic.store(slot + 1, ordering: .releasing)
        ctx.objects.holdingsListed[slot] = i
    }

    /// Before the reference to `slot` is dropped.
    private static func unlist(_ slot: UInt32) {
        guard let i = ctx.objects.holdingsListed.removeValue(forKey: slot), let me = ProcessRegistry.record else { return }
        entry(me, i).atomic.store(0, ordering: .releasing)
        ctx.objects.holdingsListFree.append(i)
    }

    /// The record's entries first; then a block, grown twice as long at a
    /// time: filled, published in the record by one store, then the old
    /// one freed (a death in between leaks a block).
    private static func growList(_ me: UnsafeMutablePointer<jr_process_record>) -> Bool {
        if !ctx.objects.holdingsListStarted {
            // A fresh record (claimed zeroed): its own entries first.
            ctx.objects.holdingsListStarted = true
            ctx.objects.holdingsListFree = Array((0..<inline).reversed())
            return true
        }
        let old = me.pointee.obj_holdings
        let oldCap = old == 0 ? 0 : Int(list(old).pointee.capacity)
        let cap = max(30, oldCap * 2 + 2)
        guard let off = try? Arena.allocate(MemoryLayout<jr_obj_holdings>.size + cap * 4) else { return false }
        let l = list(off)
        l.pointee.capacity = UInt32(cap)
        memset(entries(l), 0, cap * 4)
        if old != 0 { memcpy(entries(l), entries(list(old)), oldCap * 4) }
        me.atomic(\.obj_holdings).store(off, ordering: .releasing)
        if old != 0 { Arena.free(old) }
        ctx.objects.holdingsListFree.append(contentsOf: (inline + oldCap..<inline + cap).reversed())
        return true
    }

    /// A forked child, once it has its record: its own list of what it
    /// inherited (the parent took the references for it before the fork;
    /// ProcessContext.afterFork emptied the copy of the parent's list).
    static func listHoldings() {
        for slot in ctx.objects.holdings.keys { list(holding: slot) }
    }

    /// The monitor, once `r`'s process has died: drops the references it
    /// still held (each entry cleared first, so a monitor that dies here and
    /// its successor never drop one twice), then frees the list.
    static func dropHoldings(of r: UnsafeMutablePointer<jr_process_record>) {
        let off = r.atomic(\.obj_holdings).load(ordering: .acquiring)
        let count = inline + (off == 0 ? 0 : Int(list(off).pointee.capacity))
        for i in 0..<count {
            let e = entry(r, i)
            let v = e.atomic.load(ordering: .acquiring)
            if v == 0 { continue }
            e.atomic.store(0, ordering: .releasing)
            release(v - 1)
        }
        if off != 0 { Arena.free(off, clearingOffset: &r.pointee.obj_holdings) }
    }

    /// A new handle userdata in this process for `slot`: the first takes the
    /// process's reference (or adopts `adopting`'s, an encoded copy's), a
    /// later one needs none (and an adopted one is dropped).
    static func noteHandle(_ slot: UInt32, adopted: Bool) {
        if let n = ctx.objects.holdings[slot], n > 0 {
            ctx.objects.holdings[slot] = n + 1
            if adopted { release(slot, lookForCycles: false) }
        } else {
            ctx.objects.holdings[slot] = 1
            if !adopted { retain(slot) }
            list(holding: slot)
        }
    }

    /// Set as the main process closes its state at the end of the run:
    /// releasing then would only free what the run's end frees anyway.
    static var keepAtExit: Bool {
        get { ctx.objects.keepObjectsAtExit }
        set { ctx.objects.keepObjectsAtExit = newValue }
    }

    /// A handle userdata of this process was released.
    static func dropHandle(_ slot: UInt32) {
        if keepAtExit { return }
        guard let n = ctx.objects.holdings[slot] else { return }
        if n > 1 { ctx.objects.holdings[slot] = n - 1; return }
        ctx.objects.holdings[slot] = nil
        lettingGoOfPipeEnd(slot)
        unlist(slot)
        release(slot)
    }

    /// Before fork: one reference per held object for the child, which
    /// inherits the userdata. Returns them, for `childNotStarted`.
    static func retainForChild() -> [UInt32] {
        let slots = Array(ctx.objects.holdings.keys)
        for s in slots { retain(s) }
        return slots
    }

    static func childNotStarted(_ slots: [UInt32]) {
        for s in slots { release(s) }
    }

    /// A worker ending normally drops what it still holds (a forked worker
    /// never closes its Lua state, so its userdata are never collected).
    static func releaseAll() {
        let slots = Array(ctx.objects.holdings.keys)
        ctx.objects.holdings.removeAll()
        for s in slots { lettingGoOfPipeEnd(s) }
        for s in slots {
            unlist(s)
            release(s)
        }
        if let me = ProcessRegistry.record, me.pointee.obj_holdings != 0 {
            Arena.free(me.pointee.obj_holdings, clearingOffset: &me.pointee.obj_holdings)
        }
        ctx.objects.holdingsListed = [:]
        ctx.objects.holdingsListFree = []
        ctx.objects.holdingsListStarted = false
    }

    // MARK: freed queues, for --stats

    /// Adds a listed queue that is being freed to the figures of the freed
    /// queues made at the same place with the same name.
    static func retire(_ q: SharedQueue) {
        guard q.q.pointee.flags & UInt32(JR_QUEUE_LISTED) != 0 else { return }
        let site = q.site, label = q.label, flags = q.q.pointee.flags
        let s = q.snapshot
        lock()
        defer { unlock() }
        withUnsafeMutablePointer(to: &h.pointee.retired) {
            let table = UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_retired_queue.self)
            let n = Int(JR_RETIRED_QUEUES)
            var pick = n - 1
            for i in 0..<n {
                if table[i].count == 0 { pick = i; break }
                if table[i].flags == flags && cString(&table[i].site) == site && cString(&table[i].label) == label { pick = i; break }
            }
            let r = table + pick
            if r.pointee.count == 0 {
                r.pointee.flags = flags
                copyCString(pick == n - 1 ? "" : site, into: &r.pointee.site)
                copyCString(pick == n - 1 ? "(other freed queues)" : label, into: &r.pointee.label)
            }
            r.pointee.count += 1
            r.pointee.put &+= s.put; r.pointee.got &+= s.got; r.pointee.done &+= s.done; r.pointee.bytes &+= s.bytes
            r.pointee.peak = max(r.pointee.peak, s.peak)
            r.pointee.put_wait_ns &+= s.putWaitNanos; r.pointee.get_wait_ns &+= s.getWaitNanos
        }
    }

    /// The freed queues' figures: (kind, site, snapshot) per group.
    static func retired() -> [(kind: String, site: String, snapshot: SharedQueue.Snapshot)] {
        lock()
        defer { unlock() }
        var out: [(kind: String, site: String, snapshot: SharedQueue.Snapshot)] = []
        withUnsafeMutablePointer(to: &h.pointee.retired) {
            let table = UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_retired_queue.self)
            for i in 0..<Int(JR_RETIRED_QUEUES) where table[i].count > 0 {
                let r = table[i]
                let kind = r.flags & UInt32(JR_QUEUE_JOINABLE) != 0 ? "JoinableQueue" : "Queue"
                var label = table[i].label
                let name = cString(&label).isEmpty ? kind : cString(&label)
                var site = table[i].site
                out.append((kind, cString(&site), SharedQueue.Snapshot(
                    name: "\(name) (\(r.count) freed)", put: r.put, got: r.got, done: r.done, depth: 0,
                    bytes: r.bytes, peak: r.peak, putWaitNanos: r.put_wait_ns, getWaitNanos: r.get_wait_ns)))
            }
        }
        return out
    }

    // MARK: walking

    /// The offsets of the live objects of the given types, read without the
    /// lock (for the progress line and --stats: a queue freed meanwhile
    /// is read once more, never written).
    static func liveOffsets(_ types: Set<UInt32>) -> [UInt64] {
        var out: [UInt64] = []
        let used = h.atomic(\.objects_used).load(ordering: .acquiring)
        var slot: UInt32 = 0
        while slot < used {
            if let e = entry(slot), e.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_SLOT_LIVE), types.contains(e.pointee.type) {
                let off = e.pointee.offset
                if off != 0 { out.append(off) }
            }
            slot += 1
        }
        return out
    }

    /// Calls `body` with each live object of `type`, holding a reference to
    /// it meanwhile so it cannot be freed under the caller (the monitor).
    static func withLive(_ type: UInt32, _ body: (UInt64) -> Void) {
        let used = h.atomic(\.objects_used).load(ordering: .acquiring)
        var slot: UInt32 = 0
        while slot < used {
            defer { slot += 1 }
            guard let e = entry(slot) else { continue }
            lock()
            let live = e.pointee.state == UInt32(JR_SLOT_LIVE) && e.pointee.type == type
            if live { e.pointee.refs += 1 }
            let off = e.pointee.offset
            unlock()
            if live {
                body(off)
                release(slot)   // the last outside reference to a cycle, maybe: looked at
            }
        }
    }

    /// Live objects (for tests and the end-of-run check).
    static var liveCount: Int {
        var n = 0
        let used = h.atomic(\.objects_used).load(ordering: .acquiring)
        for slot in 0..<used where entry(slot).map({ $0.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_SLOT_LIVE) }) ?? false { n += 1 }
        return n
    }
}
