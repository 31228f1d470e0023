-- The script worker of test_spawned_sys_path.lua (CPython's
-- enq_sys_path_and_import): reports its package.path and package.cpath, and
-- whether it can require the module the parent's path leads to.
local queue, mod_name = ...
queue:put(package.path)
queue:put(package.cpath)
local ok, err = pcall(require, mod_name)
if ok then queue:put(false) else queue:put(tostring(err)) end
