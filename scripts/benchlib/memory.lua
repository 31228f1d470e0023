-- One idle worker blocked in get, held until stdin gets a line, so that
-- bench.py can read its /proc/<pid>/smaps_rollup in the meantime.
--   jobrun memory.lua MODE        (MODE "fork": target worker; "script": script_stage.lua)
-- Prints {"worker":PID,"main":PID} once the worker is blocked, then waits on
-- stdin, then stops the worker and prints {"ok":true}.
local mode = arg[1] or "fork"

local q, ready = jobrun.Queue(), jobrun.Event()
local w
if mode == "fork" then
  w = jobrun.Process{target = function(queue, ev) ev:set(); queue:get() end, args = {q, ready}}
elseif mode == "script" then
  w = jobrun.Process{script = "script_stage.lua", args = {q, ready}}
else
  error("unknown mode " .. tostring(mode))
end
w:start()
assert(ready:wait(30), "the worker did not start")
jobrun.sleep(0.3)  -- let it reach get and settle
print(string.format('{"worker":%d,"main":%d}', w.pid, jobrun.current_process().pid))
io.stdout:flush()
io.read("l")
q:put(nil)
w:join()
assert(w.exitcode == 0, "the worker failed")
print('{"ok":true}')
