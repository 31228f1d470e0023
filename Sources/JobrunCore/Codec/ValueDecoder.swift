import CJobrunShims
import CLua

/// Bytes -> Lua value, the inverse of `ValueEncoder` (whose header documents
/// the format). It never trusts its input: every length and count is checked
/// against the bytes left, nesting is bounded, and sent bytecode is loaded
/// only when its checksum matches, so no byte string can crash it.
enum ValueDecoder {
    /// Pushes exactly one value, or nothing and returns the error.
    static func decode(_ L: LuaState, _ bytes: UnsafeRawBufferPointer) -> String? {
        // Fast path: a string item.
        if bytes.count >= 2, bytes[0] == 0x05 {
            var r = Reader(bytes: bytes, at: 1)
            if let n = r.varint(), n == UInt64(bytes.count - r.at) {
                _ = lua_pushlstring(L, bytes.baseAddress!.assumingMemoryBound(to: CChar.self) + r.at, Int(n))
                return nil
            }
        }
        let top = lua_gettop(L)
        var d = Decoding(reader: Reader(bytes: bytes, at: 0))
        if let e = d.value(L, depth: 0) { lua_settop(L, top); return "corrupt message: \(e)" }
        if d.reader.at != bytes.count { lua_settop(L, top); return "corrupt message: \(bytes.count - d.reader.at) trailing bytes" }
        if d.refs != 0 { jr_lua_remove(L, d.refs) }
        return nil
    }

    /// Pushes the values of an `encodeValues` message; returns their count.
    static func decodeValues(_ L: LuaState, _ bytes: UnsafeRawBufferPointer) -> (Int32, String?) {
        let top = lua_gettop(L)
        var d = Decoding(reader: Reader(bytes: bytes, at: 0))
        guard let n = d.reader.varint(), n <= UInt64(bytes.count) else { return (0, "corrupt message: bad count") }
        var i: UInt64 = 0
        while i < n {
            if lua_checkstack(L, 4) == 0 { lua_settop(L, top); return (0, "too many values") }
            if let e = d.value(L, depth: 0) { lua_settop(L, top); return (0, "corrupt message: \(e)") }
            i += 1
        }
        if d.reader.at != bytes.count { lua_settop(L, top); return (0, "corrupt message: trailing bytes") }
        if d.refs != 0 { jr_lua_remove(L, d.refs) }
        return (Int32(n), nil)
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var at: Int

        var left: Int { bytes.count - at }

        @inline(__always)
        mutating func byte() -> UInt8? {
            guard at < bytes.count else { return nil }
            defer { at += 1 }
            return bytes[at]
        }

        @inline(__always)
        mutating func varint() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while let b = byte() {
                if shift > 63 { return nil }
                v |= UInt64(b & 0x7f) << shift
                if b & 0x80 == 0 { return v }
                shift += 7
            }
            return nil
        }

        mutating func fixed<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard left >= MemoryLayout<T>.size else { return nil }
            defer { at += MemoryLayout<T>.size }
            return T(littleEndian: bytes.baseAddress!.loadUnaligned(fromByteOffset: at, as: T.self))
        }

        /// A length that must fit in what is left.
        mutating func length() -> Int? {
            guard let n = varint(), n <= UInt64(left) else { return nil }
            return Int(n)
        }

        var pointer: UnsafePointer<CChar> { (bytes.baseAddress! + at).assumingMemoryBound(to: CChar.self) }
    }

    private struct Decoding {
        var reader: Reader
        /// Stack index of the table of tables/functions by reference number (0: none yet).
        var refs: Int32 = 0
        var nextRef: lua_Integer = 0

        mutating func remember(_ L: LuaState) {
            if refs == 0 {
                lua_createtable(L, 8, 0)
                jr_lua_insert(L, -2)
                refs = lua_gettop(L) - 1
            }
            lua_pushvalue(L, -1)
            lua_rawseti(L, refs, nextRef + 1)
            nextRef += 1
        }

        mutating func value(_ L: LuaState, depth: Int) -> String? {
            if depth > ValueEncoder.maxDepth + 1 { return "nested too deeply" }
            if lua_checkstack(L, 6) == 0 { return "Lua stack exhausted" }
            guard let tag = reader.byte() else { return "truncated" }
            switch tag {
            case 0x00: lua_pushnil(L)
            case 0x01: lua_pushboolean(L, 0)
            case 0x02: lua_pushboolean(L, 1)
            case 0x03:
                guard let z = reader.varint() else { return "truncated integer" }
                lua_pushinteger(L, lua_Integer(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))))
            case 0x04:
                guard let bits = reader.fixed(UInt64.self) else { return "truncated float" }
                lua_pushnumber(L, Double(bitPattern: bits))
            case 0x05:
                guard let n = reader.length() else { return "bad string length" }
                _ = lua_pushlstring(L, reader.pointer, n)
                reader.at += n
            case 0x06: return table(L, depth: depth)
            case 0x07:
                guard let i = reader.varint(), refs != 0, i < UInt64(nextRef) else { return "bad reference" }
                lua_rawgeti(L, refs, lua_Integer(i) + 1)
            case 0x08: return function(L, depth: depth)
            case 0x0A:
                guard let n = reader.length() else { return "bad function name" }
                let name = String(decoding: UnsafeRawBufferPointer(start: reader.pointer, count: n), as: UTF8.self)
                reader.at += n
                if !StandardFunctions.push(L, name) { return "unknown standard function \(name)" }
            case 0x0B:
                guard let type = reader.fixed(UInt32.self), let offset = reader.fixed(UInt64.self) else { return "truncated object" }
                guard offset > 0, offset < Arena.reservedBytes, Arena.isAttached else { return "bad object offset" }
                if !ObjectHandle.push(L, ObjectHandle(offset: offset, type: type)) { return "unknown object type \(type)" }
            default:
                return "unknown tag \(tag)"
            }
            return nil
        }

        mutating func table(_ L: LuaState, depth: Int) -> String? {
            guard let n = reader.varint(), n <= UInt64(reader.left), let h = reader.fixed(UInt32.self),
                  UInt64(h) * 2 <= UInt64(reader.left) else { return "bad table header" }
            lua_createtable(L, Int32(min(n, 1 << 20)), Int32(min(UInt64(h), 1 << 20)))
            remember(L)
            let t = lua_gettop(L)
            var i: UInt64 = 1
            while i <= n {
                if let e = value(L, depth: depth + 1) { return e }
                lua_rawseti(L, t, lua_Integer(i))
                i += 1
            }
            var k: UInt32 = 0
            while k < h {
                if let e = value(L, depth: depth + 1) { return e }
                if let e = value(L, depth: depth + 1) { return e }
                let kt = lua_type(L, -2)
                if kt == LUA_TNIL { return "nil table key" }
                if kt == LUA_TNUMBER, lua_isinteger(L, -2) == 0, lua_tonumberx(L, -2, nil).isNaN { return "NaN table key" }
                lua_rawset(L, t)
                k += 1
            }
            return nil
        }

        mutating func function(_ L: LuaState, depth: Int) -> String? {
            guard let n = reader.length(), let sum = reader.fixed(UInt64.self), n <= reader.left else { return "bad function" }
            let code = UnsafeRawPointer(reader.pointer)
            guard fnv1a(code, n) == sum else { return "function bytecode damaged (checksum mismatch)" }
            if luaL_loadbufferx(L, reader.pointer, n, "=(sent function)", "b") != LUA_OK {
                let e = Lua.string(L, -1) ?? "?"
                jr_lua_pop(L, 1)
                return "cannot load function: \(e)"
            }
            reader.at += n
            remember(L)
            let f = lua_gettop(L)
            guard let ups = reader.varint(), ups <= 255 else { return "bad upvalue count" }
            var u: Int32 = 1
            while u <= Int32(ups) {
                if reader.left > 0, reader.bytes[reader.at] == 0x09 {
                    reader.at += 1
                    jr_lua_pushglobaltable(L)
                } else if let e = value(L, depth: depth + 1) {
                    return e
                }
                if lua_setupvalue(L, f, u) == nil { jr_lua_pop(L, 1) }
                u += 1
            }
            return nil
        }
    }
}
