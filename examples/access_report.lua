-- A three-stage pipeline over gzipped web server logs: requests per hour and
-- status class, the status codes, and the paths that sent the most bytes.
--
--   jobrun examples/access_report.lua [FILE.log.gz ...]
--   jobrun --stats examples/access_report.lua /var/log/nginx/access.log.*.gz
--
-- With no files, it reads every data/access/*.log.gz beside this script
-- (nginx's "combined" format; made by data/make_logs.lua).
--
--   gunzip-1..F  one process per file: `gzip -dc FILE` through io.popen,
--                its lines in batches on `lines` (a bounded JoinableQueue)
--   parser-1..N  parse each line into {hour, status, bytes, path} and sum
--                each batch into a tally on `tallies` (a Queue)
--   aggregator   adds the tallies up and prints the report
--
-- The readers and parsers run at once: a batch is parsed while the next one
-- is decompressed. Lines that are not in the log format (a line cut short
-- when a disk filled, say) are counted, not fatal. The report is sorted, so
-- it is the same for any number of parsers and any order of arrival.

local BATCH = 100                          -- lines per item on `lines`

--- `s` as one shell word: it's -> 'it'\''s'
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local files = {...}
if #files == 0 then
  local ls = io.popen("ls " .. quote(here .. "/data/access") .. "/*.log.gz")
  for path in ls:lines() do files[#files + 1] = path end
  ls:close()
end
local parsers = jobrun.cpu_count()

--- Stage 1: decompress one file and put its lines on `lines`, BATCH at a time.
local function read_gzip(path, lines)
  local gz = io.popen("gzip -dc " .. quote(path), "r")
  local batch = {}
  for line in gz:lines() do
    batch[#batch + 1] = line
    if #batch == BATCH then lines:put(batch); batch = {} end
  end
  if #batch > 0 then lines:put(batch) end
  local ok, how, code = gz:close()
  if not ok then error(("gzip -dc %s: %s %d"):format(path, how, code), 0) end
end

--- Stage 2: one line of the log in, a record out (nil when it does not parse).
--  203.0.113.9 - - [30/Nov/2026:08:14:03 +0000] "GET /api/v1/orders/17 HTTP/1.1" 200 1931 "-" "curl/8.5.0"
local function parse(line)
  local hour, request, status, bytes = line:match('^%S+ %S+ %S+ %[[^:]+:(%d%d):[^%]]*%] "([^"]*)" ([1-5]%d%d) (%S+)')
  if not hour then return nil end
  local path = request:match("^%u+ (%S+) HTTP/") or "(not HTTP)"   -- a TLS hello sent to port 80, say
  path = path:gsub("%?.*", ""):gsub("/%d+$", "/:id")          -- /api/v1/orders/17?x=1 -> /api/v1/orders/:id
  return {hour = tonumber(hour), status = tonumber(status), bytes = tonumber(bytes) or 0, path = path}
end

--- A tally: what a parser sends for each batch and the aggregator adds up.
--  Summing a batch where it is parsed sends one small table per 100 lines,
--  not 100 records, so the aggregator keeps up with any number of parsers.
local function new_tally()
  return {requests = 0, bytes = 0, bad = 0, hours = {}, statuses = {}, paths = {}}
end

--- Adds one request (a record of `parse`) to tally `t`.
local function add(t, r)
  t.requests, t.bytes = t.requests + 1, t.bytes + r.bytes
  local classes = t.hours[r.hour] or {0, 0, 0, 0, 0}     -- 1xx .. 5xx
  t.hours[r.hour] = classes
  classes[r.status // 100] = classes[r.status // 100] + 1
  t.statuses[r.status] = (t.statuses[r.status] or 0) + 1
  local p = t.paths[r.path] or {path = r.path, requests = 0, bytes = 0}
  t.paths[r.path] = p
  p.requests, p.bytes = p.requests + 1, p.bytes + r.bytes
end

local function parse_batches(lines, tallies)
  for batch in lines:items() do
    local t = new_tally()
    for _, line in ipairs(batch) do
      local r = parse(line)
      if r then add(t, r) else t.bad = t.bad + 1 end
    end
    tallies:put(t)
  end
end

--- `keys(t)`, sorted.
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

--- Stage 3: add the tallies up, then print the report.
local function aggregate(tallies, nfiles)
  local total = new_tally()
  for t in tallies:items() do
    total.bad = total.bad + t.bad
    for hour, classes in pairs(t.hours) do
      local into = total.hours[hour] or {0, 0, 0, 0, 0}
      total.hours[hour] = into
      for i = 1, 5 do into[i] = into[i] + classes[i] end
    end
    for status, n in pairs(t.statuses) do total.statuses[status] = (total.statuses[status] or 0) + n end
    for path, p in pairs(t.paths) do
      local into = total.paths[path] or {path = path, requests = 0, bytes = 0}
      total.paths[path] = into
      into.requests, into.bytes = into.requests + p.requests, into.bytes + p.bytes
    end
    total.requests, total.bytes = total.requests + t.requests, total.bytes + t.bytes
  end

  print(("%d files, %d requests, %.1f MiB sent; lines not in the log format: %d")
        :format(nfiles, total.requests, total.bytes / 2^20, total.bad))
  print("\nhour     2xx  3xx  4xx  5xx")
  for _, hour in ipairs(sorted_keys(total.hours)) do
    local c = total.hours[hour]
    print(("%02d:00  %5d%5d%5d%5d"):format(hour, c[2], c[3], c[4], c[5]))
  end
  print("\nstatus  requests")
  for _, status in ipairs(sorted_keys(total.statuses)) do
    print(("%6d  %8d"):format(status, total.statuses[status]))
  end
  print("\ntop paths by bytes sent")
  local paths = {}
  for _, p in pairs(total.paths) do paths[#paths + 1] = p end
  table.sort(paths, function(a, b)
    if a.bytes ~= b.bytes then return a.bytes > b.bytes end
    return a.path < b.path
  end)
  for i = 1, math.min(5, #paths) do
    local p = paths[i]
    print(("%8.1f MiB  %5d requests  %s"):format(p.bytes / 2^20, p.requests, p.path))
  end
end

-- Bounded: a fast reader waits for the parsers instead of filling memory.
local lines = jobrun.JoinableQueue{maxsize = 4 * parsers, name = "lines"}
local tallies = jobrun.Queue{name = "tallies"}

local aggregator = jobrun.Process{target = aggregate, args = {tallies, #files}, name = "aggregator"}
aggregator:start()
for i = 1, parsers do
  jobrun.Process{target = parse_batches, args = {lines, tallies}, name = "parser-" .. i}:start()
end
local readers = {}
for i, path in ipairs(files) do
  readers[i] = jobrun.Process{target = read_gzip, args = {path, lines}, name = "gunzip-" .. i}
  readers[i]:start()
end

local failed = {}
for _, reader in ipairs(readers) do
  reader:join()
  if reader.exitcode ~= 0 then failed[#failed + 1] = reader.name end
end
-- A file gzip could not read: stop (the workers are stopped too) rather
-- than print a report short of it.
if #failed > 0 then error(table.concat(failed, ", ") .. " failed (see above): no report", 0) end
lines:close()    -- every file read: each parser's items() loop ends when drained
lines:join()     -- every batch parsed, so every tally is on `tallies`
tallies:close()  -- the aggregator's loop ends once it has added them all
aggregator:join()
