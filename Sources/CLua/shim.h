#ifndef JOBRUN_CLUA_SHIM_H
#define JOBRUN_CLUA_SHIM_H
// Lua's headers only, no library: a Lua C module (the jobrun-lua product,
// jobrun.so) must take lua_* from the interpreter that loads it (Debian's
// lua5.4 links Lua statically and exports its symbols), never from a second
// copy of the core in liblua5.4.so. The executables and the Swift library
// link liblua5.4 themselves (Package.swift: linkerSettings). Debian puts the
// headers in /usr/include/lua5.4 (what `pkg-config --cflags lua5.4` gives).
#if __has_include(<lua5.4/lua.h>)
#include <lua5.4/lua.h>
#include <lua5.4/lualib.h>
#include <lua5.4/lauxlib.h>
#else
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#endif
#endif
