-- The Lua half of a plug-in worker (Lua/PluginState.swift runs it once, in
-- a state that has the whole `jobrun` module): plug-ins loaded from one
-- folder and kept warm, reloaded when a file they loaded changes; the call
-- under a traceback handler; the error codes (Plugins/PluginMessage.swift);
-- restricted mode; where a plug-in's output goes. With
-- (jobrun, dir, restricted, allowed, signature, realpath, write, outfd, getpid);
-- returns dispatch(plugin, fname, arg, check) -> true, result | false, error
-- where error is {code, message, traceback, plugin, function}.
local jobrun, dir, restricted, allowed, signature, realpath, write, outfd, getpid = ...

local type, next, tostring, rawget, select, error, xpcall, pcall = type, next, tostring, rawget, select, error, xpcall, pcall
local setmetatable, getmetatable, ipairs = setmetatable, getmetatable, ipairs
local format, find, gsub, sub, gmatch, concat = string.format, string.find, string.gsub, string.sub, string.gmatch, table.concat
local mtype = math.type
local loadfile0 = loadfile                  -- text only (loaders.lua)
local traceback, rawmeta = debug.traceback, debug.getmetatable
local searchpath, loaded = package.searchpath, package.loaded
local collect = collectgarbage
local describe = jobrun._describe
local io_open, os_remove, os_rename = io.open, os.remove, os.rename
local stderr = io.stderr

-- `require` looks in the plug-in folder only (then, outside restricted mode,
-- in the system's Lua folders); nothing from the current directory.
local function without_cwd(p)
  local kept = {}
  for entry in gmatch(p, "[^;]+") do
    if sub(entry, 1, 2) ~= "./" and sub(entry, 1, 1) ~= "?" then kept[#kept + 1] = entry end
  end
  return concat(kept, ";")
end
local own_path = dir .. "/?.lua;" .. dir .. "/?/init.lua"
if restricted then
  package.path, package.cpath = own_path, ""
else
  local rest = without_cwd(package.path)
  package.path = own_path .. (rest ~= "" and ";" .. rest or "")
  package.cpath = without_cwd(package.cpath)
end

-- The engine's own errors: {code, message}; printable if a plug-in catches one.
local Failure = {__tostring = function(e) return e.message end}
local function fail(code, message) return setmetatable({code = code, message = message}, Failure) end

-- What each plug-in loaded, to see when it changed: `deps[name]` lists the
-- files (the plug-in's first, then the siblings it required), `files[path]`
-- each file's signature when it was read (inode, size, mtime, ctime).
local plugins, deps, files, modules = {}, {}, {}, {}
local current, label = nil, "plugin"

local function depend(path)
  local d = current and deps[current]
  if d and not d[path] then d[path] = true; d[#d + 1] = path end
end

-- A change anywhere drops every plug-in and sibling module: they reload on
-- their next call, so no plug-in keeps a stale copy of a shared sibling.
local function reset()
  for name in next, modules do loaded[name] = nil end
  plugins, deps, files, modules = {}, {}, {}, {}
end

local function stale(d)
  for i = 1, #d do
    local p = d[i]
    if signature(p) ~= files[p] then return true end
  end
  return false
end

-- require's Lua searcher: text only, and the plug-in folder's files noted.
package.searchers[2] = function(name)
  local path, err = searchpath(name, package.path)
  if not path then return err end
  local sig = signature(path)
  local f, lerr = loadfile0(path)
  if not f then
    if find(lerr, "^cannot ") then error(format("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 0) end
    error(fail("syntaxError", lerr), 0)
  end
  if sub(path, 1, #dir + 1) == dir .. "/" then modules[name] = path; files[path] = sig; depend(path) end
  return f, path
end
local require0 = require
function require(name)
  local r1, r2 = require0(name)
  local path = modules[name]
  if path then depend(path) end     -- already loaded for another plug-in: a dependency of this one too
  return r1, r2
end

-- The message of any error value: a string as it is, a jobrun error with its
-- place, a table through its __tostring or its `message` field.
local function message_of(e)
  if type(e) == "number" then return tostring(e) end   -- as lua.c prints error(42)
  if type(e) == "table" and getmetatable(e) == nil then
    local m = rawget(e, "message")
    if type(m) == "string" then return m end
    if m ~= nil then return tostring(m) end
    return "(error object is a table value)"
  end
  local ok, m = pcall(describe, e)
  if ok and type(m) == "string" then return m end
  return "(error object is a " .. type(e) .. " value)"
end

-- The traceback a host shows: the plug-in's frames, none of jobrun's own.
local function frames()
  local out = {}
  for line in gmatch(traceback(nil, 3) or "", "[^\n]+") do
    if not (find(line, "jobrun/prelude/", 1, true) or find(line, "[C]: in ?", 1, true)
            or find(line, "in function 'xpcall'", 1, true)) then
      out[#out + 1] = line
    end
  end
  return concat(out, "\n")
end

local function handler(e)
  if getmetatable(e) == Failure then return e end
  local f = fail("luaError", message_of(e))
  f.traceback = frames()
  return f
end

-- An error xpcall returned: ours, or one its handler never saw (memory).
local function settle(e)
  if getmetatable(e) == Failure then return e end
  if e == "not enough memory" then
    collect("collect")
    return fail("limitExceeded", "not enough memory: the call went past the worker's Lua memory limit")
  end
  return fail("luaError", message_of(e))
end

local function valid_name(name)
  return find(name, "^[%w_%-]+$") or (find(name, "^[%w_%-%.]+$") and not find(name, "%.%.")
    and not find(name, "^%.") and not find(name, "%.$"))
end

local function load_plugin(name)
  if not valid_name(name) then
    return nil, fail("pluginNotFound", format("%q is not a plug-in name (letters, digits, _ and -, dots between folders)", name))
  end
  local path = dir .. "/" .. gsub(name, "%.", "/") .. ".lua"
  local sig, why = signature(path)
  if not sig then
    if why == "missing" then return nil, fail("pluginNotFound", format("no plug-in %q: %s does not exist", name, path)) end
    return nil, fail("pluginNotReadable", format("plug-in %q: cannot read %s: %s", name, path, tostring(why)))
  end
  local chunk, err = loadfile0(path)
  if not chunk then
    if err == "not enough memory" then return nil, settle(err) end
    if find(err, "^cannot ") then return nil, fail("pluginNotReadable", format("plug-in %q: %s", name, err)) end
    if find(err, "binary chunk", 1, true) then
      return nil, fail("syntaxError", path .. ": precompiled chunks are not accepted (Lua does not verify bytecode)")
    end
    return nil, fail("syntaxError", err)
  end
  local before = current
  current, label = name, name .. ":(load)"
  deps[name] = {path, [path] = true}
  files[path] = sig
  local ok, mod = xpcall(chunk, handler, name, path)
  current = before
  if not ok then deps[name] = nil; return nil, settle(mod) end
  if type(mod) ~= "table" then
    deps[name] = nil
    return nil, fail("pluginNotATable", format("plug-in %q (%s) returned %s, not a table of functions", name, path, type(mod)))
  end
  plugins[name] = mod
  return mod
end

-- Why a result cannot reach the host as a LuaValue (Jobrun's LuaWire), with
-- its place; nil when it can. Tables shared within the result are fine (the
-- host gets copies, within its size bound); a table containing itself is not.
local function step(k)
  if type(k) == "string" and find(k, "^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return format("[%q]", k) end
  return "[" .. tostring(k) .. "]"
end
local function unsendable(v, path, open, done, depth)
  local t = type(v)
  if t == "table" then
    local mt = rawmeta(v)
    if mt and rawget(mt, "__jobrun_process") then return path .. ": a Process cannot be a LuaValue" end
    if done[v] then return nil end      -- checked where it appeared first: a DAG is walked once per table
    if open[v] then return path .. ": a table that contains itself cannot be a LuaValue" end
    if depth >= 200 then return path .. ": value nested too deeply (more than 200 levels)" end
    open[v] = true
    for k, x in next, v do
      local p = unsendable(k, path .. " (key)", open, done, depth + 1) or unsendable(x, path .. step(k), open, done, depth + 1)
      if p then return p end
    end
    open[v], done[v] = nil, true
  elseif t == "function" then return path .. ": a function cannot be a LuaValue"
  elseif t == "thread" then return path .. ": a coroutine cannot be a LuaValue"
  elseif t == "userdata" then
    local mt = rawmeta(v)
    if mt and rawget(mt, "__jobrun") then
      return path .. format(": a jobrun object (%s) cannot be a LuaValue", sub(tostring(rawget(mt, "__name")), 8))
    end
    local n = mt and rawget(mt, "__name")
    return path .. ": a userdata" .. (type(n) == "string" and " (" .. n .. ")" or "") .. " cannot be a LuaValue"
  end
  return nil
end

local function failed(e, name, fname)
  e.plugin, e["function"] = name, fname
  return false, e
end

local function dispatch(name, fname, arg, check)
  if check then
    local d = deps[name]
    if d and stale(d) then reset() end
  end
  local mod = plugins[name]
  if mod == nil then
    local err
    mod, err = load_plugin(name)
    if not mod then return failed(err, name, fname) end
  end
  local f = rawget(mod, fname)
  if type(f) ~= "function" then
    return failed(fail("functionMissing", format("plug-in %q has no function %q%s", name, fname,
      f == nil and "" or " (its field is a " .. type(f) .. ")")), name, fname)
  end
  current, label = name, name .. ":" .. fname
  local ok, r = xpcall(f, handler, arg)
  current = nil
  if not ok then return failed(settle(r), name, fname) end
  local t = type(r)
  if t == "table" or t == "function" or t == "userdata" or t == "thread" then
    local why = unsendable(r, "result", {}, {}, 0)
    if why then return failed(fail("unsendableResult", why), name, fname) end
  end
  return true, r
end

-- Output: a plug-in's print, io.write and io.stdout go to descriptor `outfd`
-- (the host's stderr by default), each line tagged `[plugin:function] `;
-- the worker's stdout is never written, whatever the plug-in prints.
local at_start = true
local function emit(s)
  local parts, pos = {}, 1
  while pos <= #s do
    if at_start then parts[#parts + 1] = "[" .. label .. "] " end
    local nl = find(s, "\n", pos, true)
    if nl then
      parts[#parts + 1] = sub(s, pos, nl)
      pos, at_start = nl + 1, true
    else
      parts[#parts + 1] = sub(s, pos)
      pos, at_start = #s + 1, false
    end
  end
  write(outfd, concat(parts))
end
local function write_values(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "number" then v = mtype(v) == "integer" and format("%d", v) or format("%.14g", v)
    elseif type(v) ~= "string" then error(format("bad argument #%d to 'write' (string expected, got %s)", i, type(v)), 3) end
    parts[i] = v
  end
  emit(concat(parts))
end
print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  emit(concat(parts, "\t") .. "\n")
end
local Output = {}
Output.__index = {
  write = function(self, ...) write_values(...); return self end,
  flush = function(self) return self end,
  setvbuf = function() return true end,
  close = function() return nil, "cannot close standard file" end,
}
Output.__name = "FILE*"
Output.__tostring = function() return "file (plug-in output)" end
io.stdout = setmetatable({}, Output)
io.write = function(...) write_values(...); return io.stdout end
io.output(stderr)

-- os.exit would end the worker in the middle of a call: a plug-in fails a
-- call by raising an error instead. A process a plug-in forked (Process,
-- Pool) runs in a copy of this state and exits as any does.
local os_exit, worker_pid = os.exit, getpid()
os.exit = function(...)
  if getpid() ~= worker_pid then return os_exit(...) end
  error("os.exit is not allowed in a plug-in (raise an error to fail the call)", 2)
end

if restricted then
  local function refuse(what)
    return function() error(what .. " is not allowed in restricted mode", 2) end
  end
  os.execute, io.popen, package.loadlib = refuse("os.execute"), refuse("io.popen"), refuse("package.loadlib")
  os.getenv, os.tmpname, os.setlocale = refuse("os.getenv"), refuse("os.tmpname"), refuse("os.setlocale")
  package.searchers[3], package.searchers[4] = nil, nil
  debug, loaded.debug = nil, nil
  string.dump = refuse("string.dump")

  -- A path inside one of the allowed folders, as its real path (symbolic
  -- links and `..` resolved); for a file not there yet, its folder's.
  local function inside(path)
    if type(path) ~= "string" then return nil end
    local real = realpath(path)
    if not real then
      local parent, base = path:match("^(.*)/([^/]+)$")
      if not parent then parent, base = ".", path end
      if base == "." or base == ".." then return nil end
      local rp = realpath(parent == "" and "/" or parent)
      if not rp then return nil end
      real = (rp == "/" and "" or rp) .. "/" .. base
    end
    for _, a in ipairs(allowed) do
      if real == a or sub(real, 1, #a + 1) == a .. "/" or a == "/" then return real end
    end
    return nil
  end
  local function outside(path)
    return nil, tostring(path) .. ": not allowed in restricted mode (outside the allowed folders)", 13
  end
  io.open = function(path, mode)
    local real = inside(path)
    if not real then return outside(path) end
    return io_open(real, mode)
  end
  local lines0 = io.lines
  io.lines = function(path, ...)
    if path == nil then error("io.lines without a file name is not allowed in restricted mode", 2) end
    local real = inside(path)
    if not real then error(select(2, outside(path)), 2) end
    return lines0(real, ...)
  end
  io.input, io.read = refuse("io.input"), refuse("io.read")
  io.output = function(f) if f ~= nil then error("io.output is not allowed in restricted mode", 2) end return stderr end
  os.remove = function(path)
    local real = inside(path)
    if not real then return outside(path) end
    return os_remove(real)
  end
  os.rename = function(from, to)
    local a, b = inside(from), inside(to)
    if not a then return outside(from) end
    if not b then return outside(to) end
    return os_rename(a, b)
  end
  loadfile = function(path, ...)
    local real = inside(path)
    if not real then return outside(path) end
    return loadfile0(real, ...)
  end
  dofile = function(path)
    local f, err = loadfile(path)
    if not f then error(err, 2) end
    return f()
  end
  -- A `script` worker would be a fresh interpreter, outside the sandbox; a
  -- forked one (target = fn) keeps this state and its restrictions.
  local Process0 = jobrun.Process
  jobrun.Process = function(opts)
    if type(opts) == "table" and rawget(opts, "script") ~= nil then
      error("Process{script = ...} is not allowed in restricted mode (use target = fn)", 2)
    end
    return Process0(opts)
  end
end

return dispatch
