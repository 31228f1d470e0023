-- Ping-pong between two processes over two Queues: the main process puts an
-- integer on `ping`, the echo worker gets it and puts it back on `pong`. Each
-- round trip is timed on its own, after WARMUP untimed ones.
--   jobrun pingpong.lua ROUNDS WARMUP
-- Twin of pingpong() in py_workloads.py. Prints
-- {"rounds":R,"median_us":M,"p99_us":P,"mean_us":A,"max_us":X}.
local rounds, warmup = tonumber(arg[1]), tonumber(arg[2])

local function echo(ping, pong)
  while true do
    local x = ping:get()
    pong:put(x)
    if x == nil then break end
  end
end

local ping, pong = jobrun.Queue(), jobrun.Queue()
local w = jobrun.Process{target = echo, args = {ping, pong}}
w:start()

local now = jobrun.time
for i = 1, warmup do
  ping:put(i)
  assert(pong:get() == i)
end
local lat = {}
for i = 1, rounds do
  local t0 = now()
  ping:put(i)
  local x = pong:get()
  lat[i] = now() - t0
  if x ~= i then error(("echoed %s, expected %d"):format(tostring(x), i)) end
end
ping:put(nil)
pong:get()
w:join()
assert(w.exitcode == 0, "the echo worker failed")

table.sort(lat)
local function pct(p) return lat[math.max(1, math.ceil(p * #lat))] * 1e6 end
local sum = 0
for _, v in ipairs(lat) do sum = sum + v end
print(string.format('{"rounds":%d,"median_us":%.3f,"p99_us":%.3f,"mean_us":%.3f,"max_us":%.3f}',
  rounds, pct(0.5), pct(0.99), sum / #lat * 1e6, lat[#lat] * 1e6))
