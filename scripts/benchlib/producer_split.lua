-- Where the time of a 1 -> 1 pipeline goes: N small strings put and got
-- first in one process (each side alone), then by a producer and a consumer
-- running at once, each timing its own loop.
--   jobrun producer_split.lua [N]
-- Prints ns per item for each. When the pipelined producer is as slow as the
-- producer alone, the queue is not what bounds the pipeline.
local n = tonumber(arg[1] or "1000000")
local q = jobrun.JoinableQueue()
local times = jobrun.Queue()

local t0 = jobrun.time()
for i = 1, n do q:put("item-" .. i) end
local put_alone = jobrun.time() - t0
t0 = jobrun.time()
for _ = 1, n do q:get(); q:task_done() end
local get_alone = jobrun.time() - t0

local producer = jobrun.Process{target = function()
  local t = jobrun.time()
  for i = 1, n do q:put("item-" .. i) end
  times:put({"producer", jobrun.time() - t})
end}
local consumer = jobrun.Process{target = function()
  local t = jobrun.time()
  for _ = 1, n do q:get(); q:task_done() end
  times:put({"consumer", jobrun.time() - t})
end}
consumer:start()
producer:start()
producer:join()
consumer:join()
local got = {}
for _ = 1, 2 do local m = times:get(); got[m[1]] = m[2] end
local function ns(s) return s / n * 1e9 end
print(("alone: put %.0f ns, get + task_done %.0f ns; pipelined: producer %.0f ns, consumer %.0f ns per item")
  :format(ns(put_alone), ns(get_alone), ns(got.producer), ns(got.consumer)))
