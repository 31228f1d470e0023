-- The rest of a new state's set-up (Host.newState), with (dir, path, cpath):
-- the folder `require` looks in first and, for a `script` worker, its
-- parent's package.path and package.cpath ("" when not given).
local dir, path, cpath = ...

-- Lua's generational collector: a pipeline stage makes and drops an item (a
-- string, a table) per step, the young-objects case it is for. Measured with
-- scripts/bench: 1 -> 1 small strings ~18% faster, tables ~27%, 2 -> 2 ~40%.
-- collectgarbage("incremental") switches back, per process.
collectgarbage("generational")

-- package.path: the script's folder first, as `require` users expect.
if cpath ~= "" then package.cpath = cpath end
package.path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. (path ~= "" and path or package.path)
