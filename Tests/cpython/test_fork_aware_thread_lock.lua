-- CPython's TestForkAwareThreadLock.
require "harness"

-- Issue #17555. CPython checks that the after-fork registry does not grow
-- over five generations of processes; jobrun has none, and what is left is
-- the Pipe pattern: each generation starts the next, closes its own copy of
-- the sending end and joins, and the last one sends.
local child
child = worker("child", function(n, conn)
  if n > 1 then
    local p = jobrun.Process{target = child, args = {n - 1, conn}}
    p:start()
    conn:close()
    assert(p:join(SHORT_TIMEOUT))
  else
    conn:send(0)
  end
  conn:close()
end)

case("test_lock", function()
  xfail("Pipe: close() closes the end for every process, not only the caller's copy: issue 12")
  local r, w = jobrun.Pipe(false)
  local p = Process{target = child, args = {5, w}}
  p:start()
  w:close()
  local new_size = r:recv(SHORT_TIMEOUT)
  join_process(p)
  assertLessEqual(new_size, 0)
end)

run()
