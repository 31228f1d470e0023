-- CPython's _TestConnection (Pipe), ported to jobrun. jobrun's Connection
-- sends values (send/recv), not raw bytes: send_bytes/recv_bytes are send
-- and recv of strings, and the b'' sentinel is "".
--
-- jobrun differs: using a closed end, or the wrong end of a one-way Pipe,
-- raises ValueError (CPython: OSError); recv after the other end is closed
-- raises EOF (CPython: EOFError); a Connection has no `with` (close() is
-- called instead) and no readable/writable/fileno.
--
-- Not ported: recv_bytes_into (no buffers), test_sendbytes (no offsets),
-- the fd transfer tests (no fd passing).
require "harness"

local SENTINEL = ""

local _echo = worker("_echo", function(conn)
  while true do   -- for msg in iter(conn.recv_bytes, SENTINEL)
    local msg = conn:recv()
    if msg == SENTINEL then break end
    conn:send(msg)
  end
  conn:close()
end)

case("test_connection", function()
  local conn, child_conn = jobrun.Pipe()

  local p = Process{target = _echo, args = {child_conn}}
  p.daemon = true
  p:start()

  local seq = table.pack(1, 2.25, nil)
  local msg = "hello world"
  local longmsg = msg:rep(10)

  assertEqual(select("#", conn:send(seq)), 0)
  assertEqual(conn:recv(SHORT_TIMEOUT), seq)

  assertEqual(select("#", conn:send(msg)), 0)
  assertEqual(conn:recv(SHORT_TIMEOUT), msg)

  conn:send(longmsg)
  assertEqual(conn:recv(SHORT_TIMEOUT), longmsg)

  local elapsed, r = timed(conn.poll, conn)
  assertEqual(r, false)
  assertTimingAlmostEqual(elapsed, 0)

  do
    local elapsed, r = timed(conn.poll, conn, -1)
    assertEqual(r, false)
    assertTimingAlmostEqual(elapsed, 0)
  end

  elapsed, r = timed(conn.poll, conn, TIMEOUT1)
  assertEqual(r, false)
  assertTimingAlmostEqual(elapsed, TIMEOUT1)

  conn:send(nil)
  -- CPython sleeps 0.1 s for the echo to come back; waiting for it is surer.
  assertTrue(conn:poll(SHORT_TIMEOUT))

  elapsed, r = timed(conn.poll, conn, TIMEOUT1)
  assertEqual(r, true)
  assertTimingAlmostEqual(elapsed, 0)

  assertEqual(conn:recv(SHORT_TIMEOUT), nil)

  local really_big_msg = ("X"):rep(1024 * 1024 * 16)   -- 16Mb
  conn:send(really_big_msg)
  assertTrue(conn:recv(SHORT_TIMEOUT) == really_big_msg, "the 16 MiB message came back changed")

  conn:send(SENTINEL)                                   -- tell child to quit
  child_conn:close()

  assertRaises(jobrun.EOF, conn.recv, conn, SHORT_TIMEOUT)
  assertRaises(jobrun.EOF, conn.recv, conn, SHORT_TIMEOUT)

  join_process(p)
end)

case("test_duplex_false", function()
  local reader, writer = jobrun.Pipe(false)
  assertEqual(select("#", writer:send(1)), 0)
  assertEqual(reader:recv(SHORT_TIMEOUT), 1)
  assertRaises(jobrun.ValueError, reader.send, reader, 2)
  assertRaises(jobrun.ValueError, writer.recv, writer)
  do
    assertRaises(jobrun.ValueError, writer.poll, writer)
  end
end)

case("test_spawn_close", function()
  -- A pipe end can be closed by the parent right after the child starts.
  local conn, child_conn = jobrun.Pipe()

  local p = Process{target = _echo, args = {child_conn}}
  p.daemon = true
  p:start()
  child_conn:close()    -- this might complete before child initializes

  local msg = "hello"
  conn:send(msg)
  assertEqual(conn:recv(SHORT_TIMEOUT), msg)

  conn:send(SENTINEL)
  conn:close()
  join_process(p)
end)

case("test_context", function()
  local a, b = jobrun.Pipe()

  a:send(1729)
  assertEqual(b:recv(SHORT_TIMEOUT), 1729)
  assertFalse(a:closed())
  assertFalse(b:closed())

  -- the end of CPython's `with a, b:`
  a:close()
  b:close()

  assertTrue(a:closed())
  assertTrue(b:closed())
  assertRaises(jobrun.ValueError, a.recv, a)
  assertRaises(jobrun.ValueError, b.recv, b)
end)

run()
