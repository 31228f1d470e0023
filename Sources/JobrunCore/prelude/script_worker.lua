-- A `script` worker's identity, as jobrun.current_process() tells it
-- (Host.runWorker), with (jobrun, name, daemon). A forked worker needs none:
-- process.lua's child_main sets its own.
local jobrun, name, daemon = ...
jobrun._set_current(name, daemon)
