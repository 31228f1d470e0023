-- CPython's TestStartMethod, the part that maps: jobrun forks its workers
-- (or runs a script), with no start methods to choose or contexts to make.
require "harness"

case("test_nested_startmethod", function()
  -- gh-108520: a child can pass its arguments on to a process of its own.
  local queue = jobrun.Queue()

  local process = jobrun.Process{target = function(queue)
    queue:put(2)
    local process = jobrun.Process{target = function(queue) queue:put(1) end, args = {queue}}
    process:start()
    process:join(SHORT_TIMEOUT)
  end, args = {queue}}
  process:start()
  join_process(process)

  local results = {}
  while not queue:empty() do results[queue:get()] = true end

  -- gh-109706: queue.put(1) can come before queue.put(2).
  assertEqual(results, {[1] = true, [2] = true})
end)

run()
