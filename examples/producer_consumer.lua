-- expect: unordered
-- mask: ^(xx|yy)
--
-- Mirrors seed 001, section 三 (生产者消费者模型): three producers and two
-- consumers share one Queue; each consumer stops when it gets a nil sentinel.
--
--   jobrun examples/producer_consumer.lua
--
-- The seed sleeps random.randint(1, 3) seconds; here the same shape sleeps
-- hundredths of a second so the example runs in well under 2 s.
-- Which consumer eats which dish depends on scheduling, so the check compares
-- the lines sorted, with the consumer's name masked.

--- 生产者进程
local function producer(name, food, q)
  for i = 0, 1 do
    jobrun.sleep(math.random(1, 3) * 0.01)
    local res = ("%s%d"):format(food, i)
    q:put(res)
    print(("\27[44m%s 生产了 %s\27[0m"):format(name, res))
  end
end

--- 消费者进程
local function consumer(name, q)
  while true do
    local res = q:get()
    if res == nil then
      break -- 收到为空的信号就结束
    end
    jobrun.sleep(math.random(1, 3) * 0.01)
    print(("%s吃了%s"):format(name, res))
  end
end

local q = jobrun.Queue()
-- 生产者
local p1 = jobrun.Process{target = producer, args = {"yjy", "酱大骨", q}}
local p2 = jobrun.Process{target = producer, args = {"wwb", "酸菜鱼", q}}
local p3 = jobrun.Process{target = producer, args = {"hhh", "卤猪蹄", q}}
-- 消费者
local c1 = jobrun.Process{target = consumer, args = {"xx", q}}
local c2 = jobrun.Process{target = consumer, args = {"yy", q}}
-- 开始生产,开始吃
p1:start()
p2:start()
p3:start()
c1:start()
c2:start()
-- 必须保证生产者生产完才能发送结束的信号,运用到 join
p1:join() -- 感知子进程的结束
p2:join()
p3:join()
-- 有几个消费者就发送几次信号 nil
q:put(nil)
q:put(nil) -- 发送结束信号
print("主进程结束了")
-- The consumers are not daemons: jobrun joins them before the run ends.
