import CJobrunShims
import CLua
import Glibc

// `jobrun check`: compile without running.
extension Host {
    /// Compiles each script without running it, as `luac -p` does: `SCRIPT: ok`
    /// on stdout for a good one, the syntax error on stderr for a bad one.
    /// Returns 0 when all compile, 1 when one has a syntax error, 2 when one
    /// cannot be read (that wins: the check itself could not be done).
    public static func check(scripts: [String]) -> Int32 {
        guard let L = jr_lua_newstate() else {
            writeAll(2, "jobrun: cannot create a Lua state (out of memory)\n")
            return 1
        }
        defer { lua_close(L) }
        var status: Int32 = 0
        for script in scripts {
            var st = stat()
            if stat(script, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
                writeAll(2, "jobrun: cannot check \(script): it is a directory\n")
                status = 2
                continue
            }
            switch loadText(L, file: script) {
            case LUA_OK:
                writeAll(1, "\(script): ok\n")
            case LUA_ERRFILE:
                // "cannot open x.lua: No such file or directory" from lauxlib.
                writeAll(2, "jobrun: \(Lua.string(L, -1) ?? "cannot read \(script)")\n")
                status = 2
            default:
                writeAll(2, "\(Lua.string(L, -1) ?? "\(script): cannot compile")\n")
                if status == 0 { status = 1 }
            }
            lua_settop(L, 0)
        }
        return status
    }
}
