--
-- Fan-in with a shared Dict of counters: N workers classify numbers and
-- count them straight into one shared dictionary, with no result queue and
-- no lost update (d:update is an atomic read-modify-write).
--
--   jobrun examples/fan_in.lua [workers]

local workers = tonumber(arg[1]) or 4
local counts = jobrun.Dict()
local total = jobrun.Value(0)

local function classify(n)
  if n % 15 == 0 then return "fizzbuzz" elseif n % 5 == 0 then return "buzz"
  elseif n % 3 == 0 then return "fizz" else return "number" end
end

local ps = {}
for w = 1, workers do
  ps[w] = jobrun.Process{target = function()
    for n = w, 3000, workers do       -- worker w takes every workers-th number
      counts:update(classify(n), function(c) return (c or 0) + 1 end)
      total:add(n)
    end
  end}
  ps[w]:start()
end
for _, p in ipairs(ps) do p:join() end

local names = counts:keys()
table.sort(names)
for _, k in ipairs(names) do print(k, counts[k]) end
print("sum", total:get())
