import Foundation
import Testing

// Swift never lets a Lua error cross its frames: it reads user tables raw
// (a raising __index, __pairs or __len is never run from Swift), and a Lua
// allocation made while jobrun's Swift code works never fails with a memory
// error (jr_lua_newstate). Either used to longjmp across Swift: the error
// surfaced in place of jobrun's own, an item's block leaked, and the
// process could crash later (a corrupted exclusivity record, SIGSEGV).
@Suite("No Lua error crosses a Swift frame")
struct LuaSafetyTests {
    @Test func raisingMetamethodsNeverRunFromSwift() {
        let r = runScript("""
            local function boom() error("boom") end
            local q = jobrun.Queue()
            -- A table with raising metamethods is sent by its raw contents.
            local t = setmetatable({1, 2, x = 3}, {__index = boom, __pairs = boom, __len = boom, __eq = boom})
            print(pcall(q.put, q, t))
            local r = q:get()
            print(rawlen(r), r[1], r[2], r.x, getmetatable(r))
            -- A userdata whose metatable has a raising __index: jobrun's
            -- checks of `self` and its type names read the metatable raw.
            debug.setmetatable(io.stdout, setmetatable({}, {__index = boom}))
            print(pcall(jobrun.Value(1).get, io.stdout))
            print(pcall(jobrun.sleep, io.stdout))
            print(pcall(q.put, q, io.stdout))
            debug.setmetatable(io.stdout, nil)
            -- Options tables and the globals are read raw as well.
            print(pcall(jobrun.Queue, setmetatable({}, {__index = boom})))
            jobrun = nil
            setmetatable(_G, {__index = boom})
            """)
        expectStatus(r)
        expectLines(r, [
            "a table with raising metamethods is sent": "true",
            "by its raw contents, without its metatable": "2\t1\t2\t3\tnil",
            "a userdata self with a raising __index: a TypeError, not the metamethod's error": "false\tjobrun.TypeError: get: expected a Value as self (use v:get(...)), got userdata",
            "a userdata argument: the same": "false\tjobrun.TypeError: sleep: seconds must be a number, got userdata",
            "a userdata item: cannot send it": "false\tjobrun.TypeError: Queue#1.put: item: cannot send a userdata (userdata)",
            "an options table with a raising __index is read raw": "true\tQueue#3 (0 items)",
        ])
        #expect(!r.stderr.contains("boom"), "\(r.stderr)")
    }

    /// JOBRUN_TEST_LUA_LIMIT caps Lua's memory. The get decodes a 4 MiB item
    /// past the cap (jobrun's frames never see a memory error), the script's
    /// next allocation fails with Lua's own error, which pcall catches, and
    /// the item's shared block is freed.
    @Test func outOfMemoryDuringADecodeIsTheScriptsError() {
        let r = runScript("""
            local q = jobrun.Queue()
            q:put(string.rep("x", 4 << 20))
            collectgarbage()
            local base = jobrun._shm_in_use()
            local ballast = {}
            for i = 1, 70 do ballast[i] = string.rep("b", 100000) .. i end
            local ok, e = pcall(function()
              local s = q:get()
              local t = {}
              for i = 1, 1e6 do t[i] = s:sub(1, 100) .. i end
            end)
            print(ok, e)
            ballast = nil
            collectgarbage()
            print(jobrun._shm_in_use() < base)
            q:put("after"); print(q:get())
            """, environment: ["JOBRUN_TEST_LUA_LIMIT": "10000000"], timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the script's allocation after the decode fails with Lua's own error, caught by pcall": "false\tnot enough memory",
            "the item's shared block was freed": "true",
            "the queue works after": "after",
        ])
    }
}
