-- CPython's MiscTestCase, the part that maps: test_large_pool. (test__all__
-- and the spawn sys.executable test are about Python's module.)
require "harness"

case("test_large_pool", function()
  -- gh-89240: large pools are okay.
  local p = jobrun.Pool{workers = 200}
  local list = {}
  for i = 1, 1000 do list[i] = i - 1 end
  local sum = 0
  for _, x in ipairs(p:map(function(x) return x * x end, list)) do sum = sum + x end
  p:close()
  p:join()
  assertEqual(sum, 332833500)
end)

run()
