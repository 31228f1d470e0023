-- CPython's _TestPoolWorkerErrors, ported to jobrun. jobrun's apply_async
-- takes no error_callback: what the callback would receive is what get()
-- raises. A result that cannot be sent back (a coroutine here; CPython's is
-- an unpicklable lambda, and jobrun sends functions) raises TypeError in
-- get() (CPython: MaybeEncodingError), and the pool keeps its workers.
require "harness"

case("test_async_error_callback", function()
  local p = jobrun.Pool{workers = 2}

  local res = p:apply_async(function() error({kind = "KeyError", message = "key"}) end)
  -- A table raised in the task, as an exception object is, keeps its kind.
  local err = assertRaises("KeyError", res.get, res, SHORT_TIMEOUT)
  assertTrue(err)
  assertEqual(err.message, "key")

  p:close()
  p:join()
end)

case("test_unpickleable_result", function()
  local p = jobrun.Pool{workers = 2}

  -- Make sure we don't lose pool processes because of encoding errors.
  for _ = 1, 20 do
    local res = p:apply_async(function() return coroutine.create(function() end) end)
    local wrapped = assertRaises(jobrun.TypeError, res.get, res, SHORT_TIMEOUT)
    assertTrue(wrapped)
    assertTrue(tostring(wrapped):find("coroutine", 1, true), tostring(wrapped))
  end

  p:close()
  p:join()
end)

run()
