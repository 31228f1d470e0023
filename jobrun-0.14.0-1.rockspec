-- `require "jobrun"` from lua5.4: the Lua C module jobrun.so, built from the
-- same Swift code as the `jobrun` command (the SwiftPM product jobrun-lua).
-- From a checkout: `luarocks make` (needs the Swift toolchain; see README,
-- "From plain Lua"). The version is the command's (`jobrun --version`).
rockspec_format = "3.0"
package = "jobrun"
version = "0.14.0-1"
source = {
   url = "git+https://github.com/<owner>/jobrun",
   tag = "0.14.0",
}
description = {
   summary = "Python's multiprocessing for Lua 5.4: processes, shared-memory queues, locks, pools, with supervision",
   detailed = [[
      Processes (forked, or fresh scripts), Queue and JoinableQueue in shared
      memory, Lock, Event, Condition, shared dictionaries, Pipe and Pool, as in
      Python's multiprocessing; a monitor process reports a worker's death and
      a deadlock instead of hanging. Linux only.
   ]],
}
supported_platforms = { "linux" }
dependencies = { "lua >= 5.4, < 5.5" }
build = {
   type = "command",
   -- JOBRUN_MODULE_CONFIG=debug builds faster; JOBRUN_MODULE_PREBUILT=<file>
   -- installs an already built module (scripts/build-module says more).
   build_command = [[scripts/build-module "${JOBRUN_MODULE_CONFIG:-release}" .build/rock]],
   install = {
      lib = { jobrun = ".build/rock/jobrun.so" },
   },
}
