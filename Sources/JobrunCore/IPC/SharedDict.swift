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
        return off
    }

    var id: UInt32 { d.pointee.hdr.id }

    @inline(__always) private func lock() {
        if jr_mutex_lock(&d.pointee.lock) == 1 { repair() }
    }

    /// A process died holding the lock: recount, in case it died between
    /// writing a slot and updating the counts.
    private func repair() {
        var count: UInt64 = 0, used: UInt64 = 0
        let table = slots
        for i in 0..<Int(d.pointee.capacity) where table[i].hash != 0 {
            used += 1
            if table[i].hash >= 2 { count += 1 }
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
        return v.count
    }

    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        lock(); defer { unlock() }
        return find(key, SharedDict.hash(key)) != nil
    }

    enum SetFailure: Error { case noMemory }

    /// Sets key to value (both encoded).
    func set(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(SetFailure) {
        let size = 16 + key.count + value.count
        guard let entryOff = try? Arena.allocate(size) else { throw .noMemory }
        let e = Arena.pointer(entryOff)
        e.storeBytes(of: UInt32(key.count), as: UInt32.self)
        e.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        e.storeBytes(of: UInt64(value.count), toByteOffset: 8, as: UInt64.self)
        memcpy(e + 16, key.baseAddress!, key.count)
        if value.count > 0 { memcpy(e + 16 + key.count, value.baseAddress!, value.count) }
        let h = SharedDict.hash(key)
        var old: UInt64 = 0
        lock()
        if let i = find(key, h) {
            old = slots[i].entry
            slots[i].entry = entryOff
        } else {
            if (d.pointee.used + 1) * 4 > d.pointee.capacity * 3 {
                if !grow() { unlock(); Arena.free(entryOff); throw .noMemory }
            }
            insertNew(h, entryOff)
            d.pointee.count += 1
        }
        unlock()
        if old != 0 { Arena.free(old) }
    }

    /// Lock held; the key is known to be absent.
    private func insertNew(_ h: UInt64, _ entry: UInt64) {
        if SharedDict.place(h, entry, in: slots, capacity: d.pointee.capacity) { d.pointee.used += 1 }
    }

    /// Puts an entry in the first free or deleted slot of a table; true if
    /// the slot was never used before.
    private static func place(_ h: UInt64, _ entry: UInt64, in table: UnsafeMutablePointer<jr_dict_slot>, capacity: UInt64) -> Bool {
        let mask = Int(capacity - 1)
        var i = Int(truncatingIfNeeded: h) & mask
        while table[i].hash >= 2 { i = (i + 1) & mask }
        let fresh = table[i].hash == 0
        table[i] = jr_dict_slot(hash: h, entry: entry)
        return fresh
    }

    /// Rehashes into a table sized for the live entries. Lock held. The new
    /// table is complete before it is published, so a process killed in the
    /// middle leaves the old one intact.
    private func grow() -> Bool {
        let oldSlots = slots, oldCap = Int(d.pointee.capacity), oldOff = d.pointee.slots_off
        var cap = UInt64(oldCap)
        while (d.pointee.count + 1) * 2 > cap { cap *= 2 }
        if d.pointee.count * 4 >= UInt64(oldCap) { cap = max(cap, UInt64(oldCap) * 2) }
        guard let off = try? Arena.allocateZeroed(Int(cap) * MemoryLayout<jr_dict_slot>.size) else { return false }
        let table = Arena.pointer(off).assumingMemoryBound(to: jr_dict_slot.self)
        var used: UInt64 = 0
        for i in 0..<oldCap where oldSlots[i].hash >= 2 {
            if SharedDict.place(oldSlots[i].hash, oldSlots[i].entry, in: table, capacity: cap) { used += 1 }
        }
        // Table before capacity: between the two stores a lookup masks the new,
        // larger table with the old capacity, which stays in bounds.
        d.pointee.slots_off = off
        d.pointee.capacity = cap
        d.pointee.used = used
        Arena.free(oldOff)
        return true
    }

    /// Removes key; false if absent.
    @discardableResult
    func delete(_ key: UnsafeRawBufferPointer) -> Bool {
        let h = SharedDict.hash(key)
        lock()
        guard let i = find(key, h) else { unlock(); return false }
        let entry = slots[i].entry
        slots[i] = jr_dict_slot(hash: 1, entry: 0)
        d.pointee.count -= 1
        unlock()
        Arena.free(entry)
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
            at += 16 + k.count + v.count
            n += 1
        }
        return (n, at)
    }

    var updateLockOffset: UInt64 { d.pointee.update_lock }
}
