-- A small real job: count the words of a text file with N worker processes.
--
--   jobrun examples/pipeline.lua [file] [workers]
--
-- file defaults to data/words.txt beside this script, workers to
-- jobrun.cpu_count(). The shape is the classic producer/consumer pipeline of
-- the seeds (001 section 四: JoinableQueue, task_done, join), with a reducer:
--
--   main (reader) --chunks--> tasks (JoinableQueue) --> N workers
--   N workers --partial counts--> results (Queue) --> reducer --> top 10
--
-- Instead of one nil sentinel per consumer, the producer closes each queue
-- when it has put everything: `for x in q:items()` ends once the queue is
-- closed and drained, and on a JoinableQueue each step marks the previous
-- item done. The output does not depend on the number of workers or on
-- scheduling: the reducer sorts by count, then by word.
--
-- On a terminal, a big file shows the status line (the named queues, the
-- `lines` counter with its bar and ETA); `jobrun --stats examples/pipeline.lua`
-- ends with what each process and queue did.

local LINES_PER_CHUNK = 16

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local path = arg[1] or (script_dir .. "/data/words.txt")
local workers = tonumber(arg[2]) or jobrun.cpu_count()
if workers < 1 or workers ~= math.floor(workers) then
  error("workers must be a positive integer, got " .. tostring(arg[2]))
end

--- Worker: count the words of each chunk; one partial count per chunk.
local function count_words(tasks, results)
  for chunk in tasks:items() do
    local counts = {}
    for _, line in ipairs(chunk) do
      for word in line:lower():gmatch("%a[%a']*") do
        counts[word] = (counts[word] or 0) + 1
      end
    end
    results:put(counts)
  end
end

--- Reducer: merge the partial counts; print the top 10 and the totals.
local function reduce(results, name, lines)
  local totals, total, distinct = {}, 0, 0
  for counts in results:items() do
    for word, n in pairs(counts) do
      if not totals[word] then distinct = distinct + 1 end
      totals[word] = (totals[word] or 0) + n
      total = total + n
    end
  end
  local words = {}
  for word in pairs(totals) do words[#words + 1] = word end
  table.sort(words, function(a, b)
    if totals[a] ~= totals[b] then return totals[a] > totals[b] end
    return a < b
  end)
  print(("%s: %d lines, %d words, %d distinct"):format(name, lines, total, distinct))
  for i = 1, math.min(10, #words) do
    print(("%2d. %-10s %5d"):format(i, words[i], totals[words[i]]))
  end
end

local file, err = io.open(path, "r")
if not file then error("cannot read " .. err, 0) end
local lines = {}
for line in file:lines() do lines[#lines + 1] = line end
file:close()

-- Bounded: the reader waits for slow workers. The names show in the status line and --stats.
local tasks = jobrun.JoinableQueue{maxsize = 4 * workers, name = "chunks"}
local results = jobrun.Queue{name = "counts"}
local reducer = jobrun.Process{target = reduce, args = {results, path:match("[^/]*$"), #lines}, name = "reducer"}
reducer:start()
for i = 1, workers do
  jobrun.Process{target = count_words, args = {tasks, results}, name = "counter-" .. i}:start()
end

-- The main process is the reader: it splits the file into chunks of lines.
for first = 1, #lines, LINES_PER_CHUNK do
  local last = math.min(first + LINES_PER_CHUNK - 1, #lines)
  tasks:put(table.move(lines, first, last, 1, {}))
  jobrun.progress("lines", last, #lines)
end
tasks:close()    -- no more chunks: each worker's items() loop ends when drained
tasks:join()     -- every chunk counted, so every partial count is on `results`
results:close()  -- the reducer's items() loop ends once it has merged them all
reducer:join()
