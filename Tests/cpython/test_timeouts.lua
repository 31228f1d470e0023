-- CPython's TestTimeouts.
require "harness"

-- Interaction with socket timeouts, Issue #6056: CPython's second half
-- talks through a Listener, which jobrun has not; the Pipe half is here,
-- with the child's 1 s pause scaled down to 0.1 s. The child starts its
-- pause once the parent has closed its copy of the child's end (`closed`),
-- as CPython's 1 s all but ensures.
local _test_timeout = worker("_test_timeout", function(child, closed)
  assert(closed:wait(SHORT_TIMEOUT))
  jobrun.sleep(0.1)
  child:send(123)
  child:close()
end)

case("test_timeout", function()
  local parent, child = jobrun.Pipe(true)
  local closed = jobrun.Event()
  local p = Process{target = _test_timeout, args = {child, closed}}
  p:start()
  child:close()
  closed:set()
  assertEqual(parent:recv(SHORT_TIMEOUT), 123)
  parent:close()
  join_process(p)
end)

run()
