-- expect: unordered
--
-- Mirrors seed 004, part 4 (生产者消费者模型 案例): make_rose cooks ten dishes
-- of 青椒肉丝 and puts each on a shared queue; eat takes ten dishes off it.
--
--   jobrun examples/make_eat.lua
--
-- The seed sleeps random.randint(0, 2) seconds; here the same shape sleeps
-- hundredths of a second so the example runs in well under 2 s.
-- As in the seed the main process does not join: jobrun joins its non-daemon
-- children when the main chunk ends. Cooking and eating interleave, so the
-- check compares the lines sorted.

-- 消费任务
local function eat(q)
  for i = 0, 9 do
    -- 要消费
    local rose = q:get()
    jobrun.sleep(math.random(0, 2) * 0.01)
    print(rose .. " 吃完了!") -- Python's print(rose, "吃完了!") joins with a space
  end
end

-- 生产任务
local function make_rose(q)
  for i = 0, 9 do
    -- 再生产
    jobrun.sleep(math.random(0, 2) * 0.01)
    print(("第%d盘青椒肉丝制作完成!"):format(i))
    local rose = ("第%d盘青椒肉丝"):format(i)
    -- 将生成完成的数据放入队列中
    q:put(rose)
  end
end

-- 创建一个共享队列
local q = jobrun.Queue()
local make_p = jobrun.Process{target = make_rose, args = {q}}
local eat_p = jobrun.Process{target = eat, args = {q}}
make_p:start()
eat_p:start()
