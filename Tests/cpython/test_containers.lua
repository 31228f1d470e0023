-- CPython's _TestContainers, the parts that map to jobrun. CPython runs them
-- against a Manager's dict; jobrun has no manager, and jobrun.Dict (shared
-- memory, no server process) stands for Manager().dict(). Keys and values
-- come back through d:keys() and d:items() (snapshots).
--
-- Not ported: the list tests (no shared list), test_dict_iter (pairs(d)
-- walks a snapshot, so a change during the walk raises nothing),
-- test_dict_proxy_nested, test_namespace and the *_isinstance tests (they
-- are about the manager's proxy types).
require "harness"

local function sorted(t) table.sort(t); return t end

case("test_dict", function()
  local d = jobrun.Dict()
  local indices = {65, 66, 67, 68, 69}
  for _, i in ipairs(indices) do d[i] = string.char(i) end
  local copy = {}
  for k, v in pairs(d) do copy[k] = v end
  local expected = {}
  for _, i in ipairs(indices) do expected[i] = string.char(i) end
  assertEqual(copy, expected)
  assertEqual(sorted(d:keys()), indices)
  local values = {}
  for _, v in pairs(d) do values[#values + 1] = v end
  assertEqual(sorted(values), {"A", "B", "C", "D", "E"})
  local items = d:items()
  local pairs_list = {}
  for k, v in pairs(items) do pairs_list[#pairs_list + 1] = {k, v} end
  table.sort(pairs_list, function(a, b) return a[1] < b[1] end)
  assertEqual(pairs_list, {{65, "A"}, {66, "B"}, {67, "C"}, {68, "D"}, {69, "E"}})
end)

case("test_nested_queue", function()
  local b = jobrun.Dict()  -- Test queue inside dict
  b[0] = jobrun.Queue()
  b[0]:put(456)
  assertEqual(b[0]:get(true, SHORT_TIMEOUT), 456)
end)

run()
