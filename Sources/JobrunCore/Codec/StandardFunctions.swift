import CJobrunShims
import CLua

/// Standard-library C functions are sendable by name ("string.format"): the
/// same name resolves to the same function in the receiving process, whose
/// addresses may differ (a `script` worker is a fresh executable image).
enum StandardFunctions {
    static let libraries = ["_G", "string", "table", "math", "io", "os", "coroutine", "utf8", "debug", "package"]
    private static var names: [UnsafeRawPointer: String]? = nil

    /// The qualified name of the C function at `idx`, if it is a standard one.
    static func name(_ L: LuaState, _ idx: Int32) -> String? {
        guard let f = lua_tocfunction(L, idx) else { return nil }
        if names == nil { names = build(L) }
        return names![unsafeBitCast(f, to: UnsafeRawPointer.self)]
    }

    private static func build(_ L: LuaState) -> [UnsafeRawPointer: String] {
        var map: [UnsafeRawPointer: String] = [:]
        lua_getfield(L, jr_registryindex(), "_LOADED")
        for lib in libraries.reversed() {   // _G last, so "print" beats "_G.print" style duplicates
            guard lua_getfield(L, -1, lib) == LUA_TTABLE else { jr_lua_pop(L, 1); continue }
            lua_pushnil(L)
            while lua_next(L, -2) != 0 {
                if lua_type(L, -2) == LUA_TSTRING, lua_iscfunction(L, -1) != 0, let f = lua_tocfunction(L, -1),
                   let key = Lua.string(L, -2) {
                    map[unsafeBitCast(f, to: UnsafeRawPointer.self)] = "\(lib).\(key)"
                }
                jr_lua_pop(L, 1)
            }
            jr_lua_pop(L, 1)
        }
        jr_lua_pop(L, 1)
        return map
    }

    /// Pushes the function named `lib.key` from the receiving state; false if absent.
    static func push(_ L: LuaState, _ qualified: String) -> Bool {
        guard let dot = qualified.firstIndex(of: ".") else { return false }
        let lib = String(qualified[..<dot]), key = String(qualified[qualified.index(after: dot)...])
        guard libraries.contains(lib) else { return false }
        lua_getfield(L, jr_registryindex(), "_LOADED")
        guard lua_getfield(L, -1, lib) == LUA_TTABLE else { jr_lua_pop(L, 2); return false }
        Lua.pushString(L, key)
        guard lua_rawget(L, -2) == LUA_TFUNCTION, lua_iscfunction(L, -1) != 0 else { jr_lua_pop(L, 3); return false }
        jr_lua_replace(L, -3)
        jr_lua_pop(L, 1)
        return true
    }
}
