// The fuzzed script's instruction budget, a count hook written in C: a C
// hook is inherited by every coroutine the script makes (lua_newthread
// copies it), and nothing the script can reach names or removes it (a Lua
// hook set with debug.sethook would have to be set again on each coroutine,
// by a function whose upvalues debug.getupvalue hands out).
#ifndef FUZZ_SHIMS_H
#define FUZZ_SHIMS_H
#include <lua.h>

/// Runs `budget` firings of 1,000 instructions, then raises at every
/// instruction of every coroutine (so a loop around pcall ends as well).
void fuzz_set_budget(lua_State *L, long budget);
#endif
