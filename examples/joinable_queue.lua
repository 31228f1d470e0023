-- expect: unordered
-- mask: ^(xx|yy)
--
-- Mirrors seed 001, section 四 (JoinableQueue实现生产者消费者模型): producers
-- call q:join() after producing; daemon consumers call q:task_done() for every
-- dish; the main process joins the producers and ends, and jobrun terminates
-- the daemon consumers, which are still blocked in q:get().
--
--   jobrun examples/joinable_queue.lua
--
-- The seed sleeps random.randint(1, 3) seconds; here the same shape sleeps
-- hundredths of a second so the example runs in well under 2 s.
-- Every "吃了" line comes before "主进程结束了" (the producers' join waits for
-- the last task_done), but producers and consumers interleave freely, so the
-- check compares the lines sorted, with the consumer's name masked.

--- 生产者进程
local function producer(name, food, q)
  for i = 0, 1 do
    jobrun.sleep(math.random(1, 3) * 0.01)
    local res = ("%s%d"):format(food, i)
    q:put(res)
    print(("\27[44m%s 生产了 %s\27[0m"):format(name, res))
  end
  q:join() -- 生产完毕,使用此方法进行阻塞,直到队列中所有项目均被处理。
end

--- 消费者进程
local function consumer(name, q)
  while true do
    local res = q:get()
    jobrun.sleep(math.random(1, 3) * 0.01)
    print(("%s吃了%s"):format(name, res))
    q:task_done() -- 向 q:join() 发送一次信号,证明一个数据已经被取走了
  end
end

local q = jobrun.JoinableQueue()
-- 生产者
local p1 = jobrun.Process{target = producer, args = {"yjy", "酱大骨", q}}
local p2 = jobrun.Process{target = producer, args = {"wwb", "酸菜鱼", q}}
local p3 = jobrun.Process{target = producer, args = {"hhh", "卤猪蹄", q}}
-- 消费者
local c1 = jobrun.Process{target = consumer, args = {"xx", q}}
local c2 = jobrun.Process{target = consumer, args = {"yy", q}}
c1.daemon = true -- 将他设置为守护进程
c2.daemon = true -- 将他设置为守护进程
-- 开始生产,开始吃
for _, p in ipairs{p1, p2, p3, c1, c2} do
  p:start()
end
-- 必须保证生产者生产完才能发送结束的信号,运用到 join
p1:join() -- 感知子进程的结束
p2:join()
p3:join()
print("主进程结束了")
--[[
主进程等 p1, p2, p3
p1, p2, p3 等 c1, c2
p1, p2, p3 结束了,证明 c1, c2 肯定全都收完了 p1, p2, p3 发到队列的数据,
因而 c1, c2 也没有存在的价值了,应该随着主进程的结束而结束,所以设置成守护进程就可以了。
]]
