-- CPython's _TestQueue (Queue and JoinableQueue), ported to jobrun.
--
-- jobrun's queues have no feeder thread: a put is in shared memory when it
-- returns, so CPython's "sleep a bit, the values may be in a buffer" pauses
-- are not needed and are left out.
--
-- Where jobrun differs on purpose (README: "Where jobrun differs from
-- multiprocessing"): q:close() ends the stream for every process (CPython's
-- close() only stops this process's feeder; its shutdown(immediate=False) is
-- the counterpart), so after close puts raise Closed, and gets drain what is
-- left and then raise Closed; a put of an unsendable value raises TypeError
-- at once (CPython's feeder thread prints the error and drops the item).
--
-- Not ported: test_queue_feeder_on_queue_feeder_error (no feeder hook),
-- test_shutdown_immediate and test_shutdown_immediate_with_unfinished (no
-- shutdown(immediate=True)).
require "harness"

local function queue_empty(q) return q:empty() end
local function queue_full(q, maxsize) return q:full() end

local _test_put = worker("_test_put", function(queue, child_can_start, parent_can_continue)
  child_can_start:wait(SHORT_TIMEOUT)
  for _ = 1, 6 do queue:get(true, SHORT_TIMEOUT) end
  parent_can_continue:set()
end)

case("test_put", function()
  local MAXSIZE = 6
  local queue = jobrun.Queue{maxsize = MAXSIZE}
  local child_can_start = jobrun.Event()
  local parent_can_continue = jobrun.Event()

  local proc = Process{target = _test_put, args = {queue, child_can_start, parent_can_continue}}
  proc.daemon = true
  proc:start()

  assertEqual(queue_empty(queue), true)
  assertEqual(queue_full(queue, MAXSIZE), false)

  queue:put(1)
  queue:put(2, true)
  queue:put(3, true, nil)
  queue:put(4, false)
  queue:put(5, false, nil)
  queue:put_nowait(6)

  assertEqual(queue_empty(queue), false)
  assertEqual(queue_full(queue, MAXSIZE), true)

  local elapsed = timedRaises(jobrun.Full, queue.put, queue, 7, false)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Full, queue.put, queue, 7, false, nil)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Full, queue.put_nowait, queue, 7)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Full, queue.put, queue, 7, true, TIMEOUT1)
  assertTimingAlmostEqual(elapsed, TIMEOUT1)

  elapsed = timedRaises(jobrun.Full, queue.put, queue, 7, false, TIMEOUT2)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Full, queue.put, queue, 7, true, TIMEOUT3)
  assertTimingAlmostEqual(elapsed, TIMEOUT3)

  child_can_start:set()
  assertTrue(parent_can_continue:wait(SHORT_TIMEOUT))

  assertEqual(queue_empty(queue), true)
  assertEqual(queue_full(queue, MAXSIZE), false)

  join_process(proc)
end)

local _test_get = worker("_test_get", function(queue, child_can_start, parent_can_continue)
  child_can_start:wait(SHORT_TIMEOUT)
  --queue:put(1)
  queue:put(2)
  queue:put(3)
  queue:put(4)
  queue:put(5)
  parent_can_continue:set()
end)

case("test_get", function()
  local queue = jobrun.Queue()
  local child_can_start = jobrun.Event()
  local parent_can_continue = jobrun.Event()

  local proc = Process{target = _test_get, args = {queue, child_can_start, parent_can_continue}}
  proc.daemon = true
  proc:start()

  assertEqual(queue_empty(queue), true)

  child_can_start:set()
  assertTrue(parent_can_continue:wait(SHORT_TIMEOUT))

  assertEqual(queue_empty(queue), false)

  assertEqual(queue:get(true, nil), 2)
  assertEqual(queue:get(true), 3)
  assertEqual(queue:get(true, 1), 4)
  assertEqual(queue:get_nowait(), 5)

  assertEqual(queue_empty(queue), true)

  local elapsed = timedRaises(jobrun.Empty, queue.get, queue, false)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Empty, queue.get, queue, false, nil)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Empty, queue.get_nowait, queue)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Empty, queue.get, queue, true, TIMEOUT1)
  assertTimingAlmostEqual(elapsed, TIMEOUT1)

  elapsed = timedRaises(jobrun.Empty, queue.get, queue, false, TIMEOUT2)
  assertTimingAlmostEqual(elapsed, 0)

  elapsed = timedRaises(jobrun.Empty, queue.get, queue, true, TIMEOUT3)
  assertTimingAlmostEqual(elapsed, TIMEOUT3)

  join_process(proc)
end)

local _test_fork = worker("_test_fork", function(queue)
  for i = 10, 19 do queue:put(i) end
end)

case("test_fork", function()
  -- Items put before the fork and items the child puts all arrive, in order.
  local queue = jobrun.Queue()

  for i = 0, 9 do queue:put(i) end

  local p = Process{target = _test_fork, args = {queue}}
  p.daemon = true
  p:start()

  for i = 0, 19 do assertEqual(queue:get(true, SHORT_TIMEOUT), i) end
  assertRaises(jobrun.Empty, queue.get, queue, false)

  join_process(p)
end)

case("test_qsize", function()
  local q = jobrun.Queue()
  assertEqual(q:qsize(), 0)
  q:put(1)
  assertEqual(q:qsize(), 1)
  q:put(5)
  assertEqual(q:qsize(), 2)
  q:get()
  assertEqual(q:qsize(), 1)
  q:get()
  assertEqual(q:qsize(), 0)
end)

local _test_task_done = worker("_test_task_done", function(q)
  -- for obj in iter(q.get, None)
  while q:get(true, SHORT_TIMEOUT) ~= nil do
    jobrun.sleep(DELTA)
    q:task_done()
  end
end)

case("test_task_done", function()
  local queue = jobrun.JoinableQueue()

  local workers = {}
  for i = 1, 4 do workers[i] = Process{target = _test_task_done, args = {queue}} end

  for _, p in ipairs(workers) do
    p.daemon = true
    p:start()
  end

  for i = 0, 9 do queue:put(i) end

  assertTrue(queue:join(SHORT_TIMEOUT))

  for _ in ipairs(workers) do queue:put(nil) end

  for _, p in ipairs(workers) do join_process(p) end
end)

case("test_no_import_lock_contention", function()
  -- A module that makes a queue and uses it while it is being required.
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local module_name = "imported_by_an_imported_module"
  local f = assert(io.open(dir .. "/" .. module_name .. ".lua", "w"))
  f:write([[
    local q = jobrun.Queue()
    q:put('knock knock')
    q:get(true, 3)
    q:close()
  ]])
  f:close()
  local old_path = package.path
  package.path = dir .. "/?.lua;" .. package.path
  local ok, err = pcall(require, module_name)
  package.path = old_path
  os.remove(dir .. "/" .. module_name .. ".lua")
  os.remove(dir)
  if not ok then
    if type(err) == "table" and err.kind == jobrun.Empty then
      assertTrue(false, "Probable regression on import lock contention; see Issue #22853")
    end
    error(err, 0)
  end
end)

case("test_timeout", function()
  local q = jobrun.Queue()
  local start = jobrun.time()
  assertRaises(jobrun.Empty, q.get, q, true, 0.200)
  local delta = jobrun.time() - start
  -- bpo-30317: tolerate a delta of 100 ms for bad clock resolutions.
  assertGreaterEqual(delta, 0.100)
end)

case("test_queue_feeder_donot_stop_onexc", function()
  -- bpo-30414. jobrun differs: the put of a value that cannot be sent raises
  -- TypeError in the caller (no feeder thread to drop it), and the queue
  -- goes on working.
  local NotSerializable = coroutine.create(function() end)
  local q = jobrun.Queue()
  assertRaises(jobrun.TypeError, q.put, q, NotSerializable)
  q:put(true)
  assertTrue(q:get(true, SHORT_TIMEOUT))

  -- bpo-33078: the queue's size is right after the error.
  q = jobrun.Queue{maxsize = 1}
  assertRaises(jobrun.TypeError, q.put, q, NotSerializable)
  q:put(true)
  assertEqual(q:qsize(), 1)
  assertTrue(q:get(true, SHORT_TIMEOUT))
  -- Check that the size of the queue is correct
  assertTrue(q:empty())
end)

case("test_closed_queue_empty_exceptions", function()
  -- An unused closed queue is empty (as in CPython).
  for _, q in ipairs{jobrun.Queue(), jobrun.JoinableQueue()} do
    q:close()
    assertTrue(q:empty())
  end

  -- jobrun differs: CPython's empty() on a used, closed queue raises OSError
  -- "is closed". jobrun's close() ends the stream: what was put before it is
  -- still delivered, then get raises Closed, and empty() keeps answering.
  for _, q in ipairs{jobrun.Queue(), jobrun.JoinableQueue()} do
    q:put("foo")
    q:close()
    assertFalse(q:empty())
    assertEqual(q:get(true, SHORT_TIMEOUT), "foo")
    assertTrue(q:empty())
    assertRaisesRegex(jobrun.Closed, "closed", q.get, q, true, SHORT_TIMEOUT)
  end
end)

case("test_closed_queue_put_get_exceptions", function()
  -- CPython raises ValueError "is closed"; jobrun raises Closed.
  for _, q in ipairs{jobrun.Queue(), jobrun.JoinableQueue()} do
    q:close()
    assertRaisesRegex(jobrun.Closed, "closed", q.put, q, "foo")
    assertRaisesRegex(jobrun.Closed, "closed", q.get, q)
  end
end)

-- ProcessFuture: runs fn(...) in a child; result() joins it and returns fn's
-- results or raises its error again. (CPython sends them back over a Pipe;
-- a Queue does it here.)
local ProcessFuture = {}
ProcessFuture.__index = ProcessFuture

-- Metatables are not sent: an error that comes back gets jobrun's again.
local ErrorMeta = getmetatable(select(2, pcall(jobrun.Queue().get, jobrun.Queue(), false)))

function ProcessFuture.start(fn, ...)
  local results = jobrun.Queue()
  local args = table.pack(...)
  local p = jobrun.Process{target = function()
    local r = table.pack(pcall(fn, table.unpack(args, 1, args.n)))
    results:put(r)
  end}
  p:start()
  return setmetatable({process = p, results = results}, ProcessFuture)
end

function ProcessFuture.run(fn, ...)
  return ProcessFuture.start(fn, ...):result()
end

function ProcessFuture:result()
  join_process(self.process)
  local ok, r = pcall(self.results.get, self.results, false)
  if not ok then error("Process failed to send result", 2) end
  if r[1] then return table.unpack(r, 2, r.n) end
  if type(r[2]) == "table" and r[2].kind then setmetatable(r[2], ErrorMeta) end
  error(r[2], 0)
end

local function _join_worker(q) return q:join(SHORT_TIMEOUT) end

-- A little time for a process to act on what it was just sent (CPython's _wait).
local function _wait() jobrun.sleep(0.01) end

-- shutdown(immediate=False) is close() in jobrun; ShutDown is Closed.
case("test_shutdown_empty", function()
  for _, q in ipairs{jobrun.Queue(), jobrun.JoinableQueue()} do
    local join
    if q.join then join = ProcessFuture.start(_join_worker, q) end
    q:close()  -- [joinable] unfinished tasks: 0 -> 0
    _wait()

    assertEqual(q:qsize(), 0)

    if q.join then
      assertTrue(join:result())
      assertFalse(join.process:is_alive())
    end

    assertRaises(jobrun.Closed, ProcessFuture.run, q.put, q, "data")
    assertRaises(jobrun.Closed, q.put_nowait, q, "data")

    assertRaises(jobrun.Closed, ProcessFuture.run, q.get, q)
    assertRaises(jobrun.Closed, q.get_nowait, q)
  end
end)

case("test_shutdown_nonempty", function()
  for _, q in ipairs{jobrun.Queue(1), jobrun.JoinableQueue(1)} do
    q:put("data")
    local join
    if q.join then join = ProcessFuture.start(_join_worker, q) end
    q:close()  -- [joinable] unfinished tasks: 1 -> 1
    _wait()

    assertEqual(q:qsize(), 1)

    assertEqual(ProcessFuture.run(q.get, q, true, SHORT_TIMEOUT), "data")

    if q.join then assertTrue(join.process:is_alive()) end

    assertRaises(jobrun.Closed, ProcessFuture.run, q.put, q, "data")
    assertRaises(jobrun.Closed, q.put_nowait, q, "data")

    assertRaises(jobrun.Closed, ProcessFuture.run, q.get, q)
    assertRaises(jobrun.Closed, q.get_nowait, q)

    if q.join then
      -- The item was taken by another process, which has ended; this
      -- process marks it done, as CPython's test does. Any process may mark
      -- an item done, so the taker's end is no reason for join to give up:
      -- the joiner must still be waiting a second later (which also lets
      -- the supervisor see the taker's end first, every time).
      assertFalse(join.process:join(1.0), "join gave up when the taker ended")
      q:task_done()
      assertTrue(join:result())
      assertFalse(join.process:is_alive())
    end
  end
end)

run()
