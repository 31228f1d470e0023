-- producers -> JoinableQueue(MAXSIZE) -> consumers, task_done per item.
--   jobrun queue_items.lua N PRODUCERS CONSUMERS [MAXSIZE [KIND]]
-- MAXSIZE 0 (the default) is unbounded. KIND "string" (the default) sends
-- "item-<i>"; "table" sends {id = i, name = "item-<i>"}.
-- Twin of queue_items() in py_workloads.py. Prints {"items":N,"seconds":S}:
-- the time from starting the producers until q:join() returns.
local n, producers, consumers = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
local maxsize, kind = tonumber(arg[4] or "0"), arg[5] or "string"

local producer
if kind == "string" then
  producer = function(q, first, last)
    for i = first, last do q:put("item-" .. i) end
  end
elseif kind == "table" then
  producer = function(q, first, last)
    for i = first, last do q:put({id = i, name = "item-" .. i}) end
  end
else
  error("unknown item kind " .. tostring(kind))
end

local function consumer(q)
  while true do
    local item = q:get()
    q:task_done()
    if item == nil then break end
  end
end

local q = jobrun.JoinableQueue(maxsize)
local cs = {}
for k = 1, consumers do
  cs[k] = jobrun.Process{target = consumer, args = {q}}
  cs[k]:start()
end

local t0 = jobrun.time()
local ps, first = {}, 1
for k = 1, producers do
  local last = first + n // producers - 1 + ((k - 1 < n % producers) and 1 or 0)
  ps[k] = jobrun.Process{target = producer, args = {q, first, last}}
  first = last + 1
end
for _, p in ipairs(ps) do p:start() end
for _, p in ipairs(ps) do p:join() end
for _ = 1, consumers do q:put(nil) end
q:join()
local t1 = jobrun.time()
for _, c in ipairs(cs) do c:join() end
for _, p in ipairs(ps) do assert(p.exitcode == 0, "a producer failed") end
for _, c in ipairs(cs) do assert(c.exitcode == 0, "a consumer failed") end
print(string.format('{"items":%d,"seconds":%.9f}', n, t1 - t0))
