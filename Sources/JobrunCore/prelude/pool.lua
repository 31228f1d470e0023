-- `jobrun.Pool`, written in Lua on Process and Queue. Runs after module.lua,
-- process.lua and objects.lua with (jobrun, core, ErrorMeta).
--
-- Beyond lua-api.md's list: `jobrun.Pool(n)` as `Pool{workers = n}`;
-- `pool:apply(fn, ...)`, `pool:map_async`, `pool:starmap_async`,
-- `r:wait([timeout])`; `pool.workers`. `imap` and `imap_unordered` yield
-- `(result, index)`; a nil result ends a `for` loop early, as any Lua
-- iterator does. `r:get()` of `apply_async` returns all of fn's results.
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
local describe = jobrun._describe

local MAX_WORKERS = core.max_processes - 1   -- the run's other processes count too: a start past them is refused
local JOIN_GRACE = 10    -- join(): how long an idle worker may take to exit after its sentinel
local new_state = jobrun._pool_state   -- the pool's shared state (SharedPool.swift)

-- The messages. A task is {id, fn, count, mode, items}; a chunk's results
-- come back as {"r", pid, id, errs or false, vals}. The codec decodes their
-- lists (field LIST) straight into place, with no copy: a task's items into
-- the worker's one buffer (st:_take), a chunk's results into its job's
-- results at the task's first index (q:_get_into, routed by the id in field
-- ID through s.tasks: each task is its own route {results, first, count}).
local LIST, ID = 5, 3

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
local function send_results(st, slot, me, id, vals, errs, count)
  local ok = pcall(st._send, st, slot, {"r", me, id, errs or false}, vals, 1, count)
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
  st:_send(slot, {"r", me, id, errs or false}, vals, 1, count)
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
  local done = 0
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
    local task = st:_take(slot, LIST, buffer)    -- the slot now names the task
    if task == nil then return end               -- the sentinel put by join()
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
    send_results(st, slot, me, id, vals, errs, count)
    done = done + 1
  end
end

-- The caller side: jobs, tasks, workers ----------------------------------------------
--
-- A job is one map/imap/apply call: `n` items, `have[i]` once item i is
-- settled, `results[i]` or `errors[i]` (a description raised by `throw`),
-- `order` (indices in arrival order, for imap_unordered), `remaining` tasks,
-- `failed` (lowest index of an error so far). A task is one chunk of a job:
-- {id, job, first, count}, `id` its place in the task queue; the job knows
-- its method (`fname`) and whether it is an apply.

--- Raises the error stored for an item, with `at` as the place when the
--- error is the pool's own (WorkerDied, termination).
local function throw(spec, at)
  -- The script is told how those workers ended: no longer unseen failures.
  if spec.seen then for _, pid in ipairs(spec.seen) do core.seen(pid) end end
  if spec.value ~= nil then error(spec.value, 0) end
  local text = spec.message
  if spec.trace and spec.trace ~= "" then text = text .. "\n" .. spec.trace end
  if spec.kind then error(new_error(spec.kind, text, spec.where or at), 0) end
  error(text, 0)
end

local function settle(job, task, vals, errs)
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
  if job.have then                               -- imap and imap_unordered
    local have, order = job.have, job.order
    for i = first, first + count - 1 do
      have[i] = true
      order[#order + 1] = i
    end
  end
end

local function fail_task(s, task, spec)
  s.tasks[task.id] = nil
  s.pending = s.pending - 1
  local errs = {}
  for k = 1, task.count do errs[k] = spec end
  settle(task.job, task, nil, errs)
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
  for _, w in ipairs(s.workers) do w.proc:terminate() end
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

local function handle(s, msg)
  local tag = msg[1]
  if tag == "r" then
    local task = s.tasks[msg[3]]
    if task then
      s.tasks[task.id] = nil
      s.pending = s.pending - 1
      settle(task.job, task, msg[LIST], msg[4] or nil)
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
    local ok, msg = pcall(q._get_into, q, false, nil, LIST, s.tasks, ID)
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
  if count == 1 then return ("%s item %d of %d"):format(job.fname, first, job.n) end
  return ("%s items %d..%d of %d"):format(job.fname, first, first + count - 1, job.n)
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
  if task then fail_task(s, task, died_spec(w, code, task)) end
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

--- Collects results. With `block`, first sleeps until a result arrives, a
--- child process ends or `deadline` (nil: none) passes; the workers are
--- looked at only when a child has ended since the last look.
local function pump(s, block, deadline)
  if s.state == "TERMINATE" then return end
  local ended
  if block then
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

function jobrun.Pool(opts)
  if opts == nil then opts = {} end
  if type(opts) == "number" then opts = {workers = opts} end
  if type(opts) ~= "table" then
    raise("TypeError", "Pool: expected a table of options, e.g. Pool{workers = 4}, got " .. type(opts), 2)
  end
  for k in pairs(opts) do
    if not options[k] then
      raise("TypeError", ("Pool: unknown option %s (use workers, init, init_args, max_tasks)"):format(tostring(k)), 2)
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
  local task_q, res_q = jobrun.Queue{name = "Pool tasks"}, jobrun.Queue{name = "Pool results"}
  local st = new_state(task_q, res_q, size)
  local free_slots = {}
  for k = size, 1, -1 do free_slots[#free_slots + 1] = k end
  local s = {
    size = size, init = opts.init, init_args = opts.init_args or {}, max_tasks = max_tasks,
    owner = getpid(), state = "RUN", task_q = task_q, res_q = res_q, st = st, free_slots = free_slots,
    workers = {}, by_pid = {}, active = 0, tasks = {}, pending = 0, next_id = 0,
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
    -- [1], [2], [3]: the task as the route of its results (LIST, ID above).
    s.tasks[id] = {job.results, first, count, id = id, job = job, first = first, count = count}
    s.pending = s.pending + 1
    first = first + count
  end
end

--- `streamed`: the caller takes results one by one (imap, imap_unordered),
--- so each item's arrival is tracked in `have` and `order`.
local function new_job(fname, n, ntasks, streamed)
  local job = {fname = fname, apply = fname == "apply" or fname == "apply_async",
               n = n, results = newtable(n, 0), errors = {}, remaining = ntasks, failed = nil}
  if streamed then job.have, job.order = {}, {} end
  return job
end

local function default_chunksize(s, n)
  if n == 0 then return 1 end
  local c, extra = n // (s.size * 4), n % (s.size * 4)
  if extra > 0 then c = c + 1 end
  return c
end

local function start_map(pool, fname, fn, list, chunksize, mode, default_chunk)
  local s = running(pool, fname, 3)
  check_fn(fn, "Pool." .. fname, 4)
  local n = check_list(list, "Pool." .. fname, 4)
  if chunksize ~= nil then chunksize = check_positive_int(chunksize, "chunksize", "Pool." .. fname, 4)
  elseif default_chunk == "python" then chunksize = default_chunksize(s, n)
  else chunksize = 1 end
  if mode == "star" then
    for i = 1, n do
      if type(list[i]) ~= "table" then
        raise("TypeError", ("Pool.%s: list[%d] must be a table of arguments, got %s"):format(fname, i, type(list[i])), 3)
      end
    end
  end
  local job = new_job(fname, n, (n + chunksize - 1) // chunksize, default_chunk == nil)
  submit(s, fname, job, fn, list, n, chunksize, mode, here(2))
  return s, job
end

local function map_done(job) return job.remaining <= 0 or job.failed ~= nil end

local function map_result(job, at)
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

--- Iterator over results in order; each step yields (result, index). A nil
--- result ends a `for` loop early: return a non-nil stand-in value from fn.
function Pool.imap(pool, fn, list, chunksize)
  local s, job = start_map(pool, "imap", fn, list, chunksize, "map")
  local i, keep = 0, pool         -- the iterator keeps the pool alive (see __gc)
  return function()
    if i >= job.n then keep = nil; return nil end
    i = i + 1
    local k = i
    wait_until(s, function() return job.have[k] end)
    if job.errors[k] then throw(job.errors[k], here(1)) end
    local v = job.results[k]
    job.results[k] = nil                         -- a long stream does not pile up
    return v, k
  end
end

--- Iterator over results as they arrive; each step yields (result, index).
function Pool.imap_unordered(pool, fn, list, chunksize)
  local s, job = start_map(pool, "imap_unordered", fn, list, chunksize, "map")
  local pos, keep = 0, pool
  return function()
    if pos >= job.n then keep = nil; return nil end
    pos = pos + 1
    wait_until(s, function() return job.order[pos] ~= nil end)
    local k = job.order[pos]
    if job.errors[k] then throw(job.errors[k], here(1)) end
    local v = job.results[k]
    job.results[k] = nil
    return v, k
  end
end

local function new_async(pool, s, job, kind)
  return setmetatable({_pool = pool, _s = s, _job = job, _kind = kind}, AsyncMeta)
end

function Pool.apply_async(pool, fn, ...)
  local s = running(pool, "apply_async")
  check_fn(fn, "Pool.apply_async")
  local job = new_job("apply_async", 1, 1)
  submit(s, "apply_async", job, fn, {pack(...)}, 1, 1, "apply", here(1))
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

function Pool.map_async(pool, fn, list, chunksize)
  local s, job = start_map(pool, "map_async", fn, list, chunksize, "map", "python")
  return new_async(pool, s, job, "map")
end

function Pool.starmap_async(pool, fn, list, chunksize)
  local s, job = start_map(pool, "starmap_async", fn, list, chunksize, "star", "python")
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
  fail_all(s, {kind = "ValueError", trace = "", message = "Pool was terminated before the task finished"})
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
  return job.failed == nil
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
  if job.failed then throw(job.errors[job.failed], here(1)) end
  if r._kind == "apply" then
    local v = job.results[1]
    return unpack(v, 1, v.n)
  end
  return job.results
end

AsyncMeta.__tostring = function(r)
  local job = r._job
  return ("<AsyncResult %s>"):format(map_done(job) and (job.failed and "failed" or "ready") or "pending")
end
