#include "jobrun_entry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// Defined in Swift (JobrunCore/Process/Reentry.swift, @_cdecl). Weak: a
/// program that links this object without JobrunCore's Swift code runs its
/// `main` as usual.
extern int jobrun_reentry_main(const char *role, const char *args, int argc, char **argv) __attribute__((weak));

static int reentered;

void jobrun_entry_anchor(void) {}

int jobrun_entry_is_reentered(void) { return reentered; }

/// Runs before `main` (with the other constructors of the executable; the
/// Swift runtime needs none of its own). Copies the two variables, removes
/// them, runs the role and ends the process with its status.
__attribute__((constructor))
static void jobrun_entry_constructor(int argc, char **argv, char **envp) {
    (void)envp;   // glibc passes main's three arguments to constructors
    const char *role = getenv("JOBRUN_ENTRY");
    if (role == NULL || role[0] == '\0' || jobrun_reentry_main == NULL) return;
    const char *args = getenv("JOBRUN_ENTRY_ARGS");
    char *roleCopy = strdup(role);
    char *argsCopy = strdup(args ? args : "");
    unsetenv("JOBRUN_ENTRY");
    unsetenv("JOBRUN_ENTRY_ARGS");
    if (roleCopy == NULL || argsCopy == NULL) _exit(70);
    reentered = 1;
    int status = jobrun_reentry_main(roleCopy, argsCopy, argc, argv);
    fflush(NULL);
    _exit(status);
}
