-- A consumer blocked in get for SECONDS: its CPU time over that window,
-- read from /proc/<pid>/stat (utime + stime).
--   jobrun idle.lua SECONDS CLK_TCK
-- Twin of idle() in py_workloads.py. Prints {"cpu_seconds":C,"seconds":S}.
local seconds, hz = tonumber(arg[1]), tonumber(arg[2])

local function cpu_ticks(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = f:read("a")
  f:close()
  local fields = {}
  for field in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = field end
  return tonumber(fields[12]) + tonumber(fields[13])  -- utime + stime (fields 14, 15)
end

local q = jobrun.Queue()
local c = jobrun.Process{target = function(queue) queue:get() end, args = {q}}
c:start()
jobrun.sleep(0.2)  -- let it reach get
local a, t0 = cpu_ticks(c.pid), jobrun.time()
jobrun.sleep(seconds)
local b, t1 = cpu_ticks(c.pid), jobrun.time()
q:put(nil)
c:join()
assert(c.exitcode == 0, "the consumer failed")
print(string.format('{"cpu_seconds":%.6f,"seconds":%.9f}', (b - a) / hz, t1 - t0))
