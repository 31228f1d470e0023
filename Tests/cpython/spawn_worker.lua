-- The script worker of the port's --spawn mode (harness.lua, worker()):
-- loads the test file, which registers its workers and runs no case outside
-- the main process, then runs the named worker on the arguments it was given.
local file, name = ...
dofile(file)
local H = require "harness"
local target = H.workers[name]
if not target then error("spawn_worker: " .. file .. " has no worker named " .. tostring(name), 0) end
target(select(3, ...))
