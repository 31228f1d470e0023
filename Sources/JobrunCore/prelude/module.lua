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
                      "EOF", "WorkerDied", "Deadlock", "ProcessError"} do
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

local function traceback_handler(e)
  return debug.traceback(describe(e), 2)
end
jobrun._traceback = traceback_handler

jobrun.sleep = core.sleep
jobrun.time = core.time
jobrun.cpu_count = core.cpu_count
jobrun.progress = core.progress
jobrun._shm_in_use = core.shm_in_use   -- for tests: shared memory in use, in bytes
