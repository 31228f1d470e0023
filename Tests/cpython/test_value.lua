-- CPython's _TestValue, ported to jobrun. jobrun.Value holds one number,
-- integer or float, with no typecode: the typecodes' values that are numbers
-- are ported ('i', 'd', 'h', 'q'); 'c' (a byte) is not.
--
-- Not ported: test_rawvalue and test_getobj_getlock (no RawValue, no
-- get_lock/get_obj: jobrun's Value has atomic add and compare_and_swap instead).
require "harness"

local codes_values = {
  {"i", 4343, 24234},
  {"d", 3.625, -4.25},
  {"h", -232, 234},
  {"q", 1 << 33, 1 << 34},
}

local _test = worker("_test", function(values)
  for i, cv in ipairs(codes_values) do values[i]:set(cv[3]) end
end)

case("test_value", function()
  local values = {}
  for i, cv in ipairs(codes_values) do values[i] = jobrun.Value(cv[2]) end

  for i, cv in ipairs(codes_values) do
    assertEqual(values[i]:get(), cv[2])
    assertEqual(math.type(values[i]:get()), math.type(cv[2]))
  end

  local proc = Process{target = _test, args = {values}}
  proc.daemon = true
  proc:start()
  join_process(proc)
  assertEqual(proc.exitcode, 0)

  for i, cv in ipairs(codes_values) do
    assertEqual(values[i]:get(), cv[3])
    assertEqual(math.type(values[i]:get()), math.type(cv[3]))
  end
end)

case("test_invalid_typecode", function()
  -- CPython: TypeError "bad typecode"; jobrun's Value takes only a number.
  assertRaises(jobrun.TypeError, jobrun.Value, "x")
end)

run()
