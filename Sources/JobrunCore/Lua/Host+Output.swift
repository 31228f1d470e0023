import CJobrunShims
import CLua
import Glibc

// What a run's output goes through: `--prefix` (workers' lines tagged with
// their process name) and the status line (each new line on a terminal wipes
// it first, so output never lands in the middle of it).
extension Host {
    /// Set by `--prefix` (main) or `--worker-prefix` (a `script` worker); read
    /// by `core.spawn` so the setting reaches `script` workers at any depth.
    /// Forked workers inherit it, and the Lua wrappers, with the state.
    public internal(set) static var prefixOutput = false

    /// Wraps `print`, `io.write` and `:write` on `io.stdout`/`io.stderr` so
    /// that each new line starts with what it needs: "\r\e[K" on a terminal
    /// while the status line is on (`clear`), and `[name] ` in a worker
    /// (`tag`). The wrappers are installed in the main state before the
    /// script runs, so forked workers inherit them; without `tag` or
    /// `clear` nothing is wrapped and output costs what it costs in lua5.4.
    ///
    /// Nothing is buffered in Lua: each stream remembers whether it stands at
    /// the start of a line, so a partial line is written at once and nothing
    /// is lost when a worker `_exit`s. Output that bypasses these functions
    /// (C libraries, `os.execute` children) is not touched.
    static func installOutputHooks(_ L: LuaState, tag: Bool, clear: Bool) {
        guard tag || clear else { return }
        prefixOutput = tag
        runChunk(L, outputHooksSource) {
            lua_getglobal(L, "jobrun")
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

    static let outputHooksSource = """
        local jobrun, tag_lines, line_start = ...
        local stdout, stderr = io.stdout, io.stderr
        local methods = getmetatable(stdout).__index
        local raw_write, raw_print = methods.write, print
        local tostring, select, type, concat = tostring, select, type, table.concat
        local mtype, format = math.type, string.format
        local owner, at_start = nil, {}

        local function lead(f)
          local s = line_start(f == stderr and 2 or 1)
          if tag_lines and not jobrun.is_main then
            s = s .. "[" .. tostring(jobrun.current_process().name) .. "] "
          end
          return s
        end

        local function prefixed(f, s)
          local me = jobrun.current_process()
          if me ~= owner then           -- a fresh fork: its streams start fresh
            owner = me
            at_start = {[stdout] = true, [stderr] = true}
          end
          local parts, pos = {}, 1
          while pos <= #s do
            if at_start[f] then parts[#parts + 1] = lead(f) end
            local nl = s:find("\\n", pos, true)
            if nl then
              parts[#parts + 1] = s:sub(pos, nl)
              pos, at_start[f] = nl + 1, true
            else
              parts[#parts + 1] = s:sub(pos)
              pos, at_start[f] = #s + 1, false
            end
          end
          return concat(parts)
        end

        methods.write = function(f, ...)
          if f ~= stdout and f ~= stderr then return raw_write(f, ...) end
          local n, parts = select("#", ...), {}
          for i = 1, n do
            local v = select(i, ...)
            local t = type(v)
            if t == "number" then
              v = mtype(v) == "integer" and format("%d", v) or format("%.14g", v)
            elseif t ~= "string" then
              return raw_write(f, ...)  -- the usual "bad argument" error
            end
            parts[i] = v
          end
          return raw_write(f, prefixed(f, concat(parts)))
        end

        io.write = function(...) return io.output():write(...) end

        print = function(...)
          local n, parts = select("#", ...), {}
          for i = 1, n do parts[i] = tostring((select(i, ...))) end
          raw_write(stdout, prefixed(stdout, concat(parts, "\\t") .. "\\n"))
        end
        """

    /// `text` with `[name] ` before each line, for the messages a `script`
    /// worker writes from Swift when `--prefix` is on.
    static func prefixLines(_ text: String, name: String) -> String {
        guard prefixOutput else { return text }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let endsLine = text.hasSuffix("\n")
        if endsLine { lines.removeLast() }
        return lines.map { "[\(name)] \($0)" }.joined(separator: "\n") + (endsLine ? "\n" : "")
    }
}
