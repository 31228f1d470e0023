// The entry point of the Lua C module jobrun.so (`require "jobrun"` from
// lua5.4). In C because it may raise: the Swift side (JobrunCore,
// Lua/ForeignState.swift) returns -1 with a message pushed, and the raise
// happens here, after Swift has returned (a longjmp must never cross a
// Swift frame).
#define _GNU_SOURCE
#include "jobrun_lua_module.h"

#include <dlfcn.h>

extern int jobrun_foreign_open(lua_State *L, const char *module_path);

__attribute__((visibility("default")))
int luaopen_jobrun(lua_State *L) {
    // The file this module was loaded from: a `script` worker is lua5.4
    // loading it again (Reentry.foreignPrefix).
    Dl_info info;
    const char *path = dladdr((void *)luaopen_jobrun, &info) != 0 ? info.dli_fname : NULL;
    int n = jobrun_foreign_open(L, path);
    if (n < 0) return lua_error(L);
    return n;
}
