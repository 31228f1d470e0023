-- The base of the `jobrun` module, run first in every Lua state (Module.swift)
-- with (jobrun, core, ErrorMeta): the module table, the private table of
-- Swift primitives (CoreBindings.swift) and the metatable of jobrun errors.
-- The other prelude files run after it with the same three values; what they
-- share and scripts must not see goes in `core` (core.timeout_arg).
local jobrun, core, ErrorMeta = ...

package.loaded.jobrun = jobrun

jobrun.version = core.version
jobrun.is_main = true

-- Errors: tables {kind, message, where} printing as "jobrun.<kind>: <message>".
ErrorMeta.__name = "jobrun.Error"
ErrorMeta.__tostring = function(e)
  return "jobrun." .. tostring(e.kind) .. ": " .. tostring(e.message)
end
for _, kind in ipairs{"Empty", "Full", "Closed", "Timeout", "ValueError", "TypeError",
                      "EOF", "WorkerDied", "Deadlock", "ProcessError", "Halted"} do
  jobrun[kind] = kind
end

local raise = core.raise

--- A timeout argument as every binding reads it (core.timeout): seconds or nil;
--- a bad one raised at the line `level` levels up from the caller.
local function timeout_arg(t, fname, level)
  local v, kind, message = core.timeout(t, fname)
  if v == false then raise(kind, message, level + 1) end
  return v
end
core.timeout_arg = timeout_arg

--- Error text with its place, for uncaught errors: "file:12: jobrun.Empty: ...".
local function describe(e)
  if type(e) == "table" and getmetatable(e) == ErrorMeta then
    if e.where then return e.where .. ": " .. tostring(e) end
    return tostring(e)
  end
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return "(error object is a " .. type(e) .. " value)"
end
jobrun._describe = describe
jobrun._input_ready = core.input_ready   -- (map.lua)

--- A traceback of the user's code: the frames of jobrun's own Lua (chunk
--- names "jobrun/prelude/...") are dropped, and so is a C frame (pcall,
--- xpcall, a binding) next to one of them, which only joins them. With
--- `bottom` (a forked worker's: the frame of the prelude function that ran
--- its target, "in function <jobrun/prelude/process.lua:N>"), that frame
--- and everything below it go: below it is the parent's stack at the fork,
--- not the worker's.
--- JOBRUN_INTERNAL_FRAMES=1 keeps every frame (for work on jobrun itself).
local all_frames = os.getenv("JOBRUN_INTERNAL_FRAMES") == "1"
local function is_internal(line) return line:find("^\tjobrun/prelude/") ~= nil end
local function is_joint(line) return line:find("^\t%[C%]") ~= nil or line == "\t(...tail calls...)" end
local function user_frames(tb, bottom)
  if all_frames then return tb end
  local lines = {}
  for line in (tb .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local drop = {}
  for i, line in ipairs(lines) do
    if bottom and is_internal(line) and line:sub(-#bottom) == bottom then
      for k = i, #lines do drop[k] = true end
      break
    end
    drop[i] = is_internal(line)
  end
  -- C frames and tail-call marks next to dropped frames (in runs) go too.
  for i = 1, #lines do
    if not drop[i] and is_joint(lines[i]) and drop[i - 1] then drop[i] = true end
  end
  for i = #lines, 1, -1 do
    if not drop[i] and is_joint(lines[i]) and drop[i + 1] then drop[i] = true end
  end
  local out = {}
  for i, line in ipairs(lines) do
    if not drop[i] then out[#out + 1] = line end
  end
  return table.concat(out, "\n")
end
core.user_frames = user_frames

--- The message handler of a main script or a `script` worker, called by
--- Host.tracebackHandler (a C function, level 2, which is jobrun's too).
local function traceback_handler(e)
  return user_frames(debug.traceback(describe(e), 3))
end
jobrun._traceback = traceback_handler

jobrun.sleep = core.sleep
jobrun.time = core.time
jobrun.cpu_count = core.cpu_count
jobrun.progress = core.progress
jobrun._shm_in_use = core.shm_in_use   -- for tests: shared memory in use, in bytes
