import CJobrunShims
import CLua
import Glibc

/// Lua value -> bytes: the one wire format for queue items, process
/// arguments, dictionary entries and (later) the distributed mode. Modelled on
/// Python's `multiprocessing.reduction` (pickle), minus everything that runs
/// code while encoding: only raw table access, no metamethod is ever called.
///
/// A value is one tag byte and its payload. Varints are unsigned LEB128
/// (minimal, so equal scalars always give equal bytes: `Dict` relies on it);
/// fixed-size numbers are little-endian.
///
///     0x00 nil            0x01 false          0x02 true
///     0x03 integer        zigzag varint (integers stay integers; -64...63 take 2 bytes)
///     0x04 float          u64 IEEE bit pattern (nan payloads, inf, -0.0 survive)
///     0x05 string         varint length, bytes (binary-safe)
///     0x06 table          u32 n, u32 h, then the values of t[1..n], then h
///                         key/value pairs (keys: any sendable value but nil and nan)
///     0x07 reference      varint o: the table or function whose tag is at byte o
///                         of this message (shared references and cycles)
///     0x08 Lua function   varint length, u64 checksum of the bytecode, the bytecode
///                         (lua_dump, debug info kept), u8 u, then u upvalues, each
///                         a value or a joined upvalue (0x0A); an upvalue named
///                         `_ENV` is always sent as 0x09
///     0x09 globals        the receiver's own global table: what `_ENV` and any
///                         reference to the sender's global table become (a copy
///                         of _G could never be sent anyway: it holds io.stdout)
///     0x0A joined upvalue (upvalue only) varint o, u8 i: the same variable as
///                         upvalue i of the function at byte o (closures that
///                         share a local keep sharing it)
///     0x0B C function     varint length, name: "print", "string.format", ...
///                         (standard library functions without upvalues only)
///     0x0C jobrun object  u32 type, u32 slot, u32 generation in the object table (the
///                         receiver gets a handle; a stale or mistyped one is refused)
///     0x0D Process        varint pid, varint parent pid (0: none), u8 daemon, varint
///                         length, name: a started `jobrun.Process` (a table whose
///                         metatable has `__jobrun_process`) as who it is, never its
///                         target; the receiver gets a Process object of its own that
///                         asks the run's records (is_alive, exitcode)
///
/// Bit 0x80 on a table or function tag means "a reference to me follows":
/// the encoder sets it when it writes the first back-reference, so the
/// decoder keeps a table of objects only for messages that need one.
/// Metatables are never sent (a Process is sent as 0x0D). Tables and functions count as one nesting
/// level each; more than `maxDepth` levels is an error, like any unsendable
/// value. Errors name where the value sits, from the root the caller names:
///
///     args[2].on_done: cannot send a coroutine
///     item.list[3]: cannot send a userdata (FILE*)
///     item (upvalue co): cannot send a coroutine       -- upvalue `co` of the function `item`
///     item.cache (key): cannot send a coroutine        -- a key of the table `item.cache`
///
/// The encoder is reused for every item a process sends: scalars are written
/// straight into its buffer; the walk state (path steps, seen objects) lives
/// in buffers allocated once, and the Lua side table for seen objects is made
/// only for values holding more than `inlineSeen` tables and functions.
struct ValueEncoder: ~Copyable {
    static let maxDepth = 200

    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    private let initialCapacity: Int
    /// Bytes encoded since the last `reset()`.
    private(set) var count = 0
    /// The objects whose handles the bytes hold, one reference taken for each
    /// (ObjectTable.swift): the caller that stores the bytes in shared memory
    /// calls `keepReferences()`; otherwise they are dropped (`reset`, or
    /// `dropReferences` when the store failed).
    private(set) var references: [UInt32] = []

    /// The stored bytes hold the references now. (Most items hold no
    /// handle: the per-item path then only tests the count.)
    @inline(__always)
    mutating func keepReferences() { if !references.isEmpty { references.removeAll(keepingCapacity: true) } }

    /// The same, the bytes stored in the object whose header is `holder`:
    /// if they hold a handle, a cycle may pass through it (ObjectTable+Cycles.swift).
    @inline(__always)
    mutating func keepReferences(in holder: UnsafeMutablePointer<jr_object_header>) {
        if !references.isEmpty {
            ObjectTable.noteHoldsHandles(holder)
            references.removeAll(keepingCapacity: true)
        }
    }

    /// The bytes were not stored: their references go. (The process holds
    /// each of those objects: it was sending a handle to it.)
    mutating func dropReferences(since start: Int = 0) {
        guard start < references.count else { return }
        let dropped = references[start...]
        references.removeSubrange(start...)
        for slot in dropped { ObjectTable.release(slot, lookForCycles: false) }
    }


    /// One step of the path from the root to the value being encoded; turned
    /// into text only when encoding fails.
    private enum Step {
        case argument(Int32)            // [i] of encodeValues
        case key(Int32)                 // the key at this stack slot
        case keyItself                  // " (key)": encoding the key, not its value
        case upvalue(Int32, Int32)      // " (upvalue name)": function's stack slot, upvalue number
    }
    private let steps: UnsafeMutablePointer<Step>
    private var stepCount = 0

    /// A table, function or upvalue (by its `lua_upvalueid`) met earlier in
    /// this message: where its definition starts, and for an upvalue which one.
    private struct Seen {
        var object: UnsafeRawPointer
        var offset: Int
        var upvalue: Int32
    }
    private static let inlineSeen = 16
    private let seen: UnsafeMutablePointer<Seen>
    private var seenCount = 0
    /// Stack slot reserved for the spill table (light userdata -> offset << 8 | upvalue).
    private var seenSlot: Int32 = 0
    private var seenSpilled = false
    private var messageStart = 0
    /// The sender's global table, sent as "the receiver's globals"; looked up
    /// once per Lua state (a state's global table never changes identity).
    /// An encoder serves the states it is given while they live: a process
    /// has one state for its life, and each test its own encoder.
    private var globals: UnsafeRawPointer? = nil
    private var globalsOf: LuaState? = nil

    init(capacity: Int = 1024) {
        initialCapacity = max(64, capacity)
        self.capacity = initialCapacity
        base = UnsafeMutableRawPointer.allocate(byteCount: initialCapacity, alignment: 16)
        steps = .allocate(capacity: Self.maxDepth + 8)
        seen = .allocate(capacity: Self.inlineSeen)
    }

    deinit {
        base.deallocate()
        steps.deallocate()
        seen.deallocate()
    }

    /// The encoded bytes; valid until the next mutating call.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Forgets the bytes; gives back a buffer grown past 16 MiB by a huge item.
    /// References the caller did not keep are dropped (see `references`).
    mutating func reset() {
        if !references.isEmpty { dropReferences(since: 0) }
        count = 0
        if capacity > 16 << 20 {
            base.deallocate()
            capacity = initialCapacity
            base = .allocate(byteCount: capacity, alignment: 16)
        }
    }

    // MARK: - Entry points

    /// Appends the value at `index`; nil on success, else `<path>: <reason>`
    /// (and nothing appended). The Lua stack is left as it was.
    mutating func encode(_ L: LuaState, _ index: Int32, path: String) -> String? {
        let refsStart = references.count
        switch lua_type(L, index) {
        case LUA_TSTRING:
            var len = 0
            writeString(jr_lua_tostring(L, index, &len)!, len)
        case LUA_TNUMBER:
            writeNumber(L, index)
        case LUA_TNIL, LUA_TNONE:
            byte(0x00)
        case LUA_TBOOLEAN:
            byte(lua_toboolean(L, index) != 0 ? 0x02 : 0x01)
        default:
            let idx = lua_absindex(L, index)
            let top = lua_gettop(L)
            guard begin(L) else { return "\(path): cannot send: Lua stack exhausted" }
            defer { lua_settop(L, top) }
            if let e = value(L, idx, depth: 0) { count = messageStart; dropReferences(since: refsStart); return path + e }
        }
        return nil
    }

    /// Appends `n` stack values from `from` as one message (varint n, then the
    /// values), the i-th named `<path>[i]`. Decoded by `ValueDecoder.decodeValues`.
    mutating func encodeValues(_ L: LuaState, from: Int32, count n: Int32, path: String) -> String? {
        let refsStart = references.count
        let first = lua_absindex(L, from)
        let top = lua_gettop(L)
        guard begin(L) else { return "\(path): cannot send: Lua stack exhausted" }
        defer { lua_settop(L, top) }
        varint(UInt64(max(0, n)))
        var i: Int32 = 0
        while i < n {
            push(.argument(i + 1))
            if let e = value(L, first + i, depth: 0) { count = messageStart; dropReferences(since: refsStart); return path + e }
            stepCount -= 1
            i += 1
        }
        return nil
    }

    /// Appends the table `{head[1], ..., head[m], {list[first], ..., list[first + length - 1]}}`
    /// (m = the raw length of `head`) without building it, nor the slice, in
    /// Lua: `Pool` sends a chunk of a list and a chunk of results this way.
    /// Raw reads only; a nil in the slice is sent as one (the array section
    /// may hold nils). Paths are those of the built table: `<path>[m+1][k]`.
    mutating func encodeWithSlice(_ L: LuaState, head: Int32, list: Int32, first: lua_Integer, length: Int,
                                  path: String) -> String? {
        let refsStart = references.count
        let head = lua_absindex(L, head), list = lua_absindex(L, list)
        let top = lua_gettop(L)
        guard begin(L) else { return "\(path): cannot send: Lua stack exhausted" }
        defer { lua_settop(L, top) }
        let m = Int(lua_rawlen(L, head))
        guard m < Int(Int32.max), length >= 0, length < Int(UInt32.max) else { return "\(path): cannot send: too many values" }
        record(L, Seen(object: lua_topointer(L, head)!, offset: 0, upvalue: 0))
        tableHeader(n: UInt32(m + 1))
        var i: Int32 = 1
        while i <= Int32(m) {
            lua_rawgeti(L, head, lua_Integer(i))
            push(.argument(i))
            if let e = value(L, lua_gettop(L), depth: 1) { count = messageStart; dropReferences(since: refsStart); return path + e }
            stepCount -= 1
            jr_lua_pop(L, 1)
            i += 1
        }
        push(.argument(Int32(m + 1)))
        tableHeader(n: UInt32(length))
        var k = 0
        while k < length {
            // The scalar cases of value(), inline: they are nearly every item.
            switch lua_rawgeti(L, list, first + lua_Integer(k)) {
            case LUA_TNUMBER: writeNumber(L, -1)
            case LUA_TSTRING:
                var len = 0
                writeString(jr_lua_tostring(L, -1, &len)!, len)
            case LUA_TBOOLEAN: byte(lua_toboolean(L, -1) != 0 ? 0x02 : 0x01)
            case LUA_TNIL: byte(0x00)
            default:
                push(.argument(Int32(truncatingIfNeeded: k + 1)))
                if let e = value(L, lua_gettop(L), depth: 2) { count = messageStart; dropReferences(since: refsStart); return path + e }
                stepCount -= 1
            }
            jr_lua_pop(L, 1)
            k += 1
        }
        return nil
    }

    /// Resets the walk state for a value that may hold tables or functions.
    private mutating func begin(_ L: LuaState) -> Bool {
        guard lua_checkstack(L, 16) != 0 else { return false }
        lua_pushnil(L)                  // the spill table's slot, filled if needed
        seenSlot = lua_gettop(L)
        seenSpilled = false
        seenCount = 0
        stepCount = 0
        messageStart = count
        if L != globalsOf {
            jr_lua_pushglobaltable(L)
            globals = lua_topointer(L, -1)
            jr_lua_pop(L, 1)
            globalsOf = L
        }
        return true
    }

    // MARK: - Output

    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if _slowPath(n > capacity - count) { grow(n) }
    }

    private mutating func grow(_ n: Int) {
        var c = capacity * 2
        while c - count < n { c *= 2 }
        let nb = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
        nb.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = nb
        capacity = c
    }

    @inline(__always)
    private mutating func byte(_ b: UInt8) {
        reserve(1)
        base.storeBytes(of: b, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    /// Writes a varint; the caller has reserved 10 bytes.
    @inline(__always)
    private mutating func varintReserved(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: count, as: UInt8.self)
            count += 1
            v >>= 7
        }
        base.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always)
    private mutating func varint(_ v: UInt64) {
        reserve(10)
        varintReserved(v)
    }

    @inline(__always)
    private mutating func fixed<T: FixedWidthInteger>(_ v: T) {
        reserve(MemoryLayout<T>.size)
        base.storeBytes(of: v.littleEndian, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    private mutating func raw(_ p: UnsafeRawPointer, _ n: Int) {
        reserve(n)
        if n > 0 { (base + count).copyMemory(from: p, byteCount: n) }
        count += n
    }

    /// Bytes a string of `len` bytes takes encoded: tag, varint length, bytes.
    static func stringSize(_ len: Int) -> Int {
        var n = 1, v = UInt64(len)
        repeat { n += 1; v >>= 7 } while v != 0
        return n + len
    }

    /// Encodes a string at `dst` (which has room for `stringSize(len)` bytes),
    /// as `writeString` does into the buffer.
    static func writeString(_ p: UnsafePointer<CChar>, _ len: Int, to dst: UnsafeMutableRawPointer) {
        dst.storeBytes(of: 0x05, as: UInt8.self)
        var at = 1, v = UInt64(len)
        while v >= 0x80 {
            dst.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: at, as: UInt8.self)
            at += 1
            v >>= 7
        }
        dst.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: at, as: UInt8.self)
        (dst + at + 1).copyMemory(from: p, byteCount: len)
    }

    @inline(__always)
    private mutating func writeString(_ p: UnsafePointer<CChar>, _ len: Int) {
        reserve(11 + len)
        base.storeBytes(of: 0x05, toByteOffset: count, as: UInt8.self)
        count += 1
        varintReserved(UInt64(len))
        (base + count).copyMemory(from: p, byteCount: len)
        count += len
    }

    @inline(__always)
    private mutating func writeNumber(_ L: LuaState, _ idx: Int32) {
        reserve(11)
        if lua_isinteger(L, idx) != 0 {
            let v = Int64(lua_tointegerx(L, idx, nil))
            base.storeBytes(of: 0x03, toByteOffset: count, as: UInt8.self)
            count += 1
            varintReserved(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
        } else {
            base.storeBytes(of: 0x04, toByteOffset: count, as: UInt8.self)
            base.storeBytes(of: lua_tonumberx(L, idx, nil).bitPattern.littleEndian, toByteOffset: count + 1, as: UInt64.self)
            count += 9
        }
    }

    /// Writes a table tag with `n` array values and no pairs; returns where
    /// the two counts are, for a caller that learns them while walking.
    @discardableResult
    @inline(__always)
    private mutating func tableHeader(n: UInt32) -> Int {
        reserve(9)
        base.storeBytes(of: 0x06, toByteOffset: count, as: UInt8.self)
        (base + count + 1).storeBytes(of: n.littleEndian, as: UInt32.self)
        (base + count + 5).storeBytes(of: UInt32(0), as: UInt32.self)
        count += 9
        return count - 8
    }

    // MARK: - The walk

    @inline(__always)
    private mutating func push(_ s: Step) {
        steps[stepCount] = s
        stepCount += 1
    }

    private mutating func value(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        switch lua_type(L, idx) {
        case LUA_TSTRING:
            var len = 0
            writeString(jr_lua_tostring(L, idx, &len)!, len)
        case LUA_TNUMBER: writeNumber(L, idx)
        case LUA_TNIL, LUA_TNONE: byte(0x00)
        case LUA_TBOOLEAN: byte(lua_toboolean(L, idx) != 0 ? 0x02 : 0x01)
        case LUA_TTABLE: return table(L, idx, depth: depth)
        case LUA_TFUNCTION:
            if lua_iscfunction(L, idx) != 0 { return cFunction(L, idx) }
            return function(L, idx, depth: depth)
        case LUA_TUSERDATA: return userdata(L, idx)
        case LUA_TLIGHTUSERDATA: return failure(L, "cannot send a light userdata")
        case LUA_TTHREAD: return failure(L, "cannot send a coroutine")
        default: return failure(L, "cannot send a \(String(cString: lua_typename(L, lua_type(L, idx))))")
        }
        return nil
    }

    private mutating func table(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        if depth >= Self.maxDepth { return failure(L, "value nested too deeply (more than \(Self.maxDepth) levels)") }
        if lua_checkstack(L, 8) == 0 { return failure(L, "value nested too deeply (Lua stack exhausted)") }
        let p = lua_topointer(L, idx)!
        if p == globals { byte(0x09); return nil }
        if reference(L, p) { return nil }
        if lua_getmetatable(L, idx) != 0 {
            lua_pushstring(L, "__jobrun_process")
            let isProcess = lua_rawget(L, -2) != LUA_TNIL
            jr_lua_pop(L, 2)
            if isProcess { return process(L, idx) }
        }
        // One lua_next pass: Lua visits the array part first, in order, so the
        // run of keys 1, 2, 3, ... goes to the compact array section and
        // everything after it (holes, other keys) to the pairs.
        let countsAt = tableHeader(n: 0)
        var n: UInt32 = 0, pairs: UInt32 = 0
        let k = lua_gettop(L) + 1
        lua_pushnil(L)
        push(.key(k))
        while lua_next(L, idx) != 0 {
            // lua_tointegerx, not lua_tolstring: converting a key in place would break lua_next.
            if pairs == 0 && lua_isinteger(L, k) != 0 && lua_tointegerx(L, k, nil) == lua_Integer(n) + 1 {
                if let e = value(L, k + 1, depth: depth + 1) { return e }
                n += 1
            } else {
                steps[stepCount - 1] = .keyItself
                if let e = value(L, k, depth: depth + 1) { return e }
                steps[stepCount - 1] = .key(k)
                if let e = value(L, k + 1, depth: depth + 1) { return e }
                pairs += 1
            }
            jr_lua_pop(L, 1)
        }
        stepCount -= 1
        (base + countsAt).storeBytes(of: n.littleEndian, as: UInt32.self)
        (base + countsAt + 4).storeBytes(of: pairs.littleEndian, as: UInt32.self)
        return nil
    }

    /// A started Process as who it is (tag 0x0D): its state table `_s`,
    /// read with raw lookups only. Its target and arguments stay behind.
    private mutating func process(_ L: LuaState, _ idx: Int32) -> String? {
        lua_pushstring(L, "_s")
        guard lua_rawget(L, idx) == LUA_TTABLE else { jr_lua_pop(L, 1); return failure(L, "cannot send this Process (no state)") }
        let s = lua_gettop(L)
        defer { lua_settop(L, s - 1) }
        func field(_ name: String) -> Int32 { lua_pushstring(L, name); return lua_rawget(L, s) }
        // A forked child's own Process was copied before its parent marked
        // it started: `current` says it runs.
        let started = (field("started") == LUA_TBOOLEAN && lua_toboolean(L, -1) != 0)
            || (field("current") == LUA_TBOOLEAN && lua_toboolean(L, -1) != 0)
        guard started, field("pid") == LUA_TNUMBER, lua_isinteger(L, -1) != 0 else {
            return failure(L, "cannot send a Process that has not been started (send it after p:start())")
        }
        let pid = lua_tointegerx(L, -1, nil)
        let parent = field("parent") == LUA_TNUMBER ? lua_tointegerx(L, -1, nil) : 0
        let daemon = field("daemon") == LUA_TBOOLEAN && lua_toboolean(L, -1) != 0
        guard field("name") == LUA_TSTRING else { return failure(L, "cannot send this Process (its name is not a string)") }
        var len = 0
        let name = jr_lua_tostring(L, -1, &len)!
        byte(0x0D)
        varint(UInt64(max(0, pid)))
        varint(UInt64(max(0, parent)))
        byte(daemon ? 1 : 0)
        varint(UInt64(len))
        raw(name, len)
        return nil
    }

    private mutating func function(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        if depth >= Self.maxDepth { return failure(L, "value nested too deeply (more than \(Self.maxDepth) levels)") }
        if lua_checkstack(L, 8) == 0 { return failure(L, "value nested too deeply (Lua stack exhausted)") }
        let start = count
        if reference(L, lua_topointer(L, idx)!) { return nil }
        lua_pushvalue(L, idx)
        var len = 0
        let code = jr_lua_dump(L, 0, &len)
        jr_lua_pop(L, 1)
        guard let code else { return failure(L, "cannot send this function (lua_dump failed)") }
        byte(0x08)
        varint(UInt64(len))
        fixed(fnv1a(code, len))
        raw(code, len)
        free(code)
        var ups: Int32 = 0
        while lua_getupvalue(L, idx, ups + 1) != nil { jr_lua_pop(L, 1); ups += 1 }
        byte(UInt8(truncatingIfNeeded: ups))   // Lua allows at most 255
        var u: Int32 = 1
        while u <= ups {
            let name = lua_getupvalue(L, idx, u)
            if jr_lua_upvalue_is_env(name) != 0 {
                byte(0x09)
            } else {
                let id = lua_upvalueid(L, idx, u).map { UnsafeRawPointer($0) }
                if let id, let s = lookup(L, id) {
                    mark(s.offset)
                    byte(0x0A); varint(UInt64(s.offset)); byte(UInt8(truncatingIfNeeded: s.upvalue))
                } else {
                    if let id { record(L, Seen(object: id, offset: start - messageStart, upvalue: u)) }
                    push(.upvalue(idx, u))
                    if let e = value(L, lua_gettop(L), depth: depth + 1) { return e }
                    stepCount -= 1
                }
            }
            jr_lua_pop(L, 1)
            u += 1
        }
        return nil
    }

    private mutating func cFunction(_ L: LuaState, _ idx: Int32) -> String? {
        if lua_getupvalue(L, idx, 1) != nil {
            jr_lua_pop(L, 1)
            return failure(L, "cannot send a C function with upvalues\(cFunctionLabel(L, idx))")
        }
        guard let f = lua_tocfunction(L, idx), var name = Self.standardNames[UInt(bitPattern: unsafeBitCast(f, to: UnsafeRawPointer.self))] else {
            return failure(L, "cannot send a C function\(cFunctionLabel(L, idx)); only standard library ones can be sent")
        }
        byte(0x0B)
        name.withUTF8 { varint(UInt64($0.count)); raw($0.baseAddress!, $0.count) }
        return nil
    }

    private mutating func userdata(_ L: LuaState, _ idx: Int32) -> String? {
        var name = "userdata"
        if lua_getmetatable(L, idx) != 0 {
            // Raw lookups: ObjectHandle.check's lua_getfield then finds the field without a metamethod.
            lua_pushstring(L, "__jobrun")
            let ours = lua_rawget(L, -2) != LUA_TNIL && lua_toboolean(L, -1) != 0
            jr_lua_pop(L, 1)
            if ours, let p = lua_touserdata(L, idx) {
                jr_lua_pop(L, 1)
                let h = p.assumingMemoryBound(to: ObjectHandle.self).pointee
                if h.closed != 0 { return failure(L, "cannot send a closed handle (close() or <close> released it)") }
                if h.type == UInt32(JR_OBJ_PIPE_END0) || h.type == UInt32(JR_OBJ_PIPE_END1) { PipeHolders.encoded(h) }
                ObjectTable.retain(h.slot)
                references.append(h.slot)
                byte(0x0C); fixed(h.type); fixed(h.slot); fixed(h.generation)
                return nil
            }
            lua_pushstring(L, "__name")
            if lua_rawget(L, -2) == LUA_TSTRING, let s = Lua.string(L, -1) { name = s }
            jr_lua_pop(L, 2)
        }
        return failure(L, "cannot send a userdata (\(name))")
    }

    // MARK: - Seen objects

    /// Writes a back-reference if the table or function `p` was met before in
    /// this message; otherwise records where its definition starts.
    @inline(__always)
    private mutating func reference(_ L: LuaState, _ p: UnsafeRawPointer) -> Bool {
        if let s = lookup(L, p) {
            mark(s.offset)
            byte(0x07); varint(UInt64(s.offset))
            return true
        }
        record(L, Seen(object: p, offset: count - messageStart, upvalue: 0))
        return false
    }

    /// Sets the "referenced later" bit on the tag at `offset`.
    private mutating func mark(_ offset: Int) {
        let p = base + messageStart + offset
        p.storeBytes(of: p.load(as: UInt8.self) | 0x80, as: UInt8.self)
    }

    private mutating func lookup(_ L: LuaState, _ p: UnsafeRawPointer) -> Seen? {
        if !seenSpilled {
            var i = 0
            while i < seenCount {
                if seen[i].object == p { return seen[i] }
                i += 1
            }
            return nil
        }
        lua_pushlightuserdata(L, UnsafeMutableRawPointer(mutating: p))
        defer { jr_lua_pop(L, 1) }
        guard lua_rawget(L, seenSlot) == LUA_TNUMBER else { return nil }
        let v = lua_tointegerx(L, -1, nil)
        return Seen(object: p, offset: Int(v >> 8), upvalue: Int32(v & 0xff))
    }

    private mutating func record(_ L: LuaState, _ s: Seen) {
        if !seenSpilled {
            if seenCount < Self.inlineSeen {
                seen[seenCount] = s
                seenCount += 1
                return
            }
            lua_createtable(L, 0, Int32(Self.inlineSeen * 4))
            jr_lua_replace(L, seenSlot)
            seenSpilled = true
            for i in 0..<seenCount { spill(L, seen[i]) }
        }
        spill(L, s)
    }

    private func spill(_ L: LuaState, _ s: Seen) {
        lua_pushlightuserdata(L, UnsafeMutableRawPointer(mutating: s.object))
        lua_pushinteger(L, lua_Integer(s.offset) << 8 | lua_Integer(s.upvalue))
        lua_rawset(L, seenSlot)
    }

    // MARK: - Errors

    /// `<steps>: <message>`, the path below the root rebuilt from the steps
    /// (the entry point prepends the root); long paths keep their first and
    /// last steps.
    private func failure(_ L: LuaState, _ message: String) -> String {
        var path = ""
        let keep = 8
        var i = 0
        while i < stepCount {
            if stepCount > 3 * keep && i == keep {
                path += "<\(stepCount - 2 * keep) more>"
                i = stepCount - keep
                continue
            }
            path += render(L, steps[i])
            i += 1
        }
        return "\(path): \(message)"
    }

    private func render(_ L: LuaState, _ step: Step) -> String {
        switch step {
        case .argument(let i): return "[\(i)]"
        case .keyItself: return " (key)"
        case .upvalue(let f, let u):
            var name = "?"
            if let n = lua_getupvalue(L, f, u) {
                jr_lua_pop(L, 1)
                let s = String(cString: n)
                if !s.isEmpty && s != "(no name)" { name = s } else { name = "#\(u)" }
            }
            return " (upvalue \(name))"
        case .key(let k):
            switch lua_type(L, k) {
            case LUA_TSTRING:
                var len = 0
                let p = UnsafeRawPointer(jr_lua_tostring(L, k, &len)!)
                let b = UnsafeRawBufferPointer(start: p, count: len)
                if let first = b.first, first == 95 || isLetter(first), b.allSatisfy({ $0 == 95 || isLetter($0) || (48...57).contains($0) }) {
                    return "." + String(decoding: b, as: UTF8.self)
                }
                return "[\(quoted(b))]"
            case LUA_TNUMBER:
                if lua_isinteger(L, k) != 0 { return "[\(lua_tointegerx(L, k, nil))]" }
                return "[\(lua_tonumberx(L, k, nil))]"
            case LUA_TBOOLEAN: return lua_toboolean(L, k) != 0 ? "[true]" : "[false]"
            default: return "[<\(String(cString: lua_typename(L, lua_type(L, k))))>]"
            }
        }
    }

    private func isLetter(_ c: UInt8) -> Bool { (65...90).contains(c) || (97...122).contains(c) }

    /// A string key as a Lua literal, cut at 40 bytes.
    private func quoted(_ b: UnsafeRawBufferPointer) -> String {
        var s = "\""
        for c in b.prefix(40) {
            switch c {
            case 34: s += "\\\""
            case 92: s += "\\\\"
            case 32...126: s.unicodeScalars.append(Unicode.Scalar(c))
            default: s += "\\\(c)"
            }
        }
        return s + (b.count > 40 ? "...\"" : "\"")
    }

    /// " (name)" for a C function found in a loaded module, else "".
    /// Debug info cannot name a function that is not running, so we look for
    /// it where scripts get their functions from: `package.loaded[m][k]`.
    private func cFunctionLabel(_ L: LuaState, _ idx: Int32) -> String {
        guard lua_checkstack(L, 6) != 0 else { return "" }
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        guard Lua.rawField(L, jr_registryindex(), "_LOADED") == LUA_TTABLE else { return "" }
        let loaded = lua_gettop(L)
        var budget = 20_000
        lua_pushnil(L)
        while lua_next(L, loaded) != 0 {
            if lua_type(L, -2) == LUA_TSTRING, lua_type(L, -1) == LUA_TTABLE {
                let module = lua_gettop(L)
                lua_pushnil(L)
                while lua_next(L, module) != 0 {
                    budget -= 1
                    if budget < 0 { return "" }
                    if lua_type(L, -2) == LUA_TSTRING, lua_rawequal(L, -1, idx) != 0,
                       let m = Lua.string(L, module - 1), let k = Lua.string(L, -2) {
                        return m == "_G" ? " (\(k))" : " (\(m).\(k))"
                    }
                    jr_lua_pop(L, 1)
                }
            }
            jr_lua_pop(L, 1)
        }
        return ""
    }

    // MARK: - Shared with the decoder

    /// Where standard functions are looked up by name; "_G" names have no prefix.
    static let standardLibraries = ["_G", "string", "table", "math", "io", "os", "coroutine", "utf8", "debug", "package"]

    /// Standard C functions by address, named as in a fresh state. Built once
    /// per process from a private state, so neither a script that renamed or
    /// added globals nor threads (tests) can change the answer; addresses are
    /// the same in every state of the process.
    /// Keyed by address as an integer: a pointer is not Sendable, and the
    /// table is shared by every thread of the process (tests).
    static let standardNames: [UInt: String] = {
        var map: [UInt: String] = [:]
        guard let L = jr_lua_newstate() else { return map }
        defer { lua_close(L) }
        guard jr_openlibs(L) == LUA_OK else { return map }
        lua_getfield(L, jr_registryindex(), "_LOADED")
        for lib in standardLibraries {
            Lua.pushString(L, lib)
            guard lua_rawget(L, -2) == LUA_TTABLE else { jr_lua_pop(L, 1); continue }
            lua_pushnil(L)
            while lua_next(L, -2) != 0 {
                if lua_type(L, -2) == LUA_TSTRING, lua_iscfunction(L, -1) != 0, let f = lua_tocfunction(L, -1), let key = Lua.string(L, -2) {
                    let p = UInt(bitPattern: unsafeBitCast(f, to: UnsafeRawPointer.self))
                    if map[p] == nil { map[p] = lib == "_G" ? key : "\(lib).\(key)" }
                }
                jr_lua_pop(L, 1)
            }
            jr_lua_pop(L, 1)
        }
        return map
    }()
}

/// FNV-1a, 64 bits. Guards sent bytecode: Lua does not verify bytecode, so a
/// damaged function must never be loaded (a corrupt message is an error, not
/// a crash later). `SharedDict` also hashes encoded keys with it.
func fnv1a(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 {
    var h: UInt64 = 0xcbf29ce484222325
    var i = 0
    while i < n {
        h ^= UInt64(p.load(fromByteOffset: i, as: UInt8.self))
        h = h &* 0x100000001b3
        i += 1
    }
    return h
}
