-- CPython's _TestSpawnedSysPath ("sys.path is set up in forkserver and
-- spawn processes"), ported to jobrun's counterpart of spawn: a
-- Process{script = ...} worker, a fresh interpreter whose package.path and
-- package.cpath must carry what the parent added. CPython checks that the
-- child's sys.path equals the parent's after its first entry; here the
-- child's paths start with its own folder and hold the parent's additions,
-- and the child finds the module they lead to. Not ported:
-- test_forkserver_preload_imports_sys_path.
require "harness"

local function split(path)
  local t = {}
  for entry in path:gmatch("[^;]+") do t[#t + 1] = entry end
  return t
end

case("test_child_sys_path", function()
  local temp_dir = os.tmpname()
  os.remove(temp_dir)
  assert(os.execute("mkdir " .. temp_dir))
  local mod_name = "unique_test_mod"
  local f = assert(io.open(temp_dir .. "/" .. mod_name .. ".lua", "w"))
  f:write("-- A simple test module\nreturn {}\n")
  f:close()
  local orig_path, orig_cpath = package.path, package.cpath
  package.path = temp_dir .. "/?.lua;" .. package.path
  package.cpath = temp_dir .. "/?.so;" .. package.cpath

  local ok, err = pcall(function()
    local q = jobrun.Queue()
    local proc = jobrun.Process{script = "spawned_sys_path_child.lua", args = {q, mod_name}}
    proc:start()
    join_process(proc)
    local child_path = q:get(true, SHORT_TIMEOUT)
    local child_cpath = q:get(true, SHORT_TIMEOUT)
    local import_error = q:get(true, SHORT_TIMEOUT)
    -- The child's own folder first (CPython: the absolute "" replacement);
    -- it is this file's folder too.
    local dir = arg[0]:match("^(.*)/[^/]*$") or "."
    assertEqual(split(child_path)[1], dir .. "/?.lua")
    assertIn(temp_dir .. "/?.lua", split(child_path))  -- our addition
    assertIn(temp_dir .. "/?.so", split(child_cpath))
    assertEqual(import_error, false, "child could not import " .. mod_name)
  end)

  package.path, package.cpath = orig_path, orig_cpath
  os.remove(temp_dir .. "/" .. mod_name .. ".lua")
  os.remove(temp_dir)
  if not ok then error(err, 0) end
end)

run()
