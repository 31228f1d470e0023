-- `jobrun.Pool`, written in Lua on Process and Queue. Runs after module.lua,
-- process.lua and objects.lua with (jobrun, core, ErrorMeta).
--
-- Beyond lua-api.md's list: `jobrun.Pool(n)` as `Pool{workers = n}`;
-- `pool:apply(fn, ...)`, `pool:map_async`, `pool:starmap_async`,
-- `r:wait([timeout])`; `pool.workers`. `imap` and `imap_unordered` yield
-- `(result, index)`; a nil result ends a `for` loop early, as any Lua
-- iterator does. The map methods take an iterator (a function returning
-- the next item) as well as a table, read lazily ("Streams" below), and an
-- options table {chunksize, window} in place of the chunksize; callbacks
-- come as `r:on_done(callback, error_callback)` or map_async's extra
-- arguments, and run in the caller when it pumps; `jobrun.wait` and
-- `jobrun.as_completed` are concurrent.futures'. `r:get()` of `apply_async` returns all of fn's results.
-- The map methods' options (or the Pool's, as defaults) also take GNU
-- parallel's per-item control: timeout, retries, halt, on_error, joblog,
-- resume ("Per-item control" below; a map without them runs as before).
-- `map` raises the first error that arrives (as Python's does) while the
-- rest of the list may still be running. A task's `error("text")` is raised
-- in the caller as text plus the worker's traceback; a jobrun error keeps its
-- kind and `where`; a plain table is raised again as a copy. A failing
-- `init` breaks the pool: pending and later calls raise it (Python would
-- respawn workers forever). `terminate()` fails unfinished results with
-- ValueError; `<close>` and garbage collection terminate.
--
-- After CPython's `multiprocessing/pool.py`, without its threads (the main
-- process must stay single-threaded to fork): N daemon workers are forked at
-- construction and take tasks `{id, fn, count, mode, items}` from one task
-- queue; results come back on one result queue. Nothing runs in the
-- background: whenever the caller waits (`map`, `get`, an `imap` step,
-- `join`, `ready`), `pump` sleeps until a result arrives or a child process
-- ends, with no timeout of its own, then collects the results and, after an
-- end, looks at the workers.
--
-- Why Python pools hang and this one does not: the pool's shared state
-- (SharedPool.swift) keeps a slot per worker saying which task it holds,
-- written in the same step as the take and cleared once its result is sent.
-- When a worker dies, the parent first drains the result queue (everything
-- the worker sent is in it by then), then fails exactly the task its slot
-- names with `WorkerDied` and forks a replacement; a worker that died
-- between tasks costs none. While the caller waits for a task that is itself
-- blocked (on a queue nobody feeds, a lock the caller holds), the monitor
-- sees both waits and raises `Deadlock`.
local jobrun, core, ErrorMeta = ...

local raise, getpid, now, newtable, sendable = core.raise, core.getpid, core.time, core.newtable, core.sendable
local pack, unpack, concat, move = table.pack, table.unpack, table.concat, table.move
local type, tostring, pairs, ipairs, pcall, xpcall, error = type, tostring, pairs, ipairs, pcall, xpcall, error
local setmetatable, getmetatable, rawget = setmetatable, getmetatable, rawget
local G = _G   -- the script's globals, for a task's hint
local describe = jobrun._describe

local MAX_WORKERS = core.max_processes - 1   -- the run's other processes count too: a start past them is refused
local JOIN_GRACE = 10    -- join(): how long an idle worker may take to exit after its sentinel
local new_state = jobrun._pool_state   -- the pool's shared state (SharedPool.swift)

-- The messages. A task is {id, fn, count, mode, items}; a chunk's results
-- come back as {"r", pid, id, errs or false, seconds, vals}, `seconds` the
-- time the worker spent on the chunk. The codec decodes their lists (fields
-- TASK_LIST and RESULT_LIST) straight into place, with no copy: a task's
-- items into the worker's one buffer (st:_take), a chunk's results into its
-- job's results at the task's first index (q:_get_into, routed by the id in
-- field ID through s.tasks: each task is its own route {results, first,
-- count}).
local TASK_LIST, RESULT_LIST, ID = 5, 6, 3

-- Per-item control (timeout, retries, halt, on_error, joblog, resume), below
-- the Streams part; settle and the death path hand a controlled job's
-- results and failures to these.
local settle_ctl, time_out_task

local Pool = {}
local PoolMeta = {__name = "jobrun.Pool"}
local AsyncResult = {}
local AsyncMeta = {__name = "jobrun.AsyncResult", __index = AsyncResult}
local worker_counter = 0

--- "file:line" of the code `level` frames above the caller of here().
local function here(level)
  local info = debug.getinfo(level + 2, "Sl")
  if info and info.currentline and info.currentline > 0 then
    return info.short_src .. ":" .. info.currentline
  end
end

local function new_error(kind, message, where)
  return setmetatable({kind = kind, message = message, where = where}, ErrorMeta)
end

local function is_kind(e, kind)
  return type(e) == "table" and getmetatable(e) == ErrorMeta and e.kind == kind
end

local function how_it_ended(code)
  if code == nil then return "died" end
  return core.describe_exit(code)
end

-- Argument checks: `level` 3 points at the caller of the pool method.
local function check_positive_int(v, what, fname, level)
  level = level or 3
  if type(v) ~= "number" then
    raise("TypeError", ("%s: %s must be a positive integer, got %s"):format(fname, what, type(v)), level)
  end
  local n = math.tointeger(v)   -- nil for NaN, 1.5, and whole floats past math.maxinteger (1e300)
  if n == nil or n < 1 then
    raise("ValueError", ("%s: %s must be a positive integer, got %s"):format(fname, what, tostring(v)), level)
  end
  return n
end

local function check_fn(fn, fname, level)
  if type(fn) ~= "function" then
    raise("TypeError", ("%s: fn must be a function, got %s"):format(fname, type(fn)), level or 3)
  end
end

local function check_list(list, fname, level)
  if type(list) ~= "table" then
    raise("TypeError", ("%s: list must be a table, got %s"):format(fname, type(list)), level)
  end
  local n = rawget(list, "n")
  if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
    raise("ValueError", ("%s: list.n must be a non-negative integer, got %s"):format(fname, tostring(n)), level)
  end
  return n or #list
end

--- starmap's list: every item a table of arguments (level 4: the caller of
--- the pool method, above this and start_map).
local function check_star_list(list, n, fname)
  for i = 1, n do
    if type(list[i]) ~= "table" then
      raise("TypeError", ("Pool.%s: list[%d] must be a table of arguments, got %s"):format(fname, i, type(list[i])), 4)
    end
  end
end

-- The worker side --------------------------------------------------------------

--- This file as tracebacks name it ("jobrun/prelude/pool.lua").
local POOL_SOURCE = debug.getinfo(1, "S").short_src

--- The traceback below the task function, without the pool's own frames.
local function worker_traceback()
  local tb = debug.traceback("", 3)
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if line:find("in function 'xpcall'", 1, true) or line:match("^%s*(.-):") == POOL_SOURCE then break end
    lines[#lines + 1] = line
  end
  local me = jobrun.current_process()
  lines[1] = ("stack traceback (pool worker %s, pid %d):"):format(me.name, me.pid)
  return concat(lines, "\n")
end

--- Runs fn over items[first..last] into vals; `at` is the item being run,
--- so the caller knows which one raised.
local at = 0
local function run_chunk(fn, items, vals, first, last)
  for k = first, last do
    at = k
    vals[k] = fn(items[k])
  end
end

--- `error(msg, 2)` in fn names fn's caller: run_chunk, where a call straight
--- from xpcall (a C function) named no place. The message loses that place,
--- so it reads the same however the pool calls fn.
local function without_pool_place(e)
  for level = 3, 250 do
    local info = debug.getinfo(level, "fSl")
    if not info then break end
    if info.func == run_chunk then
      local place = info.short_src .. ":" .. info.currentline .. ": "
      if e:sub(1, #place) == place then return e:sub(#place + 1) end
      break
    end
  end
  return e
end

--- xpcall handler in a worker: what the caller needs to raise the error again.
local function capture(e)
  if type(e) == "string" then e = without_pool_place(e) end
  local info = {trace = worker_traceback()}
  if type(e) == "table" and getmetatable(e) == ErrorMeta then
    info.kind, info.message, info.where = e.kind, tostring(e.message), e.where
  elseif type(e) == "string" then
    info.message = e
  else
    -- A plain table is raised again as it is (a copy); with a metatable it
    -- would arrive without it, so its description is sent instead.
    if type(e) == "table" and getmetatable(e) == nil then info.value = e end
    info.message = describe(e)
  end
  return info
end

--- Puts the chunk's results as {"r", pid, id, errs or false, vals[1..count]}
--- and frees the worker's slot; a value the codec refuses becomes a
--- TypeError for that item instead of killing the worker.
local function send_results(st, slot, me, id, vals, errs, count, seconds)
  local ok = pcall(st._send, st, slot, {"r", me, id, errs or false, seconds}, vals, 1, count)
  if ok then return end
  for k = 1, count do
    local fine, why = true, nil
    if vals[k] ~= nil then fine, why = sendable(vals[k], "result") end
    if not fine then
      errs = errs or {}
      errs[k] = {kind = "TypeError", trace = "", message = "cannot send the result back: " .. why, unsent = why}
      vals[k] = nil
    elseif errs and errs[k] and errs[k].value ~= nil and not sendable(errs[k].value, "value") then
      errs[k].value = nil
    end
  end
  st:_send(slot, {"r", me, id, errs or false, seconds}, vals, 1, count)
end

--- A chunk of a map with per-item control (timeout, retries, a joblog...;
--- mode "cmap" or "cstar", with a final "t" when timed): one protected call
--- per item, its start and run time kept for the joblog and, when timed,
--- each item's start written to the slot first (the caller kills the
--- worker past the timeout). Returns vals, errs and the times
--- {start1, seconds1, start2, ...}, sent where a chunk's seconds go.
--- `fn` comes as {fn, cancel [, avoid]}: `cancel` an Event set when the map
--- halted, after which the items not started are sent back as cancelled;
--- `avoid` the pid of the worker whose attempt failed (a retry), which
--- sends it back, declined, for another worker to take (the caller gives
--- up after 3 declines: the others are busy).
local DECLINE_PAUSE = 0.01

local function run_controlled(st, slot, id, fn, items, count, mode)
  local star, timed = mode:sub(2, 5) == "star", mode:byte(-1) == 116
  local vals, errs, times = items, nil, newtable(2 * count, 0)
  local cancel, avoid
  fn, cancel, avoid = fn[1], fn[2], fn[3]
  if avoid and avoid == getpid() then
    errs = {}
    for k = 1, count do errs[k] = {declined = true}; vals[k] = nil end
    return vals, errs, times, true
  end
  for k = 1, count do
    if cancel and cancel:is_set() then
      errs = errs or {}
      for j = k, count do errs[j] = {cancelled = true}; vals[j] = nil end
      break
    end
    if timed then st:_begin(slot, id, k) end
    local t0 = now()
    local ok, v
    if star then
      local a = items[k]
      ok, v = xpcall(fn, capture, unpack(a, 1, a.n or #a))
    else
      ok, v = xpcall(fn, capture, items[k])
    end
    times[2 * k - 1], times[2 * k] = t0, now() - t0
    if ok then
      vals[k] = v
    else
      errs = errs or {}
      errs[k] = v
      vals[k] = nil
    end
  end
  return vals, errs, times
end

--- A worker: `st` is the pool's shared state, `slot` its place in it.
local function worker_main(st, slot, task_q, res_q, init, init_args, max_tasks)
  local me = getpid()
  if init then
    local ok, info = xpcall(init, capture, unpack(init_args, 1, init_args.n or #init_args))
    if not ok then
      if not pcall(res_q.put, res_q, {"i", me, info}) then
        info.value = nil
        res_q:put({"i", me, info})
      end
      st:_notify()
      os.exit(1)
    end
  end
  local done, declined = 0, false
  -- One table for every chunk: the items are decoded into it, and each
  -- result takes the place of its item, which is read just before.
  local buffer = {}
  while true do
    if max_tasks and done >= max_tasks then
      res_q:put({"x", me})
      st:_notify()
      return
    end
    -- About to wait for work: let go of the last chunk's items and results
    -- (as CPython's worker drops its references to them after each task).
    if task_q:qsize() == 0 then buffer = {} end
    local task = st:_take(slot, TASK_LIST, buffer)   -- the slot now names the task
    if task == nil then return end               -- the sentinel put by join()
    local started = now()
    local id, fn, count, mode, items = task[1], task[2], task[3], task[4], task[5]
    local vals, errs = items, nil
    if mode == "map" then
      -- The common case: one protected call for the whole chunk, resumed
      -- after the item that raised; no table per item.
      local k = 1
      while k <= count do
        local ok, e = xpcall(run_chunk, capture, fn, items, vals, k, count)
        if ok then break end
        errs = errs or {}
        errs[at] = e
        vals[at] = nil
        k = at + 1
      end
    elseif mode:byte(1) == 99 then                -- "c...": a map with per-item control
      vals, errs, started, declined = run_controlled(st, slot, id, fn, items, count, mode)
    else
      for k = 1, count do
        local a = items[k]
        local r = pack(xpcall(fn, capture, unpack(a, 1, a.n or #a)))
        if not r[1] then
          errs = errs or {}
          errs[k] = r[2]
          vals[k] = nil
        elseif mode == "apply" then
          vals[k] = pack(unpack(r, 2, r.n))
        else
          vals[k] = r[2]
        end
      end
    end
    -- What the task printed is out before the caller sees its result, and is
    -- not lost in a buffer if the pool is terminated.
    io.stdout:flush()
    send_results(st, slot, me, id, vals, errs, count, type(started) == "table" and started or now() - started)
    if declined then
      -- Let an idle worker take the retry it gave back: awake, this one
      -- would reach the queue first.
      declined = false
      jobrun.sleep(DECLINE_PAUSE)
    end
    done = done + 1
  end
end

-- The caller side: jobs, tasks, workers ----------------------------------------------
--
-- A job is one map/imap/apply call: `n` items (nil while an iterator is
-- still being read), `have[i]` once item i is settled, `results[i]` or
-- `errors[i]` (a description raised by `throw`), `order` (indices in arrival
-- order, for imap_unordered), `remaining` tasks (plus one while its input is
-- being read), `failed` (lowest index of an error so far). A task is one
-- chunk of a job: {id, job, first, count, attempt}, `id` its place in the
-- task queue; the job knows its method (`fname`) and whether it is an apply.
-- A job over an iterator has a source `src` (see "Streams" below); a job
-- with callbacks has `callbacks`, run once it is done (see run_due).

--- The script is told how the workers an error names ended (spec.seen):
--- no longer unseen failures to report at exit.
local function mark_seen(spec)
  if spec.seen then for _, pid in ipairs(spec.seen) do core.seen(pid) end end
end

--- Raises the error stored for an item, with `at` as the place when the
--- error is the pool's own (WorkerDied, termination).
local function throw(spec, at)
  mark_seen(spec)
  if spec.value ~= nil then error(spec.value, 0) end
  local text = spec.message
  -- A task that failed on a global its worker lacks, which this process
  -- has now: it was defined after the pool's workers were forked.
  local name = type(text) == "string" and text:match("%(global '([%a_][%w_]*)'%)")
  if name and rawget(G, name) ~= nil then
    text = text .. ("\nhint: %s was defined after the pool's workers started (a forked worker has the globals "
                    .. "of the moment it started: define %s before jobrun.Pool)"):format(name, name)
  end
  if spec.trace and spec.trace ~= "" then text = text .. "\n" .. spec.trace end
  if spec.kind then error(new_error(spec.kind, text, spec.where or at), 0) end
  error(text, 0)
end

--- Done: every task settled, an error to raise (map), or the job halted
--- (`fatal`: a halt policy, a joblog that does not match).
local function map_done(job) return job.remaining <= 0 or job.failed ~= nil or job.fatal ~= nil end

--- Queues the job's callbacks to run once it is done: they run at the end of
--- the pump that settled it (run_due), never in the middle of collecting.
local function check_done(s, job)
  if job.callbacks and not job.notified and map_done(job) then
    job.notified = true
    s.due[#s.due + 1] = job
  end
end

local function settle(s, job, task, vals, errs)
  job.remaining = job.remaining - 1
  local first, count = task.first, task.count
  -- vals is job.results itself when the codec put them in place (q:_get_into).
  if vals and vals ~= job.results then move(vals, 1, count, first, job.results) end
  if errs then
    for k, e in pairs(errs) do
      local i = first + k - 1
      if e.unsent and not job.apply then   -- name the item whose result it was
        e.message = ("Pool.%s: cannot send the result for list[%d] back: %s"):format(job.fname, i, e.unsent)
      end
      job.results[i] = nil
      job.errors[i] = e
      if not job.failed or i < job.failed then job.failed = i end
    end
  end
  if job.have then                               -- imap: what has arrived
    local have = job.have
    for i = first, first + count - 1 do have[i] = true end
  elseif job.order then                          -- imap_unordered: in which order
    local order = job.order
    for i = first, first + count - 1 do
      job.tail = job.tail + 1
      order[job.tail] = i
    end
  end
  if job.src and not job.streamed then           -- map over an iterator: its window moves on
    job.src.out = job.src.out - 1
  end
  check_done(s, job)
end

local function fail_task(s, task, spec)
  s.tasks[task.id] = nil
  s.pending = s.pending - 1
  local errs = {}
  for k = 1, task.count do errs[k] = spec end
  if task.job.ctl then return settle_ctl(s, task.job, task, nil, errs, nil, spec.seen and spec.seen[1]) end
  settle(s, task.job, task, nil, errs)
end

local function fail_all(s, spec)
  local ids = {}
  for id in pairs(s.tasks) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do fail_task(s, s.tasks[id], spec) end
end

local function spawn(s)
  worker_counter = worker_counter + 1
  local slot = table.remove(s.free_slots)        -- there is one per worker not retiring
  local p = jobrun.Process{target = worker_main, name = "PoolWorker-" .. worker_counter, daemon = true,
                           args = {s.st, slot, s.task_q, s.res_q, s.init, s.init_args, s.max_tasks}}
  local ok, e = pcall(p.start, p)
  if not ok then s.free_slots[#s.free_slots + 1] = slot; error(e, 0) end
  local w = {proc = p, pid = p.pid, name = p.name, slot = slot, retiring = false}
  s.workers[#s.workers + 1] = w
  s.by_pid[w.pid] = w
  s.active = s.active + 1
end

--- Brings the number of workers not about to exit back to `size`, as long as
--- there is or may be work for them.
local function replenish(s)
  if s.broken or s.state == "TERMINATE" or s.sentinels_sent then return end
  if s.state == "CLOSE" and s.pending == 0 then return end
  while s.active < s.size do spawn(s) end
end

local function stop_workers(s)
  for _, w in ipairs(s.workers) do w.proc:_terminate_tree() end   -- (what their items started too)
  for _, w in ipairs(s.workers) do
    if not w.proc:_join(1) then w.proc:kill(); w.proc:_join(5) end
  end
  s.workers, s.by_pid, s.active = {}, {}, 0
end

--- A worker that retires (max_tasks) or has ended gives its slot back;
--- returns the number of the task the slot says it held, if any.
local function free_slot(s, w)
  if not w.slot then return nil end
  local held = s.st:_vacate(w.slot)
  s.free_slots[#s.free_slots + 1] = w.slot
  w.slot = nil
  return held
end

--- The init function failed in a worker: every task would fail the same way,
--- so the pool stops and raises that error from now on.
local function break_pool(s, info, w)
  if s.broken then return end
  local who = w and ("%s (pid %d)"):format(w.name, w.pid) or "a worker"
  local seen = {}
  for _, x in ipairs(s.workers) do seen[#seen + 1] = x.pid end
  local spec = {kind = info.kind, where = info.where, trace = info.trace, value = info.value, seen = seen,
                message = ("Pool: init failed in pool worker %s: %s"):format(who, info.message)}
  if spec.value == nil and not spec.kind then spec.kind = "ProcessError"; spec.where = nil end
  s.broken = spec
  fail_all(s, spec)
  stop_workers(s)
end

-- Streams: a job over an iterator --------------------------------------------------
--
-- `src` = {next = the iterator, fn, mode, read (items read so far), out
-- (chunks counted against the window), window, fixed (the chunksize given,
-- or nil: adaptive), last (the last chunk's size), pace (seconds per item,
-- as the workers report), ended, busy, at}. The iterator is read only here,
-- in the caller, a chunk at a time, while fewer than `window` chunks are
-- out: a chunk is out from the moment it is queued until its results are
-- settled (map, map_async) or, for imap and imap_unordered, until the caller
-- has taken its last item, so results held back for order count too. feed
-- runs when the job starts, after each pump (s.feeding: the jobs with input
-- left, weakly held so an abandoned imap is collected) and when an imap step
-- frees a chunk: outside a pump, every job that has room has been fed.

local CHUNK_SECONDS = 0.02   -- an adaptive chunk grows until it takes about this long to run
local MAX_CHUNK = 1024       -- and never past this many items

--- The size of the next chunk of an iterator without a chunksize: 1 until
--- a worker has said how long an item takes (a task of minutes must not go
--- out 8 at a time), then doubling, as long as a chunk is expected to run
--- in under CHUNK_SECONDS.
local function next_chunk_size(src)
  if src.fixed then return src.fixed end
  local c = 1
  if src.pace then
    c = math.min(src.last * 2, MAX_CHUNK)
    local fit = src.pace > 0 and CHUNK_SECONDS / src.pace or c
    if fit < c then c = math.max(1, math.floor(fit)) end
  end
  src.last = c
  return c
end

--- A worker ran `count` items in `seconds`: a running average of the pace.
local function learn_pace(src, count, seconds)
  if type(seconds) ~= "number" or count < 1 then return end
  local p = seconds / count
  src.pace = src.pace and (src.pace * 0.7 + p * 0.3) or p
end

--- Item i is settled: imap (have) and imap_unordered (order) may take
--- it; `gone` when there is no result to give (on_error took its failure,
--- or resume skipped it), which a controlled imap steps over.
local function mark_settled(job, i, gone)
  if gone then job.gone[i] = true end
  if job.have then job.have[i] = true
  elseif job.order then
    job.tail = job.tail + 1
    job.order[job.tail] = i
  end
end

--- No more input: the iterator ended (spec nil) or failed at item read + 1
--- (spec: the error, raised where that item's result would be).
local function end_input(s, job, spec)
  local src = job.src
  if src.ended then return end
  src.ended = true
  src.next, src.buf = nil, nil                   -- (an io.lines file closes when collected)
  s.feeding[job] = nil
  local n = src.read
  if spec then
    n = n + 1
    job.errors[n] = spec
    if not job.failed or n < job.failed then job.failed = n end
    mark_settled(job, n)
  end
  job.n = n
  job.remaining = job.remaining - 1
  check_done(s, job)
end

--- Queues buf[from..from+count-1] (from: 1 unless given) as items
--- first..first+count-1 of the job.
local function put_chunk(s, job, buf, count, first, from)
  local src = job.src
  local id = s.next_id + 1
  local ok, e = pcall(s.st._put, s.st, {id, src.fn, count, src.wire}, buf, from or 1, count)
  if not ok then return false, e end
  s.next_id = e
  s.tasks[id] = {job.results, first, count, id = id, job = job, first = first, count = count, attempt = 1}
  s.pending = s.pending + 1
  job.remaining = job.remaining + 1
  src.out = src.out + 1
  if job.streamed then job.ends[first + count - 1] = true end
  return true
end

--- Reads up to `size` items into buf; returns how many, and the error for
--- the item after them when one stops the chunk (a bad starmap item). An
--- error the iterator raises propagates (feed catches it; src.got says how
--- many were read before it).
local NOT_YET = setmetatable({}, {__name = "jobrun.NOT_YET"})
--- What an iterator of jobrun map returns when its next item is not there
--- yet (its input is a pipe with nothing in it): the chunk goes with the
--- items read so far, and the pool looks again after a short sleep (pump)
--- instead of sleeping in the iterator while results wait to be printed.
jobrun._not_yet = NOT_YET
local STALL_SECONDS = 0.01

local function read_items(src, buf, size)
  local nxt, star = src.next, src.mode == "star"
  for c = 1, size do
    local v = nxt()
    if v == nil then src.exhausted = true; return c - 1 end
    if v == NOT_YET then src.stalled = true; return c - 1 end
    if star and type(v) ~= "table" then
      return c - 1, {kind = "TypeError", trace = "", where = src.at,
                     message = ("Pool.%s: item %d must be a table of arguments, got %s"):format(src.fname, src.read + c, type(v))}
    end
    buf[c] = v
    src.got = c
  end
  return size
end

local function feed(s, job)
  local src = job.src
  if src.ended or src.busy then return end
  if job.failed and not job.streamed then return end_input(s, job) end   -- map raised already: read no further
  if s.state == "TERMINATE" or s.sentinels_sent then
    return end_input(s, job, {kind = "ValueError", trace = "", message = ("Pool.%s: the pool was %s before item %d was read")
                                 :format(src.fname, s.state == "TERMINATE" and "terminated" or "joined", src.read + 1)})
  end
  src.busy = true
  local buf = src.buf
  src.stalled = false
  while src.out < src.window and not src.ended and not src.stalled do
    local first = src.read + 1
    src.got = 0
    local ok, count, bad = pcall(src.reader, src, buf, next_chunk_size(src))
    if not ok then                               -- the iterator raised: `count` is its error
      local e = count
      bad = e == nil and {message = "the iterator raised nil", trace = ""} or {value = e}
      count = src.got
    end
    if count > 0 then
      local sent, e = src.put(s, job, buf, count, first)
      if not sent then
        -- Name the first item the codec refuses; the ones before it go.
        local k, why = 1, describe(e)
        for j = 1, count do
          local fine, w = sendable(buf[j], ("item %d"):format(first + j - 1))
          if not fine then k, why = j, w; break end
        end
        if k > 1 then src.put(s, job, buf, k - 1, first) end
        count = k - 1
        bad = {kind = "TypeError", trace = "", where = src.at,
               message = ("Pool.%s: cannot send the task to the workers: %s"):format(src.fname, why)}
      end
      src.read = first + count - 1
    end
    for j = 1, #buf do buf[j] = nil end            -- the items are in the queue now
    if bad then end_input(s, job, bad)
    elseif src.exhausted then end_input(s, job) end
  end
  if src.stalled then s.stalled = true end
  src.busy = false
end

local function feed_all(s)
  if next(s.feeding) == nil then return end
  local jobs = {}
  for job in pairs(s.feeding) do jobs[#jobs + 1] = job end
  for _, job in ipairs(jobs) do feed(s, job) end
end

--- The value a callback is given for a job: the list (map), fn's results
--- (apply); for an error callback, the error as the caller would catch it.
local function run_callbacks(job)
  local bad = job.fatal or (job.failed and job.errors[job.failed])
  for _, c in ipairs(job.callbacks) do
    if bad then
      if c[2] then c[2](select(2, pcall(throw, bad, job.at))) end
    elseif c[1] then
      if job.apply then
        local v = job.results[1]
        c[1](unpack(v, 1, v.n))
      else
        c[1](job.results)
      end
    end
  end
end

--- Runs the callbacks of the jobs done since; one that raises propagates
--- from the call that was waiting, and the rest run at the next pump.
local function run_due(s)
  while s.due[1] do
    local d = table.remove(s.due, 1)
    if d.on_error then                           -- an item failed for good (control: on_error)
      d.on_error(select(2, pcall(throw, d.spec, d.at)), d.index, d.item)
    else
      run_callbacks(d)
    end
  end
end

local function handle(s, msg)
  local tag = msg[1]
  if tag == "r" then
    local task = s.tasks[msg[3]]
    if task then
      s.tasks[task.id] = nil
      s.pending = s.pending - 1
      local job = task.job
      if job.ctl then
        settle_ctl(s, job, task, msg[RESULT_LIST], msg[4] or nil, msg[5], msg[2])
      else
        if job.src then learn_pace(job.src, task.count, msg[5]) end
        settle(s, job, task, msg[RESULT_LIST], msg[4] or nil)
      end
    end
  elseif tag == "x" then                         -- max_tasks reached: it exits now, holding nothing
    local w = s.by_pid[msg[2]]
    if w and not w.retiring then
      w.retiring = true
      free_slot(s, w)
      s.active = s.active - 1
      replenish(s)
    end
  elseif tag == "i" then
    break_pool(s, msg[3], s.by_pid[msg[2]])
  end
end

local function drain(s)
  local q = s.res_q
  while true do
    local ok, msg = pcall(q._get_into, q, false, nil, RESULT_LIST, s.tasks, ID)
    if not ok then
      if is_kind(msg, "Empty") then return end
      error(msg, 0)
    end
    handle(s, msg)
  end
end

--- "map items 1..1000 of 100000", "apply_async": what a task was, for messages.
local function task_desc(task)
  local job, first, count = task.job, task.first, task.count
  if job.apply then return job.fname end
  local of = job.n and (" of %d"):format(job.n) or " of an iterator"
  if count == 1 then return ("%s item %d%s"):format(job.fname, first, of) end
  return ("%s items %d..%d%s"):format(job.fname, first, first + count - 1, of)
end

local function died_spec(w, code, task)
  return {kind = "WorkerDied", trace = "", seen = {w.pid},
          message = ("pool worker %s (pid %d) %s while running %s"):format(w.name, w.pid, how_it_ended(code), task_desc(task))}
end

local function on_death(s, w)
  local found = false
  for i, x in ipairs(s.workers) do
    if x == w then table.remove(s.workers, i); found = true; break end
  end
  if not found then return end                   -- already stopped (break_pool)
  s.by_pid[w.pid] = nil
  if not w.retiring then s.active = s.active - 1 end
  local code = w.proc:_poll()
  w.proc:_join(0)                                -- reaped; forget it
  local held = free_slot(s, w)                   -- (none once retired: it held nothing)
  local task = held and s.tasks[held]
  if task and w.timed_out and w.timed_out.id == task.id then
    time_out_task(s, task, w)                    -- the pool killed it: the item took too long
  elseif task then
    fail_task(s, task, died_spec(w, code, task))
  end
end

local function check_workers(s)
  local dead
  for _, w in ipairs(s.workers) do
    if w.proc:_poll() ~= nil then dead = dead or {}; dead[#dead + 1] = w end
  end
  if dead then
    drain(s)                                     -- what they sent before dying comes first
    for _, w in ipairs(dead) do on_death(s, w) end
    replenish(s)
  end
end

-- Per-item control: timeout, retries, halt, on_error, joblog, resume ----------------
--
-- GNU parallel's --timeout, --retries, --halt, --joblog and --resume for a
-- map. A map with any of them on is a "controlled" job (job.ctl): its input,
-- a table too, is read as a stream's is (Streams above), so a halt can stop
-- handing out items and a resumed log can leave some out; its workers run
-- it one protected call per item (run_controlled) and report each item's
-- start and run time. A job without them takes none of these paths.
--
-- An item that raised, timed out or whose worker died is queued again as a
-- task of its own (`extra`: not counted in the stream's window) until its
-- attempts are used up; only then is it finished for good: logged, counted
-- for the halt policy, given to on_error or kept as the error to raise.
-- A timeout needs the caller to wake when an item is due: workers of a
-- timed job write the item they start into their slot (st:_begin), and
-- pump sleeps at most until the earliest running item is due (and never
-- longer than the shortest timeout, for items that start while it sleeps).

local CONTROL = {timeout = true, retries = true, halt = true, on_error = true, joblog = true, resume = true}
local CONTROL_LIST = "timeout, retries, halt, on_error, joblog, resume"
local LOG_COLUMNS = "#Seq\tWorker\tStart\tRunTime\tExit\tRetries\tDesc\tHash"
local DESC_MAX = 60

local function parse_halt(v, fname, level)
  if v == nil or v == "never" then return nil end
  if type(v) ~= "string" then
    raise("TypeError", ('%s: halt must be a string such as "soon,fail=1", got %s'):format(fname, type(v)), level)
  end
  local when, num, pct = v:match("^(%a+),fail=([%d.]+)(%%?)$")
  local n = tonumber(num)
  if pct == "" then n = n and math.tointeger(n) end
  if (when ~= "soon" and when ~= "now") or not n or n <= 0 or (pct ~= "" and n > 100) then
    raise("ValueError", ('%s: halt must be "never", "soon,fail=N", "now,fail=N", "soon,fail=P%%" or "now,fail=P%%" (N >= 1, 0 < P <= 100), got %q')
          :format(fname, v), level)
  end
  return {when = when, count = n, pct = pct == "%", text = v}
end

--- The control options of a map: the call's `o` over the pool's defaults
--- `d`, checked; nil when they are all off (the map runs as without them).
local function control_options(o, d, fname, level)
  local c, any = {}, false
  for k in pairs(CONTROL) do
    local v = o[k]
    if v == nil and d then v = d[k] end
    c[k] = v
    if v ~= nil then any = true end
  end
  if not any then return nil end
  local t = c.timeout
  if t ~= nil then
    if type(t) ~= "number" then
      raise("TypeError", ("%s: timeout must be a positive number of seconds, got %s"):format(fname, type(t)), level)
    end
    if not (t > 0) then
      raise("ValueError", ("%s: timeout must be a positive number of seconds, got %s"):format(fname, tostring(t)), level)
    end
    if t == math.huge then c.timeout = nil end
  end
  local r = c.retries
  if r ~= nil then
    if type(r) ~= "number" then
      raise("TypeError", ("%s: retries must be a non-negative integer, got %s"):format(fname, type(r)), level)
    end
    r = math.tointeger(r)
    if r == nil or r < 0 then
      raise("ValueError", ("%s: retries must be a non-negative integer, got %s"):format(fname, tostring(c.retries)), level)
    end
  end
  c.retries = r or 0
  c.halt = parse_halt(c.halt, fname, level + 1)
  if c.on_error ~= nil and type(c.on_error) ~= "function" then
    raise("TypeError", ("%s: on_error must be a function, got %s"):format(fname, type(c.on_error)), level)
  end
  if c.joblog ~= nil and (type(c.joblog) ~= "string" or c.joblog == "") then
    raise("TypeError", ("%s: joblog must be a file name, got %s"):format(fname, type(c.joblog) == "string" and '""' or type(c.joblog)), level)
  end
  if c.resume ~= nil and type(c.resume) ~= "boolean" then
    raise("TypeError", ("%s: resume must be a boolean, got %s"):format(fname, type(c.resume)), level)
  end
  if c.resume and not c.joblog then
    raise("ValueError", ("%s: resume = true needs a joblog (the file that says which items are done)"):format(fname), level)
  end
  if not (c.timeout or c.retries > 0 or c.halt or c.on_error or c.joblog) then return nil end
  return c
end

--- An item as a joblog's Desc column and messages show it: at most 60
--- characters, tabs, newlines, control bytes and backslashes escaped, and
--- any byte past 127 too when the text is not UTF-8 (binary data).
local function scalar_text(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return t
end

local function item_desc(v)
  if type(v) == "string" and #v <= DESC_MAX and not v:find("[%c\\\127-\255]") then return v end   -- the common case
  local text
  if type(v) == "table" and #v > 0 then           -- a starmap item: its arguments
    local parts = {}
    for k = 1, math.min(#v, 8) do parts[k] = scalar_text(v[k]) end
    text = "{" .. concat(parts, ", ") .. (#v > 8 and ", ...}" or "}")
  else
    text = scalar_text(v)
  end
  if #text > 4 * DESC_MAX then text = text:sub(1, 4 * DESC_MAX) end
  local binary = utf8.len(text) == nil
  text = text:gsub(binary and "[%c\\\127-\255]" or "[%c\\\127]", function(ch)
    if ch == "\t" then return "\\t" elseif ch == "\n" then return "\\n" elseif ch == "\r" then return "\\r"
    elseif ch == "\\" then return "\\\\" end
    return ("\\x%02x"):format(ch:byte())
  end)
  local cut = binary and (#text > DESC_MAX and DESC_MAX - 2) or (utf8.len(text) > DESC_MAX and utf8.offset(text, DESC_MAX - 2))
  if cut then text = text:sub(1, cut - 1) .. "..." end
  return text
end

--- A canonical text of a value (table keys sorted), for its hash.
local function canon(v, out, depth)
  local t = type(v)
  if t == "string" then out[#out + 1] = "s" .. #v .. ":" .. v
  elseif math.type(v) == "integer" then out[#out + 1] = "i" .. v .. ";"
  elseif t == "number" then out[#out + 1] = ("f%a;"):format(v)
  elseif t == "boolean" then out[#out + 1] = v and "T" or "F"
  elseif t == "nil" then out[#out + 1] = "N"
  elseif t == "table" and depth < 32 then
    local keys = {}
    for k in pairs(v) do
      local ko = {}
      canon(k, ko, depth + 1)
      keys[#keys + 1] = {concat(ko), k}
    end
    table.sort(keys, function(a, b) return a[1] < b[1] end)
    out[#out + 1] = "{"
    for _, kk in ipairs(keys) do
      out[#out + 1] = kk[1]
      out[#out + 1] = "="
      canon(v[kk[2]], out, depth + 1)
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = "?" .. t
  end
end

--- The Hash column: of a string, its bytes; of anything else, its canonical text.
local function item_hash(v)
  if type(v) == "string" then return core.hash(v) end
  local out = {}
  canon(v, out, 0)
  return core.hash(concat(out))
end

local function item_of(job, i)
  if job.list then return job.list[i] end
  return job.items[i]
end

--- The job's function, as a joblog's header names it: its bytecode's hash.
local function fingerprint(fn)
  local ok, code = pcall(string.dump, fn, true)
  return core.hash(ok and code or ("C function " .. describe(fn)))
end

local function fn_place(fn)
  local info = debug.getinfo(fn, "S")
  return info.what == "C" and "a C function" or (info.short_src .. ":" .. info.linedefined)
end

--- Reads a joblog for resume: {[seq] = {hash, ok, desc}} by its last line
--- per item, and the length of its whole lines (nil when it has no torn
--- last line). Raises ValueError (at `level`) for another job's log or a
--- corrupt line; a missing or empty file is nil.
local function read_joblog(path, fp, fname, fn, level)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  if data == nil or data == "" then return nil end
  local logged, pos, lineno = {}, 1, 0
  local function corrupt(why)
    raise("ValueError", ("%s:%d: corrupt joblog line: %s (%s cannot resume from it)"):format(path, lineno, why, fname), level + 1)
  end
  while true do
    local nl = data:find("\n", pos, true)
    if not nl then break end                     -- a torn last line (the run was killed): ignored
    lineno = lineno + 1
    local line = data:sub(pos, nl - 1)
    if line:byte(-1) == 13 then line = line:sub(1, -2) end   -- CRLF (a log edited on Windows)
    pos = nl + 1
    if lineno == 1 then
      local job = line:match("^#.*\tjob=(%x+)")
      if not job then
        raise("ValueError", ("%s:1: not a jobrun joblog (no header line '# jobrun joblog ... job=...'); %s refuses to resume from it")
              :format(path, fname), level)
      end
      if job ~= fp then
        raise("ValueError", ("%s: written by another job: its function differs from %s's (%s); remove the log to start anew")
              :format(path, fname, fn_place(fn)), level)
      end
    elseif line:byte(1) ~= 35 then               -- not a '#' line
      local c = {}
      for field in (line .. "\t"):gmatch("([^\t]*)\t") do c[#c + 1] = field end
      if #c ~= 8 then corrupt(("%d columns, expected 8: Seq Worker Start RunTime Exit Retries Desc Hash"):format(#c)) end
      local seq = math.tointeger(tonumber(c[1]))
      if not seq or seq < 1 then corrupt("bad Seq " .. ("%q"):format(c[1])) end
      if not math.tointeger(tonumber(c[2])) then corrupt("bad Worker " .. ("%q"):format(c[2])) end
      if not tonumber(c[3]) then corrupt("bad Start " .. ("%q"):format(c[3])) end
      if not tonumber(c[4]) then corrupt("bad RunTime " .. ("%q"):format(c[4])) end
      if c[5] == "" then corrupt("empty Exit") end
      if not math.tointeger(tonumber(c[6])) then corrupt("bad Retries " .. ("%q"):format(c[6])) end
      if not c[8]:match("^%x+$") then corrupt("bad Hash " .. ("%q"):format(c[8])) end
      logged[seq] = {hash = c[8], ok = c[5] == "0", desc = c[7]}
    end
  end
  if lineno == 0 then return nil, 0 end          -- only a torn header: as a new log
  return logged, pos <= #data and pos - 1 or nil, data
end

--- The map writing each log file (by the name it was given): one at a
--- time. Two writers would each write at their own offset, tearing each
--- other's lines, and a resume would take one job's lines for the other's.
local log_writers = setmetatable({}, {__mode = "v"})

local function close_log(job)
  local log = job.log
  if not log then return end
  log.f:close()
  job.log = nil
  if log_writers[log.key] == job then log_writers[log.key] = nil end
end

--- Opens the job's log: anew, or for resume appended to after checking it
--- is this job's (for a table, every logged item is checked now).
local function open_joblog(job, fn, c, level)
  local path, fname = c.joblog, "Pool." .. job.fname
  local earlier = log_writers[core.file_id(path) or path]   -- (the file, whatever its name)
  if earlier and earlier ~= job then close_log(earlier) end   -- the later map takes the file over
  local fp = fingerprint(fn)
  local logged, whole, data
  if c.resume then
    logged, whole, data = read_joblog(path, fp, fname, fn, level + 1)
    if logged and job.list then
      for i, old in pairs(logged) do
        if i <= job.src.n then
          local v = job.list[i]
          if item_hash(v) ~= old.hash then
            raise("ValueError", ("%s: written by another job: item %d was '%s', now '%s'; remove the log to start anew")
                  :format(path, i, old.desc, item_desc(v)), level)
          end
        end
      end
    end
  end
  local f, why
  if logged and whole then                        -- drop the torn last line, then append
    f, why = io.open(path, "wb")
    if f then f:write(data:sub(1, whole)); f:close(); f, why = io.open(path, "ab") end
  elseif logged or whole == 0 then
    f, why = io.open(path, whole == 0 and "wb" or "ab")
  else
    f, why = io.open(path, "wb")
  end
  if not f then raise("ValueError", ("%s: cannot open the joblog: %s"):format(fname, tostring(why)), level) end
  if not logged then
    local ok
    ok, why = f:write(("# jobrun joblog 1\tjob=%s\tfn=%s\n%s\n"):format(fp, fn_place(fn), LOG_COLUMNS))
    if ok then ok, why = f:flush() end
    if not ok then
      f:close()
      raise("ValueError", ("%s: cannot write the joblog %s: %s"):format(fname, path, tostring(why)), level)
    end
  end
  local key = core.file_id(path) or path
  job.log = {f = f, path = path, key = key, off = core.unix_time() - now()}
  job.log_path = path                            -- (job.log goes when the log is closed or taken over)
  log_writers[key] = job
  job.resumed = logged
end

--- Queues items i..i+count-1 (count: 1 unless given) of a controlled job
--- again, as a task of their own; false (and why) when they cannot go.
local function requeue(s, job, i, attempt, count, avoid)
  if s.state == "TERMINATE" or s.broken or s.sentinels_sent then return false end
  count = count or 1
  local src, items = job.src, {}
  for j = 1, count do items[j] = item_of(job, i + j - 1) end
  local id = s.next_id + 1
  local fn = avoid and {src.fn[1], src.fn[2], avoid} or src.fn
  local ok, e = pcall(s.st._put, s.st, {id, fn, count, src.wire}, items, 1, count)
  if not ok then return false, e end
  s.next_id = e
  s.tasks[id] = {job.results, i, count, id = id, job = job, first = i, count = count, attempt = attempt, extra = true,
                 avoid = avoid}
  s.pending = s.pending + 1
  job.remaining = job.remaining + 1
  return true
end

local write_log

local function check_halt(s, job)
  local h = job.ctl.halt
  if job.halting or job.fatal then return end
  local hit
  if h.pct then hit = job.finished >= 3 and job.nfail * 100 >= h.count * job.finished
  else hit = job.nfail >= h.count end
  if not hit then return end
  local last = job.last_fail
  local text = last.e.message
  text = type(text) == "string" and text:match("^[^\n]*") or describe(last.e.value)
  local spec = {kind = "Halted", trace = "", where = job.at,
                message = ("Pool.%s: halted (halt = %q): %d of %d finished item%s failed; the last, item %d: %s")
                  :format(job.fname, h.text, job.nfail, job.finished, job.finished == 1 and "" or "s", last.i, text)}
  job.cancel:set()                               -- the workers start no more of its items
  if h.when == "soon" then
    job.halting = spec
  else
    job.fatal = spec
    s.halt_now = s.halt_now or {}
    s.halt_now[#s.halt_now + 1] = job
  end
  if job.src and not job.src.ended then end_input(s, job) end   -- no new items
end

--- Writes a line of the job's log; when it cannot, the job stops (a log
--- that misses items would mislead a resume).
write_log = function(s, job, line)
  local log = job.log
  if not log then return end
  local ok, why = log.f:write(line)
  if ok then ok, why = log.f:flush() end
  if not ok and not job.fatal then
    job.fatal = {kind = "ValueError", trace = "", where = job.at,
                 message = ("Pool.%s: cannot write the joblog %s: %s"):format(job.fname, log.path, tostring(why))}
    if job.cancel then job.cancel:set() end
    if job.src and not job.src.ended then end_input(s, job) end
  end
end

--- Item i is finished for good: logged, counted, and its failure (e) given
--- to on_error or kept to be raised.
local function finish_item(s, job, i, e, pid, t0, dt, attempt)
  local c = job.ctl
  local v = item_of(job, i)
  job.finished = job.finished + 1
  local log = job.log
  if log and s.state ~= "TERMINATE" then         -- (terminate fails what never ran: not logged)
    local exit = "0"
    if e then exit = e.kind or "Error" end
    local line = ("%d\t%d\t%.3f\t%.3f\t%s\t%d\t%s\t%s\n"):format(i, pid or 0, t0 and t0 + log.off or core.unix_time(),
                                dt or 0, exit, attempt - 1, item_desc(v), job.hash[i] or item_hash(v))
    job.hash[i] = nil
    -- An imap's item is logged when the iterator hands it over (see
    -- controlled_imap): a run that stops before (halt = "now...", a break)
    -- has not logged what its caller never got, so a resume runs it again.
    if job.unlogged then job.unlogged[i] = line else write_log(s, job, line) end
  end
  if job.items then job.items[i] = nil end
  if e then
    job.results[i] = nil
    job.nfail = job.nfail + 1
    job.last_fail = {i = i, e = e}
    if c.on_error then
      mark_settled(job, i, true)
      s.due[#s.due + 1] = {on_error = c.on_error, spec = e, index = i, item = v, at = job.at}
    else
      job.errors[i] = e
      if not job.failed or i < job.failed then job.failed = i end
      mark_settled(job, i)
    end
    if c.halt then check_halt(s, job) end
  else
    mark_settled(job, i)
  end
end

--- settle() for a controlled job: `times` the workers' {start, seconds}
--- per item; `pid` the worker.
settle_ctl = function(s, job, task, vals, errs, times, pid)
  job.remaining = job.remaining - 1
  local src = job.src
  if not job.streamed and not task.extra then src.out = src.out - 1 end
  if job.fatal and errs then                     -- dropped, and no failure left unseen at exit
    for _, e in pairs(errs) do mark_seen(e) end
  end
  if not job.fatal then
    local first, count, c = task.first, task.count, job.ctl
    if vals and vals ~= job.results then move(vals, 1, count, first, job.results) end
    local total = 0
    for k = 1, count do
      local i = first + k - 1
      local e = errs and errs[k]
      local t0, dt
      if times then t0, dt = times[2 * k - 1], times[2 * k]; total = total + (dt or 0)
      elseif e then t0, dt = e.t0, e.dt end
      local again = false
      if e and e.cancelled then                  -- not started: the map halted
        e = nil
        job.results[i] = nil
      elseif e and e.declined then               -- a retry the failed worker gave back: again, at most 3 times
        local n = (task.declined or 0) + 1
        again = requeue(s, job, i, task.attempt, 1, n < 3 and task.avoid or nil)
        if again then s.tasks[s.next_id].declined = n end
        if not again then
          e = {kind = "ValueError", trace = "", message = ("Pool.%s: item %d could not be run again: the pool stopped"):format(job.fname, i)}
        end
      elseif e and task.attempt <= c.retries and not e.unsent and not job.halting then
        again = requeue(s, job, i, task.attempt + 1, 1, s.size > 1 and pid or nil)
      end
      if again or (errs and errs[k] and errs[k].cancelled) then
        if e then mark_seen(e) end               -- dealt with
        job.results[i] = nil
      elseif not job.fatal then
        finish_item(s, job, i, e, pid, t0, dt, task.attempt)
      end
    end
    if times and total > 0 then learn_pace(src, count, total) end   -- (not for a retry declined unrun)
  end
  if job.halting and job.remaining <= 0 then job.fatal = job.halting end
  if job.remaining <= 0 or job.fatal then
    if not job.unlogged then close_log(job) end  -- (an imap's, when its iterator ends)
    s.timed[job] = nil
  end
  check_done(s, job)
end

--- The worker `w` was killed running item k of `task` past the timeout:
--- that item fails with Timeout; the others of its chunk, those not
--- started and those whose results died with the worker, go again as they
--- were (not a retry), in the runs before and after it.
time_out_task = function(s, task, w)
  local k, t0, job = w.timed_out.k, w.timed_out.t0, task.job
  s.tasks[task.id] = nil
  s.pending = s.pending - 1
  local first, i = task.first, task.first + k - 1
  for _, run in ipairs{{first, k - 1}, {i + 1, task.count - k}} do
    if run[2] > 0 and not job.fatal and not requeue(s, job, run[1], task.attempt, run[2]) then
      job.remaining = job.remaining + 1            -- (settled just below, as failed)
      local spec = {kind = "ValueError", trace = "", message = ("Pool.%s: items %d..%d could not be run again after a timeout: the pool stopped")
                      :format(job.fname, run[1], run[1] + run[2] - 1)}
      local errs = {}
      for j = 1, run[2] do errs[j] = spec end
      settle_ctl(s, job, {first = run[1], count = run[2], attempt = task.attempt, extra = true}, nil, errs, nil, w.pid)
    end
  end
  local spec = {kind = "Timeout", trace = "", seen = {w.pid}, pid = w.pid, t0 = t0, dt = now() - t0,
                message = ("Pool.%s: item %d ('%s'): timed out after %g s (pool worker %s, pid %d, was killed and replaced)")
                  :format(job.fname, i, item_desc(item_of(job, i)), job.ctl.timeout, w.name, w.pid)}
  settle_ctl(s, job, {first = i, count = 1, attempt = task.attempt, extra = task.extra}, nil, {spec}, nil, w.pid)
end

local function kill_timed_out(s, w, task, k, t0)
  core.seen(w.pid)                               -- the pool killed it: not a failure to report at exit
  w.timed_out = {id = task.id, k = k, t0 = t0}
  w.proc:_kill_tree()                            -- (and what the item started: its work stops)
  w.proc:_join(5)
  drain(s)
  on_death(s, w)
end

--- Kills the workers whose item is past its timeout; returns when pump
--- must look again (nil: no timed job is running).
local function check_timeouts(s)
  local t, shortest, soonest = now(), nil, nil
  for job in pairs(s.timed) do
    if not shortest or job.ctl.timeout < shortest then shortest = job.ctl.timeout end
  end
  if not shortest then return nil end
  local overdue
  for _, w in ipairs(s.workers) do
    local id, k, t0
    if w.slot then id, k, t0 = s.st:_item(w.slot) end
    local task = id and s.tasks[id]
    if task and task.job.ctl and task.job.ctl.timeout and k <= task.count then
      local d = t0 + task.job.ctl.timeout
      if d <= t then overdue = overdue or {}; overdue[#overdue + 1] = {w, id, k, t0}
      elseif not soonest or d < soonest then soonest = d end
    end
  end
  if overdue then
    drain(s)                                     -- a result sent just in time is taken, not killed for
    for _, o in ipairs(overdue) do
      local w, id, k, t0 = o[1], o[2], o[3], o[4]
      local task = s.tasks[id]
      if task and s.by_pid[w.pid] == w and w.slot then
        local id2, k2 = s.st:_item(w.slot)
        if id2 == id and k2 == k then kill_timed_out(s, w, task, k, t0) end
      end
    end
    replenish(s)
  end
  local cap = t + shortest                       -- an item that starts while the caller sleeps
  if not soonest or cap < soonest then soonest = cap end
  return soonest
end

--- halt = "now,...": kills the workers running items of the halted jobs
--- (what they would send is dropped) and forks their replacements.
local function kill_halted(s)
  local jobs = s.halt_now
  s.halt_now = nil
  local victims = {}
  for _, w in ipairs(s.workers) do
    local held = w.slot and s.st:_held(w.slot)
    local task = held and s.tasks[held]
    if task then
      for _, job in ipairs(jobs) do
        if task.job == job then victims[#victims + 1] = w; break end
      end
    end
  end
  if not victims[1] then return end
  for _, w in ipairs(victims) do core.seen(w.pid); w.proc:_kill_tree() end
  for _, w in ipairs(victims) do w.proc:_join(5) end
  drain(s)
  for _, w in ipairs(victims) do on_death(s, w) end
  replenish(s)
end

--- put_chunk for a controlled job: keeps the items (a retry needs them),
--- and with a resumed log leaves out the items it shows done (a log whose
--- item differs halts the job: another job wrote it).
local function put_ctl(s, job, buf, count, first)
  local src, items, hashes, logged = job.src, job.items, job.hash, job.resumed
  local from = math.max(1, src.sent_upto - first + 2)   -- (feed's second call after a refused item)
  local run
  for k = from, count + 1 do
    local i = first + k - 1
    local skip = false
    if k <= count then
      local v = buf[k]
      if items then items[i] = v end
      if hashes then
        local h = item_hash(v)
        hashes[i] = h
        local old = logged and logged[i]
        if old and old.hash ~= h then
          job.fatal = {kind = "ValueError", trace = "", where = job.at,
                       message = ("%s: written by another job: item %d was '%s', now '%s'; remove the log to start anew")
                         :format(job.log_path, i, old.desc, item_desc(v))}
          close_log(job)
          s.timed[job] = nil
          end_input(s, job)
          return true
        end
        skip = old and old.ok
      end
    end
    if k > count or skip then
      if run then
        local ok, e = put_chunk(s, job, buf, k - run, first + run - 1, run)
        if not ok then return false, e end
        src.sent_upto = i - 1
      end
      run = nil
      if skip then
        if items then items[i] = nil end
        hashes[i] = nil
        mark_settled(job, i, true)
        src.sent_upto = i
      end
    elseif not run then
      run = k
    end
  end
  return true
end

--- The reader of a controlled job over a table: its items in order.
local function read_list(src, buf, size)
  local r = src.read
  local c = math.min(size, src.n - r)
  local list = src.list
  for j = 1, c do buf[j] = list[r + j] end
  src.got = c
  if r + c >= src.n then src.exhausted = true end
  return c
end

--- Makes `job` a controlled one (see above); its src is set.
local function setup_control(s, job, fn, c, level)
  job.ctl = c
  job.finished, job.nfail, job.gone = 0, 0, {}
  local src = job.src
  src.wire = "c" .. (src.mode == "star" and "star" or "map") .. (c.timeout and "t" or "")
  src.put, src.sent_upto = put_ctl, 0
  if c.halt then job.cancel = jobrun.Event() end
  src.fn = {fn, job.cancel or false}
  if not job.list then job.items = {} end
  if c.joblog then
    job.hash = {}
    if job.fname == "imap" or job.fname == "imap_unordered" then job.unlogged = {} end
    open_joblog(job, fn, c, level + 1)
  end
  if c.timeout then s.timed[job] = true end
end

--- Collects results. With `block`, first sleeps until a result arrives, a
--- child process ends or `deadline` (nil: none) passes; the workers are
--- looked at only when a child has ended since the last look. Then feeds
--- the jobs over iterators and runs the callbacks of the jobs now done.
local function pump(s, block, deadline)
  if s.state == "TERMINATE" then return end
  if next(s.timed) then                          -- a map with a timeout is running
    local d = check_timeouts(s)
    if d and (not deadline or d < deadline) then deadline = d end
  end
  local ended
  if block then
    local before = jobrun._before_wait         -- jobrun map: flush its output before sleeping
    if before then before() end
    if s.stalled then                            -- an iterator had nothing yet: look again soon
      s.stalled = false
      local d = now() + STALL_SECONDS
      if not deadline or d < deadline then deadline = d end
    end
    local timeout = deadline and math.max(0, deadline - now())
    ended = s.st:_wait(timeout, s.seen)
  else
    ended = s.st:_ended()
  end
  drain(s)
  if ended ~= s.seen then
    s.seen = ended
    check_workers(s)
  end
  feed_all(s)
  if s.halt_now then kill_halted(s) end
  if s.due[1] then run_due(s) end
end

--- Pumps until cond() holds (true) or the deadline passes (false).
local function wait_until(s, cond, deadline)
  while not cond() do
    if s.state == "TERMINATE" then return cond() end
    if deadline and now() >= deadline then return false end
    pump(s, true, deadline)
  end
  return true
end

-- The Pool object -------------------------------------------------------------------

--- The pool's state; `level` as core.raise's, counted from the caller of state().
local function state(pool, fname, level)
  level = (level or 2) + 1
  local s = type(pool) == "table" and rawget(pool, "_s")
  if not s or getmetatable(pool) ~= PoolMeta then
    raise("TypeError", ("Pool.%s: expected a Pool as self (use pool:%s(...)), got %s"):format(fname, fname, type(pool)), level)
  end
  if s.owner ~= getpid() then
    raise("ProcessError", ("Pool.%s: a pool can only be used by the process that created it (pid %d)"):format(fname, s.owner), level)
  end
  return s
end

--- Like state(), and the pool must accept new tasks.
local function running(pool, fname, level)
  level = level or 2
  local s = state(pool, fname, level + 1)
  if s.broken then throw(s.broken, here(level)) end
  if s.state ~= "RUN" then
    raise("ValueError", ("Pool not running (it was %s)"):format(s.state == "CLOSE" and "closed" or "terminated"), level + 1)
  end
  return s
end

local options = {workers = true, init = true, init_args = true, max_tasks = true}
for k in pairs(CONTROL) do options[k] = true end

function jobrun.Pool(opts)
  if opts == nil then opts = {} end
  if type(opts) == "number" then opts = {workers = opts} end
  if type(opts) ~= "table" then
    raise("TypeError", "Pool: expected a table of options, e.g. Pool{workers = 4}, got " .. type(opts), 2)
  end
  for k in pairs(opts) do
    if not options[k] then
      raise("TypeError", ("Pool: unknown option %s (use workers, init, init_args, max_tasks, %s)"):format(tostring(k), CONTROL_LIST), 2)
    end
  end
  local size = opts.workers
  if size == nil then size = jobrun.cpu_count() else size = check_positive_int(size, "workers", "Pool") end
  if size > MAX_WORKERS then
    raise("ValueError", ("Pool: workers must be at most %d (a run supervises at most %d live processes, the main one included), got %d")
          :format(MAX_WORKERS, MAX_WORKERS + 1, size), 2)
  end
  if opts.init ~= nil and type(opts.init) ~= "function" then
    raise("TypeError", "Pool: init must be a function, got " .. type(opts.init), 2)
  end
  if opts.init_args ~= nil and type(opts.init_args) ~= "table" then
    raise("TypeError", "Pool: init_args must be a table, got " .. type(opts.init_args), 2)
  end
  if opts.init_args ~= nil and opts.init == nil then
    raise("TypeError", "Pool: init_args given without init", 2)
  end
  local max_tasks = opts.max_tasks
  if max_tasks ~= nil then max_tasks = check_positive_int(max_tasks, "max_tasks", "Pool") end
  -- Defaults for every map of the pool: checked now, merged per map.
  local defaults
  if control_options(opts, nil, "Pool", 3) or opts.resume ~= nil then
    defaults = {}
    for k in pairs(CONTROL) do defaults[k] = opts[k] end
  end
  -- Named after the script's line that made the pool ("pipeline.lua:12
  -- Pool tasks": the file's name, its end if long, as a name holds at most
  -- 47 bytes), as the status line and --stats show them.
  local at = here(1)
  local prefix = at and at:match("[^/]*$"):sub(-34) .. " Pool" or "Pool"
  local task_q, res_q = jobrun.Queue{name = prefix .. " tasks"}, jobrun.Queue{name = prefix .. " results"}
  local st = new_state(task_q, res_q, size)
  local free_slots = {}
  for k = size, 1, -1 do free_slots[#free_slots + 1] = k end
  local s = {
    size = size, init = opts.init, init_args = opts.init_args or {}, max_tasks = max_tasks,
    owner = getpid(), state = "RUN", task_q = task_q, res_q = res_q, st = st, free_slots = free_slots,
    workers = {}, by_pid = {}, active = 0, tasks = {}, pending = 0, next_id = 0,
    feeding = setmetatable({}, {__mode = "k"}), due = {}, defaults = defaults,
    timed = setmetatable({}, {__mode = "k"}),    -- the maps with a timeout running (check_timeouts)
    seen = st:_ended(), sentinels_sent = false, broken = nil,
  }
  local pool = setmetatable({_s = s}, PoolMeta)
  -- A start refused (too many processes, fork failed) fails the construction
  -- at once and ends the workers already started: none is left running.
  local ok, e = pcall(function() for _ = 1, size do spawn(s) end end)
  if not ok then
    s.state = "TERMINATE"
    stop_workers(s)
    error(e, 0)
  end
  return pool
end

--- The part of a task the codec refuses, named as the caller knows it:
--- "fn (upvalue co): cannot send a coroutine", "list[3].x: ...", "args[2]: ...";
--- nil when each part alone can be sent.
local function unsendable_part(fn, list, first, count, mode)
  local ok, why = sendable(fn, "fn")
  if not ok then return why end
  for k = first, first + count - 1 do
    ok, why = sendable(list[k], mode == "apply" and "args" or ("list[%d]"):format(k))
    if not ok then return why end
  end
end

--- Queues list[1..n] (of job) in chunks; `mode` is "map", "star" or "apply".
--- A task goes as {id, fn, count, mode, items}, its items read from the list
--- while encoding (raw reads: a list with a metatable is copied first, so its
--- __index still counts). Its id is its place in the task queue, which only
--- this process puts to.
local function submit(s, fname, job, fn, list, n, chunk, mode, at)
  if getmetatable(list) ~= nil then list = move(list, 1, n, 1, newtable(n, 0)) end
  local first = 1
  while first <= n do
    local count = math.min(chunk, n - first + 1)
    local id = s.next_id + 1
    local ok, e = pcall(s.st._put, s.st, {id, fn, count, mode}, list, first, count)
    if ok then s.next_id = e end
    if not ok then
      local m = unsendable_part(fn, list, first, count, mode) or describe(e)
      -- The chunks already queued still run; their results are ignored.
      job.remaining = -1
      error(new_error("TypeError", ("Pool.%s: cannot send the task to the workers: %s"):format(fname, m), at), 0)
    end
    -- [1], [2], [3]: the task as the route of its results (RESULT_LIST, ID above).
    s.tasks[id] = {job.results, first, count, id = id, job = job, first = first, count = count, attempt = 1}
    s.pending = s.pending + 1
    first = first + count
  end
end

--- `streamed`: the caller takes results one by one, so each item's arrival
--- is tracked: in `have` (imap) or in `order` (imap_unordered).
local function new_job(fname, n, ntasks, streamed)
  local job = {fname = fname, apply = fname == "apply" or fname == "apply_async",
               n = n, results = newtable(n or 0, 0), errors = {}, remaining = ntasks, failed = nil}
  if streamed then
    job.streamed = true
    if fname == "imap" then job.have = {} else job.order, job.tail = {}, 0 end
  end
  return job
end

local function default_chunksize(s, n)
  if n == 0 then return 1 end
  local c, extra = n // (s.size * 4), n % (s.size * 4)
  if extra > 0 then c = c + 1 end
  return c
end

local TRIPLE = "a generic-for triple such as pairs(t) or ipairs(t) is not an iterator of items:"
    .. " pass the table itself, or a function that returns the next item on each call"

--- The third argument of a map method: a chunksize, nil, or a table of
--- options {chunksize, window} (and callback, error_callback for the
--- *_async methods, which also take them as Python's 4th and 5th arguments).
local function map_options(s, fname, list, arg, cb, ecb, async)
  local o
  if arg == nil or type(arg) == "number" then
    o = {chunksize = arg}
  elseif type(arg) == "table" and getmetatable(arg) == nil then
    o = arg
    for k in pairs(o) do
      if not (k == "chunksize" or k == "window" or CONTROL[k] or (async and (k == "callback" or k == "error_callback"))) then
        raise("TypeError", ("Pool.%s: unknown option %s (use chunksize, window%s, %s)%s"):format(fname, tostring(k),
              async and ", callback, error_callback" or "", CONTROL_LIST, type(list) == "function" and "; " .. TRIPLE or ""), 4)
      end
    end
  elseif type(list) == "function" then
    raise("TypeError", ("Pool.%s: %s"):format(fname, TRIPLE), 4)
  else
    o = {chunksize = arg}   -- refused just below, as before
  end
  local chunksize, window = o.chunksize, o.window
  if chunksize ~= nil then chunksize = check_positive_int(chunksize, "chunksize", "Pool." .. fname, 5) end
  if window ~= nil then window = check_positive_int(window, "window", "Pool." .. fname, 5) end
  cb, ecb = o.callback or cb, o.error_callback or ecb
  if cb ~= nil and type(cb) ~= "function" then
    raise("TypeError", ("Pool.%s: callback must be a function, got %s"):format(fname, type(cb)), 4)
  end
  if ecb ~= nil and type(ecb) ~= "function" then
    raise("TypeError", ("Pool.%s: error_callback must be a function, got %s"):format(fname, type(ecb)), 4)
  end
  return chunksize, window, cb, ecb, control_options(o, s.defaults, "Pool." .. fname, 5)
end

--- A map method's job over a table (queued at once) or over an iterator
--- (read as results come back: Streams, above). `default_chunk` "python":
--- map's chunk rule for a table; nil: imap's (1). Over an iterator without
--- a chunksize, chunks adapt (next_chunk_size).
local function start_map(pool, fname, fn, list, arg, mode, default_chunk, cb, ecb)
  local s = running(pool, fname, 3)
  check_fn(fn, "Pool." .. fname, 4)
  local chunksize, window, callback, error_callback, ctl =
    map_options(s, fname, list, arg, cb, ecb, fname == "map_async" or fname == "starmap_async")
  local job, at = nil, here(2)
  if type(list) == "function" or ctl then
    local ok, why = sendable(fn, "fn")
    if not ok then raise("TypeError", ("Pool.%s: cannot send the task to the workers: %s"):format(fname, why), 3) end
    job = new_job(fname, nil, 1, default_chunk == nil)
    if job.streamed then job.ends = {} end
    job.src = {next = list, fn = fn, mode = mode, fname = fname, read = 0, out = 0, window = window or 2 * s.size,
               fixed = chunksize, last = 0, ended = false, busy = false, buf = {}, at = at,
               reader = read_items, put = put_chunk, wire = mode}
    if type(list) ~= "function" then           -- a controlled map over a table: read as a stream
      local n = check_list(list, "Pool." .. fname, 4)
      if getmetatable(list) ~= nil then list = move(list, 1, n, 1, newtable(n, 0)) end
      if mode == "star" then check_star_list(list, n, fname) end
      job.results, job.list = newtable(n, 0), list
      job.src.next, job.src.reader, job.src.list, job.src.n = nil, read_list, list, n
    end
    if ctl then setup_control(s, job, fn, ctl, 4) end
  else
    local n = check_list(list, "Pool." .. fname, 4)
    if chunksize == nil then chunksize = default_chunk == "python" and default_chunksize(s, n) or 1 end
    if mode == "star" then check_star_list(list, n, fname) end
    job = new_job(fname, n, (n + chunksize - 1) // chunksize, default_chunk == nil)
  end
  job.at = at
  if callback or error_callback then job.callbacks = {{callback, error_callback}} end
  if job.src then
    s.feeding[job] = true
    feed(s, job)
  else
    submit(s, fname, job, fn, list, job.n, chunksize, mode, job.at)
  end
  check_done(s, job)                             -- (an empty list is done at once)
  if s.due[1] then run_due(s) end
  return s, job
end

local function map_result(job, at)
  if job.fatal then throw(job.fatal, at) end
  if job.failed then throw(job.errors[job.failed], at) end
  return job.results
end

function Pool.map(pool, fn, list, chunksize)
  local s, job = start_map(pool, "map", fn, list, chunksize, "map", "python")
  wait_until(s, function() return map_done(job) end)
  return map_result(job, here(1))
end

function Pool.starmap(pool, fn, list, chunksize)
  local s, job = start_map(pool, "starmap", fn, list, chunksize, "star", "python")
  wait_until(s, function() return map_done(job) end)
  return map_result(job, here(1))
end

--- An imap step has taken item k: forget it, and when it was the last of
--- its chunk, the chunk leaves the window and the iterator is read on.
local function taken(s, job, k)
  if job.have then job.have[k] = nil end
  job.results[k] = nil                           -- a long stream does not pile up
  local e = job.errors[k]
  job.errors[k] = nil
  if job.ends and job.ends[k] then
    job.ends[k] = nil
    job.src.out = job.src.out - 1
    feed(s, job)
  end
  return e
end

--- Iterator over results in order; each step yields (result, index). A nil
--- result ends a `for` loop early: return a non-nil stand-in value from fn.
--- An item's error is raised at its place; calling the iterator again goes
--- on with the next item.
local controlled_imap

function Pool.imap(pool, fn, list, chunksize)
  local s, job = start_map(pool, "imap", fn, list, chunksize, "map")
  if job.ctl then return controlled_imap(pool, s, job) end
  local i, keep = 0, pool         -- the iterator keeps the pool alive (see __gc)
  local have = job.have
  return function()
    if job.n and i >= job.n then keep = nil; return nil end
    i = i + 1
    local k = i
    if not have[k] then
      wait_until(s, function() return have[k] or (job.n ~= nil and k > job.n) end)
      if not have[k] then keep = nil; return nil end   -- the iterator ended before item k
    end
    local v = job.results[k]
    local e = taken(s, job, k)
    if e then throw(e, here(1)) end
    return v, k
  end
end

--- Iterator over results as they arrive; each step yields (result, index).
function Pool.imap_unordered(pool, fn, list, chunksize)
  local s, job = start_map(pool, "imap_unordered", fn, list, chunksize, "map")
  if job.ctl then return controlled_imap(pool, s, job) end
  local pos, keep = 0, pool
  local order = job.order
  return function()
    if job.n and pos >= job.n then keep = nil; return nil end
    pos = pos + 1
    local p = pos
    if order[p] == nil then
      wait_until(s, function() return order[p] ~= nil or (job.n ~= nil and p > job.n) end)
      if order[p] == nil then keep = nil; return nil end
    end
    local k = order[p]
    order[p] = nil
    local v = job.results[k]
    local e = taken(s, job, k)
    if e then throw(e, here(1)) end
    return v, k
  end
end

--- imap and imap_unordered of a controlled job: as above, stepping over
--- the items on_error took or resume skipped, and raising the job's halt
--- (or refused log) once the items before it are taken.
controlled_imap = function(pool, s, job)
  local have, order, gone = job.have, job.order, job.gone
  local pos, keep = 0, pool
  local function arrived(p)
    if have then return have[p] end
    return order[p] ~= nil
  end
  local unlogged = job.unlogged
  return function()
    while true do
      if job.n and pos >= job.n then
        if job.halting and not job.fatal then wait_until(s, function() return job.fatal ~= nil end) end
        keep = nil
        close_log(job)
        if job.fatal then throw(job.fatal, here(1)) end
        return nil
      end
      local p = pos + 1
      if not arrived(p) then
        wait_until(s, function() return arrived(p) or job.fatal ~= nil or (job.n ~= nil and p > job.n) end)
        if job.fatal and (job.fatal.kind ~= "Halted" or not arrived(p) or job.ctl.halt.when == "now") then
          keep = nil
          close_log(job)                         -- (what arrived but was not handed over is not logged)
          throw(job.fatal, here(1))
        end
        if not arrived(p) then keep = nil; close_log(job); return nil end
      end
      pos = p
      local k = p
      if order then k = order[p]; order[p] = nil end
      local line = unlogged and unlogged[k]
      if line then unlogged[k] = nil; write_log(s, job, line) end
      local v = job.results[k]
      local e = taken(s, job, k)
      if gone[k] then
        gone[k] = nil
      else
        if e then throw(e, here(1)) end
        return v, k
      end
    end
  end
end

local function new_async(pool, s, job, kind)
  return setmetatable({_pool = pool, _s = s, _job = job, _kind = kind}, AsyncMeta)
end

function Pool.apply_async(pool, fn, ...)
  local s = running(pool, "apply_async")
  check_fn(fn, "Pool.apply_async")
  local job = new_job("apply_async", 1, 1)
  job.at = here(1)
  submit(s, "apply_async", job, fn, {pack(...)}, 1, 1, "apply", job.at)
  return new_async(pool, s, job, "apply")
end

function Pool.apply(pool, fn, ...)
  local s = running(pool, "apply")
  check_fn(fn, "Pool.apply")
  local job = new_job("apply", 1, 1)
  submit(s, "apply", job, fn, {pack(...)}, 1, 1, "apply", here(1))
  wait_until(s, function() return map_done(job) end)
  if job.failed then throw(job.errors[1], here(1)) end
  local r = job.results[1]
  return unpack(r, 1, r.n)
end

--- `pool:map_async(fn, list [, chunksize [, callback [, error_callback]]])`
--- as Python's, or `pool:map_async(fn, list, {chunksize =, callback =, ...})`.
function Pool.map_async(pool, fn, list, chunksize, callback, error_callback)
  local s, job = start_map(pool, "map_async", fn, list, chunksize, "map", "python", callback, error_callback)
  return new_async(pool, s, job, "map")
end

function Pool.starmap_async(pool, fn, list, chunksize, callback, error_callback)
  local s, job = start_map(pool, "starmap_async", fn, list, chunksize, "star", "python", callback, error_callback)
  return new_async(pool, s, job, "map")
end

function Pool.close(pool)
  local s = state(pool, "close")
  if s.state == "RUN" then s.state = "CLOSE" end
end

function Pool.terminate(pool)
  local s = state(pool, "terminate")
  if s.state == "TERMINATE" then return end
  s.state = "TERMINATE"
  stop_workers(s)
  local spec = {kind = "ValueError", trace = "", message = "Pool was terminated before the task finished"}
  fail_all(s, spec)
  local jobs = {}
  for job in pairs(s.feeding) do jobs[#jobs + 1] = job end
  for _, job in ipairs(jobs) do end_input(s, job, spec) end
  s.due = {}                                     -- no callbacks after terminate (as Python's)
end

--- Waits for every queued task, then for the workers to exit.
function Pool.join(pool)
  local s = state(pool, "join")
  if s.state == "RUN" then raise("ValueError", "Pool.join: call pool:close() or pool:terminate() first", 2) end
  if s.state == "TERMINATE" then return end
  replenish(s)
  wait_until(s, function() return s.pending == 0 end)
  if not s.sentinels_sent then
    s.sentinels_sent = true
    for _, w in ipairs(s.workers) do
      if not w.retiring then s.next_id = s.st:_put() end
    end
  end
  for _, w in ipairs(s.workers) do
    if not w.proc:_join(JOIN_GRACE) then
      w.proc:terminate()
      if not w.proc:_join(1) then w.proc:kill(); w.proc:_join(5) end
    end
  end
  s.workers, s.by_pid, s.active = {}, {}, 0
end

PoolMeta.__index = function(pool, key)
  if key == "workers" then return rawget(pool, "_s").size end
  return Pool[key]
end

PoolMeta.__tostring = function(pool)
  local s = rawget(pool, "_s")
  return ("<Pool state=%s workers=%d pending=%d>"):format(s.state, s.size, s.pending)
end

--- `local pool <close> = jobrun.Pool{...}`: like Python's `with Pool() as p:`,
--- leaving the block terminates the workers.
PoolMeta.__close = function(pool)
  local s = rawget(pool, "_s")
  if s.owner == getpid() then Pool.terminate(pool) end
end

--- A pool nobody can reach any more stops its workers (only in its owner:
--- forked workers hold a copy of the same table).
PoolMeta.__gc = function(pool)
  local s = rawget(pool, "_s")
  if s and s.owner == getpid() and s.state ~= "TERMINATE" then pcall(Pool.terminate, pool) end
end

-- AsyncResult ----------------------------------------------------------------------

local function async_self(r, fname)
  if type(r) ~= "table" or getmetatable(r) ~= AsyncMeta then
    raise("TypeError", ("AsyncResult.%s: expected an AsyncResult as self (use r:%s(...)), got %s"):format(fname, fname, type(r)), 3)
  end
  local s = r._s
  if s.owner ~= getpid() then
    raise("ProcessError", ("AsyncResult.%s: can only be used by the process that created the pool (pid %d)"):format(fname, s.owner), 3)
  end
  return s, r._job
end

local function check_timeout(timeout, fname)
  local t = core.timeout_arg(timeout, "AsyncResult." .. fname, 3)   -- raised at the caller of AsyncResult.<fname>
  return t and now() + t
end

function AsyncResult.ready(r)
  local s, job = async_self(r, "ready")
  if not map_done(job) then pump(s, false) end
  return map_done(job)
end

function AsyncResult.successful(r)
  local s, job = async_self(r, "successful")
  if not map_done(job) then pump(s, false) end
  if not map_done(job) then raise("ValueError", "AsyncResult.successful: the result is not ready", 2) end
  return job.failed == nil and job.fatal == nil
end

function AsyncResult.wait(r, timeout)
  local s, job = async_self(r, "wait")
  local deadline = check_timeout(timeout, "wait")
  return wait_until(s, function() return map_done(job) end, deadline)
end

function AsyncResult.get(r, timeout)
  local s, job = async_self(r, "get")
  local deadline = check_timeout(timeout, "get")
  if not wait_until(s, function() return map_done(job) end, deadline) then
    raise("Timeout", ("AsyncResult.get: no result after %g s"):format(math.max(timeout, 0)), 2)
  end
  if job.fatal then throw(job.fatal, here(1)) end
  if job.failed then throw(job.errors[job.failed], here(1)) end
  if r._kind == "apply" then
    local v = job.results[1]
    return unpack(v, 1, v.n)
  end
  return job.results
end

--- `r:on_done(callback [, error_callback])`: Python's apply_async/map_async
--- callbacks. callback gets fn's results (apply_async) or the list (map_async),
--- error_callback the error as `get` would raise it. They run in this
--- process, at the end of whichever call collects the result (get, wait,
--- map, an imap step, jobrun.wait...), or at once if it is already in.
--- Returns r, so `local r = pool:apply_async(f, x):on_done(print)`.
function AsyncResult.on_done(r, callback, error_callback)
  local s, job = async_self(r, "on_done")
  if callback ~= nil and type(callback) ~= "function" then
    raise("TypeError", "AsyncResult.on_done: callback must be a function, got " .. type(callback), 2)
  end
  if error_callback ~= nil and type(error_callback) ~= "function" then
    raise("TypeError", "AsyncResult.on_done: error_callback must be a function, got " .. type(error_callback), 2)
  end
  local c = {callback, error_callback}
  if job.notified or (map_done(job) and not job.callbacks) then
    job.notified = true
    run_callbacks(setmetatable({callbacks = {c}}, {__index = job}))   -- the job as it ended (fatal included), with only this callback
  else
    job.callbacks = job.callbacks or {}
    job.callbacks[#job.callbacks + 1] = c
    check_done(s, job)
    if s.due[1] then run_due(s) end
  end
  return r
end

-- jobrun.wait and jobrun.as_completed (concurrent.futures) -------------------------

local function check_results(results, fname)
  if type(results) ~= "table" then
    raise("TypeError", ("jobrun.%s: results must be a list of AsyncResults, got %s"):format(fname, type(results)), 3)
  end
  local pools, seen = {}, {}
  for i = 1, #results do
    local r = results[i]
    if type(r) ~= "table" or getmetatable(r) ~= AsyncMeta then
      raise("TypeError", ("jobrun.%s: results[%d] must be an AsyncResult, got %s"):format(fname, i, type(r)), 3)
    end
    if r._s.owner ~= getpid() then
      raise("ProcessError", ("jobrun.%s: results[%d] belongs to a pool of another process (pid %d)"):format(fname, i, r._s.owner), 3)
    end
    if not seen[r._s] then seen[r._s] = true; pools[#pools + 1] = r._s end
  end
  return pools
end

--- One wait for any of the pools: on one pool, until a result or the
--- deadline; on several, each is looked at and the first slept on for at
--- most 10 ms (a result of another pool does not wake it).
local function wait_pools(pools, deadline)
  if #pools == 1 then return pump(pools[1], true, deadline) end
  for _, s in ipairs(pools) do pump(s, false) end
  local d = now() + 0.01
  if deadline and deadline < d then d = deadline end
  pump(pools[1], true, d)
end

--- `jobrun.wait(results [, {timeout = s, first = true}])`: as
--- concurrent.futures.wait, returns (done, not_done), two lists of the
--- AsyncResults in the order given, once all are done (a failed one counts
--- as done), once one is with `first`, or when the timeout passes.
function jobrun.wait(results, opts)
  local pools = check_results(results, "wait")
  if opts ~= nil and type(opts) ~= "table" then
    raise("TypeError", "jobrun.wait: options must be a table {timeout =, first =}, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "timeout" and k ~= "first" then
      raise("TypeError", ("jobrun.wait: unknown option %s (use timeout, first)"):format(tostring(k)), 2)
    end
  end
  local t = core.timeout_arg(opts.timeout, "jobrun.wait", 2)
  local deadline = t and now() + t
  local n = #results
  local need = opts.first and math.min(1, n) or n
  local function count()
    local c = 0
    for i = 1, n do if map_done(results[i]._job) then c = c + 1 end end
    return c
  end
  for _, s in ipairs(pools) do pump(s, false) end
  while count() < need and not (deadline and now() >= deadline) do wait_pools(pools, deadline) end
  local done, not_done = {}, {}
  for i = 1, n do
    local r = results[i]
    if map_done(r._job) then done[#done + 1] = r else not_done[#not_done + 1] = r end
  end
  return done, not_done
end

--- `for r, i in jobrun.as_completed(results [, timeout]) do`: each
--- AsyncResult (and its place in the list) as it finishes, the ones already
--- finished first; past the timeout (counted from the call) a step raises
--- Timeout, as concurrent.futures.as_completed does.
function jobrun.as_completed(results, timeout)
  local pools = check_results(results, "as_completed")
  local t = core.timeout_arg(timeout, "jobrun.as_completed", 2)
  local deadline = t and now() + t
  local n, left, given = #results, #results, {}
  for _, s in ipairs(pools) do pump(s, false) end
  return function()
    if left == 0 then return nil end
    while true do
      for i = 1, n do
        if not given[i] and map_done(results[i]._job) then
          given[i] = true
          left = left - 1
          return results[i], i
        end
      end
      if deadline and now() >= deadline then
        raise("Timeout", ("jobrun.as_completed: %d of %d results not done after %g s"):format(left, n, t), 2)
      end
      wait_pools(pools, deadline)
    end
  end
end

AsyncMeta.__tostring = function(r)
  local job = r._job
  return ("<AsyncResult %s>"):format(map_done(job) and (job.failed and "failed" or "ready") or "pending")
end
