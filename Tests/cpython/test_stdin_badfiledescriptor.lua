-- CPython's TestStdinBadfiledescriptor: processes, queues and pools inside
-- processes. Not ported: test_flushing (a Python file object's buffer).
require "harness"

-- Issue 5155, 5313, 5331: processes in processes.
case("test_queue_in_process", function()
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

case("test_pool_in_process", function()
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

run()
