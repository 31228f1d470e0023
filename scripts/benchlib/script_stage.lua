-- The script worker of script_spawn.lua and memory.lua.
-- With an integer argument it does nothing (script_spawn.lua); with a queue
-- and an event it sets the event and blocks in get (memory.lua).
local a, ready = ...
if type(a) == "number" then return end
ready:set()
a:get()
