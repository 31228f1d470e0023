-- A Pool over a file's lines, the two ways a script can hand them over:
--   jobrun pool_stream.lua FILE WORKERS iter    pool:imap(fn, io.lines(FILE)), lazily
--   jobrun pool_stream.lua FILE WORKERS table [CHUNKSIZE]   the lines read into a
--                                               table, then pool:map (default chunksize:
--                                               ceil(n / (4 * workers)))
-- fn is a trivial task (the line's length). Prints
-- {"items":N,"seconds":S,"peak_kib":K}: S covers reading the file and the map;
-- K is this (the main) process's peak resident memory (VmHWM).
local file, workers, mode, chunksize = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
local fn = function(line) return #line end

local pool = jobrun.Pool{workers = workers}
local t = jobrun.time()
local n, sum = 0, 0
if mode == "iter" then
  for len in pool:imap(fn, io.lines(file)) do n = n + 1; sum = sum + len end
elseif mode == "table" then
  local lines = {}
  for line in io.lines(file) do lines[#lines + 1] = line end
  for _, len in ipairs(pool:map(fn, lines, chunksize)) do n = n + 1; sum = sum + len end
else
  error("mode must be iter or table, got " .. tostring(mode))
end
local seconds = jobrun.time() - t
pool:close()
pool:join()
local peak = 0
for line in io.lines("/proc/self/status") do
  local kib = line:match("^VmHWM:%s+(%d+)")
  if kib then peak = tonumber(kib) end
end
assert(sum > 0, "no line read")
print(string.format('{"items":%d,"seconds":%.9f,"peak_kib":%d}', n, seconds, peak))
