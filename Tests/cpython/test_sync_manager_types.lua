-- CPython's TestSyncManagerTypes, ported to jobrun. CPython shares each
-- object through a manager; jobrun's objects are shared as they are, so the
-- same checks run on jobrun's own: the parent makes the object, a child
-- (run_worker) uses it, the parent looks at the result.
--
-- Not ported: test_barrier (no reset()), test_pool (a Pool is used only by
-- the process that made it), test_list, test_array, test_namespace and the
-- set tests (no such shared types), and the dict methods jobrun.Dict lacks
-- (copy, |, reversed, fromkeys, popitem, setdefault, pop, clear).
require "harness"

-- run_worker(target, obj): target(obj) in a daemon child, which must exit 0.
local function run_worker(target, obj)
  local proc = Process{target = target, args = {obj}}
  proc.daemon = true
  proc:start()
  join_process(proc)
  assertEqual(proc.exitcode, 0)
end

local _test_event = worker("_test_event", function(obj)
  assert(obj:is_set())
  obj:wait()
  obj:clear()
  obj:wait(0.001)
end)

case("test_event", function()
  local o = jobrun.Event()
  o:set()
  run_worker(_test_event, o)
  assert(not o:is_set())
  o:wait(0.001)
end)

local _test_lock = worker("_test_lock", function(obj)
  obj:acquire()
  obj:locked()
end)

case("test_lock", function()
  local o = jobrun.Lock()
  run_worker(_test_lock, o)
  -- The child ended holding it; jobrun's Lock, like Python's, may be
  -- released by another process.
  o:release()
  assertRaises(jobrun.ValueError, o.release, o)  -- already released
end)

local _test_rlock = worker("_test_rlock", function(obj)
  obj:acquire()
  obj:release()
  obj:locked()
end)

case("test_rlock", function()
  local o = jobrun.RLock()
  run_worker(_test_rlock, o)
end)

local _test_semaphore = worker("_test_semaphore", function(obj) obj:acquire() end)

case("test_semaphore", function()
  local o = jobrun.Semaphore()
  run_worker(_test_semaphore, o)
  o:release()
end)

case("test_bounded_semaphore", function()
  local o = jobrun.BoundedSemaphore()
  run_worker(_test_semaphore, o)
  o:release()
end)

local _test_condition = worker("_test_condition", function(obj)
  obj:acquire()
  obj:release()
end)

case("test_condition", function()
  local o = jobrun.Condition()
  run_worker(_test_condition, o)
end)

local _test_queue = worker("_test_queue", function(obj)
  assert(obj:qsize() == 2)
  assert(obj:full())
  assert(not obj:empty())
  assert(obj:get() == 5)
  assert(not obj:empty())
  assert(obj:get() == 6)
  assert(obj:empty())
end)

local function test_queue(qname)
  local o = jobrun[qname](2)
  o:put(5)
  o:put(6)
  run_worker(_test_queue, o)
  assert(o:empty())
  assert(not o:full())
end

case("test_queue", function() test_queue("Queue") end)

case("test_joinable_queue", function() test_queue("JoinableQueue") end)

local _test_dict = worker("_test_dict", function(obj)
  assert(#obj == 1)
  assert(obj.foo == 5)
  assert(obj:get("foo") == 5)
  local items = obj:items()
  assert(items.foo == 5 and next(items, "foo") == nil and next(items) == "foo")
  local keys = obj:keys()
  assert(#keys == 1 and keys[1] == "foo")
  obj.bar = 6
  assert(#obj == 2 and obj.bar == 6)
  obj:update("bar", function() return 7 end)
  assert(obj.bar == 7)
  obj:delete("bar")
  obj:delete("foo")
  assert(#obj == 0)
end)

case("test_dict", function()
  local o = jobrun.Dict()
  o.foo = 5
  run_worker(_test_dict, o)
  assertEqual(#o, 0)
end)

local _test_value = worker("_test_value", function(obj)
  assert(obj:get() == 1)
  obj:set(2)
end)

case("test_value", function()
  local o = jobrun.Value(1)
  run_worker(_test_value, o)
  assertEqual(o:get(), 2)
end)

run()
