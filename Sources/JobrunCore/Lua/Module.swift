import CJobrunShims
import CLua

/// Builds the `jobrun` module in a state: the Swift-bound types, the private
/// primitives, then the prelude written in Lua (Prelude.moduleFiles). The module is the global
/// `jobrun` and `package.loaded.jobrun`.
enum Module {
    static func install(_ L: LuaState) {
        // First: the bindings find the process context in the state (and
        // QueueBindings.register keeps the metatables in it).
        ProcessContext.current.install(in: L)
        lua_createtable(L, 0, 32)
        let module = lua_gettop(L)
        QueueBindings.register(L, module: module)
        SyncBindings.register(L)
        DictBindings.register(L)
        PipeBindings.register(L)
        luaL_newmetatable(L, "jobrun.Error")
        let errorMeta = lua_gettop(L)
        lua_pushvalue(L, module)
        lua_setglobal(L, "jobrun")
        lua_pushvalue(L, module)
        lua_setfield(L, jr_registryindex(), Lua.moduleKey)

        CoreBindings.register(L)
        let core = lua_gettop(L)
        // Each chunk runs with (jobrun, core, ErrorMeta).
        for name in Prelude.moduleFiles {
            if Prelude.load(L, name) != LUA_OK { fatalPreludeError(L) }
            lua_pushvalue(L, module)
            lua_pushvalue(L, core)
            lua_pushvalue(L, errorMeta)
            if jr_lua_pcall(L, 3, 0, 0) != LUA_OK { fatalPreludeError(L) }
        }
        lua_settop(L, module - 1)
    }

    private static func fatalPreludeError(_ L: LuaState) -> Never {
        writeAll(2, "jobrun: internal error in the module prelude: \(Lua.string(L, -1) ?? "?")\n")
        jr_flush_and_exit(70)
    }
}
