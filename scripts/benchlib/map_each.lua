-- lua5.4 map_each.lua FN.lua ARG...: prints FN(ARG) for each argument, one a
-- line: the per-process command the map rows give xargs and GNU parallel
-- (the same function file as `jobrun map FN.lua`).
local fn = dofile(arg[1])
for i = 2, #arg do print(fn(arg[i])) end
