#ifndef JOBRUN_ENTRY_H
#define JOBRUN_ENTRY_H

/// The re-entry point of a jobrun worker or monitor started by a Swift host
/// from the host's own executable (JobrunCore's Runtime, posix_spawn of
/// /proc/self/exe). A constructor of this target reads JOBRUN_ENTRY (the
/// role: "worker" or "monitor") and JOBRUN_ENTRY_ARGS before the host's
/// `main` can run, removes both from the environment (the role's own
/// children do not re-enter), and calls `jobrun_reentry_main`, defined in
/// Swift by JobrunCore (@_cdecl); its return value is the process's exit
/// status (`_exit`, after flushing stdio): the host's `main` never runs.

/// Referenced by JobrunCore so that this object is linked in wherever
/// JobrunCore is, also from a static archive. Does nothing.
void jobrun_entry_anchor(void);

/// 1 when this process was started as a re-entered worker or monitor (for
/// code that runs before the role and must know it, such as a test).
int jobrun_entry_is_reentered(void);

#endif
