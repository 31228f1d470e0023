-- One trial of the kill matrix (scripts/killtest, scripts/kill-matrix.py):
-- two producers and three consumers on a JoinableQueue; one process is
-- SIGKILLed, or SIGSTOPped and SIGCONTed a while later, at a random moment.
--   jobrun scripts/kill-matrix-trial.lua REDELIVER(0|1) SEED [ITEMS] [TARGET] [SIGNAL]
-- TARGET: consumer (default) or producer, signalled by this script; main or
-- monitor, signalled from outside by scripts/killtest (this script then only
-- runs the pipeline); none. SIGNAL: KILL (default) or STOP.
--
-- Each item carries its id; a consumer puts the id on a results queue before
-- it marks the item done, so after join the main process knows how many
-- times each item was delivered and processed. The last line is the verdict:
--   PASS <what happened>
--   FAIL <what went wrong>
-- What must hold:
--   - join returns (no hang; scripts/killtest bounds the whole run), and no
--     Deadlock is ever raised: every process is alive or was killed on purpose;
--   - a consumer SIGKILLed with redeliver: every item is processed; only the
--     one item the victim was processing may be processed twice;
--   - a consumer SIGKILLed without redeliver: join may raise WorkerDied
--     naming the victim, and then at most that one item is missing;
--   - a producer SIGKILLed: the items it put are each processed once, the
--     ones it had not put yet are missing, nothing in between;
--   - a SIGSTOP (any process) or a SIGKILL of the monitor: every item is
--     processed exactly once (the main process starts another monitor);
--   - no consumer other than the victim ends (task_done refused, error).
local redeliver = arg[1] == "1"
local seed = tonumber(arg[2]) or os.time()
local N = tonumber(arg[3]) or 10000
local target = arg[4] or "consumer"
local signal = arg[5] or "KILL"
math.randomseed(seed)

local q = jobrun.JoinableQueue{maxsize = 100, redeliver = redeliver}
-- Bounded, so its ring never grows (a kill during growth has trials of its
-- own: kill-trial-producer.lua); the main process drains it while it waits in join.
local results = jobrun.Queue{maxsize = 2000}

local producers = {}
for p = 1, 2 do
  producers[p] = jobrun.Process{name = "producer-" .. p, target = function()
    for i = p, N, 2 do q:put(i) end
  end}
  producers[p]:start()
end
local consumers = {}
for c = 1, 3 do
  consumers[c] = jobrun.Process{name = "consumer-" .. c, daemon = true, target = function()
    while true do
      local item = q:get()
      if item % 97 == 0 then jobrun.sleep(0.001) end
      results:put(item)
      q:task_done()
    end
  end}
  consumers[c]:start()
end

local victim
if target == "consumer" or target == "producer" then
  local group = target == "consumer" and consumers or producers
  victim = group[math.random(1, #group)]
  jobrun.sleep(math.random() * 0.15)
  if signal == "KILL" then
    victim:kill()
    if target == "consumer" then victim:join() end
  else
    os.execute("kill -STOP " .. victim.pid)
    jobrun.sleep(0.05 + math.random() * 0.45)
    os.execute("kill -CONT " .. victim.pid)
  end
end

local seen = {}
local function drain(wait)
  while true do
    local ok, id = pcall(results.get, results, wait ~= nil, wait)
    if not ok then return end
    seen[id] = (seen[id] or 0) + 1
  end
end

for _, p in ipairs(producers) do
  while not p:join(0.05) do drain() end
end
local joined, err
while true do
  drain()
  local ok, r = pcall(q.join, q, 0.05)
  if not ok then joined, err = false, r; break end
  if r then joined = true; break end
end
drain(0.2)   -- with join done, every id is on the results queue or arriving

local missing, extra, first_missing = 0, 0, nil
for i = 1, N do
  local n = seen[i] or 0
  if n == 0 then missing = missing + 1; first_missing = first_missing or i end
  if n > 1 then extra = extra + n - 1 end
end
for c, p in ipairs(consumers) do
  if p ~= victim and not p:is_alive() then
    print(("FAIL consumer-%d ended (exit code %s) though no one killed it"):format(c, tostring(p.exitcode)))
    return
  end
end

local what = ("%s %s%s: %d missing, %d extra"):format(target, signal, redeliver and " (redeliver)" or "", missing, extra)
local function fail(why) print(("FAIL %s: %s"):format(what, why)) end
if not joined then
  local kind = err and err.kind == jobrun.WorkerDied and "WorkerDied" or tostring(err and err.kind)
  local expected = kind == "WorkerDied" and not redeliver and target == "consumer" and signal == "KILL"
  if not expected then return fail(("join raised %s: %s"):format(kind, err and err.message or "?")) end
  if missing > 1 or extra > 0 then return fail("WorkerDied may cost the victim's one item, nothing else") end
  if not err.message:find(victim.name, 1, true) then return fail("WorkerDied does not name the victim: " .. err.message) end
  return print(("PASS %s, join raised WorkerDied"):format(what))
end
if target == "consumer" and signal == "KILL" then
  if redeliver and missing > 0 then return fail(("item %d was never processed"):format(first_missing)) end
  if not redeliver and missing > 1 then return fail("more than the victim's one item is missing") end
  if extra > (redeliver and 1 or 0) then return fail("items processed twice beyond the victim's one") end
elseif target == "producer" and signal == "KILL" then
  if extra > 0 then return fail("an item was processed twice") end
  -- The victim's items form a prefix: nothing lost in the middle.
  local k = victim == producers[1] and 1 or 2
  local gap = false
  for i = k, N, 2 do
    if not seen[i] then gap = true elseif gap then return fail(("item %d of the killed producer is missing before item %d"):format(i - 2, i)) end
  end
  local other = 3 - k
  for i = other, N, 2 do
    if not seen[i] then return fail(("item %d of the producer that lived is missing"):format(i)) end
  end
else
  if missing > 0 or extra > 0 then return fail("every item must be processed exactly once") end
end
print("PASS " .. what)
