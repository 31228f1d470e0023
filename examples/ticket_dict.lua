-- expect: unordered
--
-- Mirrors seeds 000 (Manager不写文件实现抢票) and 004 (Manager类): a shared
-- dictionary instead of a file. jobrun.Dict lives in shared memory, with no
-- manager process; as in the seeds, a read-then-write must hold a Lock
-- (or use d:update, which is atomic).
--
--   jobrun examples/ticket_dict.lua

-- Seed 000: five buyers, one ticket.
local function show(ticket)
  print("当前剩余票数", ticket.count)
end

local function buy(ticket)
  local count = ticket.count
  if count > 0 then
    count = count - 1
    ticket.count = count
    print("抢票成功")
  else
    print("没有票")
  end
end

local function task(lock, ticket)
  lock:acquire()   -- 安全问题需要自己另外加锁
  buy(ticket)
  lock:release()
end

local sync_ticket = jobrun.Dict{count = 1}
local lock = jobrun.Lock()
local ps = {}
for i = 1, 5 do
  ps[i] = jobrun.Process{target = task, args = {lock, sync_ticket}}
  ps[i]:start()
end
for _, p in ipairs(ps) do p:join() end
show(sync_ticket)

-- Seed 004: ten processes each take one from data.num under the lock.
local data = jobrun.Dict{num = 10}
local l = jobrun.Lock()
ps = {}
for i = 1, 10 do
  ps[i] = jobrun.Process{target = function()
    l:with(function()
      local num = data.num
      jobrun.sleep(0.01)
      data.num = num - 1
    end)
  end}
  ps[i]:start()
end
for _, p in ipairs(ps) do p:join() end
print("num", data.num)

-- The same without a lock, with the atomic read-modify-write instead.
local counts = jobrun.Dict()
ps = {}
for i = 1, 10 do
  ps[i] = jobrun.Process{target = function()
    for _ = 1, 100 do counts:update("hits", function(n) return (n or 0) + 1 end) end
  end}
  ps[i]:start()
end
for _, p in ipairs(ps) do p:join() end
print("hits", counts.hits)
