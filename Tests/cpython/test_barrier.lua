-- CPython's _TestBarrier (adapted there from test/lock_tests.py), ported to
-- jobrun. DummyList (a shared counter) is a jobrun.Value; Bunch runs f in
-- N-1 processes while the main process runs it too.
--
-- jobrun differs: a wait that times out, or any wait on a barrier broken
-- that way, raises Timeout (CPython: threading.BrokenBarrierError); the
-- barrier has no default timeout, so Barrier(N) stands for
-- Barrier(N, timeout=30); parties, n_waiting and broken are methods.
--
-- Not ported: test_action, test_abort, test_reset, test_abort_and_reset and
-- test_default_timeout (jobrun's Barrier has no action, abort(), reset() or
-- default timeout).
require "harness"

local N = 5

local function DummyList() return jobrun.Value(0) end
local function append(list) list:add(1) end
local function len(list) return list:get() end

-- Bunch: n processes running f(...); wait_for_finished; close joins them and
-- checks that each ended well (a failed assertion in a child fails the case).
local function Bunch(f, args, n)
  local b = {started = DummyList(), finished = DummyList(), n = n, procs = {}}
  for i = 1, n do
    local p = jobrun.Process{target = function()
      append(b.started)
      local ok, err = pcall(f, table.unpack(args))
      append(b.finished)
      if not ok then error(err, 0) end
    end, daemon = true}
    p:start()
    b.procs[i] = p
  end
  function b.wait_for_finished()
    wait_until(function() return len(b.finished) >= b.n end, SHORT_TIMEOUT, "all of the Bunch finished")
  end
  function b.close()
    for _, p in ipairs(b.procs) do
      join_process(p)
      assertEqual(p.exitcode, 0, tostring(p))
    end
  end
  return b
end

local function run_threads(f, args)
  local b = Bunch(f, args, N - 1)
  local ok, err = pcall(function()
    f(table.unpack(args))
    b.wait_for_finished()
  end)
  b.close()
  if not ok then error(err, 0) end
end

local function multipass(barrier, results, n)
  local m = barrier:parties()
  assert(m == N)
  for i = 0, n - 1 do
    append(results[1])
    assert(len(results[2]) == i * m)
    barrier:wait(SHORT_TIMEOUT)
    append(results[2])
    assert(len(results[1]) == (i + 1) * m)
    barrier:wait(SHORT_TIMEOUT)
  end
  assert(barrier:n_waiting() == 0)
  assert(not barrier:broken())
end

local function test_barrier(passes)
  local barrier = jobrun.Barrier(N)
  local results = {DummyList(), DummyList()}
  run_threads(multipass, {barrier, results, passes})
end

case("test_barrier", function()
  -- Test that a barrier is passed in lockstep
  test_barrier(1)
end)

case("test_barrier_10", function()
  -- Test that a barrier works for 10 consecutive runs
  test_barrier(10)
end)

case("test_wait_return", function()
  -- test the return value from barrier.wait
  local barrier = jobrun.Barrier(N)
  local queue = jobrun.Queue()
  run_threads(function(barrier, queue)
    queue:put(barrier:wait(SHORT_TIMEOUT))
  end, {barrier, queue})
  local zeros = 0
  for _ = 1, N do
    if queue:get(true, SHORT_TIMEOUT) == 0 then zeros = zeros + 1 end
  end
  assertEqual(zeros, 1)
end)

local function _test_timeout_f(barrier, results)
  local i = barrier:wait(SHORT_TIMEOUT)
  if i == N // 2 then
    -- One process is late!
    jobrun.sleep(1.0)
  end
  local ok, err = pcall(barrier.wait, barrier, 0.5)
  if not ok then
    if type(err) == "table" and err.kind == jobrun.Timeout then append(results) else error(err, 0) end
  end
end

case("test_timeout", function()
  -- Test wait(timeout)
  local barrier = jobrun.Barrier(N)
  local results = DummyList()
  run_threads(_test_timeout_f, {barrier, results})
  assertEqual(len(results), barrier:parties())
end)

case("test_single_thread", function()
  local b = jobrun.Barrier(1)
  b:wait()
  b:wait()
end)

local _test_thousand_f = worker("_test_thousand_f", function(barrier, passes, conn, lock)
  for i = 0, passes - 1 do
    barrier:wait(SHORT_TIMEOUT)
    lock:with(function() conn:send(i) end)
  end
end)

case("test_thousand", function()
  local barrier = jobrun.Barrier(N)
  local passes = 1000
  local lock = jobrun.Lock()
  local conn, child_conn = jobrun.Pipe(false)
  local procs = {}
  for j = 1, N do
    local p = Process{target = _test_thousand_f, args = {barrier, passes, child_conn, lock}}
    p:start()
    procs[j] = p
  end

  for i = 0, passes - 1 do
    for _ = 1, N do
      assertEqual(conn:recv(SHORT_TIMEOUT), i)
    end
  end
  for _, p in ipairs(procs) do join_process(p) end
end)

run()
