#include "fuzz_shims.h"
#include <lauxlib.h>

static long fired, allowed;

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    if (++fired <= allowed) return;
    // Past the budget: fire at every instruction of this coroutine, so that
    // the next one outside a pcall raises too (at every 1,000th, a loop
    // whose length divides 1,000 may always be inside the pcall then).
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "fuzz: instruction budget spent");
}

void fuzz_set_budget(lua_State *L, long budget) {
    fired = 0;
    allowed = budget;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1000);
}
