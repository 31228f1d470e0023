-- CPython's _TestPoolWorkerLifetime, ported to jobrun: maxtasksperchild is
-- max_tasks. jobrun's Pool does not list its workers (CPython's p._pool), so
-- test_pool_worker_lifetime has the tasks report the pid of the worker that
-- ran them: more pids than workers means workers were replaced.
require "harness"

local function sqr(x, wait)
  jobrun.sleep(wait or 0.0)
  return x * x
end

case("test_pool_worker_lifetime", function()
  local p = jobrun.Pool{workers = 3, max_tasks = 10}
  assertEqual(3, p.workers)
  -- Run many tasks so each worker gets replaced (hopefully)
  local results = {}
  for i = 0, 99 do
    results[#results + 1] = p:apply_async(function(i) return sqr(i), jobrun.current_process().pid end, i)
  end
  -- Fetch the results and verify we got the right answers,
  -- also ensuring all the tasks have completed.
  local pids, n = {}, 0
  for j, res in ipairs(results) do
    local r, pid = res:get(SHORT_TIMEOUT)
    assertEqual(r, sqr(j - 1))
    -- All pids should be assigned.  See issue #7805.
    assertTrue(pid ~= nil)
    if not pids[pid] then pids[pid] = true; n = n + 1 end
  end
  -- Finally, check that the worker pids have changed
  assertGreater(n, 3)
  p:close()
  p:join()
end)

case("test_pool_worker_lifetime_early_close", function()
  -- Issue #10332: closing a pool whose workers have limited lifetimes
  -- before all the tasks completed would make join() hang.
  -- (CPython's tasks wait 0.3 s; 0.1 s here.)
  local p = jobrun.Pool{workers = 3, max_tasks = 1}
  local results = {}
  for i = 0, 5 do results[#results + 1] = p:apply_async(sqr, i, 0.1) end
  p:close()
  p:join()
  -- check the results
  for j, res in ipairs(results) do assertEqual(res:get(SHORT_TIMEOUT), sqr(j - 1)) end
end)

case("test_pool_maxtasksperchild_invalid", function()
  -- CPython raises ValueError for all four; jobrun raises TypeError for a
  -- value that is not a number ("12").
  for _, value in ipairs{0, -1, 0.5} do
    assertRaises(jobrun.ValueError, jobrun.Pool, {workers = 3, max_tasks = value})
  end
  assertRaises(jobrun.TypeError, jobrun.Pool, {workers = 3, max_tasks = "12"})
end)

case("test_worker_finalization_via_atexit_handler_of_multiprocessing", function()
  -- bpo-38744 and bpo-39360: a process that ends with a pool it never
  -- closed still ends cleanly.
  local p = jobrun.Process{target = function()
    local problem = {pool = jobrun.Pool{workers = 1}}
    problem.pool:map(function(x) return x + 0.0 end, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
  end}
  p:start()
  join_process(p)
  assertEqual(p.exitcode, 0)
end)

run()
