-- The trivial function of the map rows (issue 15): the line, upper-cased.
-- `jobrun map map_upper.lua` calls it on each line; map_each.lua (under
-- xargs and GNU parallel) and map_pool.lua (a jobrun Pool script) load the
-- same file. Its Python twin is py_map.py's upper().
return function(line) return line:upper() end
