-- Mirrors the Queue(2) programs of seeds 000 (IPC和队列Queue), 001 section 二
-- (队列) and 004 (Queue队列): a queue of two holds two items; a third put
-- waits for room and raises Full after its timeout; get on an empty queue
-- raises Empty after its timeout; the _nowait forms raise at once.
--
--   jobrun examples/queue_full_empty.lua
--
-- Python raises queue.Full / queue.Empty; jobrun raises error tables whose
-- kind is jobrun.Full / jobrun.Empty. The seeds wait 1-3 s; here the get
-- timeout is scaled down to 0.1 s so the example runs in about 1.3 s (the Full
-- timeout stays 1 s, as in seed 001).

--- Calls q[method](q, ...) expecting a jobrun error of `kind`; prints it.
local function expect_error(kind, q, method, ...)
  local t0 = jobrun.time()
  local ok, err = pcall(q[method], q, ...)
  local waited = jobrun.time() - t0
  assert(not ok, method .. " should have raised " .. kind)
  print(("  raised %s (err.kind == jobrun.%s: %s)"):format(err.kind, kind, tostring(err.kind == jobrun[kind])))
  print("  message: " .. err.message)
  return waited, err
end

print("-- seed 000: Queue(2), 创建队列 并且同时只能存储2个元素")
local q = jobrun.Queue(2)
q:put(1)
q:put(2)
print(q:get())
print(q:get())
print("q:get(true, 0.1) on an empty queue:")
local waited = expect_error("Empty", q, "get", true, 0.1)
print("  waited at least 0.1 s: " .. tostring(waited >= 0.1))

print("-- seed 001: block=true 默认阻塞, timeout=1 最多等待一秒")
q = jobrun.Queue(2)
q:put("yjy", true, 1)
q:put("yjy", true, 1)
print(("qsize=%d empty=%s full=%s"):format(q:qsize(), tostring(q:empty()), tostring(q:full())))
print("third q:put('yjy', true, 1) -- 第三次报错 queue.Full:")
local err
waited, err = expect_error("Full", q, "put", "yjy", true, 1)
print("  waited at least 1 s: " .. tostring(waited >= 1))
print("  tostring(err): " .. tostring(err))
print(q:get(true, 2))
print(q:get(true, 2))
print(("qsize=%d empty=%s full=%s"):format(q:qsize(), tostring(q:empty()), tostring(q:full())))
print("q:get(true, 0.1) -- 取不到就会报错 queue.Empty:")
expect_error("Empty", q, "get", true, 0.1)

print("-- block=false 就不会阻塞,不用等,直接报错")
q:put_nowait("a")
q:put_nowait("b")
print("q:put_nowait('c') on a full queue:")
waited = expect_error("Full", q, "put_nowait", "c")
print("  returned without waiting: " .. tostring(waited < 1))
print("q:put('c', false) on a full queue:")
expect_error("Full", q, "put", "c", false)
print(q:get_nowait())
print(q:get_nowait())
print("q:get_nowait() on an empty queue:")
waited = expect_error("Empty", q, "get_nowait")
print("  returned without waiting: " .. tostring(waited < 1))
print("q:get(false) on an empty queue:")
expect_error("Empty", q, "get", false)

print("-- seed 004: Queue(3), maxsize 3")
q = jobrun.Queue(3)
q:put("abc")
q:put("hhh")
q:put("kkk")
print(q:get())
q:put("ooo")
print(("qsize=%d empty=%s full=%s"):format(q:qsize(), tostring(q:empty()), tostring(q:full())))
print("q:put('123', false):")
expect_error("Full", q, "put", "123", false)
print(q:get())
print(q:get())
print(q:get())
print("q:get(true, 0.1):")
expect_error("Empty", q, "get", true, 0.1)
