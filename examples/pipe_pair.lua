--
-- Mirrors seed 002, 二、管道Pipes (left "待完善" there): a Pipe joins two
-- processes; each end can send and receive. When one side closes its end,
-- the other gets EOF after reading what was sent.
--
--   jobrun examples/pipe_pair.lua

local a, b = jobrun.Pipe()   -- 全双工 (duplex); jobrun.Pipe(false): a receives, b sends

local child = jobrun.Process{name = "B", target = function()
  for i = 1, 3 do
    local msg = b:recv()
    b:send(("B got %q, reply %d"):format(msg, i))
  end
  b:close()   -- A's next recv raises EOF
end}
child:start()
b:close()     -- B has its own copy of b; A's EOF comes once no process holds b

for _, word in ipairs{"hello", "你好", "bye"} do
  a:send(word)
  print(a:recv())
end
local ok, err = pcall(a.recv, a)
print("then:", err.kind == jobrun.EOF and "EOF (B closed its end)" or tostring(err))
child:join()
