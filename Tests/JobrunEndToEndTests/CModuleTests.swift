import Foundation
import Testing

/// A Lua C module as Debian and luarocks build them: compiled against the
/// lua5.4 headers, NOT linked with liblua, so its lua_*/luaL_* calls are
/// resolved against whatever loads it. Under jobrun they must resolve to the
/// one Lua core jobrun runs (however Package.swift links Lua), in the main
/// process and in forked workers. Nil when no C compiler is installed.
enum CModule {
    static let cc: String? = ["/usr/bin/cc", "/usr/bin/gcc", "/usr/bin/clang"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// `cmod.twice(n)`; `cmod.callback(f, x)` calls f(x) from C;
    /// `cmod.box(v)` a userdata with a metatable made by luaL_newmetatable.
    static let source = """
        #include <lua.h>
        #include <lauxlib.h>
        static int twice(lua_State *L) { lua_pushinteger(L, 2 * luaL_checkinteger(L, 1)); return 1; }
        static int callback(lua_State *L) {
          luaL_checktype(L, 1, LUA_TFUNCTION);
          lua_settop(L, 2);
          lua_call(L, 1, 1);
          return 1;
        }
        static int unbox(lua_State *L) {
          lua_Integer *p = luaL_checkudata(L, 1, "cmod.box");
          lua_pushinteger(L, *p);
          return 1;
        }
        static int box(lua_State *L) {
          lua_Integer v = luaL_checkinteger(L, 1);
          lua_Integer *p = lua_newuserdatauv(L, sizeof *p, 0);
          *p = v;
          luaL_setmetatable(L, "cmod.box");
          return 1;
        }
        int luaopen_cmod(lua_State *L) {
          luaL_Reg m[] = {{"unbox", unbox}, {NULL, NULL}};
          luaL_newmetatable(L, "cmod.box");
          luaL_newlib(L, m);
          lua_setfield(L, -2, "__index");
          lua_pop(L, 1);
          luaL_Reg f[] = {{"twice", twice}, {"callback", callback}, {"box", box}, {NULL, NULL}};
          luaL_newlib(L, f);
          return 1;
        }
        """

    /// Compiles cmod.so into `dir` (-shared, no -llua5.4); false (with an
    /// issue recorded) if the compiler fails.
    static func build(in dir: ScratchFolder, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        guard let cc else { return false }
        dir.write("cmod.c", source)
        let r = runCommand([cc, "-shared", "-fPIC", "-O2", "-I/usr/include/lua5.4",
                            "-o", dir.file("cmod.so"), dir.file("cmod.c")], timeout: 120)
        #expect(r.status == 0 && !r.timedOut, "cc failed:\n\(r)", sourceLocation: sourceLocation)
        return r.status == 0
    }
}

@Suite("Lua C modules under jobrun")
struct CModuleTests {
    @Test(.enabled(if: CModule.cc != nil, "no C compiler (cc) installed"))
    func requiredInTheMainProcessAWorkerAndAPoolAndLoadlib() throws {
        let dir = ScratchFolder(prefix: "jobrun-cmodule")
        defer { dir.remove() }
        guard CModule.build(in: dir) else { return }
        dir.write("main.lua", """
            package.cpath = "\(dir.path)/?.so;" .. package.cpath
            local cmod = require "cmod"
            print("main", cmod.twice(21), cmod.callback(function(x) return x .. "!" end, "back"),
                  cmod.box(7):unbox())
            local q = jobrun.Queue()
            local p = jobrun.Process{target = function()
              local m = require "cmod"   -- already loaded before the fork
              q:put(m.twice(50) .. " " .. m.box(8):unbox())
            end}
            p:start()
            print("worker", q:get(true, 30))
            p:join(30)
            local open = assert(package.loadlib("\(dir.path)/cmod.so", "luaopen_cmod"))
            print("loadlib", open().twice(4))
            local pool = jobrun.Pool(2)
            -- each worker loads the module itself (package.loaded cleared)
            local got = pool:map(function(n)
              package.loaded.cmod = nil
              return require("cmod").callback(function(x) return x + 1 end, n)
            end, {1, 2, 3})
            pool:close(); pool:join()
            print("pool", table.concat(got, " "))
            """)
        let r = runJobrun([dir.file("main.lua")])
        expectStatus(r)
        expectLines(r, [
            "the main process": "main\t42\tback!\t7",
            "a forked worker": "worker\t100 8",
            "package.loadlib": "loadlib\t8",
            "a Pool's workers": "pool\t2 3 4",
        ])
    }

    @Test(.enabled(if: CModule.cc != nil, "no C compiler (cc) installed"))
    func requiredByAJobrunMapFunction() throws {
        let dir = ScratchFolder(prefix: "jobrun-cmodule")
        defer { dir.remove() }
        guard CModule.build(in: dir) else { return }
        dir.write("f.lua", """
            package.cpath = "\(dir.path)/?.so;" .. package.cpath
            local cmod = require "cmod"
            return function(l) return cmod.twice(tonumber(l)) end
            """)
        let r = runJobrun(["map", "-j", "2", "-k", dir.file("f.lua")], stdin: "1\n2\n3\n")
        expectStatus(r)
        #expect(r.lines == ["2", "4", "6"])
    }
}
