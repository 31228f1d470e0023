-- Methods written in Lua for the objects bound in Swift (QueueBindings,
-- SyncBindings, DictBindings): q:items(), lock:with(fn), Condition's
-- acquire/release/wait_for, d:update(k, fn) and pairs(d).
-- Runs after module.lua with (jobrun, core, ErrorMeta).
local jobrun, core, ErrorMeta = ...

local raise, timeout_arg = core.raise, core.timeout_arg
local type = type

-- Queues ---------------------------------------------------------------------

local function items(q)
  local joinable = q.task_done ~= nil
  local pending = false
  return function()
    if pending then pending = false; q:task_done() end
    local ok, item = q:_next()
    if not ok then return nil end
    if item == nil then
      -- nil is the classic end-of-stream sentinel: it ends the loop too.
      if joinable then q:task_done() end
      return nil
    end
    pending = joinable
    return item
  end
end

for _, name in ipairs{"jobrun.Queue", "jobrun.JoinableQueue"} do
  local methods = core.metatable(name).__index
  methods.items = items
end

-- Locks and conditions ----------------------------------------------------------

--- obj:with(fn, ...): fn's results, with obj held; released even when fn raises.
local function with(self, fn, ...)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    raise("TypeError", "with: fn must be a function, got " .. type(fn), 2)
  end
  self:acquire()
  local r = table.pack(pcall(fn, ...))
  self:release()
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

for _, name in ipairs{"Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition"} do
  core.metatable("jobrun." .. name).__index.with = with
end

local Condition = core.metatable("jobrun.Condition").__index
function Condition.acquire(c, ...) return c:_lock():acquire(...) end
function Condition.release(c) return c:_lock():release() end

--- c:wait_for(pred [, timeout]): waits until pred() is true; returns its last value.
function Condition.wait_for(c, pred, timeout)
  if type(pred) ~= "function" then raise("TypeError", "wait_for: pred must be a function, got " .. type(pred), 2) end
  timeout = timeout_arg(timeout, "wait_for", 2)
  local result = pred()
  local deadline = timeout and (core.time() + timeout)
  while not result do
    local left
    if deadline then
      left = deadline - core.time()
      if left <= 0 then break end
    end
    c:wait(left)
    result = pred()
  end
  return result
end

-- Shared state -------------------------------------------------------------------

local DictMeta = core.metatable("jobrun.Dict")
local DictMethods = DictMeta.__methods

--- d:update(k, fn) -> new: fn(old) runs while no other update of d can.
function DictMethods.update(d, k, fn)
  if type(fn) ~= "function" then raise("TypeError", "update: fn must be a function, got " .. type(fn), 2) end
  return d:_update_lock():with(function()
    local new = fn(d:get(k))
    d[k] = new
    return new
  end)
end

--- pairs(d) walks a snapshot.
DictMeta.__pairs = function(d)
  return next, d:items(), nil
end

jobrun._with = with
