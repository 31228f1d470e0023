-- CPython's _TestLock (Lock and RLock), ported to jobrun.
--
-- jobrun differs: tostring(lock) names the holder by pid ("Lock#1 (locked by
-- pid 4242)"), where CPython's repr names it by process name; releasing a
-- lock that is not held raises ValueError (CPython: ValueError for Lock,
-- AssertionError/RuntimeError for RLock); there is no `with` statement, so
-- lock:with(fn) stands for `with lock:`.
--
-- Not ported: the thread parts of test_repr_lock and test_repr_rlock, and
-- the RLock recursion count in its repr (jobrun does not show it).
require "harness"

-- tostring(lock) says it is unlocked, or locked and by which pid (in what
-- words, jobrun may change; these check the facts, as CPython's repr test does).
local function assertFree(lock)
  local s = tostring(lock)
  assertTrue(s:find("unlocked", 1, true), s)
end
local function assertHeldBy(s, pid)
  s = tostring(s)
  assertTrue(s:find("locked", 1, true) and not s:find("unlocked", 1, true), s)
  assertTrue(s:find("%f[%d]" .. pid .. "%f[%D]"), s .. " does not name pid " .. pid)
end

local function getpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

case("test_repr_lock", function()
  local lock = jobrun.Lock()
  assertFree(lock)

  lock:acquire()
  assertHeldBy(lock, getpid())
  lock:release()

  -- The child reports the lock as it sees it while holding it.
  local l = jobrun.Queue()
  local p = jobrun.Process{target = function() lock:acquire(); l:put(tostring(lock)) end, name = "P1"}
  p:start()
  join_process(p)
  assertHeldBy(l:get(true, SHORT_TIMEOUT), p.pid)   -- as the child saw it
  assertHeldBy(lock, p.pid)

  lock = jobrun.Lock()
  local event = jobrun.Event()
  p = jobrun.Process{target = function()
    lock:acquire()
    event:set()
    jobrun.sleep(1.0)
  end, name = "P2"}
  p:start()
  assertTrue(event:wait(SHORT_TIMEOUT))
  assertHeldBy(lock, p.pid)
  p:terminate()
  join_process(p)
end)

case("test_lock", function()
  local lock = jobrun.Lock()
  assertEqual(lock:acquire(), true)
  assertTrue(lock:locked())
  assertEqual(lock:acquire(false), false)
  assertEqual(select("#", lock:release()), 0)
  assertFalse(lock:locked())
  assertRaises(jobrun.ValueError, lock.release, lock)
end)

local _test_lock_locked_2processes = worker("_test_lock_locked_2processes", function(lock, event, res)
  lock:acquire()
  res:set(lock:locked() and 1 or 0)
  event:set()
end)

case("test_lock_locked_2processes", function()
  local lock = jobrun.Lock()
  local event = jobrun.Event()
  local res = jobrun.Value(0)
  local p = Process{target = _test_lock_locked_2processes, args = {lock, event, res}}
  p:start()
  assertTrue(event:wait(SHORT_TIMEOUT))
  assertTrue(lock:locked())
  assertEqual(res:get(), 1)
  join_process(p)
end)

case("test_repr_rlock", function()
  local lock = jobrun.RLock()
  assertFree(lock)

  local n = 3
  for _ = 1, n do lock:acquire() end
  assertHeldBy(lock, getpid())
  for _ = 1, n do lock:release() end

  local l = jobrun.Queue()
  local p = jobrun.Process{target = function()
    lock:acquire()
    l:put(tostring(lock))
    jobrun.sleep(0.1)
    lock:release()
  end, name = "P1"}
  p:start()
  join_process(p)
  assertHeldBy(l:get(true, SHORT_TIMEOUT), p.pid)

  local rlock = jobrun.RLock()
  p = jobrun.Process{target = function() rlock:acquire() end}
  p:start()
  join_process(p)
  assertHeldBy(rlock, p.pid)
end)

case("test_rlock", function()
  local lock = jobrun.RLock()
  assertEqual(lock:acquire(), true)
  assertTrue(lock:locked())
  assertEqual(lock:acquire(), true)
  assertEqual(lock:acquire(), true)
  assertEqual(select("#", lock:release()), 0)
  assertTrue(lock:locked())
  assertEqual(select("#", lock:release()), 0)
  assertEqual(select("#", lock:release()), 0)
  assertFalse(lock:locked())
  assertRaises(jobrun.ValueError, lock.release, lock)
end)

case("test_rlock_locked_2processes", function()
  local rlock = jobrun.RLock()
  local event = jobrun.Event()
  local res = jobrun.Value(0)
  -- target is the same as for the test_lock_locked_2processes test.
  local p = Process{target = _test_lock_locked_2processes, args = {rlock, event, res}}
  p:start()
  assertTrue(event:wait(SHORT_TIMEOUT))
  assertTrue(rlock:locked())
  assertEqual(res:get(), 1)
  join_process(p)
end)

case("test_lock_context", function()
  local lock = jobrun.Lock()
  lock:with(function() assertTrue(lock:locked()) end)
  assertFalse(lock:locked())
end)

case("test_rlock_context", function()
  local lock = jobrun.RLock()
  lock:with(function() assertTrue(lock:locked()) end)
  assertFalse(lock:locked())
end)

run()
