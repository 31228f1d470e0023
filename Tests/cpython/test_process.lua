-- CPython's _TestProcess (Lib/test/_test_multiprocessing.py), ported to jobrun.
--
-- Not ported, as jobrun has no counterpart: test_set_executable, authkey,
-- kwargs, test_parent_process(_attributes) (no parent_process), sentinel,
-- test_close (no Process.close), test_interrupt* (no interrupt),
-- test_process_mainthread_native_id and test_wait_for_threads (no threads),
-- test_child_fd_inflation (skipped for fork in CPython too), the
-- forkserver tests.
require "harness"

-- /proc/self/stat starts with the pid of the process that reads it.
local function getpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

case("test_current", function()
  local current = jobrun.current_process()
  assertTrue(current:is_alive())
  assertFalse(current.daemon)
  assertEqual(current.pid, getpid())
  assertEqual(current.exitcode, nil)
end)

local _test_args = worker("_test_args", function(q, arg)
  q:put(arg)
end)

case("test_args_argument", function()
  -- bpo-45735: a list or a tuple as args; Lua has one kind of list.
  for _, arg in ipairs{1, "str", {1}, {1}} do
    local q = jobrun.Queue(1)
    local p = Process{target = _test_args, args = {q, arg}}
    p.daemon = true
    p:start()
    assertEqual(q:get(true, SHORT_TIMEOUT), arg)
    join_process(p)
  end
end)

local _test = worker("_test", function(q, ...)
  local current = jobrun.current_process()
  q:put({...})
  q:put(current.name)
  q:put(current.pid)
end)

case("test_daemon_argument", function()
  -- CPython's default is the creating process's daemon flag.
  local proc0 = jobrun.Process{target = _test}
  assertEqual(proc0.daemon, jobrun.current_process().daemon)
  local proc1 = jobrun.Process{target = _test, daemon = true}
  assertTrue(proc1.daemon)
  local proc2 = jobrun.Process{target = _test, daemon = false}
  assertFalse(proc2.daemon)
end)

case("test_process", function()
  local q = jobrun.Queue(1)
  local e = jobrun.Event()
  local name = "SomeProcess"
  local p = Process{target = _test, args = {q, 1, 2}, name = name}
  p.daemon = true

  assertEqual(p:is_alive(), false)
  assertEqual(p.daemon, true)
  assertNotIn(p, jobrun.active_children())
  assertEqual(type(jobrun.active_children()), "table")
  assertEqual(p.exitcode, nil)

  p:start()

  assertEqual(p.exitcode, nil)
  assertEqual(p:is_alive(), true)
  assertIn(p, jobrun.active_children())

  assertEqual(q:get(true, SHORT_TIMEOUT), {1, 2})
  assertEqual(q:get(true, SHORT_TIMEOUT), p.name)
  assertEqual(q:get(true, SHORT_TIMEOUT), p.pid)

  join_process(p)

  assertEqual(p.exitcode, 0)
  assertEqual(p:is_alive(), false)
  assertNotIn(p, jobrun.active_children())
end)

local _sleep_some_event = worker("_sleep_some_event", function(event)
  event:set()
  jobrun.sleep(100)
end)

-- Returns the exit code after meth(p) stops a sleeping child.
local function _kill_process(meth)
  local event = jobrun.Event()
  local p = Process{target = _sleep_some_event, args = {event}}
  p.daemon = true
  p:start()

  assertEqual(p:is_alive(), true)
  assertIn(p, jobrun.active_children())
  assertEqual(p.exitcode, nil)

  -- CPython's join returns None either way; jobrun's says whether the process ended.
  local elapsed, r = timed(p.join, p, 0)
  assertEqual(r, false)
  assertTimingAlmostEqual(elapsed, 0.0)
  assertEqual(p:is_alive(), true)

  do
    local elapsed, r = timed(p.join, p, -1)
    assertEqual(r, false)
    assertTimingAlmostEqual(elapsed, 0.0)
    assertEqual(p:is_alive(), true)
  end

  if not event:wait(SHORT_TIMEOUT) then
    p:terminate(); p:join(SHORT_TIMEOUT)
    assertTrue(false, "event not signaled in " .. SHORT_TIMEOUT .. " seconds")
  end

  meth(p)

  -- CPython bounds this join with alarm(10).
  elapsed, r = timed(p.join, p, 10)
  assertEqual(r, true, "join took too long: " .. tostring(p))
  assertTimingAlmostEqual(elapsed, 0.0)

  assertEqual(p:is_alive(), false)
  assertNotIn(p, jobrun.active_children())

  p:join()

  return p.exitcode
end

case("test_terminate", function()
  local exitcode = _kill_process(function(p) p:terminate() end)
  assertEqual(exitcode, -15)
end)

case("test_kill", function()
  local exitcode = _kill_process(function(p) p:kill() end)
  assertEqual(exitcode, -9)
end)

case("test_cpu_count", function()
  local cpus = jobrun.cpu_count()
  assertEqual(math.type(cpus), "integer")
  assertGreaterEqual(cpus, 1)
end)

case("test_active_children", function()
  assertEqual(type(jobrun.active_children()), "table")

  local event = jobrun.Event()
  local p = jobrun.Process{target = function() event:wait(SHORT_TIMEOUT) end}
  assertNotIn(p, jobrun.active_children())

  local ok, err = pcall(function()
    p.daemon = true
    p:start()
    assertIn(p, jobrun.active_children())
  end)
  event:set()
  if not ok then error(err, 0) end

  join_process(p)
  assertNotIn(p, jobrun.active_children())
end)

local function _test_recursion(wconn, id)
  wconn:send(id)
  if #id < 2 then
    for i = 0, 1 do
      local child = {table.unpack(id)}
      child[#child + 1] = i
      local p = jobrun.Process{target = _test_recursion, args = {wconn, child}}
      p:start()
      p:join(SHORT_TIMEOUT)
    end
  end
end

case("test_recursion", function()
  local rconn, wconn = jobrun.Pipe(false)
  _test_recursion(wconn, {})

  -- CPython sleeps DELTA here for its feeder threads; every send above
  -- returned before its process was joined, and jobrun has no feeder, so
  -- nothing is still on its way.
  local result = {}
  while rconn:poll() do
    result[#result + 1] = rconn:recv()
  end

  local expected = {
    {},
      {0},
        {0, 0},
        {0, 1},
      {1},
        {1, 0},
        {1, 1},
  }
  assertEqual(result, expected)
end)

case("test_many_processes", function()
  local N = 100   -- CPython's figure for fork

  local procs = {}
  for i = 1, N do procs[i] = jobrun.Process{target = function() jobrun.sleep(0.01) end} end
  for _, p in ipairs(procs) do p:start() end
  for _, p in ipairs(procs) do join_process(p) end
  for _, p in ipairs(procs) do assertEqual(p.exitcode, 0) end

  procs = {}
  for i = 1, N do procs[i] = jobrun.Process{target = function() jobrun.sleep(100) end} end
  for _, p in ipairs(procs) do p:start() end
  jobrun.sleep(0.001)   -- let the children start...
  for _, p in ipairs(procs) do p:terminate() end
  for _, p in ipairs(procs) do join_process(p) end
  for _, p in ipairs(procs) do assertEqual(p.exitcode, -15) end
end)

case("test_lose_target_ref", function()
  -- DummyCallable: a callable table as target. Once started, the Process
  -- object no longer holds its target (bpo-30775), so it can be collected.
  local DummyCallable = {}
  DummyCallable.__call = function(self, q, c)
    assert(getmetatable(c) == DummyCallable)
    q:put(5)
  end
  local c = setmetatable({}, DummyCallable)
  local wr = setmetatable({c}, {__mode = "v"})
  local q = jobrun.Queue()
  local p = jobrun.Process{target = c, args = {q, c}}
  c = nil
  p:start()
  join_process(p)
  collectgarbage(); collectgarbage()
  assertIsNil(wr[1])
  assertEqual(q:get(true, SHORT_TIMEOUT), 5)
end)

local function _test_error_on_stdio_flush(evt, break_std_streams)
  for stream_name, action in pairs(break_std_streams or {}) do
    if action == "close" then
      io[stream_name]:close()
    else
      assert(action == "remove")
      io[stream_name] = nil
    end
  end
  evt:set()
end

case("test_error_on_stdio_flush_1", function()
  -- The parent's io.stdout/io.stderr replaced by a closed file, then by none.
  local closed = io.tmpfile()
  closed:close()
  for _, stream_name in ipairs{"stdout", "stderr"} do
    for _, stream in ipairs{closed, false} do
      local old_stream = io[stream_name]
      io[stream_name] = stream or nil
      local ok, err = pcall(function()
        local evt = jobrun.Event()
        local proc = jobrun.Process{target = _test_error_on_stdio_flush, args = {evt}}
        proc:start()
        join_process(proc)
        assertTrue(evt:is_set())
        assertEqual(proc.exitcode, 0)
      end)
      io[stream_name] = old_stream
      if not ok then error(err, 0) end
    end
  end
end)

case("test_error_on_stdio_flush_2", function()
  -- Same, but the child breaks its own standard streams.
  for _, stream_name in ipairs{"stdout", "stderr"} do
    for _, action in ipairs{"close", "remove"} do
      local evt = jobrun.Event()
      local proc = jobrun.Process{target = _test_error_on_stdio_flush, args = {evt, {[stream_name] = action}}}
      proc:start()
      join_process(proc)
      assertTrue(evt:is_set())
      assertEqual(proc.exitcode, 0)
    end
  end
end)

run()
