-- CPython's _TestAtExit (gh-83856: a child's own atexit handlers run when it
-- exits), ported to jobrun. Lua has no atexit: what a worker runs on its
-- way out is a `<close>` variable of its target, which closes as the target
-- returns. A `__gc` finalizer runs at exit only where the Lua state is
-- closed: in the main process and in a script worker, not in a forked
-- worker, which runs in a copy of its parent's state (README, "Processes").
require "harness"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local _write_file_at_exit = worker("_write_file_at_exit", function(output_path, gc_path)
  local exit_handler <close> = setmetatable({}, {__close = function() write(output_path, "deadbeef") end})
  -- An object of the worker's own, alive until the end, with a finalizer.
  keep = setmetatable({}, {__gc = function() write(gc_path, "collected") end})
end)

case("test_atexit", function()
  local output_path, gc_path = os.tmpname(), os.tmpname()
  os.remove(output_path)
  os.remove(gc_path)
  local p = Process{target = _write_file_at_exit, args = {output_path, gc_path}}
  p:start()
  join_process(p)
  local text, gc_text = read(output_path), read(gc_path)
  os.remove(output_path)
  os.remove(gc_path)
  assertEqual(p.exitcode, 0)
  assertEqual(text, "deadbeef")
  if SPAWN then
    assertEqual(gc_text, "collected")   -- a script worker closes its state
  else
    assertEqual(gc_text, nil)           -- a forked worker does not
  end
end)

run()
