--
-- A multi-stage pipeline: a reader, N transformers and a writer, joined by
-- queues. The transformers work in parallel and finish out of order; the
-- writer puts the results back in input order with a small reorder buffer.
--
--   jobrun examples/stages.lua [workers]
--
-- reader --(seq, line)--> transformers x N --(seq, result)--> writer

local workers = tonumber(arg[1]) or 4
local lines = {}
for i = 1, 40 do lines[i] = ("record %02d: %s"):format(i, string.rep("ab", i % 7 + 1)) end

local work = jobrun.Queue(16)      -- bounded: the reader waits when transformers fall behind
local results = jobrun.Queue()

local reader = jobrun.Process{name = "reader", target = function()
  for seq, line in ipairs(lines) do work:put({seq = seq, line = line}) end
  work:close()                      -- end of stream: transformers' items() loops end
end}

local function transform(item)
  jobrun.sleep(math.random() * 0.01)  -- uneven work, so results arrive out of order
  return item.line:upper():gsub("AB", "ba")
end

local transformers = {}
for i = 1, workers do
  transformers[i] = jobrun.Process{name = "transformer-" .. i, target = function()
    for item in work:items() do
      results:put({seq = item.seq, text = transform(item)})
    end
  end}
end

local writer = jobrun.Process{name = "writer", target = function()
  local pending, next_seq = {}, 1
  for _ = 1, #lines do
    local r = results:get()
    pending[r.seq] = r.text
    while pending[next_seq] do          -- write every result that is now in order
      print(next_seq, pending[next_seq])
      pending[next_seq] = nil
      next_seq = next_seq + 1
    end
  end
end}

reader:start()
for _, t in ipairs(transformers) do t:start() end
writer:start()
for _, p in ipairs{reader, writer, table.unpack(transformers)} do p:join() end
print("done:", writer.exitcode == 0 and "in order" or "writer failed")
