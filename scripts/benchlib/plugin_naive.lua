-- What a naive host does per call: start lua5.4, load the plug-in, call it.
local dir = arg[1]
local calc = dofile(dir .. "/calc.lua")
io.write(calc.add({a = 1, b = 2}), "\n")
