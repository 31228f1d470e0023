-- CPython's TestForkAwareThreadLock.
require "harness"

-- Issue #17555. CPython checks that the after-fork registry does not grow
-- over five generations of processes; jobrun has none, and what is left is
-- the Pipe pattern: each generation starts the next, closes its own copy of
-- the sending end and joins, and the last one sends. It sends once the main
-- process has closed its copy (`closed`), so that the case does not pass or
-- fail by the order in which the processes happen to run.
local child
child = worker("child", function(n, conn, closed)
  if n > 1 then
    local p = jobrun.Process{target = child, args = {n - 1, conn, closed}}
    p:start()
    conn:close()
    assert(p:join(SHORT_TIMEOUT))
  else
    assert(closed:wait(SHORT_TIMEOUT))
    conn:send(0)
  end
  conn:close()
end)

case("test_lock", function()
  local r, w = jobrun.Pipe(false)
  local closed = jobrun.Event()
  local p = Process{target = child, args = {5, w, closed}}
  p:start()
  w:close()
  closed:set()
  local new_size = r:recv(SHORT_TIMEOUT)
  join_process(p)
  assertLessEqual(new_size, 0)
end)

run()
