-- The tiny runner of the CPython port (Tests/cpython/*.lua).
--
-- Each file registers named cases and ends with `run()`:
--
--   require "harness"
--   case("test_put", function() ... assertEqual(q:get(), 1) ... end)
--   run()
--
-- `jobrun test_queue.lua` runs every case; `jobrun test_queue.lua test_put`
-- runs one (`... test_put --spawn` as under CPython's spawn start method, see
-- worker()); `jobrun test_queue.lua --list` prints the names. Each case
-- prints one line:
--
--   ok test_put                      passed
--   FAIL test_put: message           failed (the message names the line)
--   xfail test_put: reason -- message   failed, as marked by xfail(reason)
--   XPASS test_put: reason           marked xfail but passed: remove the marker
--
-- The Swift side (Tests/JobrunEndToEndTests/CPythonPortTests.swift) runs each
-- case in its own jobrun and fails on FAIL, XPASS, a missing line, a timeout
-- or a non-zero exit.
--
-- The assertion helpers keep unittest's names so that a case reads like the
-- CPython test it ports.

local H = {}

-- CPython's constants. TIMEOUT1..3 and DELTA are CPython's own values (with
-- CHECK_TIMINGS off); SHORT/LONG_TIMEOUT bound waits that CPython leaves
-- long (support.SHORT_TIMEOUT is 30 s, LONG_TIMEOUT 5 min): a jobrun wait
-- that needs more than 10 s here is a failure, not a slow machine.
TIMEOUT1, TIMEOUT2, TIMEOUT3 = 0.1, 0.1, 0.1
DELTA = 0.1
CLOCK_RES = 0.1
SHORT_TIMEOUT = 10
LONG_TIMEOUT = 10

local cases, byName, current = {}, {}, nil

-- CPython runs each class under every start method. `--spawn` after the
-- case name runs it as under spawn: every target registered with worker()
-- runs in a Process{script = ...} worker, a fresh interpreter that gets its
-- arguments (queues, locks, pipe ends...) as handles; other targets fork.
SPAWN = false
local workers, workerNames = {}, setmetatable({}, {__mode = "k"})
H.workers = workers

--- worker(name, fn) -> fn: a target that can also run in a script worker.
--- It must take everything it uses as arguments (upvalues other than the
--- file's own top-level locals do not travel), as CPython's classmethod
--- targets do.
function worker(name, fn)
  assert(not workers[name], "two workers named " .. name)
  workers[name] = fn
  workerNames[fn] = name
  return fn
end

--- Process(opts): jobrun.Process(opts), or with --spawn, for a target made
--- by worker(), a script worker (spawn_worker.lua) running the same target.
function Process(opts)
  local name = opts.target and workerNames[opts.target]
  if not (SPAWN and name) then return jobrun.Process(opts) end
  local args = opts.args or {}
  local n = args.n or #args
  local sargs = table.pack(H.file, name, table.unpack(args, 1, n))
  return jobrun.Process{script = "spawn_worker.lua", args = sargs, name = opts.name, daemon = opts.daemon}
end

--- case(name, fn): registers a case.
function case(name, fn)
  assert(type(name) == "string" and type(fn) == "function", "case(name, fn)")
  assert(not byName[name], "two cases named " .. name)
  local c = {name = name, fn = fn}
  cases[#cases + 1] = c
  byName[name] = c
end

--- xfail(reason): marks the running case as expected to fail, for a known
--- defect named in `reason`. Call it first thing in the case.
--- xfail(reason, fn): only the assertions in fn are expected to fail; the
--- case goes on after them either way, so the rest of it still counts.
function xfail(reason, fn)
  assert(current, "xfail() is called inside a case")
  if fn == nil then
    current.xfail = reason
    return
  end
  local ok, err = xpcall(fn, function(e)
    if type(e) == "table" and e.harness then return e end
    return debug.traceback(H.describe(e), 2)
  end)
  current.parts = current.parts or {}
  table.insert(current.parts, {reason = reason, ok = ok, err = err})
end

-- Values as text, for messages.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" or depth > 2 then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  local parts, n = {}, 0
  for i = 1, #v do parts[#parts + 1] = show(v[i], depth + 1); n = i end
  for k, x in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      parts[#parts + 1] = "[" .. show(k, depth + 1) .. "] = " .. show(x, depth + 1)
    end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
H.show = show

-- Raises an assertion failure at the caller's caller (the case's line).
local function fail(msg, level)
  error({harness = true, message = msg, where = debug.traceback("", (level or 2) + 1)}, 0)
end
H.fail = fail

local function deepEqual(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- 1 == 1.0 in Lua as in Python; nan is never equal.
    return false
  end
  if getmetatable(a) or getmetatable(b) then return false end
  for k, v in pairs(a) do if not deepEqual(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
H.deepEqual = deepEqual

function assertEqual(a, b, msg)
  if not deepEqual(a, b) then fail((msg and msg .. ": " or "") .. show(a) .. " ~= " .. show(b), 2) end
end
function assertNotEqual(a, b, msg)
  if deepEqual(a, b) then fail((msg and msg .. ": " or "") .. show(a) .. " == " .. show(b), 2) end
end
function assertTrue(x, msg)
  if not x then fail((msg and msg .. ": " or "") .. show(x) .. " is not true", 2) end
end
function assertFalse(x, msg)
  if x then fail((msg and msg .. ": " or "") .. show(x) .. " is not false", 2) end
end
function assertIsNil(x, msg)
  if x ~= nil then fail((msg and msg .. ": " or "") .. show(x) .. " is not nil", 2) end
end
function assertIn(x, list, msg)
  for _, v in pairs(list) do if deepEqual(v, x) then return end end
  fail((msg and msg .. ": " or "") .. show(x) .. " not found in " .. show(list), 2)
end
function assertNotIn(x, list, msg)
  for _, v in pairs(list) do
    if deepEqual(v, x) then fail((msg and msg .. ": " or "") .. show(x) .. " unexpectedly found in " .. show(list), 2) end
  end
end
function assertGreater(a, b, msg)
  if not (a > b) then fail((msg and msg .. ": " or "") .. show(a) .. " not greater than " .. show(b), 2) end
end
function assertGreaterEqual(a, b, msg)
  if not (a >= b) then fail((msg and msg .. ": " or "") .. show(a) .. " not greater than or equal to " .. show(b), 2) end
end
function assertLess(a, b, msg)
  if not (a < b) then fail((msg and msg .. ": " or "") .. show(a) .. " not less than " .. show(b), 2) end
end
function assertLessEqual(a, b, msg)
  if not (a <= b) then fail((msg and msg .. ": " or "") .. show(a) .. " not less than or equal to " .. show(b), 2) end
end

--- assertRaises(kind, fn, ...) -> the error. `kind` is a jobrun error kind
--- (jobrun.Empty, ...), a list of kinds, or "error" for any error at all.
function assertRaises(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then fail("did not raise " .. show(kind), 2) end
  if kind == "error" then return err end
  local got = type(err) == "table" and err.kind or nil
  local kinds = type(kind) == "table" and kind or {kind}
  for _, k in ipairs(kinds) do if got == k then return err end end
  fail("raised " .. (got and ("jobrun." .. got) or "a plain error") .. " instead of " .. show(kind) .. ": " .. tostring(err), 2)
end

--- assertRaisesRegex(kind, pattern, fn, ...): as assertRaises, and the error's
--- text matches the Lua pattern.
function assertRaisesRegex(kind, pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then fail("did not raise " .. show(kind), 2) end
  local got = type(err) == "table" and err.kind or nil
  if kind ~= "error" and got ~= kind then
    fail("raised " .. (got and ("jobrun." .. got) or "a plain error") .. " instead of " .. show(kind) .. ": " .. tostring(err), 2)
  end
  if not tostring(err):find(pattern) then fail(show(tostring(err)) .. " does not match " .. show(pattern), 2) end
  return err
end

--- TimingWrapper: timed(fn, ...) -> elapsed seconds, then fn's results.
function timed(fn, ...)
  local t0 = jobrun.time()
  local r = table.pack(pcall(fn, ...))
  local elapsed = jobrun.time() - t0
  if not r[1] then error(r[2], 0) end
  return elapsed, table.unpack(r, 2, r.n)
end

--- timedRaises(kind, fn, ...) -> elapsed seconds, error: times a call that must raise.
function timedRaises(kind, fn, ...)
  local t0 = jobrun.time()
  local ok, err = pcall(fn, ...)
  local elapsed = jobrun.time() - t0
  if ok then fail("did not raise " .. show(kind), 2) end
  local got = type(err) == "table" and err.kind or nil
  if got ~= kind then
    fail("raised " .. (got and ("jobrun." .. got) or "a plain error") .. " instead of " .. show(kind) .. ": " .. tostring(err), 2)
  end
  return elapsed, err
end

--- assertTimingAlmostEqual(elapsed, expected): CPython checks this only with
--- CHECK_TIMINGS on; here it is a loose bound that still catches a wait that
--- returned early or did not wait at all: expected - 10 ms <= elapsed <
--- expected + 3 s (the upper end allows for a loaded machine).
function assertTimingAlmostEqual(elapsed, expected)
  if elapsed < expected - 0.01 or elapsed >= expected + 3 then
    fail(("took %.3f s, expected about %.3f s"):format(elapsed, expected), 2)
  end
end

--- join_process(p): support's join_thread: join with a bound, fail if it hangs.
function join_process(p, timeout)
  if not p:join(timeout or SHORT_TIMEOUT) then
    fail(tostring(p) .. " did not end within " .. (timeout or SHORT_TIMEOUT) .. " s", 2)
  end
end

--- wait_until(pred [, timeout]): support.sleeping_retry; polls pred until it
--- is true or the bound passes (then fails). For counters that no event
--- signals, as CPython's assertReachesEventually.
function wait_until(pred, timeout, what)
  local deadline = jobrun.time() + (timeout or SHORT_TIMEOUT)
  local delay = 0.001
  while not pred() do
    if jobrun.time() > deadline then fail((what or "condition") .. " not reached within " .. (timeout or SHORT_TIMEOUT) .. " s", 2) end
    jobrun.sleep(delay)
    delay = math.min(delay * 2, 0.05)
  end
end

--- sleeping(pid): whether process pid sleeps (state S in /proc), e.g. in
--- the wait it was started into; for wait_until, where no event tells it.
function sleeping(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local st = f and f:read("a"):match("%) (%a)")
  if f then f:close() end
  return st == "S"
end

function H.describe(e)
  if type(e) == "table" and e.harness then
    -- The first frame in a test file (not this one) names the failing line.
    local at = e.where:match("\n%s*([^\n]*test_[%w_]+%.lua:%d+):") or e.where:match("\n%s*([^\n:]+%.lua:%d+):")
    return e.message .. (at and (" (at " .. at:match("[^/]*$") .. ")") or "")
  end
  local text = jobrun._describe and jobrun._describe(e) or tostring(e)
  return text
end

local function oneline(s)
  return (tostring(s):gsub("%s*\n%s*", " | "))
end

-- Stops what a failed case left running, so the run can end.
local function cleanup()
  local left = jobrun.active_children()
  for _, p in ipairs(left) do p:terminate() end
  for _, p in ipairs(left) do
    if not p:join(2) then p:kill(); p:join(2) end
  end
end

-- The message of a failure, on one line, with the test file's line.
local function message(err)
  if type(err) == "table" then return oneline(H.describe(err)) end
  -- Keep the message and the first frame in a test file; drop the rest of the traceback.
  local first = err:match("^(.-)\nstack traceback:") or err
  local at = err:match("\n%s*([^\n]-test_[%w_]+%.lua:%d+):")
  return oneline(first .. ((at and not first:find(at, 1, true)) and (" (at " .. at:match("[^/]*$") .. ")") or ""))
end

local function runOne(c)
  current = c
  local ok, err = xpcall(c.fn, function(e)
    if type(e) == "table" and e.harness then return e end
    return debug.traceback(H.describe(e), 2)
  end)
  current = nil
  local xpassed, xfailed = {}, {}
  for _, part in ipairs(c.parts or {}) do
    if part.ok then xpassed[#xpassed + 1] = part.reason
    else xfailed[#xfailed + 1] = part.reason .. " -- " .. message(part.err) end
  end
  local line
  if not ok then
    if c.xfail then
      line = "xfail " .. c.name .. ": " .. c.xfail .. " -- " .. message(err)
    else
      line = "FAIL " .. c.name .. ": " .. message(err)
    end
  elseif c.xfail or #xpassed > 0 then
    line = "XPASS " .. c.name .. ": " .. (c.xfail or table.concat(xpassed, "; ")) .. " (it passes now: remove the xfail marker)"
  elseif #xfailed > 0 then
    line = "xfail " .. c.name .. ": " .. table.concat(xfailed, "; ")
  else
    line = "ok " .. c.name
  end
  if not ok then cleanup() end
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

--- run(): runs the cases that arg[1] names (all without one), or lists them.
function run()
  -- A script worker loads the file for its workers, not to run cases.
  if not jobrun.is_main then return end
  H.file = arg[0]
  local want = arg and arg[1]
  SPAWN = arg[2] == "--spawn"
  if want == "--list" then
    for _, c in ipairs(cases) do print(c.name) end
    return
  end
  if want then
    local c = byName[want]
    if not c then print("FAIL " .. want .. ": no such case"); return end
    runOne(c)
  else
    for _, c in ipairs(cases) do runOne(c) end
  end
end

return H
