import Atomics
import CJobrunShims
import CLua
import Glibc

/// `jobrun.Dict` (shared dictionary) and `jobrun.Value` (shared number).
/// `d[k]` reads, `d[k] = v` writes (nil deletes), `#d` counts, `pairs(d)`
/// iterates a snapshot; method names win over keys of the same name, so a key
/// called "get" is read with `d:get("get")`. `update` is in the prelude.
enum DictBindings {
    static let dictName = "jobrun.Dict"
    static let methodsKey = "jobrun.Dict.methods"

    static func register(_ L: LuaState) {
        luaL_newmetatable(L, dictName)
        lua_pushboolean(L, 1); lua_setfield(L, -2, "__jobrun")
        Lua.setFunction(L, "__index", index)
        Lua.setFunction(L, "__newindex", newIndex)
        Lua.setFunction(L, "__len", len)
        Lua.setFunction(L, "__tostring", toString)
        Lua.setFunction(L, "__eq", ObjectBindings.equals)
        Lua.setFunction(L, "__gc", ObjectBindings.release)
        Lua.setFunction(L, "__close", ObjectBindings.release)
        lua_createtable(L, 0, 9)
        Lua.setFunction(L, "close", ObjectBindings.release)
        Lua.setFunction(L, "get", get)
        Lua.setFunction(L, "delete", delete)
        Lua.setFunction(L, "len", len)
        Lua.setFunction(L, "keys", keys)
        Lua.setFunction(L, "items", items)
        Lua.setFunction(L, "contains", contains)
        Lua.setFunction(L, "_update_lock", updateLock)
        lua_pushvalue(L, -1)
        lua_setfield(L, jr_registryindex(), methodsKey)
        lua_setfield(L, -2, "__methods")
        jr_lua_pop(L, 1)
        Lua.setFunction(L, "Dict", newDict)

        ObjectBindings.registerType(L, "jobrun.Value", toString: valueToString, methods: [
            ("get", valueGet), ("set", valueSet), ("add", valueAdd), ("compare_and_swap", valueCAS),
        ])
        Lua.setFunction(L, "Value", newValue)
    }

    static func check(_ L: LuaState, _ method: String) -> SharedDict? {
        if let h = ObjectHandle.check(L, 1), h.type == UInt32(JR_OBJ_DICT) { return SharedDict(offset: h.offset) }
        Lua.pushError(L, .TypeError, "\(method): expected a Dict as self (use d:\(method)(...)), got \(Lua.typeName(L, 1))")
        return nil
    }

    static func label(_ d: SharedDict) -> String { "Dict#\(d.id)" }

    /// Encodes the key at `index` into `keyEncoder`; an error message if it is not a valid key.
    static func encodeKey(_ L: LuaState, _ index: Int32, _ method: String) -> String? {
        ProcessContext.hot(L).pointee.keyEncoder.reset()
        switch lua_type(L, index) {
        case LUA_TSTRING, LUA_TBOOLEAN:
            return ProcessContext.hot(L).pointee.keyEncoder.encode(L, index, path: "key")
        case LUA_TNUMBER:
            if lua_isinteger(L, index) == 0 {
                let v = lua_tonumberx(L, index, nil)
                if v.isNaN { return "\(method): a Dict key cannot be NaN" }
                // 2.0 and 2 are the same key, as in a Lua table.
                if v == v.rounded(), abs(v) < 9.2e18 {
                    lua_pushinteger(L, lua_Integer(v))
                    defer { jr_lua_pop(L, 1) }
                    return ProcessContext.hot(L).pointee.keyEncoder.encode(L, -1, path: "key")
                }
            }
            return ProcessContext.hot(L).pointee.keyEncoder.encode(L, index, path: "key")
        default:
            return "\(method): a Dict key must be a string, number or boolean, got \(Lua.typeName(L, index))"
        }
    }

    static func decodeInto(_ L: LuaState, _ bytes: UnsafeRawBufferPointer, _ d: SharedDict) -> Int32? {
        // The copy took references for its handles (SharedDict.get): handed over.
        if let e = ValueDecoder.decode(L, bytes, adopting: true) { return Lua.raise(L, .ValueError, "\(label(d)): \(e)") }
        return nil
    }

    /// Pushes d[k] (or nil); returns -1 after pushing an error.
    static func read(_ L: LuaState, _ d: SharedDict, keyIndex: Int32, method: String) -> Int32 {
        if let e = encodeKey(L, keyIndex, method) { return Lua.raise(L, .TypeError, e) }
        guard let n = d.get(ProcessContext.hot(L).pointee.keyEncoder.bytes, into: &ProcessContext.hot(L).pointee.scratch) else { lua_pushnil(L); return 1 }
        if let r = decodeInto(L, UnsafeRawBufferPointer(start: ProcessContext.hot(L).pointee.scratch.base, count: n), d) { return r }
        return 1
    }

    static let newDict: jr_swift_fn = { L in
        let L = L!
        if jr_lua_isnoneornil(L, 1) == 0 && lua_type(L, 1) != LUA_TTABLE {
            return Lua.raise(L, .TypeError, "Dict: initial must be a table, got \(Lua.typeName(L, 1))")
        }
        let off: UInt64
        do { off = try ObjectHandle.collectingIfShort(L, SharedDict.create) } catch { return Lua.raise(L, .ValueError, "Dict: out of shared memory") }
        guard ObjectHandle.pushNew(L, type: JR_OBJ_DICT, offset: off) else {
            return Lua.raise(L, .ValueError, "Dict: out of shared memory (object table)")
        }
        let d = SharedDict(offset: off)
        if lua_type(L, 1) == LUA_TTABLE {
            lua_pushnil(L)
            while lua_next(L, 1) != 0 {
                if let r = write(L, d, keyIndex: lua_gettop(L) - 1, valueIndex: lua_gettop(L), method: "Dict") { return r }
                jr_lua_pop(L, 1)
            }
        }
        return 1
    }

    /// d[k] = v; nil deletes. Returns nil on success, -1 after pushing an error.
    static func write(_ L: LuaState, _ d: SharedDict, keyIndex: Int32, valueIndex: Int32, method: String) -> Int32? {
        if let e = encodeKey(L, keyIndex, method) { return Lua.raise(L, .TypeError, e) }
        if lua_type(L, valueIndex) == LUA_TNIL {
            d.delete(ProcessContext.hot(L).pointee.keyEncoder.bytes)
            return nil
        }
        ProcessContext.hot(L).pointee.encoder.reset()
        if let e = ProcessContext.hot(L).pointee.encoder.encode(L, valueIndex, path: "value") {
            return Lua.raise(L, .TypeError, "\(label(d)): \(e)")
        }
        do { try d.set(ProcessContext.hot(L).pointee.keyEncoder.bytes, ProcessContext.hot(L).pointee.encoder.bytes) } catch {
            ProcessContext.hot(L).pointee.encoder.dropReferences()
            return Lua.raise(L, .ValueError, "\(label(d)): out of shared memory (\(Arena.bytesInUse >> 20) of \(Arena.limit >> 20) MiB in use)")
        }
        ProcessContext.hot(L).pointee.encoder.keepReferences(in: &d.d.pointee.hdr)
        return nil
    }

    /// __index: methods first, then the shared entry.
    static let index: jr_swift_fn = { L in
        let L = L!
        guard let d = check(L, "index") else { return -1 }
        if lua_type(L, 2) == LUA_TSTRING {
            lua_getfield(L, jr_registryindex(), methodsKey)
            lua_pushvalue(L, 2)
            if lua_rawget(L, -2) != LUA_TNIL { return 1 }
            jr_lua_pop(L, 2)
        }
        return read(L, d, keyIndex: 2, method: "index")
    }

    static let newIndex: jr_swift_fn = { L in
        let L = L!
        guard let d = check(L, "newindex") else { return -1 }
        return write(L, d, keyIndex: 2, valueIndex: 3, method: "\(label(d))[key] = value") ?? 0
    }

    static let get: jr_swift_fn = { L in
        let L = L!
        guard let d = check(L, "get") else { return -1 }
        if lua_gettop(L) < 2 { return Lua.raise(L, .TypeError, "\(label(d)).get: missing key") }
        let r = read(L, d, keyIndex: 2, method: "\(label(d)).get")
        if r == 1 && lua_type(L, -1) == LUA_TNIL && lua_gettop(L) >= 4 { lua_pushvalue(L, 3) }
        return r
    }

    static let contains: jr_swift_fn = { L in
        let L = L!
        guard let d = check(L, "contains") else { return -1 }
        if let e = encodeKey(L, 2, "\(label(d)).contains") { return Lua.raise(L, .TypeError, e) }
        lua_pushboolean(L, d.contains(ProcessContext.hot(L).pointee.keyEncoder.bytes) ? 1 : 0)
        return 1
    }

    static let delete: jr_swift_fn = { L in
        let L = L!
        guard let d = check(L, "delete") else { return -1 }
        if let e = encodeKey(L, 2, "\(label(d)).delete") { return Lua.raise(L, .TypeError, e) }
        lua_pushboolean(L, d.delete(ProcessContext.hot(L).pointee.keyEncoder.bytes) ? 1 : 0)
        return 1
    }

    static let len: jr_swift_fn = { L in
        guard let d = check(L!, "len") else { return -1 }
        lua_pushinteger(L, lua_Integer(d.count)); return 1
    }

    /// Decodes a snapshot; `withValues` false gives an array of keys.
    static func snapshot(_ L: LuaState, _ d: SharedDict, withValues: Bool) -> Int32 {
        var scratch = ScratchBuffer(capacity: 4096)
        let (n, _) = d.snapshot(into: &scratch)
        defer { scratch.base.deallocate() }
        lua_createtable(L, withValues ? 0 : Int32(n), withValues ? Int32(n) : 0)
        let t = lua_gettop(L)
        var at = 0
        for i in 0..<n {
            let kl = Int(scratch.base.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            let vl = Int(scratch.base.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self))
            if let r = decodeInto(L, UnsafeRawBufferPointer(start: scratch.base + at + 16, count: kl), d) { return r }
            if withValues {
                if let r = decodeInto(L, UnsafeRawBufferPointer(start: scratch.base + at + 16 + kl, count: vl), d) { return r }
                lua_rawset(L, t)
            } else {
                lua_rawseti(L, t, lua_Integer(i + 1))
            }
            at += 16 + kl + vl
        }
        return 1
    }

    static let keys: jr_swift_fn = { L in
        guard let d = check(L!, "keys") else { return -1 }
        return snapshot(L!, d, withValues: false)
    }

    static let items: jr_swift_fn = { L in
        guard let d = check(L!, "items") else { return -1 }
        return snapshot(L!, d, withValues: true)
    }

    static let updateLock: jr_swift_fn = { L in
        guard let d = check(L!, "update") else { return -1 }
        guard ObjectHandle.pushExisting(L!, slot: d.updateLockSlot) else {
            return Lua.raise(L!, .ValueError, "\(label(d)).update: its lock is gone")
        }
        return 1
    }

    static let toString: jr_swift_fn = { L in
        if let n = ObjectHandle.closedToString(L!, 1) { return n }
        guard let d = check(L!, "tostring") else { return -1 }
        Lua.pushString(L!, "\(label(d)) (\(d.count) entries)")
        return 1
    }

    // MARK: Value

    static func checkValue(_ L: LuaState, _ method: String) -> UnsafeMutablePointer<jr_value>? {
        if let h = ObjectHandle.check(L, 1), h.type == UInt32(JR_OBJ_VALUE) {
            return Arena.pointer(h.offset).assumingMemoryBound(to: jr_value.self)
        }
        Lua.pushError(L, .TypeError, "\(method): expected a Value as self (use v:\(method)(...)), got \(Lua.typeName(L, 1))")
        return nil
    }

    /// Takes a Value's lock. A holder that died there left nothing to repair:
    /// a write publishes with its last store (storeInteger, storeFloat).
    @inline(__always) static func lockValue(_ v: UnsafeMutablePointer<jr_value>) {
        RobustMutex.lock(&v.pointee.lock, ownerDied: RobustMutex.nothingToRepair)
    }

    static func pushNumber(_ L: LuaState, _ v: UnsafeMutablePointer<jr_value>) {
        if v.pointee.is_float != 0 { lua_pushnumber(L, v.pointee.number) } else { lua_pushinteger(L, lua_Integer(v.pointee.integer)) }
    }

    /// Stores the number at `index` into v (lock held by caller).
    static func store(_ L: LuaState, _ index: Int32, _ v: UnsafeMutablePointer<jr_value>) {
        if lua_isinteger(L, index) != 0 { storeInteger(Int64(lua_tointegerx(L, index, nil)), v) }
        else { storeFloat(lua_tonumberx(L, index, nil), v) }
    }

    /// The payload first, then the flag in one store: a writer killed in
    /// between leaves the old value (jr_value).
    static func storeInteger(_ x: Int64, _ v: UnsafeMutablePointer<jr_value>) {
        v.pointee.integer = x
        TestHooks.killPoint("value-write-midway")
        v.atomic(\.is_float).store(0, ordering: .releasing)
    }

    static func storeFloat(_ x: Double, _ v: UnsafeMutablePointer<jr_value>) {
        v.pointee.number = x
        TestHooks.killPoint("value-write-midway")
        v.atomic(\.is_float).store(1, ordering: .releasing)
    }

    static func requireNumber(_ L: LuaState, _ index: Int32, _ what: String) -> Bool {
        if lua_type(L, index) == LUA_TNUMBER { return true }
        Lua.pushError(L, .TypeError, "\(what) must be a number, got \(Lua.typeName(L, index))")
        return false
    }

    static let newValue: jr_swift_fn = { L in
        let L = L!
        if jr_lua_isnoneornil(L, 1) != 0 { lua_settop(L, 0); lua_pushinteger(L, 0) }
        if !requireNumber(L, 1, "Value: initial") { return -1 }
        let off: UInt64, v: UnsafeMutablePointer<jr_value>
        do {
            (off, v) = try ObjectHandle.collectingIfShort(L) { () throws(Arena.AllocFailure) in
                try Arena.newObject(jr_value.self, type: JR_OBJ_VALUE)
            }
        } catch { return Lua.raise(L, .ValueError, "Value: out of shared memory") }
        _ = jr_mutex_init(&v.pointee.lock)
        store(L, 1, v)
        guard ObjectHandle.pushNew(L, type: JR_OBJ_VALUE, offset: off) else {
            return Lua.raise(L, .ValueError, "Value: out of shared memory (object table)")
        }
        return 1
    }

    static let valueGet: jr_swift_fn = { L in
        guard let v = checkValue(L!, "get") else { return -1 }
        lockValue(v); pushNumber(L!, v); jr_mutex_unlock(&v.pointee.lock)
        return 1
    }

    static let valueSet: jr_swift_fn = { L in
        let L = L!
        guard let v = checkValue(L, "set") else { return -1 }
        if !requireNumber(L, 2, "Value.set: x") { return -1 }
        lockValue(v); store(L, 2, v); jr_mutex_unlock(&v.pointee.lock)
        return 0
    }

    /// v:add(delta) -> new value, atomically.
    static let valueAdd: jr_swift_fn = { L in
        let L = L!
        guard let v = checkValue(L, "add") else { return -1 }
        if !requireNumber(L, 2, "Value.add: delta") { return -1 }
        lockValue(v)
        if v.pointee.is_float == 0 && lua_isinteger(L, 2) != 0 {
            storeInteger(v.pointee.integer &+ Int64(lua_tointegerx(L, 2, nil)), v)
        } else {
            let cur = v.pointee.is_float != 0 ? v.pointee.number : Double(v.pointee.integer)
            storeFloat(cur + lua_tonumberx(L, 2, nil), v)
        }
        pushNumber(L, v)
        jr_mutex_unlock(&v.pointee.lock)
        return 1
    }

    /// v:compare_and_swap(old, new) -> true if the value was `old` (numeric equality) and is now `new`.
    static let valueCAS: jr_swift_fn = { L in
        let L = L!
        guard let v = checkValue(L, "compare_and_swap") else { return -1 }
        if !requireNumber(L, 2, "Value.compare_and_swap: old") || !requireNumber(L, 3, "Value.compare_and_swap: new") { return -1 }
        lockValue(v)
        pushNumber(L, v)
        let equal = lua_compare(L, -1, 2, LUA_OPEQ) != 0
        jr_lua_pop(L, 1)
        if equal { store(L, 3, v) }
        jr_mutex_unlock(&v.pointee.lock)
        lua_pushboolean(L, equal ? 1 : 0)
        return 1
    }

    static let valueToString: jr_swift_fn = { L in
        let L = L!
        if let n = ObjectHandle.closedToString(L, 1) { return n }
        guard let v = checkValue(L, "tostring") else { return -1 }
        let h = ObjectHandle.check(L, 1)!
        lockValue(v)
        let text = v.pointee.is_float != 0 ? "\(v.pointee.number)" : "\(v.pointee.integer)"
        jr_mutex_unlock(&v.pointee.lock)
        _ = h
        Lua.pushString(L, "Value#\(v.pointee.hdr.id) (\(text))")
        return 1
    }
}
