-- What a run's output goes through (Host+Output.swift): wraps `print`,
-- `io.write` and `:write` on `io.stdout`/`io.stderr` so that each new line
-- starts with what it needs: "\r\e[K" on a terminal while the status line is
-- on (line_start gives it), and `[name] ` in a worker (`tag_lines`, from
-- --prefix). Run in the main state before the script, so forked workers
-- inherit the wrappers; without --prefix or a status line it is not run at
-- all and output costs what it costs in lua5.4.
--
-- Nothing is buffered in Lua: each stream remembers whether it stands at the
-- start of a line, so a partial line is written at once and nothing is lost
-- when a worker `_exit`s. Output that bypasses these functions (C libraries,
-- `os.execute` children) is not touched.
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
    local nl = s:find("\n", pos, true)
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
  raw_write(stdout, prefixed(stdout, concat(parts, "\t") .. "\n"))
end
