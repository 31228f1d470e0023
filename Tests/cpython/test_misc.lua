-- The small unittest.TestCase classes of CPython's _test_multiprocessing.py
-- that map to jobrun, one case each, named Class.test:
-- TestInitializers, TestStdinBadfiledescriptor, TestStartMethod and
-- MiscTestCase. (The others need what jobrun has no counterpart for:
-- managers, Listener/Client, connection.wait, sockets, signals, start
-- methods, resource trackers, SimpleQueue, shared_memory, Finalize, logging.)
require "harness"

case("TestInitializers.test_pool_initializer", function()
  assertRaises(jobrun.TypeError, jobrun.Pool, {init = 1})
  local ns = jobrun.Value(0)
  local p = jobrun.Pool{workers = 1, init = function(ns) ns:add(1) end, init_args = {ns}}
  p:close()
  p:join()
  assertEqual(ns:get(), 1)
end)

-- Issue 5155, 5313, 5331: processes in processes.
case("TestStdinBadfiledescriptor.test_queue_in_process", function()
  local proc = jobrun.Process{target = function()
    local queue = jobrun.Queue()
    local subProc = jobrun.Process{target = function()
      local ok, err = pcall(queue.get, queue, false)
      assert(not ok and err.kind == jobrun.Empty)
    end}
    subProc.daemon = true
    subProc:start()
    assert(subProc:join(SHORT_TIMEOUT) and subProc.exitcode == 0)
  end}
  proc:start()
  join_process(proc)
  assertEqual(proc.exitcode, 0)
end)

case("TestStdinBadfiledescriptor.test_pool_in_process", function()
  local p = jobrun.Process{target = function()
    local pool = jobrun.Pool{workers = 4}
    local x = pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7})
    assert(#x == 7 and x[7] == 49)
    pool:close()
    pool:join()
  end}
  p:start()
  join_process(p)
  assertEqual(p.exitcode, 0)
end)

case("TestStartMethod.test_nested_startmethod", function()
  -- gh-108520: a child can pass its arguments on to a process of its own.
  local queue = jobrun.Queue()

  local process = jobrun.Process{target = function(queue)
    queue:put(2)
    local process = jobrun.Process{target = function(queue) queue:put(1) end, args = {queue}}
    process:start()
    process:join(SHORT_TIMEOUT)
  end, args = {queue}}
  process:start()
  join_process(process)

  local results = {}
  while not queue:empty() do results[queue:get()] = true end

  -- gh-109706: queue.put(1) can come before queue.put(2).
  assertEqual(results, {[1] = true, [2] = true})
end)

case("MiscTestCase.test_large_pool", function()
  -- gh-89240: large pools are okay.
  local p = jobrun.Pool{workers = 200}
  local list = {}
  for i = 1, 1000 do list[i] = i - 1 end
  local sum = 0
  for _, x in ipairs(p:map(function(x) return x * x end, list)) do sum = sum + x end
  p:close()
  p:join()
  assertEqual(sum, 332833500)
end)

run()
