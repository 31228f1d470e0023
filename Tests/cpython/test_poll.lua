-- CPython's _TestPoll (Pipe.poll), ported to jobrun: send_bytes/recv_bytes
-- are send/recv of strings. The child's pause between strings in
-- test_strings (0.1 s in CPython) and the parent's in test_boundaries (2 s)
-- are scaled down.
require "harness"

case("test_empty_string", function()
  local a, b = jobrun.Pipe()
  assertEqual(a:poll(), false)
  b:send("")
  assertEqual(a:poll(), true)
  assertEqual(a:poll(), true)
end)

local _child_strings = worker("_child_strings", function(conn, strings)
  for _, s in ipairs(strings) do
    jobrun.sleep(0.02)
    conn:send(s)
  end
  conn:close()
end)

case("test_strings", function()
  local strings = {"hello", "", "a", "b", "", "bye", "", "lop"}
  local a, b = jobrun.Pipe()
  local p = Process{target = _child_strings, args = {b, strings}}
  p:start()

  for _, s in ipairs(strings) do
    for _ = 1, 200 do
      if a:poll(0.01) then break end
    end
    local x = a:recv(SHORT_TIMEOUT)
    assertEqual(s, x)
  end

  join_process(p)
end)

local _child_boundaries = worker("_child_boundaries", function(r)
  r:poll(5)
end)

case("test_boundaries", function()
  -- Polling must not take in part of a message (or any of it).
  local r, w = jobrun.Pipe(false)
  local p = Process{target = _child_boundaries, args = {r}}
  p:start()
  -- CPython sleeps 0.2 s so that the child polls before anything is sent;
  -- waiting until it sleeps in that poll is surer.
  wait_until(function() return sleeping(p.pid) end, SHORT_TIMEOUT, "the child polling")
  local L = {"first", "second"}
  for _, obj in ipairs(L) do w:send(obj) end
  w:close()
  join_process(p)
  assertIn(r:recv(SHORT_TIMEOUT), L)
end)

local _child_dont_merge = worker("_child_dont_merge", function(b)
  b:send("a")
  b:send("b")
  b:send("cd")
end)

case("test_dont_merge", function()
  local a, b = jobrun.Pipe()
  assertEqual(a:poll(0.0), false)
  assertEqual(a:poll(0.1), false)

  local p = Process{target = _child_dont_merge, args = {b}}
  p:start()

  assertEqual(a:recv(SHORT_TIMEOUT), "a")
  assertEqual(a:poll(1.0), true)
  assertEqual(a:poll(1.0), true)
  assertEqual(a:recv(SHORT_TIMEOUT), "b")
  assertEqual(a:poll(1.0), true)
  assertEqual(a:poll(1.0), true)
  assertEqual(a:poll(0.0), true)
  assertEqual(a:recv(SHORT_TIMEOUT), "cd")

  join_process(p)
end)

run()
