-- expect: unordered
--
-- Mirrors seed 004, 2.互斥锁: three tasks print three lines each; with one
-- Lock shared by all, a task's lines are never interleaved with another's.
-- The example checks that itself and prints the verdict.
--
--   jobrun examples/lock_tasks.lua
--
-- The seed sleeps random.randint(0, 2) seconds between lines; here
-- hundredths of a second.

local out = jobrun.Queue()

local function say(line)
  print(line)
  out:put(line)
end

local function task1(lock)
  lock:acquire()   -- 要开始使用了 上锁
  say("hello iam jerry")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("gender is boy")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("age is 15")
  lock:release()   -- 用完了就解锁
end

local function task2(lock)
  lock:acquire()
  say("hello iam owen")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("gender is girl")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("age is 48")
  lock:release()
end

local function task3(lock)
  lock:acquire()
  say("hello iam jason")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("gender is women")
  jobrun.sleep(math.random(0, 2) * 0.01)
  say("age is 26")
  lock:release()
end

local lock = jobrun.Lock()
local ps = {}
for i, t in ipairs{task1, task2, task3} do
  ps[i] = jobrun.Process{target = t, args = {lock}}
  ps[i]:start()
end
for _, p in ipairs(ps) do p:join() end

-- Every "hello" must be followed by that task's two other lines.
local lines = {}
for i = 1, 9 do lines[i] = out:get() end
local whole = true
for i = 1, 9, 3 do
  local who = lines[i]:match("hello iam (%a+)")
  local age = ({jerry = "15", owen = "48", jason = "26"})[who]
  if not (age and lines[i + 2] == "age is " .. age) then whole = false end
end
print(whole and "no task's lines were interleaved" or "lines were interleaved!")
