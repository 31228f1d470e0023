import CJobrunShims
import CLua
import Glibc

// What a run's output goes through: `--prefix` (workers' lines tagged with
// their process name) and the status line (each new line on a terminal wipes
// it first, so output never lands in the middle of it).
extension Host {
    /// Wraps `print`, `io.write` and `:write` on `io.stdout`/`io.stderr`
    /// (prelude/output.lua) so that each new line starts with "\r\e[K" on a
    /// terminal while the status line is on (`clear`), and `[name] ` in a
    /// worker (`tag`). Without either, nothing is wrapped.
    static func installOutputHooks(_ L: LuaState, tag: Bool, clear: Bool) {
        guard tag || clear else { return }
        ProcessContext.of(L).output.prefix = tag   // forked workers inherit it, and the wrappers with the state
        Prelude.run(L, "output.lua") {
            Lua.pushModule(L)
            lua_pushboolean(L, tag ? 1 : 0)
            jr_push_swift_function(L, lineStart)
            return 3
        }
    }

    /// line_start(fd) -> "\r\e[K" or "".
    static let lineStart: jr_swift_fn = { L in
        let L = L!
        Lua.pushString(L, Progress.lineStart(fd: Int32(truncatingIfNeeded: lua_tointegerx(L, 1, nil))))
        return 1
    }

    /// `text` with `[name] ` before each line, for the messages a `script`
    /// worker writes from Swift when `--prefix` is on.
    static func prefixLines(_ text: String, name: String) -> String {
        guard ProcessContext.current.output.prefix else { return text }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let endsLine = text.hasSuffix("\n")
        if endsLine { lines.removeLast() }
        return lines.map { "[\(name)] \($0)" }.joined(separator: "\n") + (endsLine ? "\n" : "")
    }
}
