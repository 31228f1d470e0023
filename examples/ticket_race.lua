-- expect: unordered
-- mask: pid \d+
--
-- Mirrors seed 001, section 一 (抢票小程序): buyers read the ticket count
-- from a JSON-like file, then write it back decremented. Without a lock,
-- every buyer that read before the others wrote "buys" the last ticket;
-- with a Lock around the buy, exactly one does.
--
--   jobrun examples/ticket_race.lua
--
-- The seed sleeps random seconds to imitate network I/O; here a Barrier
-- makes the race happen on every run (all buyers check before anyone
-- writes), so the output is the same each time.

local db = os.tmpname()

local function write_count(n)
  local f = assert(io.open(db, "w")); f:write(('{"count": %d}'):format(n)); f:close()
end

local function read_count()
  local f = assert(io.open(db)); local text = f:read("a"); f:close()
  return tonumber(text:match('"count":%s*(%d+)'))
end

--- 查看车票
local function search()
  print(("余票%d张"):format(read_count()))
end

--- 买票
local function get(checked)
  local count = read_count()
  if count > 0 then
    if checked then checked:wait(5) end   -- everyone has looked before anyone writes
    write_count(count - 1)
    print(("进程 pid %d 抢票成功"):format(jobrun.current_process().pid))
    return true
  else
    print("票售空了")
    return false
  end
end

local function run(buyers, lock)
  write_count(1)
  local checked = not lock and jobrun.Barrier(buyers) or nil
  local sold = jobrun.Value(0)
  local ps = {}
  for i = 1, buyers do
    ps[i] = jobrun.Process{target = function()
      if lock then
        lock:with(function() if get() then sold:add(1) end end)   -- 加锁让程序变为了串行
      else
        if get(checked) then sold:add(1) end
      end
    end}
    ps[i]:start()
  end
  for _, p in ipairs(ps) do p:join() end
  return sold:get(), read_count()
end

print("-- without a lock")
local sold, left = run(4)
print(("sold %d of 1 ticket(s), the file says %d left"):format(sold, left))

print("-- with a Lock")
sold, left = run(4, jobrun.Lock())
print(("sold %d of 1 ticket(s), the file says %d left"):format(sold, left))
search()
os.remove(db)
