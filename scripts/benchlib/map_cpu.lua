-- The CPU-bound function of the map rows (issue 15): reads the file named by
-- the line and hashes its bytes ROUNDS times over (32-bit FNV-1a, each round
-- seeded with the last), a fixed amount of arithmetic per file. Returns
-- "path<TAB>hash". Loaded by `jobrun map`, map_each.lua and map_pool.lua
-- alike; its Python twin is py_map.py's cpu() (same hashes).
local ROUNDS = 40
return function(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  local byte, h = string.byte, 2166136261
  for _ = 1, ROUNDS do
    for i = 1, #s do
      h = ((h ~ byte(s, i)) * 16777619) & 0xffffffff
    end
  end
  return string.format("%s\t%08x", path, h)
end
