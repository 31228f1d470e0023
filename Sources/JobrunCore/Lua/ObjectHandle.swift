import CJobrunShims
import CLua

/// The Lua side of a shared object: a full userdata naming the object as
/// (slot, generation) in the object table (ObjectTable.swift), with its
/// arena offset and type cached. Any number of handles, in any process of
/// the run, may name the same object; the codec sends a handle as (type,
/// slot, generation) and the receiver's decoder checks all three. Each
/// process holds one reference per object it has handles to; `__gc`,
/// `__close` and `close()` release a handle (once: it is then `closed`, and
/// using it is an error).
struct ObjectHandle {
    var offset: UInt64
    var slot: UInt32
    var generation: UInt32
    var type: UInt32
    var closed: UInt32 = 0

    /// Metatable names (registry keys) by object type.
    static func metatableName(_ type: UInt32) -> String? {
        switch Int(type) {
        case JR_OBJ_QUEUE: return "jobrun.Queue"
        case JR_OBJ_JOINABLE_QUEUE: return "jobrun.JoinableQueue"
        case JR_OBJ_VALUE: return "jobrun.Value"
        case JR_OBJ_DICT: return "jobrun.Dict"
        case JR_OBJ_PIPE_END0, JR_OBJ_PIPE_END1: return "jobrun.Connection"
        default:
            if let name = SyncBindings.types.first(where: { $0.0 == Int(type) })?.1 { return "jobrun.\(name)" }
            return nil
        }
    }

    /// Enters a new object in the table and pushes this process's first
    /// handle to it; false when the table or the memory is full (nothing
    /// pushed, the object's block freed).
    static func pushNew(_ L: LuaState, type: Int, offset: UInt64) -> Bool {
        guard let (slot, generation) = try? ObjectTable.register(type: type, offset: offset) else {
            Arena.free(offset)
            return false
        }
        return push(L, ObjectHandle(offset: offset, slot: slot, generation: generation, type: UInt32(type)))
    }

    /// Runs `make` (a new object's allocation); if shared memory is short,
    /// collects garbage first and tries again: Lua does not see what a
    /// handle costs in the arena, so handles dropped without `close()` may
    /// still hold memory that a collection frees.
    static func collectingIfShort<T, E: Error>(_ L: LuaState, _ make: () throws(E) -> T) throws(E) -> T {
        do { return try make() } catch {
            jr_lua_collect(L)
            return try make()
        }
    }

    /// Pushes a handle to the live object in `slot` (one linked from
    /// another: a Condition's lock, a Dict's update lock); false if none.
    static func pushExisting(_ L: LuaState, slot: UInt32) -> Bool {
        guard let e = ObjectTable.entry(slot), e.pointee.state == UInt32(JR_SLOT_LIVE) else { return false }
        let h = ObjectHandle(offset: e.pointee.offset, slot: slot, generation: e.pointee.generation, type: e.pointee.type)
        guard ObjectTable.retain(slot, generation: h.generation) else { return false }
        guard push(L, h) else { ObjectTable.release(slot); return false }
        ObjectTable.noteHandle(slot, adopted: true)
        return true
    }

    /// Pushes a handle userdata for `h` (its reference accounted for by the
    /// caller); false when the type is unknown (nothing pushed).
    @discardableResult
    static func push(_ L: LuaState, _ h: ObjectHandle) -> Bool {
        guard let name = metatableName(h.type) else { return false }
        let ud = jr_lua_newuserdata(L, MemoryLayout<ObjectHandle>.size)!
        ud.assumingMemoryBound(to: ObjectHandle.self).initialize(to: h)
        luaL_setmetatable(L, name)
        return true
    }

    /// The handle userdata at `index` if it is a jobrun object (its
    /// metatable has `__jobrun`), closed or not.
    static func userdata(_ L: LuaState, _ index: Int32) -> UnsafeMutablePointer<ObjectHandle>? {
        guard lua_type(L, index) == LUA_TUSERDATA, lua_getmetatable(L, index) != 0 else { return nil }
        Lua.rawField(L, -1, "__jobrun")     // raw: any userdata's metatable may have a raising __index
        let isOurs = lua_toboolean(L, -1) != 0
        jr_lua_pop(L, 2)
        guard isOurs, let p = lua_touserdata(L, index) else { return nil }
        return p.assumingMemoryBound(to: ObjectHandle.self)
    }

    /// The handle at `index` if it is an open jobrun handle.
    static func check(_ L: LuaState, _ index: Int32) -> ObjectHandle? {
        guard let p = userdata(L, index), p.pointee.closed == 0 else { return nil }
        return p.pointee
    }

    /// The open handle at `index` if its metatable is `metatable` (compared
    /// by identity: the per-call cost of a method's self check is one lookup).
    @inline(__always)
    static func check(_ L: LuaState, _ index: Int32, metatable: UnsafeRawPointer?) -> ObjectHandle? {
        guard lua_getmetatable(L, index) != 0 else { return nil }
        let mt = lua_topointer(L, -1)
        jr_lua_pop(L, 1)
        guard mt == metatable, lua_type(L, index) == LUA_TUSERDATA, let p = lua_touserdata(L, index) else { return nil }
        let h = p.assumingMemoryBound(to: ObjectHandle.self).pointee
        return h.closed == 0 ? h : nil
    }

    /// Whether the value at `index` is a jobrun handle that was closed.
    static func isClosed(_ L: LuaState, _ index: Int32) -> Bool {
        userdata(L, index)?.pointee.closed ?? 0 != 0
    }

    /// `__tostring` of a closed handle: "jobrun.Lock (closed handle)"; nil
    /// when the handle at `index` is not closed (nothing pushed).
    static func closedToString(_ L: LuaState, _ index: Int32) -> Int32? {
        guard isClosed(L, index), lua_getmetatable(L, index) != 0 else { return nil }
        lua_pushstring(L, "__name")
        _ = lua_rawget(L, -2)
        let name = Lua.string(L, -1) ?? "jobrun object"
        jr_lua_pop(L, 2)
        Lua.pushString(L, "\(name) (closed handle)")
        return 1
    }

    /// Releases the handle at `index` (`__gc`, `__close`, `close()`): the
    /// first call drops its share of the process's reference, later ones
    /// do nothing.
    static func release(_ L: LuaState, _ index: Int32) {
        guard let p = userdata(L, index), p.pointee.closed == 0 else { return }
        p.pointee.closed = 1
        ObjectTable.dropHandle(p.pointee.slot)
    }
}
