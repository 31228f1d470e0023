-- jobrun map_pool.lua FN.lua WORKERS < lines: what `jobrun map -j WORKERS
-- FN.lua` does, written as a script: a Pool's imap over io.lines() (read
-- lazily; the adaptive default chunksize), each result printed on a line, in
-- order.
local fn, workers = dofile(arg[1]), tonumber(arg[2])
local pool = jobrun.Pool{workers = workers}
local write = io.write
for r in pool:imap(fn, io.lines()) do write(r, "\n") end
pool:close()
pool:join()
