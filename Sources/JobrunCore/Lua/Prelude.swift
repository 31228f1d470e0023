import CJobrunShims
import CLua

/// The Lua half of the module: the `.lua` files under `prelude/`, embedded
/// in the binary at build time by the EmbedLua plugin (`EmbeddedLua`, a
/// generated file). Each loads as a text chunk named after its file, so a
/// traceback through prelude code reads `jobrun/prelude/pool.lua:123: ...`.
enum Prelude {
    /// The files that build the `jobrun` module, in order; each runs with
    /// `(jobrun, core, ErrorMeta)` (Module.install).
    static let moduleFiles = ["module.lua", "process.lua", "objects.lua", "pool.lua"]

    /// Loads prelude file `name` (chunk name `@jobrun/prelude/<name>`, text
    /// mode). Pushes the chunk, or an error message; returns the status.
    static func load(_ L: LuaState, _ name: String) -> Int32 {
        guard let source = EmbeddedLua.source(name) else {
            Lua.pushString(L, "no prelude file \(name) was embedded")
            return LUA_ERRFILE
        }
        let text = UnsafeRawPointer(source.utf8Start).assumingMemoryBound(to: CChar.self)
        return luaL_loadbufferx(L, text, source.utf8CodeUnitCount, "@jobrun/prelude/" + name, "t")
    }

    /// Runs prelude file `name`, trusted code of our own; `push` pushes its
    /// arguments and returns their count. A failure is a bug: it is reported
    /// on stderr and the state goes on without that file's work.
    static func run(_ L: LuaState, _ name: String, push: () -> Int32) {
        if load(L, name) != LUA_OK {
            writeAll(2, "jobrun: internal error: \(Lua.string(L, -1) ?? "?")\n"); jr_lua_pop(L, 1); return
        }
        let n = push()
        if jr_lua_pcall(L, n, 0, 0) != LUA_OK {
            writeAll(2, "jobrun: internal error: \(Lua.string(L, -1) ?? "?")\n"); jr_lua_pop(L, 1)
        }
    }
}
