-- A `script` worker's uncaught error (Host.writeThroughStderr), with (text):
-- written through the script's io.stderr, with its output hooks, as a forked
-- worker's report goes (process.lua's report_error). Returns false when
-- io.stderr is not an open file or the write failed: Swift writes to
-- descriptor 2 then.
local text = ...
local io = package.loaded.io
local f = io and io.stderr
if io.type(f) ~= "file" then return false end
return f:write(text) ~= nil and f:flush() ~= nil
