-- Start WORKERS forked processes that do nothing, then join them all; ROUNDS times.
--   jobrun spawn.lua WORKERS ROUNDS
-- Twin of spawn() in py_workloads.py. Prints {"workers":W,"seconds":[S1,...]}.
local workers, rounds = tonumber(arg[1]), tonumber(arg[2])

local function noop() end

local times = {}
for r = 1, rounds do
  local t0 = jobrun.time()
  local ps = {}
  for i = 1, workers do
    ps[i] = jobrun.Process{target = noop}
    ps[i]:start()
  end
  for i = 1, workers do ps[i]:join() end
  times[r] = string.format("%.9f", jobrun.time() - t0)
  for i = 1, workers do assert(ps[i].exitcode == 0, "a worker failed") end
end
print(string.format('{"workers":%d,"seconds":[%s]}', workers, table.concat(times, ",")))
