#ifndef JOBRUN_LUA_MODULE_H
#define JOBRUN_LUA_MODULE_H
#if __has_include(<lua5.4/lua.h>)
#include <lua5.4/lua.h>
#else
#include <lua.h>
#endif
/// `require "jobrun"`: the module table, or an error raised.
int luaopen_jobrun(lua_State *L);
#endif
