-- expect: unordered
-- mask: (?<=: )\d+
--
-- Mirrors seed 002 (进程间通信): the parent creates a queue and two children;
-- one writes 'A', 'B', 'C' to it, the other reads forever. The parent joins
-- the writer and terminates the reader (it loops forever, so it cannot be
-- joined), then shows that the reader was killed by SIGTERM (exitcode -15).
--
--   jobrun examples/writer_reader.lua
--
-- Differences from the seed, each for a reason:
--  * The seed prints os.getgid() (a slip for the pid); this prints the pid.
--  * The seed sleeps random.random() s after each put; this sleeps a tenth of
--    that so the example runs in well under 2 s.
--  * The seed can lose "Get C from queue." when terminate() lands before the
--    reader prints it. Here the queue is a JoinableQueue: the reader marks
--    each value done after printing it, and the parent waits for that with
--    q:join() before terminating the reader, so no line is ever lost.
-- Writer and reader interleave freely, so the check compares the lines
-- sorted, with the pids masked.

-- 写数据进程执行的代码:
local function write(q)
  print(("Process to write: %d"):format(jobrun.current_process().pid))
  for _, value in ipairs{"A", "B", "C"} do
    print(("Put %s to queue..."):format(value))
    q:put(value)
    jobrun.sleep(math.random() * 0.1)
  end
end

-- 读数据进程执行的代码:
local function read(q)
  print(("Process to read: %d"):format(jobrun.current_process().pid))
  while true do
    local value = q:get(true)
    print(("Get %s from queue."):format(value))
    q:task_done()
  end
end

-- 父进程创建 Queue,并传给各个子进程:
local q = jobrun.JoinableQueue()
local pw = jobrun.Process{target = write, args = {q}}
local pr = jobrun.Process{target = read, args = {q}}
-- 启动子进程 pw,写入:
pw:start()
-- 启动子进程 pr,读取:
pr:start()
-- 等待 pw 结束:
pw:join()
-- 等待 pr 处理完所有数据 (not in the seed; see above):
q:join()
-- pr 进程里是死循环,无法等待其结束,只能强行终止:
pr:terminate()
pr:join()
print(("reader alive = %s, exitcode = %d"):format(tostring(pr:is_alive()), pr.exitcode))
