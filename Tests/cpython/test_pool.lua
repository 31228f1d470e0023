-- CPython's _TestPool, ported to jobrun. CPython shares one Pool(4) across
-- the class (setUpClass); here each case makes it on first use and
-- terminates it at the end (tearDownClass), as each case runs on its own.
-- Lists are Lua lists, so range(10) is {0, ..., 9}.
--
-- jobrun differs: an error in a task is raised again in the caller as the
-- worker's message with its traceback (CPython re-raises the exception
-- object with a RemoteTraceback as its cause); AsyncResult.get(timeout)
-- raises Timeout (CPython: multiprocessing.TimeoutError); `with Pool() as p:`
-- is `local p <close> = jobrun.Pool{...}` (leaving the block terminates it).
--
-- Not ported: apply's kwargs, test_map_async_callbacks (no callbacks), the
-- *_handle_iterable_exception tests (map takes a list, not an iterator),
-- test_enter (no
-- __enter__ to refuse a second `with`) and test_resource_warning.
require "harness"

local shared
local function pool()
  shared = shared or jobrun.Pool{workers = 4}
  return shared
end
local function tearDown()
  if shared then shared:terminate(); shared:join(); shared = nil end
end
local function pcase(name, fn)
  case(name, function()
    local ok, err = pcall(fn)
    tearDown()
    if not ok then error(err, 0) end
  end)
end

local function sqr(x, wait)
  jobrun.sleep(wait or 0.0)
  return x * x
end

local function mul(x, y) return x * y end

local function range(a, b)
  if b == nil then a, b = 0, a end
  local t = {}
  for i = a, b - 1 do t[#t + 1] = i end
  return t
end
local function map(f, list)
  local t = {}
  for i, x in ipairs(list) do t[i] = f(x) end
  return t
end
local function zip(xs, ys)
  local t = {}
  for i = 1, math.min(#xs, #ys) do t[i] = {xs[i], ys[i]} end
  return t
end
local function reversed(xs)
  local t = {}
  for i = #xs, 1, -1 do t[#t + 1] = xs[i] end
  return t
end
local function starmap(f, tuples)
  local t = {}
  for i, args in ipairs(tuples) do t[i] = f(table.unpack(args)) end
  return t
end
local function sorted(it)
  local t = {}
  for x in it do t[#t + 1] = x end
  table.sort(t)
  return t
end

pcase("test_apply", function()
  local papply = function(...) return pool():apply(...) end
  assertEqual(papply(sqr, 5), sqr(5))
  assertEqual(papply(sqr, 3), sqr(3))
end)

pcase("test_map", function()
  assertEqual(pool():map(sqr, range(10)), map(sqr, range(10)))
  assertEqual(pool():map(sqr, range(100), 20), map(sqr, range(100)))
end)

pcase("test_starmap", function()
  local tuples = zip(range(10), reversed(range(10)))
  assertEqual(pool():starmap(mul, tuples), starmap(mul, tuples))
  tuples = zip(range(100), reversed(range(100)))
  assertEqual(pool():starmap(mul, tuples, 20), starmap(mul, tuples))
end)

pcase("test_starmap_async", function()
  local tuples = zip(range(100), reversed(range(100)))
  assertEqual(pool():starmap_async(mul, tuples):get(SHORT_TIMEOUT), starmap(mul, tuples))
end)

pcase("test_map_async", function()
  assertEqual(pool():map_async(sqr, range(10)):get(SHORT_TIMEOUT), map(sqr, range(10)))
end)

pcase("test_map_unplicklable", function()
  -- Issue #19425 -- failure to pickle should not cause a hang
  local A = coroutine.create(function() end)
  local items = {}
  for i = 1, 10 do items[i] = A end
  assertRaises(jobrun.TypeError, pool().map, pool(), sqr, items)
end)

pcase("test_map_chunksize", function()
  local ok, err = pcall(function() return pool():map_async(sqr, {}, 1):get(TIMEOUT1) end)
  if not ok and type(err) == "table" and err.kind == jobrun.Timeout then
    assertTrue(false, "pool.map_async with chunksize stalled on null list")
  end
  if not ok then error(err, 0) end
end)

pcase("test_async", function()
  pool()
  -- Timed from the submission, not from get() as CPython does: the task's
  -- sleep may begin before get() is called.
  local t0 = jobrun.time()
  local res = pool():apply_async(sqr, 7, TIMEOUT1)
  local r = res:get()
  assertEqual(r, 49)
  assertTimingAlmostEqual(jobrun.time() - t0, TIMEOUT1)
end)

pcase("test_async_timeout", function()
  local p = jobrun.Pool{workers = 3}
  local ok, err = pcall(function()
    local res = p:apply_async(sqr, 6, TIMEOUT2 + SHORT_TIMEOUT)
    local elapsed = timedRaises(jobrun.Timeout, res.get, res, TIMEOUT2)
    assertTimingAlmostEqual(elapsed, TIMEOUT2)
  end)
  p:terminate()
  p:join()
  if not ok then error(err, 0) end
end)

pcase("test_imap", function()
  local it = pool():imap(sqr, range(10))
  local list = {}
  for x in it do list[#list + 1] = x end
  assertEqual(list, map(sqr, range(10)))

  it = pool():imap(sqr, range(10))
  for i = 0, 9 do assertEqual(it(), i * i) end
  assertEqual(it(), nil)   -- StopIteration

  it = pool():imap(sqr, range(1000), 100)
  for i = 0, 999 do assertEqual(it(), i * i) end
  assertEqual(it(), nil)
end)

pcase("test_imap_unordered", function()
  local it = pool():imap_unordered(sqr, range(10))
  assertEqual(sorted(it), map(sqr, range(10)))

  it = pool():imap_unordered(sqr, range(1000), 100)
  assertEqual(sorted(it), map(sqr, range(1000)))
end)

pcase("test_make_pool", function()
  assertRaises(jobrun.ValueError, jobrun.Pool, {workers = -1})
  assertRaises(jobrun.ValueError, jobrun.Pool, {workers = 0})

  local p = jobrun.Pool{workers = 3}
  local ok, err = pcall(function() assertEqual(3, p.workers) end)
  p:close()
  p:join()
  if not ok then error(err, 0) end
end)

pcase("test_terminate", function()
  -- Simulate slow tasks which take "forever" to complete
  local sleep_time = LONG_TIMEOUT
  local p = jobrun.Pool{workers = 3}
  local args = {}
  for i = 1, 10000 do args[i] = sleep_time end
  local result = p:map_async(function(s) jobrun.sleep(s) end, args, 1)
  jobrun.sleep(0.2)  -- give some tasks a chance to start
  local elapsed = timed(function()
    p:terminate()
    p:join()
  end)
  assertLess(elapsed, sleep_time)
end)

pcase("test_empty_iterable", function()
  -- See Issue 12157
  local p = jobrun.Pool{workers = 1}

  assertEqual(p:map(sqr, {}), {})
  assertEqual(sorted(p:imap(sqr, {})), {})
  assertEqual(sorted(p:imap_unordered(sqr, {})), {})
  assertEqual(p:map_async(sqr, {}):get(SHORT_TIMEOUT), {})

  p:close()
  p:join()
end)

pcase("test_context", function()
  local L = range(10)
  local expected = map(sqr, L)
  local p
  do
    local pool <close> = jobrun.Pool{workers = 2}
    p = pool
    local r = p:map_async(sqr, L)
    assertEqual(r:get(SHORT_TIMEOUT), expected)
  end
  p:join()
  assertRaises(jobrun.ValueError, p.map_async, p, sqr, L)
end)

local function _test_traceback()
  error("RuntimeError 123") -- some comment
end
local TRACEBACK_LINE = debug.getinfo(_test_traceback, "S").linedefined + 1   -- the error() line

pcase("test_traceback", function()
  -- The worker's traceback is in the error raised in the caller.
  local exc, p
  do
    local pool <close> = jobrun.Pool{workers = 1}
    p = pool
    local ok, e = pcall(p.apply, p, _test_traceback)
    if ok then assertTrue(false, "expected RuntimeError") end
    exc = e
  end
  p:join()
  local text = tostring(exc)
  assertTrue(text:find("RuntimeError 123", 1, true), text)
  assertTrue(text:find("test_pool.lua:" .. TRACEBACK_LINE .. ":", 1, true), text)
  assertTrue(text:find("stack traceback", 1, true), text)
end)

pcase("test_wrapped_exception", function()
  -- Issue #20980: an error in a task is raised in the caller.
  local p
  do
    local pool <close> = jobrun.Pool{workers = 1}
    p = pool
    local err = assertRaises("error", p.apply, p, function() error("foo", 0) end)
    assertTrue(tostring(err):find("foo", 1, true), tostring(err))
  end
  p:join()
end)

pcase("test_map_no_failfast", function()
  -- Issue #23992: an error during map() must not make Pool.join() deadlock.
  -- CPython's task waits 0 and 1 s and the pause after the error 0.5 s;
  -- here 0 and 0.5 s and 0.1 s.
  local t_start = jobrun.time()
  local function raise_large_valuerror(wait)
    jobrun.sleep(wait)
    error(("x"):rep(1024 * 1024), 0)
  end
  local ok, err = pcall(function()
    local p = jobrun.Pool{workers = 2}
    local ok, err = pcall(p.map, p, raise_large_valuerror, {0, 0.5})
    jobrun.sleep(0.1)
    p:close()
    p:join()
    if not ok then error(err, 0) end
  end)
  assertFalse(ok)
  assertTrue(tostring(err):find(("x"):rep(100), 1, true))

  -- check that we indeed waited for all jobs
  assertGreater(jobrun.time() - t_start, 0.45)
end)

pcase("test_release_task_refs", function()
  -- Issue #29861: task arguments and results should not be kept alive
  -- after we are done with them (weak references in CPython, a weak table
  -- here).
  local objs = {}
  for i = 1, 10 do objs[i] = {i} end
  local refs = setmetatable({}, {__mode = "v"})
  for i, o in ipairs(objs) do refs[i] = o end
  local results = setmetatable({}, {__mode = "v"})
  for i, r in ipairs(pool():map(function(x) return x end, objs)) do results[i] = r end

  objs = nil
  collectgarbage()
  collectgarbage()
  assertEqual(next(refs), nil, "an argument is still alive")
  -- With a process pool, copies of the objects are returned, check
  -- they were released too.
  assertEqual(next(results), nil, "a result is still alive")
end)

run()
