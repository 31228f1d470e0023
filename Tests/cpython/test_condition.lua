-- CPython's _TestCondition, ported to jobrun. CPython wakes a mix of
-- processes and threads; jobrun has no threads, so every sleeper is a
-- process (as many as CPython's processes and threads together).
-- get_value(woken) is woken:value(). Not ported: check_invariant (it reads
-- CPython's private counters) and the SIGINT half of test_wait_result
-- (KeyboardInterrupt has no counterpart).
require "harness"

local f = worker("f", function(cond, sleeping, woken, timeout)
  cond:acquire()
  sleeping:release()
  cond:wait(timeout)
  woken:release()
  cond:release()
end)

-- assertReachesEventually(func, value): func() becomes value within the bound.
local function assertReachesEventually(func, value)
  local deadline = jobrun.time() + SHORT_TIMEOUT
  while func() ~= value and jobrun.time() < deadline do jobrun.sleep(0.01) end
  assertEqual(func(), value)
end

local function start(target, ...)
  local p = Process{target = target, args = table.pack(...), daemon = true}
  p:start()
  return p
end

-- A notify that wakes too many shows only if the extra sleeper wakes up
-- before the next check (jobrun's sleepers wake once a second to look
-- around, and one that does so after a notify meant for another returned
-- too). So that such a defect fails every time rather than by chance, the
-- count is checked again once that second has passed (CPython checks only
-- that the count reaches its value).
local SETTLE = 1.5

case("test_notify", function()
  local cond = jobrun.Condition()
  local sleeping = jobrun.Semaphore(0)
  local woken = jobrun.Semaphore(0)

  local p = start(f, cond, sleeping, woken)
  local t = start(f, cond, sleeping, woken)

  -- wait for both children to start sleeping
  assertTrue(sleeping:acquire(true, SHORT_TIMEOUT))
  assertTrue(sleeping:acquire(true, SHORT_TIMEOUT))

  -- check no process has woken up
  assertReachesEventually(function() return woken:value() end, 0)

  -- wake up one process
  cond:acquire()
  cond:notify()
  cond:release()

  -- check one process has woken up
  assertReachesEventually(function() return woken:value() end, 1)
  jobrun.sleep(SETTLE)
  assertEqual(woken:value(), 1, "notify() woke more than one")

  -- wake up another
  cond:acquire()
  cond:notify()
  cond:release()

  -- check other has woken up
  assertReachesEventually(function() return woken:value() end, 2)

  join_process(t)
  join_process(p)
end)

case("test_notify_all", function()
  local cond = jobrun.Condition()
  local sleeping = jobrun.Semaphore(0)
  local woken = jobrun.Semaphore(0)

  -- start some processes which will timeout
  local workers = {}
  for _ = 1, 6 do workers[#workers + 1] = start(f, cond, sleeping, woken, TIMEOUT1) end

  -- wait for them all to sleep
  for _ = 1, 6 do assertTrue(sleeping:acquire(true, SHORT_TIMEOUT)) end

  -- check they have all timed out
  for _ = 1, 6 do assertTrue(woken:acquire(true, SHORT_TIMEOUT)) end
  assertEqual(woken:value(), 0)

  -- start some more processes
  for _ = 1, 6 do workers[#workers + 1] = start(f, cond, sleeping, woken) end

  -- wait for them to all sleep
  for _ = 1, 6 do assertTrue(sleeping:acquire(true, SHORT_TIMEOUT)) end

  -- check no process has woken up
  jobrun.sleep(DELTA)
  assertEqual(woken:value(), 0)

  -- wake them all up
  cond:acquire()
  cond:notify_all()
  cond:release()

  -- check they have all woken
  for _ = 1, 6 do assertTrue(woken:acquire(true, SHORT_TIMEOUT)) end
  assertEqual(woken:value(), 0)

  for _, w in ipairs(workers) do join_process(w) end
end)

case("test_notify_n", function()
  local cond = jobrun.Condition()
  local sleeping = jobrun.Semaphore(0)
  local woken = jobrun.Semaphore(0)

  -- start some processes
  local workers = {}
  for _ = 1, 6 do workers[#workers + 1] = start(f, cond, sleeping, woken) end

  -- wait for them to all sleep
  for _ = 1, 6 do assertTrue(sleeping:acquire(true, SHORT_TIMEOUT)) end

  -- check no process has woken up
  jobrun.sleep(DELTA)
  assertEqual(woken:value(), 0)

  -- wake some of them up
  cond:acquire()
  cond:notify(2)
  cond:release()

  -- check 2 have woken
  assertReachesEventually(function() return woken:value() end, 2)
  jobrun.sleep(SETTLE)
  assertEqual(woken:value(), 2, "notify(2) woke more than two")

  -- wake the rest of them
  cond:acquire()
  cond:notify(4)
  cond:release()

  assertReachesEventually(function() return woken:value() end, 6)

  -- doesn't do anything more
  cond:acquire()
  cond:notify(3)
  cond:release()

  assertEqual(woken:value(), 6)

  for _, w in ipairs(workers) do join_process(w) end
end)

case("test_timeout", function()
  local cond = jobrun.Condition()
  cond:acquire()
  local elapsed, res = timed(cond.wait, cond, TIMEOUT1)
  cond:release()
  assertEqual(res, false)
  assertTimingAlmostEqual(elapsed, TIMEOUT1)
end)

local _test_waitfor_f = worker("_test_waitfor_f", function(cond, state)
  cond:with(function()
    state:set(0)
    cond:notify()
    local result = cond:wait_for(function() return state:get() == 4 end)
    if not result or state:get() ~= 4 then os.exit(1) end
  end)
end)

case("test_waitfor", function()
  -- based on test in test/lock_tests.py
  local cond = jobrun.Condition()
  local state = jobrun.Value(-1)

  local p = start(_test_waitfor_f, cond, state)

  cond:with(function()
    local result = cond:wait_for(function() return state:get() == 0 end, SHORT_TIMEOUT)
    assertTrue(result)
    assertEqual(state:get(), 0)
  end)

  for _ = 1, 4 do
    jobrun.sleep(0.01)
    cond:with(function()
      state:add(1)
      cond:notify()
    end)
  end

  join_process(p)
  assertEqual(p.exitcode, 0)
end)

local _test_waitfor_timeout_f = worker("_test_waitfor_timeout_f", function(cond, state, success, sem)
  sem:release()
  cond:with(function()
    local expected = 0.100
    local dt = jobrun.time()
    local result = cond:wait_for(function() return state:get() == 4 end, expected)
    dt = jobrun.time() - dt
    if not result and (expected - CLOCK_RES) <= dt then success:set(1) end
  end)
end)

case("test_waitfor_timeout", function()
  -- based on test in test/lock_tests.py
  local cond = jobrun.Condition()
  local state = jobrun.Value(0)
  local success = jobrun.Value(0)
  local sem = jobrun.Semaphore(0)

  local p = start(_test_waitfor_timeout_f, cond, state, success, sem)
  assertTrue(sem:acquire(true, LONG_TIMEOUT))

  -- Only increment 3 times, so state == 4 is never reached.
  for _ = 1, 3 do
    jobrun.sleep(0.010)
    cond:with(function()
      state:add(1)
      cond:notify()
    end)
  end

  join_process(p)
  assertEqual(success:get(), 1)
end)

local _test_wait_result = worker("_test_wait_result", function(c)
  c:with(function() c:notify() end)
end)

case("test_wait_result", function()
  local c = jobrun.Condition()
  c:with(function()
    assertFalse(c:wait(0))
    assertFalse(c:wait(0.1))

    local p = Process{target = _test_wait_result, args = {c}}
    p:start()

    assertTrue(c:wait(60))

    join_process(p)
  end)
end)

run()
