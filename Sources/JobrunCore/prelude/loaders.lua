-- Lua does not verify bytecode, and a damaged precompiled chunk crashes the
-- process: `load`, `loadfile`, `dofile` and `require` (its Lua file
-- searcher) load text only, whatever mode the caller asks for. Run in every
-- new state (Host.newState) before any script.
local load0, loadfile0, searchpath, error, select, format = load, loadfile, package.searchpath, error, select, string.format

-- The mode argument is ignored; an `env` argument, when given, still counts.
function load(chunk, name, mode, ...)
  if select('#', ...) > 0 then return load0(chunk, name, 't', ...) end
  return load0(chunk, name, 't')
end
function loadfile(filename, mode, ...)
  if select('#', ...) > 0 then return loadfile0(filename, 't', ...) end
  return loadfile0(filename, 't')
end
-- As lua5.4's dofile: an error loading the file is raised as it is.
function dofile(filename)
  local f, err = loadfile0(filename, 't')
  if not f then error(err, 0) end
  return f()
end
-- require's searcher for Lua files, with lua5.4's message when one fails to load.
package.searchers[2] = function(name)
  local path, err = searchpath(name, package.path)
  if not path then return err end
  local f, lerr = loadfile0(path, 't')
  if not f then error(format("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 0) end
  return f, path
end
