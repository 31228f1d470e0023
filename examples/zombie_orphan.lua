--
-- Mirrors seed 004's lesson on zombies (僵尸进程) and orphans (孤儿进程):
-- a child that ended but was not waited for stays a zombie; a child whose
-- parent died is handed to the system. In jobrun a child's exit status is
-- collected as soon as the parent next waits or sleeps, so no zombie lingers
-- even before join(); a worker never outlives the process that started it;
-- and the main process adopts and reaps any orphan.
--
--   jobrun examples/zombie_orphan.lua

local function state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return "gone" end
  local s = f:read("a"); f:close()
  local st = s:match("%) (%a)")
  return st == "Z" and "zombie" or "running"
end

-- Zombies: children end; their parent has not called join yet.
local kids = {}
for i = 1, 3 do
  kids[i] = jobrun.Process{target = function() end}
  kids[i]:start()
end
-- Each sleep collects the children that have ended by its end: sleep until
-- the first one has ended and been collected (bounded, for a loaded machine).
local deadline = jobrun.time() + 10
repeat jobrun.sleep(0.05) until state(kids[1].pid) == "gone" or jobrun.time() > deadline
print("ended, not yet joined:", state(kids[1].pid))   -- already reaped: gone, not a zombie
for _, k in ipairs(kids) do k:join() end
print("after join:", state(kids[1].pid), "exit code", kids[1].exitcode)

-- Orphans: a middle process starts a grandchild, then dies by SIGKILL.
local report = jobrun.Queue()
local middle = jobrun.Process{target = function()
  local grandchild = jobrun.Process{target = function() jobrun.sleep(60) end}
  grandchild:start()
  report:put(grandchild.pid)
  jobrun.sleep(60)
end}
middle:start()
local orphan = report:get()
middle:kill()
middle:join()
-- The grandchild dies with its parent; the main process, its new parent,
-- collects it at its next sleep (bounded, for a loaded machine).
deadline = jobrun.time() + 10
repeat jobrun.sleep(0.05) until state(orphan) == "gone" or jobrun.time() > deadline
print("middle process:", middle.exitcode == -9 and "killed (SIGKILL)" or middle.exitcode)
print("its child, after it died:", state(orphan))      -- gone: no orphan left running
