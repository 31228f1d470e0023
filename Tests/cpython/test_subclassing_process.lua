-- CPython's _TestSubclassingProcess, ported to jobrun. jobrun's Process is not
-- a class to subclass; _UpperCaser is a table that owns a Process whose
-- target is its `run` method, which is what the subclass amounts to.
require "harness"

local UpperCaser = {}
UpperCaser.__index = UpperCaser

local function _UpperCaser()
  local self = setmetatable({}, UpperCaser)
  self.child_conn, self.parent_conn = jobrun.Pipe()
  self.process = jobrun.Process{target = function() self:run() end}
  return self
end

function UpperCaser:run()
  self.parent_conn:close()
  while true do
    local s = self.child_conn:recv()
    if s == nil then break end
    self.child_conn:send(s:upper())
  end
  self.child_conn:close()
end

function UpperCaser:submit(s)
  assert(type(s) == "string")
  self.parent_conn:send(s)
  return self.parent_conn:recv(SHORT_TIMEOUT)
end

function UpperCaser:stop()
  self.parent_conn:send(nil)
  self.parent_conn:close()
  self.child_conn:close()
end

case("test_subclassing", function()
  local uppercaser = _UpperCaser()
  uppercaser.process.daemon = true
  uppercaser.process:start()
  assertEqual(uppercaser:submit("hello"), "HELLO")
  assertEqual(uppercaser:submit("world"), "WORLD")
  uppercaser:stop()
  join_process(uppercaser.process)
end)

local _test_stderr_flush = worker("_test_stderr_flush", function(testfn)
  io.stderr = assert(io.open(testfn, "w"))
  local zero = 0
  local _ = 1 // zero -- MARKER
end)

-- The assertions on what a worker wrote to the io.stderr it chose: forked
-- and script (--spawn) workers alike report an uncaught error through it.
local function checkReport(fn) fn() end

case("test_stderr_flush", function()
  -- io.stderr is flushed at process shutdown (issue #13812): the child points
  -- io.stderr at a file and raises; the whole report must be in the file.
  local testfn = os.tmpname()
  local proc = Process{target = _test_stderr_flush, args = {testfn}}
  proc:start()
  join_process(proc)
  local f = assert(io.open(testfn))
  local err = f:read("a")
  f:close()
  os.remove(testfn)
  -- The whole traceback was printed.
  checkReport(function()
    assertTrue(err:find("attempt to divide by zero", 1, true), err)
    assertTrue(err:find("test_subclassing_process.lua", 1, true), err)
    assertTrue(err:find("stack traceback", 1, true), err)
  end)
end)

local _test_sys_exit = worker("_test_sys_exit", function(reason, testfn)
  io.stderr = assert(io.open(testfn, "w"))
  os.exit(reason)
end)

case("test_sys_exit", function()
  -- See Issue 13854. CPython's sys.exit(reason) with a list or a string
  -- prints the reason and exits 1; Lua's os.exit rejects those with an error,
  -- which a worker reports on its io.stderr before it exits 1.
  local testfn = os.tmpname()
  for _, reason in ipairs{{1, 2, 3}, "ignore this"} do
    local p = Process{target = _test_sys_exit, args = {reason, testfn}}
    p.daemon = true
    p:start()
    join_process(p)
    assertEqual(p.exitcode, 1)

    local f = assert(io.open(testfn))
    local content = f:read("a")
    f:close()
    checkReport(function()
      assertTrue(content:find("bad argument #1 to 'exit'", 1, true), content)
    end)
  end
  os.remove(testfn)

  -- Lua's rule, not Python's: os.exit(true) is success and os.exit(false)
  -- failure (Python's sys.exit(True) exits 1, as True == 1).
  local cases = {
    {{true}, 0},
    {{false}, 1},
    {{8}, 8},
    {{nil}, 0},
    {{}, 0},
  }
  for _, c in ipairs(cases) do
    local args, expected = c[1], c[2]
    local p = jobrun.Process{target = function() os.exit(table.unpack(args, 1, 1)) end}
    p.daemon = true
    p:start()
    join_process(p)
    assertEqual(p.exitcode, expected, "os.exit(" .. tostring(args[1]) .. ")")
  end
end)

run()
