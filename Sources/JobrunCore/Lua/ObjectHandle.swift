import CJobrunShims
import CLua

/// The Lua side of a shared object: a full userdata holding the object's
/// arena offset and type. Any number of handles, in any process of the run,
/// may name the same object; the codec sends a handle as (type, offset).
struct ObjectHandle {
    var offset: UInt64
    var type: UInt32

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

    /// Pushes a new handle; false when the type is unknown (nothing pushed).
    @discardableResult
    static func push(_ L: LuaState, _ h: ObjectHandle) -> Bool {
        guard let name = metatableName(h.type) else { return false }
        let ud = jr_lua_newuserdata(L, MemoryLayout<ObjectHandle>.size)!
        ud.assumingMemoryBound(to: ObjectHandle.self).initialize(to: h)
        luaL_setmetatable(L, name)
        return true
    }

    /// The handle at `index` if it is a jobrun object (its metatable has `__jobrun`).
    static func check(_ L: LuaState, _ index: Int32) -> ObjectHandle? {
        guard lua_type(L, index) == LUA_TUSERDATA, lua_getmetatable(L, index) != 0 else { return nil }
        Lua.rawField(L, -1, "__jobrun")     // raw: any userdata's metatable may have a raising __index
        let isOurs = lua_toboolean(L, -1) != 0
        jr_lua_pop(L, 2)
        guard isOurs, let p = lua_touserdata(L, index) else { return nil }
        return p.assumingMemoryBound(to: ObjectHandle.self).pointee
    }

    /// The handle at `index` if its metatable is `metatable` (compared by
    /// identity: the per-call cost of a method's self check is one lookup).
    @inline(__always)
    static func check(_ L: LuaState, _ index: Int32, metatable: UnsafeRawPointer?) -> ObjectHandle? {
        guard lua_getmetatable(L, index) != 0 else { return nil }
        let mt = lua_topointer(L, -1)
        jr_lua_pop(L, 1)
        guard mt == metatable, lua_type(L, index) == LUA_TUSERDATA, let p = lua_touserdata(L, index) else { return nil }
        return p.assumingMemoryBound(to: ObjectHandle.self).pointee
    }
}
