-- One trial of the kill test, producer side: two producers put into an
-- unbounded JoinableQueue (so its ring grows) items of which some are large
-- (their own blocks); a random producer is SIGKILLed at a random moment,
-- mid-put as often as not. Every item a producer's put returned for must be
-- delivered exactly once; the one put in flight at the kill, at most once.
--   jobrun scripts/kill-trial-producer.lua SEED [ITEMS]
-- Prints "ok SEEN/EXPECTED" when every item is accounted for, else what went wrong.
local seed = tonumber(arg[1]) or os.time()
local N = tonumber(arg[2]) or 20000
math.randomseed(seed)

local q = jobrun.JoinableQueue{redeliver = true}
local seen = jobrun.Dict()
local last = {jobrun.Value(0), jobrun.Value(0)}

local function item(i)
  if i % 251 == 0 then return string.rep("x", 20000) .. i end   -- a large item
  return i
end

local producers = {}
for p = 1, 2 do
  producers[p] = jobrun.Process{name = "producer-" .. p, target = function()
    for i = p, N, 2 do q:put(item(i)); last[p]:set(i) end
  end}
  producers[p]:start()
end

jobrun.sleep(math.random() * 0.04)
local victim = math.random(1, 2)
producers[victim]:kill()
for _, p in ipairs(producers) do p:join() end

local consumer = jobrun.Process{name = "consumer", daemon = true, target = function()
  for v in q:items() do
    local i = type(v) == "string" and tonumber(v:sub(20001)) or v
    seen:update(i, function(n) return (n or 0) + 1 end)
  end
end}
consumer:start()
local ok, err = pcall(q.join, q, 60)
if not ok or not err then print("join: " .. tostring(ok and "timeout" or err.message)); return end

local expected, count, bad = 0, 0, nil
for p = 1, 2 do
  local upto = last[p]:get()
  for i = p, N, 2 do
    local n = seen[i] or 0
    if i <= upto then
      expected = expected + 1
      if n ~= 1 then bad = bad or ("item " .. i .. " delivered " .. n .. " times") end
    elseif i == upto + 2 and p == victim then
      if n > 1 then bad = bad or ("in-flight item " .. i .. " delivered " .. n .. " times") end
    elseif n ~= 0 then
      bad = bad or ("item " .. i .. " never put was delivered")
    end
    if i <= upto then count = count + n end
  end
end
if bad then print(bad) else print(("ok %d/%d"):format(count, expected)) end
