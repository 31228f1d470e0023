-- CPython's TestInitializers, the Pool half (jobrun has no manager to
-- start with an initializer).
require "harness"

case("test_pool_initializer", function()
  assertRaises(jobrun.TypeError, jobrun.Pool, {init = 1})
  local ns = jobrun.Value(0)
  local p = jobrun.Pool{workers = 1, init = function(ns) ns:add(1) end, init_args = {ns}}
  p:close()
  p:join()
  assertEqual(ns:get(), 1)
end)

run()
