import Atomics
import CJobrunShims
import Glibc

/// `jobrun.Dict`: like `Manager().dict()` but in the arena, with no server
/// process. Keys and values are stored encoded (the codec's bytes), so a
/// lookup compares bytes and the Lua values are rebuilt outside the lock.
struct SharedDict {
    let d: UnsafeMutablePointer<jr_dict>

    init(offset: UInt64) { d = Arena.pointer(offset).assumingMemoryBound(to: jr_dict.self) }

    static let initialCapacity: UInt64 = 16

    static func create() throws(Arena.AllocFailure) -> UInt64 {
        let (off, d) = try Arena.newObject(jr_dict.self, type: JR_OBJ_DICT)
        _ = jr_mutex_init(&d.pointee.lock)
        d.pointee.capacity = initialCapacity
        d.pointee.slots_off = try Arena.allocateZeroed(Int(initialCapacity) * MemoryLayout<jr_dict_slot>.size)
        d.pointee.update_lock = try SharedSync.create(type: JR_OBJ_LOCK)
        // The dict holds the only reference to its update lock (a process's
        // handle to it, from `_update_lock`, takes one of its own).
        guard (try? ObjectTable.register(type: JR_OBJ_LOCK, offset: d.pointee.update_lock, held: false)) != nil else {
            throw .exhausted
        }
        return off
    }

    var id: UInt32 { d.pointee.hdr.id }

    // MARK: Dying under the lock
    //
    // A change (set, delete, rehash) is made under `lock`, a robust mutex,
    // and never frees the old thing before the new one is published. The
    // blocks it has allocated and not yet published, or unpublished and not
    // yet freed, are named in the dict (`pending_*`), set and cleared by the
    // allocator under its own lock (Arena "Dying under alloc_lock"). A slot
    // is published by storing its entry, then its hash; a table by storing
    // `slots_off`. When the holder dies, the next locker runs `repair`: a
    // pending block that the published state references is kept, any other
    // is freed; the capacity follows the published table; the counts are
    // recounted. Every step of the repair can be repeated, so a repairer
    // killed in turn leaves the work to the next one.

    @inline(__always) private func lock() {
        RobustMutex.lock(&d.pointee.lock) { repair() }
    }

    /// The lock's holder died: finishes or undoes its change (see above).
    private func repair() {
        // A half-done allocation or free of the dead holder sets or clears
        // the pending fields: let the allocator's repair run first.
        Arena.settle()
        let p = d.pointee
        if p.pending_table != 0 {
            if p.slots_off == p.pending_table {
                d.pointee.capacity = p.pending_capacity
            } else {
                Arena.free(p.pending_table, clearingOffset: &d.pointee.pending_table)
            }
        }
        if d.pointee.old_table != 0 {
            if d.pointee.old_table != d.pointee.slots_off {
                Arena.free(d.pointee.old_table, clearingOffset: &d.pointee.old_table)
            } else {
                d.atomic(\.old_table).store(0, ordering: .releasing)
            }
        }
        d.atomic(\.pending_table).store(0, ordering: .releasing)
        var count: UInt64 = 0, used: UInt64 = 0
        var newReferenced = false, oldReferenced = false
        let table = slots
        for i in 0..<Int(d.pointee.capacity) where table[i].hash != 0 {
            used += 1
            if table[i].hash >= 2 {
                count += 1
                if table[i].entry == d.pointee.pending_entry { newReferenced = true }
                if table[i].entry == d.pointee.pending_old { oldReferenced = true }
            } else {
                table[i].entry = 0
            }
        }
        for (pending, referenced) in [(\jr_dict.pending_entry, newReferenced), (\jr_dict.pending_old, oldReferenced)] {
            let field = d.pointer(to: pending)!
            if field.pointee == 0 { continue }
            if referenced { field.atomic.store(0, ordering: .releasing) } else { Arena.free(field.pointee, clearingOffset: field) }
        }
        d.pointee.count = count
        d.pointee.used = used
    }
    @inline(__always) private func unlock() { jr_mutex_unlock(&d.pointee.lock) }

    private var slots: UnsafeMutablePointer<jr_dict_slot> {
        Arena.pointer(d.pointee.slots_off).assumingMemoryBound(to: jr_dict_slot.self)
    }

    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        max(2, fnv1a(key.baseAddress!, key.count))
    }

    // Entry block layout helpers.
    private static func keyLength(_ e: UnsafeMutableRawPointer) -> Int { Int(e.load(as: UInt32.self)) }
    private static func valueLength(_ e: UnsafeMutableRawPointer) -> Int { Int(e.load(fromByteOffset: 8, as: UInt64.self)) }
    private static func keyBytes(_ e: UnsafeMutableRawPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: e + 16, count: keyLength(e))
    }
    private static func valueBytes(_ e: UnsafeMutableRawPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: e + 16 + keyLength(e), count: valueLength(e))
    }

    /// Index of the slot holding `key`, or nil. Lock held.
    private func find(_ key: UnsafeRawBufferPointer, _ h: UInt64) -> Int? {
        let mask = Int(d.pointee.capacity - 1)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[i]
            if s.hash == 0 { return nil }
            if s.hash == h {
                let e = Arena.pointer(s.entry)
                if SharedDict.keyLength(e) == key.count && memcmp(e + 16, key.baseAddress!, key.count) == 0 { return i }
            }
            i = (i + 1) & mask
        }
    }

    /// Copies the value of `key` into `scratch`; false if absent.
    func get(_ key: UnsafeRawBufferPointer, into scratch: inout ScratchBuffer) -> Int? {
        let h = SharedDict.hash(key)
        lock()
        defer { unlock() }
        guard let i = find(key, h) else { return nil }
        let v = SharedDict.valueBytes(Arena.pointer(slots[i].entry))
        scratch.reserve(v.count)
        if v.count > 0 { memcpy(scratch.base, v.baseAddress!, v.count) }
        // The copy holds references to its handles, which its decoder adopts.
        ObjectTable.retain(handlesIn: v)
        return v.count
    }

    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        lock(); defer { unlock() }
        return find(key, SharedDict.hash(key)) != nil
    }

    enum SetFailure: Error { case noMemory }

    /// Sets key to value (both encoded).
    func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(SetFailure) {
        let h = SharedDict.hash(key)
        var dropped = ObjectTable.DroppedReferences()
        lock()
        defer { unlock(); dropped.release() }
        guard let entryOff = try? Arena.allocate(16 + key.count + value.count, recordingIn: &d.pointee.pending_entry) else {
            throw .noMemory
        }
        TestHooks.killPoint("dict-set-allocated")
        let e = Arena.pointer(entryOff)
        e.storeBytes(of: UInt32(key.count), as: UInt32.self)
        e.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        e.storeBytes(of: UInt64(value.count), toByteOffset: 8, as: UInt64.self)
        memcpy(e + 16, key.baseAddress!, key.count)
        if value.count > 0 { memcpy(e + 16 + key.count, value.baseAddress!, value.count) }
        if let i = find(key, h) {
            d.atomic(\.pending_old).store(slots[i].entry, ordering: .releasing)
            (slots + i).atomic(\.entry).store(entryOff, ordering: .releasing)
            d.atomic(\.pending_entry).store(0, ordering: .releasing)
            TestHooks.killPoint("dict-set-published")
            dropped.add(handlesIn: SharedDict.valueBytes(Arena.pointer(d.pointee.pending_old)))
            Arena.free(d.pointee.pending_old, clearingOffset: &d.pointee.pending_old)
        } else {
            if (d.pointee.used + 1) * 4 > d.pointee.capacity * 3 {
                if !grow() { Arena.free(entryOff, clearingOffset: &d.pointee.pending_entry); throw .noMemory }
            }
            if SharedDict.place(h, entryOff, in: slots, capacity: d.pointee.capacity) { d.pointee.used += 1 }
            d.pointee.count += 1
            TestHooks.killPoint("dict-set-published")
            d.atomic(\.pending_entry).store(0, ordering: .releasing)
        }
    }

    /// Puts an entry in the first free or deleted slot of a table; true if
    /// the slot was never used before. The hash goes in last: it publishes
    /// the slot.
    private static func place(_ h: UInt64, _ entry: UInt64, in table: UnsafeMutablePointer<jr_dict_slot>, capacity: UInt64) -> Bool {
        let mask = Int(capacity - 1)
        var i = Int(truncatingIfNeeded: h) & mask
        while table[i].hash >= 2 { i = (i + 1) & mask }
        let fresh = table[i].hash == 0
        table[i].entry = entry
        (table + i).atomic(\.hash).store(h, ordering: .releasing)
        return fresh
    }

    /// Rehashes into a table sized for the live entries. Lock held. The new
    /// table is complete before `slots_off` publishes it, and the old one is
    /// freed only after that.
    private func grow() -> Bool {
        let oldSlots = slots, oldCap = Int(d.pointee.capacity)
        var cap = UInt64(oldCap)
        while (d.pointee.count + 1) * 2 > cap { cap *= 2 }
        if d.pointee.count * 4 >= UInt64(oldCap) { cap = max(cap, UInt64(oldCap) * 2) }
        let bytes = Int(cap) * MemoryLayout<jr_dict_slot>.size
        d.pointee.pending_capacity = cap
        guard let off = try? Arena.allocate(bytes, recordingIn: &d.pointee.pending_table) else { return false }
        TestHooks.killPoint("dict-rehash-allocated")
        memset(Arena.pointer(off), 0, bytes)
        let table = Arena.pointer(off).assumingMemoryBound(to: jr_dict_slot.self)
        var used: UInt64 = 0
        for i in 0..<oldCap where oldSlots[i].hash >= 2 {
            if SharedDict.place(oldSlots[i].hash, oldSlots[i].entry, in: table, capacity: cap) { used += 1 }
        }
        TestHooks.killPoint("dict-rehash-copied")
        d.atomic(\.old_table).store(d.pointee.slots_off, ordering: .releasing)
        // Table before capacity: a repair after a death between the two
        // stores takes the capacity from `pending_capacity`.
        d.atomic(\.slots_off).store(off, ordering: .releasing)
        TestHooks.killPoint("dict-rehash-published")
        d.pointee.capacity = cap
        d.pointee.used = used
        Arena.free(d.pointee.old_table, clearingOffset: &d.pointee.old_table)
        d.atomic(\.pending_table).store(0, ordering: .releasing)
        return true
    }

    /// Removes key; false if absent.
    @discardableResult
    func delete(_ key: UnsafeRawBufferPointer) -> Bool {
        let h = SharedDict.hash(key)
        var dropped = ObjectTable.DroppedReferences()
        lock()
        defer { unlock(); dropped.release() }
        guard let i = find(key, h) else { return false }
        dropped.add(handlesIn: SharedDict.valueBytes(Arena.pointer(slots[i].entry)))
        d.atomic(\.pending_old).store(slots[i].entry, ordering: .releasing)
        (slots + i).atomic(\.hash).store(1, ordering: .releasing)
        slots[i].entry = 0
        d.pointee.count -= 1
        TestHooks.killPoint("dict-delete-unlinked")
        Arena.free(d.pointee.pending_old, clearingOffset: &d.pointee.pending_old)
        return true
    }

    var count: Int { lock(); defer { unlock() }; return Int(d.pointee.count) }

    /// Copies every entry (key bytes, value bytes) into `scratch` as a
    /// sequence of [u64 key length][u64 value length][key][value]; returns the count.
    func snapshot(into scratch: inout ScratchBuffer) -> (entries: Int, bytes: Int) {
        lock()
        defer { unlock() }
        var total = 0
        let cap = Int(d.pointee.capacity)
        for i in 0..<cap where slots[i].hash >= 2 {
            let e = Arena.pointer(slots[i].entry)
            total += 16 + SharedDict.keyLength(e) + SharedDict.valueLength(e)
        }
        scratch.reserve(total)
        var at = 0, n = 0
        for i in 0..<cap where slots[i].hash >= 2 {
            let e = Arena.pointer(slots[i].entry)
            let k = SharedDict.keyBytes(e), v = SharedDict.valueBytes(e)
            scratch.base.storeBytes(of: UInt64(k.count), toByteOffset: at, as: UInt64.self)
            scratch.base.storeBytes(of: UInt64(v.count), toByteOffset: at + 8, as: UInt64.self)
            memcpy(scratch.base + at + 16, k.baseAddress!, k.count)
            if v.count > 0 { memcpy(scratch.base + at + 16 + k.count, v.baseAddress!, v.count) }
            ObjectTable.retain(handlesIn: v)
            at += 16 + k.count + v.count
            n += 1
        }
        return (n, at)
    }

    var updateLockOffset: UInt64 { d.pointee.update_lock }
    var updateLockSlot: UInt32 { SharedSync(offset: d.pointee.update_lock).s.pointee.hdr.slot }

    /// The last reference is gone (ObjectTable): frees the entries and the
    /// table, and drops what the values and the update lock held. The
    /// object's own block is the table's to free.
    func destroy() {
        var dropped = ObjectTable.DroppedReferences()
        lock()
        discardEntriesLocked(&dropped)
        Arena.free(d.pointee.slots_off, clearingOffset: &d.pointee.slots_off)
        unlock()
        dropped.add(updateLockSlot)
        dropped.release()
    }

    /// Frees every entry (lock held); the references its values held go into `dropped`.
    private func discardEntriesLocked(_ dropped: inout ObjectTable.DroppedReferences) {
        let cap = Int(d.pointee.capacity)
        let table = slots
        for i in 0..<cap where table[i].hash >= 2 && table[i].entry != 0 {
            let e = table[i].entry
            (table + i).atomic(\.hash).store(1, ordering: .releasing)
            dropped.add(handlesIn: SharedDict.valueBytes(Arena.pointer(e)))
            Arena.free(e)
        }
        d.pointee.count = 0
    }

    /// Empties a dict no process can reach any more (a garbage cycle's, ObjectTable+Cycles.swift).
    func discardEntries() {
        var dropped = ObjectTable.DroppedReferences()
        lock()
        defer { unlock(); dropped.release() }
        discardEntriesLocked(&dropped)
    }

    /// Calls `body` with every value's bytes. Lock held.
    func forEachValueLocked(_ body: (UnsafeRawBufferPointer) -> Void) {
        let table = slots
        for i in 0..<Int(d.pointee.capacity) where table[i].hash >= 2 && table[i].entry != 0 {
            body(SharedDict.valueBytes(Arena.pointer(table[i].entry)))
        }
    }

    /// The lock if it is free (the cycle collector, which must not wait).
    func tryLockForCollector() -> Bool { RobustMutex.tryLock(&d.pointee.lock) { repair() } }
    var lockWord: UnsafeMutablePointer<pthread_mutex_t> { withUnsafeMutablePointer(to: &d.pointee.lock) { $0 } }
}
