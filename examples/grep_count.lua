-- args: examples/data/app-logs ERROR
-- Count the lines matching a pattern in every file under a folder, in
-- parallel: the job of `find DIR -type f | parallel grep -c PATTERN`.
--
--   jobrun examples/grep_count.lua DIR PATTERN [workers]
--   jobrun --progress examples/grep_count.lua ~/logs 'timeout' 8
--
-- PATTERN is a Lua pattern (`ERROR`, `5%d%d`, `^%d+-11-30`). `find` lists
-- the files and a Pool counts them while the list is still being read:
-- `imap_unordered` takes the `find` output's `lines()` iterator as it is and
-- reads it lazily, so a tree of a million files never sits in memory, and
-- yields each file's count as soon as a worker has it. The status line (on a
-- terminal, or with --progress) shows the `files` and `matches` counters as
-- they grow. The report is sorted by count, then by name: the same for any
-- number of workers.

local dir, pattern = arg[1], arg[2]
if not dir or not pattern then
  io.stderr:write("usage: jobrun grep_count.lua DIR PATTERN [workers]\n")
  os.exit(2)
end
local workers = tonumber(arg[3]) or jobrun.cpu_count()

--- `s` as one shell word: it's -> 'it'\''s'
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- The task, run in a worker: count one file's lines and its matching lines.
local function count(path)
  local file, err = io.open(path, "r")
  if not file then return {path = path, err = err} end
  local lines, matches = 0, 0
  for line in file:lines() do
    lines = lines + 1
    if line:find(pattern) then matches = matches + 1 end
  end
  file:close()
  return {path = path, lines = lines, matches = matches}   -- a table: a nil result would end the loop
end

-- One file name per line (a name holding a newline would be split: use
-- `find -print0` and split on "\0" if your tree may have one).
local find = io.popen("find " .. quote(dir) .. " -type f", "r")
local pool = jobrun.Pool{workers = workers}

local found, files, lines, matches, failed = {}, 0, 0, 0, 0
for r in pool:imap_unordered(count, find:lines()) do
  files = files + 1
  if r.err then
    failed = failed + 1
    io.stderr:write("grep_count: ", r.err, "\n")
  else
    lines, matches = lines + r.lines, matches + r.matches
    if r.matches > 0 then found[#found + 1] = r end
  end
  jobrun.progress("files", files)
  jobrun.progress("matches", matches)
end
pool:close()
pool:join()
if not find:close() then
  io.stderr:write("grep_count: find could not read all of ", dir, "\n")
  failed = failed + 1
end

table.sort(found, function(a, b)
  if a.matches ~= b.matches then return a.matches > b.matches end
  return a.path < b.path
end)
print(("%s: %d matching lines of %d, in %d of %d files"):format(pattern, matches, lines, #found, files))
local prefix = dir:gsub("/*$", "/")
for i = 1, math.min(10, #found) do
  local r = found[i]
  local name = r.path:sub(1, #prefix) == prefix and r.path:sub(#prefix + 1) or r.path
  print(("%7d  %5.1f%%  %s"):format(r.matches, 100 * r.matches / r.lines, name))
end
if failed > 0 then os.exit(1) end
