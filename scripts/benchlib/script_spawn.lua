-- Start WORKERS `script` workers (a fresh jobrun on script_stage.lua each),
-- then join them all; ROUNDS times.
--   jobrun script_spawn.lua WORKERS ROUNDS
-- Twin of script_spawn() in py_workloads.py (the 'spawn' start method).
-- Prints {"workers":W,"seconds":[S1,...]}.
local workers, rounds = tonumber(arg[1]), tonumber(arg[2])

local times = {}
for r = 1, rounds do
  local t0 = jobrun.time()
  local ps = {}
  for i = 1, workers do
    ps[i] = jobrun.Process{script = "script_stage.lua", args = {i}}
    ps[i]:start()
  end
  for i = 1, workers do ps[i]:join() end
  times[r] = string.format("%.9f", jobrun.time() - t0)
  for i = 1, workers do
    assert(ps[i].exitcode == 0, ("script worker %d exited with %s"):format(i, tostring(ps[i].exitcode)))
  end
end
print(string.format('{"workers":%d,"seconds":[%s]}', workers, table.concat(times, ",")))
