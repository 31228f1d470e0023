import CJobrunShims
import CLua
import Glibc

/// Lua value -> bytes: the one wire format for queue items, process
/// arguments and (later) the distributed mode. Every value is one tag byte
/// followed by its payload; numbers in the payload are LEB128 varints.
///
///     0x00 nil            0x01 false          0x02 true
///     0x03 integer        zigzag varint (integers stay integers)
///     0x04 float          8 bytes, the IEEE bit pattern little-endian (nan, inf, -0.0 survive)
///     0x05 string         varint length, bytes (binary-safe)
///     0x06 table          varint n (array part 1..n), u32 h (hash pairs), n values, h key/value pairs
///     0x07 reference      varint i: the i-th table or function of this message (shared refs, cycles)
///     0x08 Lua function   varint length, u64 FNV-1a of the bytecode, bytecode (lua_dump),
///                         varint u, then u upvalues (each a value, or 0x09 for `_ENV`)
///     0x09 _ENV marker    the receiver binds the upvalue to its own globals
///     0x0A C function     varint length, "lib.name" of a standard-library function
///     0x0B jobrun object  u32 type, u64 arena offset (the receiver gets a handle)
///
/// Tables and functions get reference numbers in the order they are first
/// met, by encoder and decoder alike. Metatables are not sent. Anything else
/// (coroutines, foreign or light userdata, other C functions) is refused with
/// a message naming where it sits: `args[2].on_done: cannot send a coroutine`;
/// an upvalue shows as `item.fn<upvalue co>`.
struct ValueEncoder {
    static let maxDepth = 200

    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private(set) var count = 0

    /// Where the walk is, for error messages: filled as we descend.
    private enum Step { case index(lua_Integer), key(Int32), upvalue(Int32, Int32), argument(Int32) }
    private var steps: [Step] = []
    private var seenIndex: Int32 = 0
    private var nextReference: lua_Integer = 0
    private var rootPath = ""

    init(capacity: Int = 4096) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        steps.reserveCapacity(Self.maxDepth + 2)
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    mutating func reset() { count = 0 }

    // MARK: output

    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if count + n <= capacity { return }
        var c = capacity * 2
        while c < count + n { c *= 2 }
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

    @inline(__always)
    private mutating func varint(_ v: UInt64) {
        reserve(10)
        var v = v
        while v >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: count, as: UInt8.self)
            count += 1
            v >>= 7
        }
        base.storeBytes(of: UInt8(v), toByteOffset: count, as: UInt8.self)
        count += 1
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

    // MARK: entry points

    /// Appends the value at `index`; nil on success, else the error message.
    mutating func encode(_ L: LuaState, _ index: Int32, path: String) -> String? {
        let idx = lua_absindex(L, index)
        let t = lua_type(L, idx)
        // Fast paths: the common queue items need no walk state.
        switch t {
        case LUA_TSTRING:
            var len = 0
            let p = jr_lua_tostring(L, idx, &len)!
            byte(0x05); varint(UInt64(len)); raw(p, len)
            return nil
        case LUA_TNUMBER:
            encodeNumber(L, idx)
            return nil
        case LUA_TNIL: byte(0x00); return nil
        case LUA_TBOOLEAN: byte(lua_toboolean(L, idx) != 0 ? 0x02 : 0x01); return nil
        default: break
        }
        let top = lua_gettop(L)
        rootPath = path
        steps.removeAll(keepingCapacity: true)
        seenIndex = 0
        nextReference = 0
        defer { lua_settop(L, top); seenIndex = 0 }
        let start = count
        if let e = value(L, idx, depth: 0) { count = start; return e }
        return nil
    }

    /// Appends several stack values as one message (varint count, values),
    /// named `<path>[1]`, `<path>[2]`, ...
    mutating func encodeValues(_ L: LuaState, from: Int32, count n: Int32, path: String) -> String? {
        let top = lua_gettop(L)
        rootPath = path
        steps.removeAll(keepingCapacity: true)
        seenIndex = 0
        nextReference = 0
        defer { lua_settop(L, top); seenIndex = 0 }
        let start = count
        varint(UInt64(max(0, n)))
        var i: Int32 = 0
        while i < n {
            steps.append(.argument(i + 1))
            if let e = value(L, lua_absindex(L, from + i), depth: 0) { count = start; return e }
            steps.removeLast()
            i += 1
        }
        return nil
    }

    // MARK: the walk

    private mutating func encodeNumber(_ L: LuaState, _ idx: Int32) {
        if lua_isinteger(L, idx) != 0 {
            let v = Int64(lua_tointegerx(L, idx, nil))
            byte(0x03)
            varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
        } else {
            byte(0x04)
            fixed(lua_tonumberx(L, idx, nil).bitPattern)
        }
    }

    private mutating func value(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        switch lua_type(L, idx) {
        case LUA_TNIL: byte(0x00)
        case LUA_TBOOLEAN: byte(lua_toboolean(L, idx) != 0 ? 0x02 : 0x01)
        case LUA_TNUMBER: encodeNumber(L, idx)
        case LUA_TSTRING:
            var len = 0
            let p = jr_lua_tostring(L, idx, &len)!
            byte(0x05); varint(UInt64(len)); raw(p, len)
        case LUA_TTABLE: return table(L, idx, depth: depth)
        case LUA_TFUNCTION: return function(L, idx, depth: depth)
        case LUA_TUSERDATA:
            if let h = ObjectHandle.check(L, idx) {
                byte(0x0B); fixed(h.type); fixed(h.offset)
            } else {
                return failure(L, "cannot send a userdata (\(Lua.typeName(L, idx)))")
            }
        case LUA_TLIGHTUSERDATA: return failure(L, "cannot send a light userdata")
        case LUA_TTHREAD: return failure(L, "cannot send a coroutine")
        default: return failure(L, "cannot send a \(Lua.typeName(L, idx))")
        }
        return nil
    }

    /// Writes a back-reference if the table/function at `idx` was seen;
    /// otherwise numbers it and returns false.
    private mutating func seen(_ L: LuaState, _ idx: Int32) -> Bool {
        if seenIndex == 0 {
            lua_createtable(L, 0, 4)
            seenIndex = lua_gettop(L)
        }
        lua_pushvalue(L, idx)
        if lua_rawget(L, seenIndex) == LUA_TNUMBER {
            let ref = lua_tointegerx(L, -1, nil)
            jr_lua_pop(L, 1)
            byte(0x07); varint(UInt64(ref))
            return true
        }
        jr_lua_pop(L, 1)
        lua_pushvalue(L, idx)
        lua_pushinteger(L, nextReference)
        lua_rawset(L, seenIndex)
        nextReference += 1
        return false
    }

    private mutating func table(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        if depth >= Self.maxDepth {
            return failure(L, "value nested too deeply (more than \(Self.maxDepth) levels)")
        }
        if lua_checkstack(L, 8) == 0 { return failure(L, "value nested too deeply (Lua stack exhausted)") }
        if seen(L, idx) { return nil }
        let n = lua_rawlen(L, idx)
        byte(0x06)
        varint(UInt64(n))
        let hashCountAt = count
        fixed(UInt32(0))
        var i: lua_Integer = 1
        while i <= lua_Integer(n) {
            lua_rawgeti(L, idx, i)
            steps.append(.index(i))
            if let e = value(L, lua_gettop(L), depth: depth + 1) { return e }
            steps.removeLast()
            jr_lua_pop(L, 1)
            i += 1
        }
        var pairs: UInt32 = 0
        lua_pushnil(L)
        while lua_next(L, idx) != 0 {
            let keyIndex = lua_gettop(L) - 1
            if lua_isinteger(L, keyIndex) != 0 {
                let k = lua_tointegerx(L, keyIndex, nil)
                if k >= 1 && k <= lua_Integer(n) { jr_lua_pop(L, 1); continue }
            }
            steps.append(.key(keyIndex))
            if let e = value(L, keyIndex, depth: depth + 1) { return e }
            if let e = value(L, keyIndex + 1, depth: depth + 1) { return e }
            steps.removeLast()
            jr_lua_pop(L, 1)
            pairs += 1
        }
        (base + hashCountAt).storeBytes(of: pairs.littleEndian, as: UInt32.self)
        return nil
    }

    private mutating func function(_ L: LuaState, _ idx: Int32, depth: Int) -> String? {
        if lua_iscfunction(L, idx) != 0 {
            let hasUpvalues = lua_getupvalue(L, idx, 1) != nil
            if hasUpvalues { jr_lua_pop(L, 1) }
            guard !hasUpvalues, var qualified = StandardFunctions.name(L, idx) else {
                return failure(L, "cannot send a C function (only standard library functions can be sent)")
            }
            byte(0x0A)
            qualified.withUTF8 { varint(UInt64($0.count)); raw($0.baseAddress!, $0.count) }
            return nil
        }
        if depth >= Self.maxDepth {
            return failure(L, "value nested too deeply (more than \(Self.maxDepth) levels)")
        }
        if lua_checkstack(L, 8) == 0 { return failure(L, "value nested too deeply (Lua stack exhausted)") }
        if seen(L, idx) { return nil }
        lua_pushvalue(L, idx)
        var len = 0
        guard let code = jr_lua_dump(L, 0, &len) else {
            jr_lua_pop(L, 1)
            return failure(L, "cannot send this function (lua_dump failed)")
        }
        jr_lua_pop(L, 1)
        byte(0x08)
        varint(UInt64(len))
        fixed(fnv1a(UnsafeRawPointer(code), len))
        raw(code, len)
        free(code)
        var ups: Int32 = 0
        while let _ = lua_getupvalue(L, idx, ups + 1) { jr_lua_pop(L, 1); ups += 1 }
        varint(UInt64(ups))
        var u: Int32 = 1
        while u <= ups {
            let upName = lua_getupvalue(L, idx, u)
            if jr_lua_upvalue_is_env(upName) != 0 {
                byte(0x09)
            } else {
                steps.append(.upvalue(idx, u))
                if let e = value(L, lua_gettop(L), depth: depth + 1) { return e }
                steps.removeLast()
            }
            jr_lua_pop(L, 1)
            u += 1
        }
        return nil
    }

    // MARK: errors

    /// "<path>: <message>", the path rebuilt from the walk's steps.
    private func failure(_ L: LuaState, _ message: String) -> String {
        var path = rootPath
        for step in steps {
            switch step {
            case .argument(let i): path += "[\(i)]"
            case .index(let i): path += "[\(i)]"
            case .upvalue(let f, let u):
                let name = lua_getupvalue(L, f, u).map { String(cString: $0) } ?? "?"
                if lua_gettop(L) > 0 { jr_lua_pop(L, 1) }
                path += "<upvalue \(name)>"
            case .key(let k):
                switch lua_type(L, k) {
                case LUA_TSTRING:
                    let s = Lua.string(L, k) ?? "?"
                    if s.first.map({ $0.isLetter || $0 == "_" }) == true,
                       s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) {
                        path += ".\(s)"
                    } else {
                        path += "[\"\(s)\"]"
                    }
                case LUA_TNUMBER:
                    if lua_isinteger(L, k) != 0 { path += "[\(lua_tointegerx(L, k, nil))]" }
                    else { path += "[\(lua_tonumberx(L, k, nil))]" }
                case LUA_TBOOLEAN: path += lua_toboolean(L, k) != 0 ? "[true]" : "[false]"
                default: path += "[<\(Lua.typeName(L, k)) key>]"
                }
            }
        }
        return "\(path): \(message)"
    }
}

/// FNV-1a over the bytecode: a sent function is loaded only if it arrived intact.
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
