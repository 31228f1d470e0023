-- 1 producer -> Queue(MAXSIZE) -> 1 consumer, COUNT strings of SIZE bytes.
--   jobrun big_strings.lua COUNT SIZE MAXSIZE
-- Twin of big_strings() in py_workloads.py. Prints
-- {"bytes":B,"items":COUNT,"seconds":S}: the time from starting the producer
-- until the consumer reports that it has received every string.
local count, size, maxsize = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])

local function producer(q)
  local s = string.rep("x", size)
  for _ = 1, count do q:put(s) end
  q:put(nil)
end

local function consumer(q, out)
  local got = 0
  while true do
    local s = q:get()
    if s == nil then break end
    if #s ~= size then error("bad item length " .. #s) end
    got = got + 1
  end
  out:put(got)
end

local q, out = jobrun.Queue(maxsize), jobrun.Queue()
local c = jobrun.Process{target = consumer, args = {q, out}}
c:start()
local t0 = jobrun.time()
local p = jobrun.Process{target = producer, args = {q}}
p:start()
local got = out:get()
local t1 = jobrun.time()
p:join()
c:join()
assert(got == count, ("consumer got %d items, expected %d"):format(got, count))
print(string.format('{"bytes":%d,"items":%d,"seconds":%.9f}', count * size, count, t1 - t0))
