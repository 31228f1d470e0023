--
-- Mirrors seed 004, 1.守护进程: a daemon process ends with the process that
-- started it. The emperor (the main process) starts a consort as a daemon
-- and ends after a short reign; she never gets to print her last line.
--
--   jobrun examples/daemon.lua
--
-- The seed sleeps 50 s and 3 s; here 5 s and 0.3 s.

-- 妃子的一生
local function task()
  print("入宫了.....")
  jobrun.sleep(5)
  print("妃子病逝了......")
end

-- 康熙登基了
print("登基了.....")
-- 找了一个妃子
local p = jobrun.Process{target = task}
p.daemon = true   -- 设置为守护进程 必须在开启前就设置好
p:start()
-- 康熙驾崩了
jobrun.sleep(0.3)
print("故事结束了!")
-- When the main chunk ends, jobrun terminates daemon children (SIGTERM).
