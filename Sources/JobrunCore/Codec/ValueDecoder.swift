import CJobrunShims
import CLua
import Glibc

/// Bytes -> Lua value, the inverse of `ValueEncoder` (whose header documents
/// the format). It trusts nothing it reads: every length and count is checked
/// against the bytes left, nesting is bounded, the Lua stack is grown before
/// anything is pushed, table keys that would make Lua raise (nil, NaN) are
/// refused, and sent bytecode is loaded only when its checksum matches
/// (Lua does not verify bytecode). So any byte string gives a value or an
/// error, never a crash, and on error the stack is as it was.
///
/// Adopting (the message's handles' references are handed over, see
/// ObjectTable.swift), a decode that fails drops the references of the
/// handles it did not reach; those it reached are its handles' now, and go
/// with them (`__gc`). So a refused message leaks no object.
enum ValueDecoder {
    /// Pushes exactly one value and returns nil, or pushes nothing and
    /// returns "corrupt message: ...".
    static func decode(_ L: LuaState, _ bytes: UnsafeRawBufferPointer, adopting: Bool = false) -> String? {
        guard let p = bytes.baseAddress, bytes.count > 0 else { return "corrupt message: empty" }
        // Fast path: a scalar (the common queue item) needs no slot for
        // remembered objects, and pushes nothing when it fails.
        if p.load(as: UInt8.self) <= 0x05 {
            guard lua_checkstack(L, 1) != 0 else { return "corrupt message: Lua stack exhausted" }
            var d = Decoding(p, bytes.count, at: 0, refs: 0, adopting: adopting)
            if let e = d.value(L, depth: 0) { return "corrupt message: \(e)" }
            if d.left != 0 { jr_lua_pop(L, 1); return "corrupt message: \(d.left) bytes after the value" }
            return nil
        }
        let top = lua_gettop(L)
        var d = Decoding(p, bytes.count, at: 0, refs: top + 1, adopting: adopting)
        guard lua_checkstack(L, 10) != 0 else { return d.failed("Lua stack exhausted") }
        lua_pushnil(L)                  // slot for the table of remembered objects
        if let e = d.value(L, depth: 0) { lua_settop(L, top); return d.failed(e) }
        if d.left != 0 { lua_settop(L, top); return d.failed("\(d.left) bytes after the value") }
        jr_lua_remove(L, top + 1)
        return nil
    }

    /// Pushes the values of an `encodeValues` message and returns how many;
    /// on error pushes nothing and returns (0, message).
    static func decodeValues(_ L: LuaState, _ bytes: UnsafeRawBufferPointer, adopting: Bool = false) -> (Int32, String?) {
        guard let p = bytes.baseAddress, bytes.count > 0 else { return (0, "corrupt message: empty") }
        let top = lua_gettop(L)
        var d = Decoding(p, bytes.count, at: 0, refs: top + 1, adopting: adopting)
        // Every value takes at least one byte.
        guard let n = d.varint(), n <= UInt64(d.left) else { return (0, d.failed("bad value count", values: true)) }
        guard n < 1_000_000, lua_checkstack(L, Int32(n) + 10) != 0 else {
            return (0, d.failed("too many values (\(n))", values: true))
        }
        lua_pushnil(L)
        var i: UInt64 = 0
        while i < n {
            if let e = d.value(L, depth: 0) { lua_settop(L, top); return (0, d.failed(e, values: true)) }
            i += 1
        }
        if d.left != 0 { lua_settop(L, top); return (0, d.failed("\(d.left) bytes after the values", values: true)) }
        jr_lua_remove(L, top + 1)
        return (Int32(n), nil)
    }

    /// Where `decode(_:_:spreading:into:)` puts the values of the spread field.
    enum Destination {
        /// Into the table at this (absolute) stack index, from index `first`.
        case table(Int32, first: lua_Integer)
        /// Where `routes[message[key]]` says: `routes` is the table at this
        /// (absolute) stack index, `key` a field before the spread one, and
        /// the route a table `{t, first, count}` (by position): into `t` from
        /// `first`, when the spread field holds exactly `count` values.
        case routed(routes: Int32, key: Int)
    }

    /// Pushes a message that is a plain array `{v1, ..., vm}` as `decode`
    /// does, except that its field `field`, itself a plain array, is decoded
    /// straight into `destination`, and that table is the field's value. So a
    /// receiver of chunks of a list (Pool's tasks and results) copies no item
    /// and makes no table per chunk. Any other message, or one whose
    /// destination is not there or of another size, decodes as `decode` would.
    /// The decoder reads nothing of the destination but what is described
    /// above: the Lua side decides what the fields mean.
    static func decode(_ L: LuaState, _ bytes: UnsafeRawBufferPointer, spreading field: Int,
                       into destination: Destination, adopting: Bool = false) -> String? {
        let top = lua_gettop(L)
        guard let p = bytes.baseAddress else { return decode(L, bytes, adopting: adopting) }
        var d = Decoding(p, bytes.count, at: 0, refs: top + 1, adopting: adopting)
        guard let m = d.plainArrayCount(), field >= 1, UInt64(field) <= UInt64(m) else { return decode(L, bytes, adopting: adopting) }
        guard lua_checkstack(L, 16) != 0 else { return d.failed("Lua stack exhausted") }
        lua_pushnil(L)                  // slot for the table of remembered objects
        d.at = 9
        lua_createtable(L, Int32(min(m, 64)), 0)
        let msg = top + 2
        if let e = d.values(L, into: msg, first: 1, count: UInt64(field - 1), depth: 1) {
            lua_settop(L, top); return d.failed(e)
        }
        // The destination, when the field is a plain array (of the route's size).
        var placed = false
        if let count = d.plainArrayCount() {
            let n = lua_Integer(count)
            var target: (table: Int32, first: lua_Integer)? = nil
            switch destination {
            case .table(let t, let first):
                if first >= 1, first <= lua_Integer.max - n { target = (t, first) }
            case .routed(let routes, let key):
                // Raw reads only: nothing here can run Lua code or raise.
                if key >= 1, key < field, lua_rawgeti(L, msg, lua_Integer(key)) != LUA_TNIL,
                   lua_rawget(L, routes) == LUA_TTABLE {
                    let route = lua_gettop(L)
                    var ok: Int32 = 0
                    let table = lua_rawgeti(L, route, 1) == LUA_TTABLE ? lua_gettop(L) : 0
                    lua_rawgeti(L, route, 2)
                    let first = lua_tointegerx(L, -1, &ok)
                    let size = lua_rawgeti(L, route, 3) == LUA_TNUMBER ? lua_tointegerx(L, -1, nil) : -1
                    if table != 0, ok != 0, size == n, first >= 1, first <= lua_Integer.max - n {
                        target = (table, first)
                    }
                }
            }
            if let (t, first) = target {
                d.at += 9
                if let e = d.values(L, into: t, first: first, count: UInt64(count), depth: 2) {
                    lua_settop(L, top); return d.failed(e)
                }
                lua_pushvalue(L, t)
                placed = true
            }
        }
        if !placed {
            lua_settop(L, msg)
            if let e = d.value(L, depth: 1) { lua_settop(L, top); return d.failed(e) }
        }
        lua_rawseti(L, msg, lua_Integer(field))
        lua_settop(L, msg)
        if let e = d.values(L, into: msg, first: lua_Integer(field) + 1, count: UInt64(m) - UInt64(field), depth: 1) {
            lua_settop(L, top); return d.failed(e)
        }
        if d.left != 0 { lua_settop(L, top); return d.failed("\(d.left) bytes after the value") }
        jr_lua_remove(L, top + 1)
        return nil
    }

    /// A cursor over the message plus the decoding state. Error texts are
    /// built only when something is wrong.
    private struct Decoding {
        let base: UnsafeRawPointer
        let end: Int
        var at: Int
        /// Stack slot of the table of remembered objects (tag offset -> object).
        let refs: Int32
        var hasRefs = false
        /// The handles' references are the message's to hand over (ObjectTable.swift).
        var adopting = false

        init(_ base: UnsafeRawPointer, _ end: Int, at: Int, refs: Int32, adopting: Bool = false) {
            self.base = base
            self.end = end
            self.at = at
            self.refs = refs
            self.adopting = adopting
        }

        /// The decode failed (the stack already as it was): adopting, the
        /// references of the handles it did not reach go, as the message is
        /// dropped. Those before the cursor were read in order, adopted or
        /// refused (a stale or forged one holds no reference). `values`: an
        /// `encodeValues` message. Returns the error text.
        func failed(_ reason: String, values: Bool = false) -> String {
            if adopting {
                let bytes = UnsafeRawBufferPointer(start: base, count: end)
                let reached = at
                let drop = { (h: ValueScan.Handle) in if h.at >= reached { ObjectTable.release(h) } }
                if values { ValueScan.forEachHandleInValues(bytes, drop) } else { ValueScan.forEachHandle(bytes, drop) }
            }
            return "corrupt message: \(reason)"
        }

        var left: Int { end - at }
        var pointer: UnsafePointer<CChar> { (base + at).assumingMemoryBound(to: CChar.self) }

        @inline(__always)
        mutating func u8() -> UInt8? {
            guard at < end else { return nil }
            defer { at += 1 }
            return base.load(fromByteOffset: at, as: UInt8.self)
        }

        @inline(__always)
        mutating func varint() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while at < end {
                let b = base.load(fromByteOffset: at, as: UInt8.self)
                at += 1
                if shift == 63 && b > 1 { return nil }      // more than 64 bits
                v |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
                if shift > 63 { return nil }
            }
            return nil
        }

        @inline(__always)
        mutating func fixed<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard left >= MemoryLayout<T>.size else { return nil }
            defer { at += MemoryLayout<T>.size }
            return T(littleEndian: base.loadUnaligned(fromByteOffset: at, as: T.self))
        }

        /// A byte count that fits in what is left.
        mutating func length() -> Int? {
            guard let n = varint(), n <= UInt64(left) else { return nil }
            return Int(n)
        }

        /// Remembers the value at the top under the offset of its tag.
        mutating func remember(_ L: LuaState, _ tagAt: Int) {
            if !hasRefs {
                lua_createtable(L, 0, 4)
                jr_lua_replace(L, refs)
                hasRefs = true
            }
            lua_pushvalue(L, -1)
            lua_rawseti(L, refs, lua_Integer(tagAt))
        }

        /// Pushes the remembered object whose tag was at `offset` (< `before`); false if none.
        mutating func recall(_ L: LuaState, _ offset: UInt64, before: Int) -> Bool {
            guard hasRefs, offset <= UInt64(before) else { return false }
            if lua_rawgeti(L, refs, lua_Integer(offset)) == LUA_TNIL { jr_lua_pop(L, 1); return false }
            return true
        }

        /// Pushes one value. The caller has made room for it and 6 more slots.
        mutating func value(_ L: LuaState, depth: Int) -> String? {
            let tagAt = at
            guard let tag = u8() else { return "truncated at byte \(tagAt)" }
            switch tag {
            case 0x00: lua_pushnil(L)
            case 0x01: lua_pushboolean(L, 0)
            case 0x02: lua_pushboolean(L, 1)
            case 0x03:
                guard let z = varint() else { return "bad integer at byte \(tagAt)" }
                lua_pushinteger(L, lua_Integer(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))))
            case 0x04:
                guard let bits = fixed(UInt64.self) else { return "truncated float at byte \(tagAt)" }
                lua_pushnumber(L, Double(bitPattern: bits))
            case 0x05:
                guard let n = length() else { return "bad string length at byte \(tagAt)" }
                lua_pushlstring(L, pointer, n)
                at += n
            case 0x06, 0x86:
                return table(L, depth: depth, tagAt: tagAt, remembered: tag & 0x80 != 0)
            case 0x07:
                guard let o = varint(), recall(L, o, before: tagAt) else { return "bad reference at byte \(tagAt)" }
            case 0x08, 0x88:
                return function(L, depth: depth, tagAt: tagAt, remembered: tag & 0x80 != 0)
            case 0x09: jr_lua_pushglobaltable(L)
            case 0x0B:
                return cFunction(L, tagAt: tagAt)
            case 0x0C:
                return object(L, tagAt: tagAt)
            case 0x0D, 0x8D:
                return process(L, tagAt: tagAt, remembered: tag & 0x80 != 0)
            default:
                return "unknown tag 0x\(String(tag, radix: 16)) at byte \(tagAt)"
            }
            return nil
        }

        /// Decodes `n` values into t[first], t[first + 1], ... (lua_rawseti).
        @inline(__always)
        mutating func values(_ L: LuaState, into t: Int32, first: lua_Integer, count n: UInt64, depth: Int) -> String? {
            var k: UInt64 = 0
            while k < n {
                if let e = value(L, depth: depth) { return e }
                lua_rawseti(L, t, first + lua_Integer(k))
                k += 1
            }
            return nil
        }

        /// The number of values of the plain array (a table without pairs,
        /// not referenced later) whose header is at the cursor; nil if
        /// something else is there. The cursor does not move.
        func plainArrayCount() -> UInt32? {
            guard left >= 9, base.load(fromByteOffset: at, as: UInt8.self) == 0x06,
                  base.loadUnaligned(fromByteOffset: at + 5, as: UInt32.self) == 0 else { return nil }
            return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: at + 1, as: UInt32.self))
        }

        mutating func table(_ L: LuaState, depth: Int, tagAt: Int, remembered: Bool) -> String? {
            if depth >= ValueEncoder.maxDepth { return "nested too deeply at byte \(tagAt)" }
            // Each array value takes at least 1 byte, each pair 2.
            guard let n = fixed(UInt32.self), let h = fixed(UInt32.self), UInt64(n) + UInt64(h) * 2 <= UInt64(left) else {
                return "bad table header at byte \(tagAt)"
            }
            guard lua_checkstack(L, 8) != 0 else { return "Lua stack exhausted at byte \(tagAt)" }
            // Presize, but never more than a garbage header could make us allocate for nothing.
            lua_createtable(L, Int32(min(n, 1 << 20)), Int32(min(h, 1 << 20)))
            if remembered { remember(L, tagAt) }
            let t = lua_gettop(L)
            if let e = values(L, into: t, first: 1, count: UInt64(n), depth: depth + 1) { return e }
            var k: UInt32 = 0
            while k < h {
                let keyAt = at
                if let e = value(L, depth: depth + 1) { return e }
                if let e = value(L, depth: depth + 1) { return e }
                // lua_rawset raises on these keys: refuse them first.
                switch lua_type(L, -2) {
                case LUA_TNIL: return "nil table key at byte \(keyAt)"
                case LUA_TNUMBER where lua_isinteger(L, -2) == 0 && lua_tonumberx(L, -2, nil).isNaN:
                    return "NaN table key at byte \(keyAt)"
                default: break
                }
                lua_rawset(L, t)
                k += 1
            }
            return nil
        }

        mutating func function(_ L: LuaState, depth: Int, tagAt: Int, remembered: Bool) -> String? {
            if depth >= ValueEncoder.maxDepth { return "nested too deeply at byte \(tagAt)" }
            guard let n = varint(), let sum = fixed(UInt64.self), n <= UInt64(left) else {
                return "bad function at byte \(tagAt)"
            }
            guard fnv1a(base + at, Int(n)) == sum else {
                return "function bytecode damaged (checksum mismatch) at byte \(tagAt)"
            }
            guard lua_checkstack(L, 8) != 0 else { return "Lua stack exhausted at byte \(tagAt)" }
            if luaL_loadbufferx(L, pointer, Int(n), "=?", "b") != LUA_OK {
                let e = Lua.string(L, -1) ?? "?"
                jr_lua_pop(L, 1)
                return "cannot load function at byte \(tagAt): \(e)"
            }
            at += Int(n)
            if remembered { remember(L, tagAt) }
            let f = lua_gettop(L)
            guard let ups = u8() else { return "truncated function at byte \(tagAt)" }
            // The count must be the bytecode's, so every lua_setupvalue below lands.
            let upvalues = Int32(ups)
            if upvalues > 0 {
                guard lua_getupvalue(L, f, upvalues) != nil else { return "bad upvalue count at byte \(tagAt)" }
                jr_lua_pop(L, 1)
            }
            if lua_getupvalue(L, f, upvalues + 1) != nil { jr_lua_pop(L, 1); return "bad upvalue count at byte \(tagAt)" }
            var u: Int32 = 1
            while u <= upvalues {
                let upAt = at
                guard at < end else { return "truncated function at byte \(tagAt)" }
                switch base.load(fromByteOffset: at, as: UInt8.self) {
                case 0x0A:
                    at += 1
                    guard let o = varint(), let i = u8(), recall(L, o, before: tagAt) else {
                        return "bad joined upvalue at byte \(upAt)"
                    }
                    // lua_upvaluejoin checks nothing: both must be Lua functions with those upvalues.
                    let other = lua_gettop(L)
                    guard lua_type(L, other) == LUA_TFUNCTION, lua_iscfunction(L, other) == 0, i >= 1,
                          lua_getupvalue(L, other, Int32(i)) != nil else {
                        return "bad joined upvalue at byte \(upAt)"
                    }
                    jr_lua_pop(L, 1)
                    lua_upvaluejoin(L, f, u, other, Int32(i))
                    jr_lua_pop(L, 1)
                default:
                    if let e = value(L, depth: depth + 1) { return e }
                    _ = lua_setupvalue(L, f, u)
                }
                u += 1
            }
            return nil
        }

        mutating func cFunction(_ L: LuaState, tagAt: Int) -> String? {
            guard let n = length(), n > 0, n <= 64 else { return "bad function name at byte \(tagAt)" }
            let name = UnsafeRawBufferPointer(start: base + at, count: n)
            at += n
            let dot = name.firstIndex(of: 46)
            let lib = dot.map { UnsafeRawBufferPointer(rebasing: name[..<$0]) } ?? UnsafeRawBufferPointer(start: nil, count: 0)
            let key = dot.map { UnsafeRawBufferPointer(rebasing: name[($0 + 1)...]) } ?? name
            let libName = dot == nil ? "_G" : String(decoding: lib, as: UTF8.self)
            let top = lua_gettop(L)
            if !key.isEmpty, ValueEncoder.standardLibraries.contains(libName),
               Lua.rawField(L, jr_registryindex(), "_LOADED") == LUA_TTABLE {
                Lua.pushString(L, libName)
                if lua_rawget(L, -2) == LUA_TTABLE {
                    lua_pushlstring(L, key.baseAddress!.assumingMemoryBound(to: CChar.self), key.count)
                    if lua_rawget(L, -2) == LUA_TFUNCTION {
                        jr_lua_replace(L, top + 1)
                        lua_settop(L, top + 1)
                        return nil
                    }
                }
            }
            lua_settop(L, top)
            return "unknown standard function \"\(String(decoding: name, as: UTF8.self))\" at byte \(tagAt)"
        }

        /// A Process sent as who it is (0x0D): a Process object of the
        /// receiver's, `{_s = {pid, name, daemon, parent, started}}` with the
        /// prelude's metatable (registry "jobrun.Process"), so `is_alive`,
        /// `exitcode` and `join`'s rules work as for any Process held by a
        /// process that is not its parent.
        mutating func process(_ L: LuaState, tagAt: Int, remembered: Bool) -> String? {
            guard let pid = varint(), let parent = varint(), let daemon = u8(), let n = length(),
                  pid <= UInt64(Int32.max), parent <= UInt64(Int32.max) else {
                return "bad Process at byte \(tagAt)"
            }
            lua_createtable(L, 0, 1)
            if remembered { remember(L, tagAt) }
            lua_createtable(L, 0, 6)
            lua_pushlstring(L, pointer, n); lua_setfield(L, -2, "name")
            at += n
            lua_pushinteger(L, lua_Integer(pid)); lua_setfield(L, -2, "pid")
            if parent != 0 { lua_pushinteger(L, lua_Integer(parent)); lua_setfield(L, -2, "parent") }
            lua_pushboolean(L, daemon != 0 ? 1 : 0); lua_setfield(L, -2, "daemon")
            lua_pushboolean(L, 1); lua_setfield(L, -2, "started")
            if pid == UInt64(getpid()) { lua_pushboolean(L, 1); lua_setfield(L, -2, "current") }
            lua_setfield(L, -2, "_s")
            if jr_luaL_getmetatable(L, "jobrun.Process") == LUA_TTABLE { lua_setmetatable(L, -2) } else { jr_lua_pop(L, 1) }
            return nil
        }

        mutating func object(_ L: LuaState, tagAt: Int) -> String? {
            guard let type = fixed(UInt32.self), let slot = fixed(UInt32.self), let generation = fixed(UInt32.self) else {
                return "truncated object at byte \(tagAt)"
            }
            guard Arena.isAttached else { return "a jobrun object outside a run (no shared memory) at byte \(tagAt)" }
            guard let name = ObjectHandle.metatableName(type) else { return "unknown object type \(type) at byte \(tagAt)" }
            let offset: UInt64
            switch ObjectTable.lookup(slot: slot, generation: generation, type: type) {
            case .success(let off): offset = off
            case .failure(.noSuchSlot): return "bad object handle (no object \(slot)) at byte \(tagAt)"
            case .failure(.stale): return "stale object handle: the \(name.dropFirst(7)) it named was freed (byte \(tagAt))"
            case .failure(.mistyped(let actual)):
                return "bad object handle: a \(name.dropFirst(7)) handle naming a \(ObjectHandle.metatableName(actual)?.dropFirst(7) ?? "different object") (byte \(tagAt))"
            }
            // Adopting: the message's reference becomes this process's
            // (a consumed copy); else a new one is taken (the copy stays).
            if !adopting {
                guard ObjectTable.retain(slot, generation: generation) else {
                    return "stale object handle: the \(name.dropFirst(7)) it named was freed (byte \(tagAt))"
                }
            }
            ObjectHandle.push(L, ObjectHandle(offset: offset, slot: slot, generation: generation, type: type))
            ObjectTable.noteHandle(slot, adopted: true)
            // A Pipe end received is held by this process (PipeHolders).
            if type == UInt32(JR_OBJ_PIPE_END0) || type == UInt32(JR_OBJ_PIPE_END1) {
                PipeHolders.hold(offset, type == UInt32(JR_OBJ_PIPE_END0) ? 0 : 1)
            }
            return nil
        }
    }
}
