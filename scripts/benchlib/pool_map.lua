-- Pool:map of N trivial tasks (x * 2) in CHUNKSIZE chunks over WORKERS
-- workers, ROUNDS times on the same pool; each map call is timed on its own.
--   jobrun pool_map.lua N WORKERS CHUNKSIZE ROUNDS
-- Twin of pool_map() in py_workloads.py. Prints
-- {"items":N,"seconds":[S1,...],"start_seconds":S}: start_seconds is the time
-- to create the pool (not part of the map figures).
local n, workers, chunksize, rounds =
  tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])

local list = {}
for i = 1, n do list[i] = i end

local t0 = jobrun.time()
local pool = jobrun.Pool{workers = workers}
local start = jobrun.time() - t0

local times = {}
for r = 1, rounds do
  local t = jobrun.time()
  local out = pool:map(function(x) return x * 2 end, list, chunksize)
  times[r] = string.format("%.9f", jobrun.time() - t)
  if #out ~= n or out[1] ~= 2 or out[n] ~= 2 * n then
    error(("bad result: %d items, first %s, last %s"):format(#out, tostring(out[1]), tostring(out[n])))
  end
end
pool:close()
pool:join()
print(string.format('{"items":%d,"seconds":[%s],"start_seconds":%.9f}',
  n, table.concat(times, ","), start))
