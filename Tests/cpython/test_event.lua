-- CPython's _TestEvent, ported to jobrun. jobrun differs in test_repr:
-- tostring(event) is "Event#1 (set)" / "Event#1 (clear)", where CPython's
-- repr is "<Event at 0x... set>" / "<Event at 0x... unset>".
require "harness"

local _test_event = worker("_test_event", function(event)
  jobrun.sleep(TIMEOUT2)
  event:set()
end)

case("test_event", function()
  local event = jobrun.Event()

  assertEqual(event:is_set(), false)

  local elapsed, r = timed(event.wait, event, 0.0)
  assertEqual(r, false)
  assertTimingAlmostEqual(elapsed, 0.0)
  elapsed, r = timed(event.wait, event, TIMEOUT1)
  assertEqual(r, false)
  assertTimingAlmostEqual(elapsed, TIMEOUT1)

  event:set()

  assertEqual(event:is_set(), true)
  elapsed, r = timed(event.wait, event)
  assertEqual(r, true)
  assertTimingAlmostEqual(elapsed, 0.0)
  elapsed, r = timed(event.wait, event, TIMEOUT1)
  assertEqual(r, true)
  assertTimingAlmostEqual(elapsed, 0.0)

  event:clear()

  local p = Process{target = _test_event, args = {event}}
  p.daemon = true
  p:start()
  assertEqual(event:wait(), true)
  join_process(p)
end)

case("test_repr", function()
  local event = jobrun.Event()
  assertTrue(tostring(event):find("(clear)", 1, true), tostring(event))
  event:set()
  assertTrue(tostring(event):find("(set)", 1, true), tostring(event))
  event:clear()
  assertTrue(tostring(event):find("(clear)", 1, true), tostring(event))
end)

run()
