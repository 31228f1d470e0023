-- One trial of the kill test: two producers and three consumers on a
-- JoinableQueue; a random consumer is SIGKILLed at a random moment.
--   jobrun scripts/kill-trial.lua REDELIVER(0|1) SEED [ITEMS]
-- Prints "ok SEEN/ITEMS" when join succeeded and every item was processed at
-- least once, or "workerdied: <message>" when join raised WorkerDied.
local redeliver = arg[1] == "1"
local seed = tonumber(arg[2]) or os.time()
local N = tonumber(arg[3]) or 10000
math.randomseed(seed)

local q = jobrun.JoinableQueue{maxsize = 100, redeliver = redeliver}
local seen = jobrun.Dict()

local producers = {}
for p = 1, 2 do
  producers[p] = jobrun.Process{name = "producer-" .. p, target = function()
    for i = p, N, 2 do q:put(i) end
  end}
  producers[p]:start()
end
local consumers = {}
for c = 1, 3 do
  consumers[c] = jobrun.Process{name = "consumer-" .. c, daemon = true, target = function()
    for item in q:items() do
      if item % 97 == 0 then jobrun.sleep(0.001) end
      seen:update(item, function(n) return (n or 0) + 1 end)
    end
  end}
  consumers[c]:start()
end

jobrun.sleep(math.random() * 0.15)
local victim = consumers[math.random(1, 3)]
victim:kill()
victim:join()
for _, p in ipairs(producers) do p:join() end
local ok, err = pcall(q.join, q, 60)
if ok and err then
  local count = 0
  for i = 1, N do if seen[i] then count = count + 1 end end
  print(("ok %d/%d"):format(count, N))
elseif ok then
  print("timeout")
else
  print(("%s: %s"):format(err.kind == jobrun.WorkerDied and "workerdied" or tostring(err.kind), err.message))
end
