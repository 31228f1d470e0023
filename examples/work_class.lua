-- expect: unordered
--
-- Mirrors seed 003 (进程间的通信 - 队列演示案例), the second program: a Work
-- "class" holds a queue; `send` sends one message, `send_all` sends 20, and
-- `receive` prints every message forever. The parent joins send_all (the
-- longest sender) and terminates receive.
--
--   jobrun examples/work_class.lua
--
-- Differences from the seed, each for a reason:
--  * No JSON: the seed json.dumps() non-string messages because it thinks of
--    the queue as carrying strings; jobrun sends Lua tables as they are, so
--    `send` puts the table and `receive` gets a table back. Only to print it
--    the way the seed does, `repr` below formats it like a Python dict.
--  * The seed sleeps 1 s after each of the 20 messages; this sleeps 0.01 s so
--    the example runs in well under 2 s.
--  * The seed can lose the last message when terminate() lands before receive
--    prints it (the 1 s sleep after it usually hides that). Here the queue is
--    a JoinableQueue: receive marks each message done after printing it, and
--    the parent waits for every message with queue:join() before terminating
--    receive, so no line is ever lost.
-- Where send's single message lands among send_all's 20 depends on
-- scheduling, so the check compares the lines sorted.

--- Python-like repr, so a received table prints as the seed's dict does.
local function repr(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = repr(k) .. ": " .. repr(v[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local Work = {}        -- 定义一个 Work 类
Work.__index = Work

--- 构造函数传入一个 '队列对象' --> queue
function Work.new(queue)
  return setmetatable({queue = queue}, Work)
end

--- 定义一个 send(发送) 函数,传入 message
function Work:send(message)
  -- The seed json-serialises non-strings here; jobrun sends tables as they are.
  self.queue:put(message) -- 利用 queue 将 message 发送出去
end

--- 定义一个 send_all(发送)函数,然后通过 for 循环模拟批量发送的 message
function Work:send_all()
  for i = 0, 19 do
    self.queue:put(("第 %d 次循环,发送的消息为:%d"):format(i, i))
    jobrun.sleep(0.01)
  end
end

--- 定义一个 receive(接收) 函数,因为接收是一个源源不断的过程,所以需要使用 while 循环
function Work:receive()
  while true do
    local res = self.queue:get() -- 获取 '队列对象' --> queue 传入的 message
    print(("接收到的信息为:%s"):format(type(res) == "string" and res or repr(res)))
    self.queue:task_done()
  end
end

local queue = jobrun.JoinableQueue()
local work = Work.new(queue)
-- Python passes the bound method work.send; a closure over `work` is the Lua
-- spelling (metatables are not sent, but a forked child already has them).
local send = jobrun.Process{target = function(message) work:send(message) end,
                            args = {{message = "这是一条测试的消息"}}}
local receive = jobrun.Process{target = function() work:receive() end}
local send_all = jobrun.Process{target = function() work:send_all() end}

send_all:start() -- send_all 要循环 20 次,它的执行时间是最长的,信息也是发送的最多的
send:start()
receive:start()
-- send:join()   -- 只阻塞 send 会造成 send_all 循环还未结束,receive:terminate() 就把接收端终结了
send_all:join()  -- 所以我们只需要阻塞最长使用率的进程就可以了
send:join()      -- not in the seed: make sure send's message is in the queue too,
queue:join()     -- and wait until receive has printed every message (see above)
receive:terminate()
