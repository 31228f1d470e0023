import CJobrunShims
import CLua
import Glibc

// What the command line adds around a run: `jobrun check` (compile without
// running), and `--prefix` (workers' lines tagged with their process name).
extension Host {
    /// Compiles each script without running it, as `luac -p` does: `SCRIPT: ok`
    /// on stdout for a good one, the syntax error on stderr for a bad one.
    /// Returns 0 when all compile, 1 when one has a syntax error, 2 when one
    /// cannot be read (that wins: the check itself could not be done).
    public static func check(scripts: [String]) -> Int32 {
        guard let L = luaL_newstate() else {
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
            switch luaL_loadfilex(L, script, nil) {
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

    /// Set by `--prefix` (main) or `--worker-prefix` (a `script` worker); read
    /// by `core.spawn` so the setting reaches `script` workers at any depth.
    /// Forked workers inherit it, and the Lua wrappers, with the state.
    public internal(set) static var prefixOutput = false

    /// Makes every line a worker writes with `print`, `io.write` or a
    /// `:write` on `io.stdout`/`io.stderr` start with `[name] `. The main
    /// process's own output is left alone. The wrappers are installed in the
    /// main state before the script runs, so forked workers inherit them and
    /// switch on by themselves (`jobrun.is_main` is false there).
    ///
    /// Nothing is buffered in Lua: each stream remembers whether it stands at
    /// the start of a line, so a partial line is written at once and nothing
    /// is lost when a worker `_exit`s. Output that bypasses these functions
    /// (C libraries, `os.execute` children, jobrun's own messages written from
    /// Swift) is not prefixed.
    static func installPrefixing(_ L: LuaState) {
        prefixOutput = true
        runChunk(L, prefixSource) { lua_getglobal(L, "jobrun"); return 1 }
    }

    static let prefixSource = """
        local jobrun = ...
        local stdout, stderr = io.stdout, io.stderr
        local methods = getmetatable(stdout).__index
        local raw_write, raw_print = methods.write, print
        local tostring, select, type, concat = tostring, select, type, table.concat
        local mtype, format = math.type, string.format
        local owner, at_start = nil, {}

        local function prefixed(f, s)
          local me = jobrun.current_process()
          if me ~= owner then           -- a fresh fork: its streams start fresh
            owner = me
            at_start = {[stdout] = true, [stderr] = true}
          end
          local tag, parts, pos = "[" .. tostring(me.name) .. "] ", {}, 1
          while pos <= #s do
            if at_start[f] then parts[#parts + 1] = tag end
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
          if jobrun.is_main or (f ~= stdout and f ~= stderr) then return raw_write(f, ...) end
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
          if jobrun.is_main then return raw_print(...) end
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
