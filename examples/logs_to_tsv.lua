-- map: -k
-- args: examples/data/logs.txt
-- A resumable `jobrun map` job with retries and a job log: convert log files
-- (plain or gzipped) into TSV tables, one output file per log, as one would
-- before loading them into a database. This file is not a script: it
-- returns the function `jobrun map` calls on each line of the input.
--
--   jobrun map [-j N] [-k] [--retries N] [--joblog FILE [--resume]] examples/logs_to_tsv.lua LIST
--
-- Each line of LIST is the path of a log: an application log
-- (`2026-11-30 08:00:01.234 ERROR [api] text`) or an nginx "combined"
-- access log, either one gzipped (`.gz`: read through `gzip -dc` by
-- io.popen). Its lines become rows (time, then the fields of its format)
-- and the function prints one line about it: how many rows, how many errors
-- (level ERROR, or a 5xx status), the first and last time, and the lines
-- that are not in either format (a line cut short). With OUT=FOLDER in the
-- environment it also writes the rows to FOLDER/<the log's path>.tsv:
-- first to a `.part` file, renamed when whole, so a .tsv there is complete.
--
-- The workflow, from the package root (data/logs.txt lists the 9 sample logs):
--
--   OUT=tsv FLAKY=0.3 jobrun map -k --retries 3 --joblog run.tsv examples/logs_to_tsv.lua examples/data/logs.txt
--     ^C, or add `--halt soon,fail=1` to stop after the first log that fails for good
--   OUT=tsv FLAKY=0.3 jobrun map -k --retries 3 --joblog run.tsv --resume examples/logs_to_tsv.lua examples/data/logs.txt
--
-- The second run reads run.tsv, runs only the lines it does not show done
-- (Exit 0) and appends to it; what the first run converted stays in tsv/,
-- and its stdout holds the lines it ran. A line is logged when its summary
-- is printed, so a run stopped at once (Ctrl-C, `--halt now,...`) has logged
-- only lines whose summary it printed; the resume runs the others. The
-- job log, one line per input line after two `#` lines, has the columns
-- Seq Worker Start RunTime Exit Retries Desc Hash:
--
--   awk -F'\t' '!/^#/ && $5 != 0' run.tsv    # failed for good: Exit is the error kind (Error, Timeout...)
--   awk -F'\t' '!/^#/ && $6 > 0' run.tsv     # needed retries: Retries is the attempts before the last
--
-- FLAKY=P (0 to 1) stands in for an unreliable network share: each read of
-- a log fails, partway through, with probability P. Without --retries about
-- P of the logs fail (the exit status is how many); with --retries N one
-- fails only when all its N + 1 tries do (P^(N+1) each: 0.3^4 < 1%), the Retries
-- column shows which needed them, and the output is what a run without
-- FLAKY prints. Unset, nothing fails on purpose. A share that hangs
-- rather than fails is what `--timeout 60` is for: past it the line's
-- worker is replaced and the line fails with Timeout (or is retried).

local out = os.getenv("OUT")
local flaky = tonumber(os.getenv("FLAKY") or "")

--- `s` as one shell word: it's -> 'it'\''s'
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local columns = {app = "time\tlevel\tservice\tmessage\n",
                 access = "time\tclient\tmethod\tpath\tstatus\tbytes\treferer\tagent\n"}

local months = {Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12}

--- One line of a log as a row (a list of fields, time first), whether it
--- is an error, and its format (a key of `columns`); nil when the line is in
--- neither format.
--    2026-11-30 08:00:01.234 ERROR [api] upstream timeout: inventory, order 17
--    203.0.113.9 - - [30/Nov/2026:08:14:03 +0000] "GET /api/v1/orders/17 HTTP/1.1" 502 157 "-" "curl/8.5.0"
local function parse(line)
  local date, time, level, service, text = line:match("^(%d+%-%d+%-%d+) (%d+:%d+:[%d.]+) (%u+) +%[([^%]]+)%] (.*)$")
  if date then
    return {date .. "T" .. time, level, service, text}, level == "ERROR", "app"
  end
  local ip, d, mon, y, hms, request, status, bytes, referer, agent =
    line:match('^(%S+) %S+ %S+ %[(%d+)/(%a+)/(%d+):(%d+:%d+:%d+) [^%]]*%] "([^"]*)" (%d%d%d) (%S+) "([^"]*)" "([^"]*)"$')
  if ip and months[mon] then
    local method, path = request:match("^(%u+) (%S+)")
    return {("%s-%02d-%02dT%s"):format(y, months[mon], d, hms), ip, method or "", path or request,
            status, bytes == "-" and "0" or bytes, referer, agent}, status >= "500", "access"
  end
  return nil
end

--- The lines of a log: a file, or `gzip -dc` of one; and how to close it.
local function open(path)
  local file, err = io.open(path, "r")
  if not file then error(err, 0) end
  if not path:match("%.gz$") then return file end
  file:close()
  return assert(io.popen("gzip -dc " .. quote(path), "r"))
end

--- Whether this read is to fail (FLAKY), and after how many lines.
local seeded = false
local function hiccup()
  if not flaky then return nil end
  if not seeded then   -- the workers are forked from one process: give each its own draws
    math.randomseed(os.time(), jobrun.current_process().pid)
    seeded = true
  end
  return math.random() < flaky and math.random(0, 100) or nil
end

--- "2026-11-30 08:00:25-14:07:24": the time from the first row to the last, to the second.
local function span(first, last)
  if not first then return "(no rows)" end
  local d1, t1 = first:match("^(.-)T(%d+:%d+:%d+)")
  local d2, t2 = last:match("^(.-)T(%d+:%d+:%d+)")
  return d1 == d2 and ("%s %s-%s"):format(d1, t1, t2) or ("%s %s-%s %s"):format(d1, t1, d2, t2)
end

return function(path)
  local target = out and ("%s/%s.tsv"):format(out, path:gsub("^[./]+", ""):gsub("%.gz$", ""):gsub("%.log$", ""))
  local log, fail_at = open(path), hiccup()
  local tsv
  if target then
    os.execute("mkdir -p " .. quote(target:match("^(.*)/")))
    tsv = assert(io.open(target .. ".part", "w"))
  end
  local rows, errors, skipped, first, last = 0, 0, 0, nil, nil
  local n = 0
  for line in log:lines() do
    if n == fail_at then break end
    n = n + 1
    local row, is_error, format = parse(line)
    if row then
      if tsv and rows == 0 then tsv:write(columns[format]) end
      rows = rows + 1
      if is_error then errors = errors + 1 end
      first, last = first or row[1], row[1]
      if tsv then
        for i, field in ipairs(row) do row[i] = field:gsub("[\t\r\n]", " ") end
        tsv:write(table.concat(row, "\t"), "\n")
      end
    else
      skipped = skipped + 1
    end
  end
  local ok, how, code = log:close()
  if tsv then tsv:close() end
  if fail_at then
    if tsv then os.remove(target .. ".part") end
    error(("read failed after %d lines (FLAKY=%s: a simulated flaky share)"):format(n, flaky), 0)
  end
  if not ok then error(("gzip -dc %s: %s %s"):format(path, how, code), 0) end
  if tsv then assert(os.rename(target .. ".part", target)) end
  return ("%4d rows %3d errors  %s  %s%s"):format(rows, errors, span(first, last), path,
         skipped > 0 and ("  (%d line%s not in the format)"):format(skipped, skipped == 1 and "" or "s") or "")
end
