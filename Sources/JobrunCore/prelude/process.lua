-- Processes: jobrun.Process, current_process, active_children, the end of a
-- process (jobrun._shutdown, os.exit). After Python's multiprocessing/process.py
-- and popen_fork.py; the forking and waiting are Swift's (CoreBindings.swift).
-- Runs after module.lua with (jobrun, core, ErrorMeta).
local jobrun, core, ErrorMeta = ...

local raise, timeout_arg = core.raise, core.timeout_arg
local getpid, unpack, type, setmetatable, rawget = core.getpid, table.unpack, type, setmetatable, rawget

local Process = {}
-- In the registry, marked for the codec: a started Process is sent as who
-- it is (pid, name, parent) and arrives as a Process with this metatable.
local ProcessMeta = core.metatable("jobrun.Process")
ProcessMeta.__jobrun_process = true
local children = {}          -- processes started by this process, in start order
local counter = 0
local current                -- this process's own Process object

local function state(p) return rawget(p, "_s") end
local VERDICT_GRACE = 5   -- seconds an aborting process lets a child judged with it report its own verdict

--- A started process's exit code: its parent reaps it; any other process
--- (a sibling that holds the object) reads what the parent recorded. This
--- does not tell the script: it is told (and a failure of the process no
--- longer counts as unseen, see Host.endOfRun) only through p.exitcode and
--- p:join().
local hint
local function exitcode(s)
  if s.exitcode == nil and s.started and not s.current then
    if s.parent == getpid() then
      s.exitcode = core.poll(s.pid)
      if s.exitcode ~= nil and s.exitcode ~= 0 then hint(s) end
    else s.exitcode = core.recorded_exit(s.pid) end
  end
  return s.exitcode
end

ProcessMeta.__index = function(p, key)
  local s = state(p)
  if key == "pid" then return s.pid
  elseif key == "name" then return s.name
  elseif key == "daemon" then return s.daemon
  elseif key == "exitcode" then
    local code = exitcode(s)
    if code ~= nil then core.seen(s.pid) end
    return code
  end
  return Process[key]
end

ProcessMeta.__newindex = function(p, key, value)
  local s = state(p)
  if key == "daemon" then
    if s.started then raise("ProcessError", "Process " .. s.name .. ": cannot set daemon after start", 2) end
    if type(value) ~= "boolean" then raise("TypeError", "Process.daemon must be a boolean, got " .. type(value), 2) end
    s.daemon = value
  elseif key == "name" then
    if type(value) ~= "string" then raise("TypeError", "Process.name must be a string, got " .. type(value), 2) end
    s.name = value
  else
    rawset(p, key, value)
  end
end

ProcessMeta.__tostring = function(p)
  local s = state(p)
  local status
  if not s.started then status = "initial"
  elseif exitcode(s) == nil then status = "started"
  else status = "stopped exitcode=" .. tostring(s.exitcode) end
  return ("<Process name='%s' pid=%s %s%s>"):format(s.name, tostring(s.pid), status, s.daemon and " daemon" or "")
end

--- The Process object of the calling process itself (the main process, or
--- a `script` worker): alive, never joined by itself.
local function self_process(name, daemon)
  return setmetatable({_s = {name = name, pid = getpid(), daemon = daemon, started = true, current = true}}, ProcessMeta)
end
current = self_process("MainProcess", false)

--- A `script` worker's identity (Host.runWorker).
function jobrun._set_current(name, daemon)
  current = self_process(name, daemon)
  jobrun.is_main = false
end

function jobrun.Process(opts)
  if type(opts) ~= "table" then
    raise("TypeError", "Process: expected a table of options, e.g. Process{target = fn, args = {...}}, got " .. type(opts), 2)
  end
  local target, script, args = opts.target, opts.script, opts.args
  if target == nil and script == nil then
    raise("TypeError", "Process: needs target (a function) or script (a path)", 2)
  end
  if target ~= nil and script ~= nil then
    raise("TypeError", "Process: give target or script, not both", 2)
  end
  if target ~= nil and type(target) ~= "function" and not (getmetatable(target) or {}).__call then
    raise("TypeError", "Process: target must be a function, got " .. type(target), 2)
  end
  if script ~= nil and type(script) ~= "string" then
    raise("TypeError", "Process: script must be a string, got " .. type(script), 2)
  end
  if args ~= nil and type(args) ~= "table" then
    raise("TypeError", "Process: args must be a table, got " .. type(args), 2)
  end
  local n = args and rawget(args, "n")
  if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
    raise("TypeError", "Process: args.n must be an integer >= 0, got " .. (math.type(n) or type(n)), 2)
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then
    raise("TypeError", "Process: name must be a string, got " .. type(opts.name), 2)
  end
  if opts.daemon ~= nil and type(opts.daemon) ~= "boolean" then
    raise("TypeError", "Process: daemon must be a boolean, got " .. type(opts.daemon), 2)
  end
  counter = counter + 1
  local name = opts.name
  if name == nil then
    name = "Process-" .. counter
    if not jobrun.is_main then name = current.name .. ":" .. counter end
  end
  local s = {target = target, script = script, args = args or {}, name = name,
             daemon = opts.daemon or false, started = false}
  return setmetatable({_s = s}, ProcessMeta)
end

local function run_target(s)
  local args = s.args
  return s.target(unpack(args, 1, args.n or #args))
end

local randomseed = math.randomseed

--- A worker's uncaught error: through its io.stderr while that is an open
--- file (a worker may point it at a file), else on descriptor 2. A script
--- worker's goes the same way: Host.reportThroughStderr calls it as
--- jobrun._report_error.
local stdio = io
local function report_error(text)
  pcall(function() stdio.stdout:flush() end)
  local f = stdio.stderr
  if stdio.type(f) == "file" and pcall(function() assert(f:write(text)); assert(f:flush()) end) then return end
  core.write_stderr(text)
end
jobrun._report_error = report_error

--- A child that failed on a global it lacked (core.worker_traceback) which
--- this process has now: it was defined after the child started, and a
--- forked worker has the globals of that moment only. Said once, by the
--- parent, when it learns how the child ended.
local G = _G
hint = function(s)
  local name = core.take_missing_global(s.pid)
  if name and rawget(G, name) ~= nil then
    report_error(("Process %s (pid %d): hint: %s was defined after the worker started "
                  .. "(a forked worker has the globals of the moment it started: define %s before start())\n")
                 :format(s.name, s.pid, name, name))
  end
end

--- A forked worker's message handler: its traceback ends at its target
--- (worker_bottom, set below: the frame of child_main), and a failure on a
--- global its copy of the parent's state lacks is noted for the parent's
--- hint (core.note_missing_global).
local worker_bottom
local function worker_traceback(e)
  if type(e) == "string" then
    local name = e:match("a nil value %(global '([%a_][%w_]*)'%)")
    if name and rawget(G, name) == nil then core.note_missing_global(name) end
  end
  return core.user_frames(debug.traceback(jobrun._describe(e), 2), worker_bottom)
end

--- A forked child's life, run by core.fork under lua_pcall: it returns the
--- exit code and never returns into the code that called start().
local function child_main(p)
  local s = state(p)
  children = {}
  counter = 0
  s.pid, s.current = getpid(), true
  current = p
  jobrun.is_main = false
  -- As CPython re-seeds `random` after fork: workers must not share one
  -- sequence (math.randomseed() alone seeds from the time in seconds and
  -- the state's address, the same in every fork of one second).
  randomseed(core.random_seed())
  local ok, err = xpcall(run_target, worker_traceback, s)
  local code = 0
  if not ok then
    report_error(("Process %s (pid %d): %s\n"):format(s.name, s.pid, err))
    code = 1
  end
  jobrun._shutdown(not ok)
  return code
end

do
  local info = debug.getinfo(child_main, "S")
  worker_bottom = ("in function <%s:%d>"):format(info.short_src, info.linedefined)
end

function Process:start()
  local s = state(self)
  if s.started then
    raise("ProcessError", "Process " .. s.name .. " (pid " .. tostring(s.pid) .. ") was already started; a process can be started only once", 2)
  end
  local pid
  s.parent = getpid()
  if s.script then
    local args = s.args
    local path, cpath = package.path, package.cpath
    pid = core.spawn(s.script, s.name, s.daemon, type(path) == "string" and path or "",
                     type(cpath) == "string" and cpath or "", unpack(args, 1, args.n or #args))
  else
    pid = core.fork(s.name, s.daemon, child_main, self)   -- only the parent returns
  end
  s.started = true
  s.pid = pid
  -- The child has its own copy; the parent lets go of them, as CPython's
  -- start() does (bpo-30775), so a started Process does not keep them alive.
  s.target, s.args = nil, nil
  children[#children + 1] = self
end

local function forget(p)
  for i = #children, 1, -1 do
    if children[i] == p then table.remove(children, i) end
  end
end

function Process:join(timeout)
  local s = state(self)
  if not s.started then raise("ProcessError", "Process " .. s.name .. ": can only join a started process", 2) end
  if s.current or s.parent ~= getpid() then
    raise("ProcessError", ("Process %s (pid %s): can only join a child process (its parent is pid %s)")
          :format(s.name, tostring(s.pid), tostring(s.parent or "outside the run")), 2)
  end
  timeout = timeout_arg(timeout, "join", 2)
  if not self:_join(timeout) then return false end
  core.seen(s.pid)
  return true
end

--- join without telling the script how it ended (the end of a run, Pool).
function Process:_join(timeout)
  local s = state(self)
  if s.exitcode == nil then
    s.exitcode = core.wait(s.pid, timeout)
    if s.exitcode == nil then return false end
    if s.exitcode ~= 0 then hint(s) end
  end
  forget(self)
  return true
end

function Process:_poll() return exitcode(state(self)) end

--- Alive: started and not ended. The parent asks the kernel; another
--- process holding the object reads the run's record of it.
function Process:is_alive()
  local s = state(self)
  if s.current then return true end
  if not s.started then return false end
  if s.parent ~= getpid() then return exitcode(s) == nil and core.alive(s.pid) end
  return exitcode(s) == nil
end

function Process:terminate()
  local s = state(self)
  if s.started and not s.current and exitcode(s) == nil then core.kill(s.pid, 15) end
end

function Process:kill()
  local s = state(self)
  if s.started and not s.current and exitcode(s) == nil then core.kill(s.pid, 9) end
end

--- kill() of the process and every process descended from it (what it
--- started with os.execute or io.popen): a Pool stopping an item's work.
function Process:_kill_tree()
  local s = state(self)
  if s.started and not s.current and exitcode(s) == nil then core.kill(s.pid, 9, false, true) end
end

--- terminate() of the process and what it started: a Pool's terminate().
function Process:_terminate_tree()
  local s = state(self)
  if s.started and not s.current and exitcode(s) == nil then core.kill(s.pid, 15, false, true) end
end

function jobrun.current_process()
  return current
end

function jobrun.active_children()
  local live = {}
  for _, p in ipairs(children) do
    if p:is_alive() then live[#live + 1] = p end
  end
  return live
end

--- At the end of a process: terminate daemon children, then join the others
--- (as CPython's _exit_function does). After an uncaught error (`abort`),
--- every child is stopped instead: waiting for workers of a run that has
--- already failed is how multiprocessing programs hang.
function jobrun._shutdown(abort)
  local list = {table.unpack(children)}
  if abort then
    -- A child the monitor judged in the same deadlock as this process raises
    -- that verdict itself and ends with its own report: let it (bounded: it
    -- may have caught it and gone on) before stopping it, or the report of
    -- one side of the deadlock is lost to a race with this process's end.
    local deadline = core.time() + VERDICT_GRACE
    for _, p in ipairs(list) do
      while core.acting_on_verdict(p.pid) and core.time() < deadline do
        if p:_join(0.02) then break end
      end
    end
  end
  -- Stopped by the end of the run (--stats says so, not "signal 15").
  local function stop(p, sig)
    local s = state(p)
    if s.started and not s.current and exitcode(s) == nil then core.kill(s.pid, sig, true) end
  end
  for _, p in ipairs(list) do
    if p.daemon or abort then stop(p, 15) end
  end
  for _, p in ipairs(list) do
    if p.daemon or abort then
      if not p:_join(1) then stop(p, 9); p:_join() end
    else
      p:_join()
    end
  end
end

--- os.exit's status as lua5.4 takes it: nil, a boolean, or an integer (a
--- numeric string too); anything else raises lua5.4's error, not exit 0.
local function exit_status(code)
  if code == nil or type(code) == "boolean" then return code end
  local n = (type(code) == "number" or type(code) == "string") and tonumber(code) or nil
  if n == nil then error(("bad argument #1 to 'exit' (number expected, got %s)"):format(type(code)), 3) end
  local i = math.tointeger(n)
  if i == nil then error("bad argument #1 to 'exit' (number has no integer representation)", 3) end
  return i
end

--- As lua5.4's: with `close`, the state is closed first (Host.closeState).
os.exit = function(code, close)
  code = exit_status(code)
  jobrun._shutdown()
  core.exit(code, close)
end
