import Foundation
import Testing

/// A Dict and a Value stay whole, and give back every block, whatever step
/// of a change a SIGKILL lands on.
@Suite("Dict and Value survive a SIGKILL at any step")
struct SharedStateKillTests {
    /// The victim replaces a key, deletes one, then inserts until the table
    /// has been rehashed twice, noting each finished change in `done`; it
    /// dies at `step` of the first change that reaches it. The dict then
    /// holds exactly the changes before that one, with or without it;
    /// after the main process finishes the list and deletes every key,
    /// the dict holds as much shared memory as a twin that nobody killed.
    @Test(arguments: ["dict-set-allocated", "dict-set-published", "dict-delete-unlinked",
                      "dict-rehash-allocated", "dict-rehash-copied", "dict-rehash-published",
                      "arena-allocate-popped", "arena-free-pushed"])
    func victimKilledInsideAChange(step: String) {
        let r = runScript("""
            local ops = {{"k1", "new1"}, {"k2", nil}}
            for i = 12, 40 do ops[#ops + 1] = {"k" .. i, string.rep("w", i)} end
            local function fill(d) for i = 1, 11 do d["k" .. i] = string.rep("v", i) end end
            local function apply(d, from, to) for i = from, to do d[ops[i][1]] = ops[i][2] end end
            local function model(n)
              local m = {}
              for i = 1, 11 do m["k" .. i] = string.rep("v", i) end
              for i = 1, n do m[ops[i][1]] = ops[i][2] end
              return m
            end
            local function same(d, m)
              local n = 0
              for k, v in pairs(m) do n = n + 1; if d[k] ~= v then return false end end
              return #d == n and #d:keys() == n
            end
            local function clear(d) for _, k in ipairs(d:keys()) do d[k] = nil end end

            local done = jobrun.Value(0)
            local base = jobrun._shm_in_use()
            local d = jobrun.Dict()
            fill(d)
            local p = jobrun.Process{name = "victim", target = function()
              for i = 1, #ops do apply(d, i, i); done:set(i) end
            end}
            p:start(); p:join(30)
            local n = done:get()
            print("exit", p.exitcode, n < #ops)
            print("consistent", same(d, model(n)) or same(d, model(n + 1)))
            apply(d, n + 1, #ops)
            print("complete", same(d, model(#ops)))
            clear(d)
            local used = jobrun._shm_in_use() - base

            base = jobrun._shm_in_use()
            local twin = jobrun.Dict()
            fill(twin); apply(twin, 1, #ops); clear(twin)
            local twinUsed = jobrun._shm_in_use() - base
            print("memory", used == twinUsed, used - twinUsed)
            """, environment: ["JOBRUN_TEST_KILL_AT": "\(step)@victim"], timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "the victim was killed before it finished": "exit\t-9\ttrue",
            "the dict is as before or after the step it was killed in": "consistent\ttrue",
            "applying the rest gives the full result": "complete\ttrue",
            "no memory is lost compared with a twin that was not killed": "memory\ttrue\t0",
        ])
    }

    /// The allocator's holder dies halfway through taking a block off a
    /// free list or putting one back (a small block, one that keeps its
    /// pages, one whose pages are given back): the next locker rolls the
    /// allocation back and the free forward, so no block is lost or counted
    /// twice.
    @Test(arguments: ["arena-allocate-popped", "arena-free-pushed"], [100, 100_000, 20 << 20])
    func allocatorHolderKilled(step: String, size: Int) {
        let r = runScript("""
            local d = jobrun.Dict()
            d.a = string.rep("x", \(size)); d.a = nil
            local inUse, listed = jobrun._shm_in_use()
            local p = jobrun.Process{name = "victim", target = function()
              d.b = string.rep("y", \(size)); d.b = nil
            end}
            p:start(); p:join(30)
            local inUse1, listed1 = jobrun._shm_in_use()
            print(inUse1 - inUse, listed1 - listed)
            d.c = string.rep("z", \(size))
            print(p.exitcode, #d.c, d.b == nil)
            d.c = nil; d.b = nil
            local inUse2, listed2 = jobrun._shm_in_use()
            print(#d, inUse2 - inUse, listed2 - listed)
            """, environment: ["JOBRUN_TEST_KILL_AT": "\(step)@victim"], timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "freeing a block leaves nothing in use": "0\t0",
            "the victim was killed; a block of the same size is allocated again": "-9\t\(size)\ttrue",
            "nothing is left in use or listed": "0\t0\t0",
        ])
    }

    /// SIGKILLs at random moments of a writer's sets, deletes and rehashes:
    /// after each, every key holds a value some write gave it, the count is
    /// exact and the next writer carries on.
    @Test func randomKillsLeaveTheDictWhole() {
        let r = runScript("""
            local d = jobrun.Dict()
            local writing = jobrun.Event()
            local base = jobrun._shm_in_use()
            local bad = 0
            for round = 1, 30 do
              writing:clear()
              local p = jobrun.Process{target = function()
                local i = 0
                while true do
                  i = i + 1
                  if i == 50 then writing:set() end
                  local k = (i * 7919 + round) % 200
                  if i % 3 == 0 then d[k] = nil else d[k] = string.rep(string.char(65 + k % 26), (i * 31) % 2000 + 1) end
                end
              end}
              p:start()
              writing:wait(10)
              jobrun.sleep(math.random() * 0.01)   -- a random moment of the writing to kill it at
              p:kill(); p:join(30)
              local keys = d:keys()
              if #keys ~= #d then bad = bad + 1 end
              for _, k in ipairs(keys) do
                local v = d[k]
                if type(v) ~= "string" or v ~= string.rep(string.char(65 + k % 26), #v) then bad = bad + 1 end
              end
            end
            for _, k in ipairs(d:keys()) do d[k] = nil end
            -- What is left is the grown slot table less the first one (a
            -- 512-byte block): a power of two less 512, with no entry leaked.
            local table_block = jobrun._shm_in_use() - base + 512
            print(bad, #d, table_block & (table_block - 1) == 0)
            """, timeout: 60)
        expectStatus(r)
        expectFields(r, [
            "every key left after a kill at a random moment holds a whole value": "0",
            "the dict empties": "0", "no entry's memory leaked (the slot table is all that is left)": "true",
        ])
    }

    /// A write killed between its two halves leaves the old number or the
    /// new one, never the new type with the old payload.
    @Test(arguments: [("1.5", "v:set(7)", "1.5 7"), ("1.5", "v:compare_and_swap(1.5, 7)", "1.5 7"),
                      ("2", "v:set(2.5)", "2 2.5"), ("2", "v:add(0.5)", "2 2.5")])
    func valueWriteKilledMidway(initial: String, write: String, allowed: String) {
        let r = runScript("""
            local v = jobrun.Value(\(initial))
            local p = jobrun.Process{name = "victim", target = function() \(write) end}
            p:start(); p:join(30)
            local allowed = {}
            for x in ("\(allowed)"):gmatch("%S+") do allowed[math.tointeger(x) or tonumber(x)] = math.type(math.tointeger(x) or tonumber(x)) end
            local got = v:get()
            print(p.exitcode, allowed[got] == math.type(got), got)
            """, environment: ["JOBRUN_TEST_KILL_AT": "value-write-midway@victim"], timeout: 60)
        expectStatus(r)
        #expect(r.stdout.hasPrefix("-9\ttrue\t"), "\(r.stdout)")
    }

    /// A process killed inside `update`'s function (between reading the old
    /// value and writing the new) changed nothing, and the next update
    /// takes the update lock over from it.
    @Test func updateKilledInsideItsFunction() {
        let r = runScript("""
            local d = jobrun.Dict{n = 5}
            local p = jobrun.Process{target = function()
              d:update("n", function(old)
                os.execute("kill -9 " .. jobrun.current_process().pid)
                return old + 100
              end)
            end}
            p:start(); p:join(30)
            print(p.exitcode, d.n, #d)
            print(d:update("n", function(old) return old + 1 end), d.n)
            """, timeout: 60)
        expectStatus(r)
        expectLines(r, [
            "a process killed inside update's function changed nothing": "-9\t5\t1",
            "the next update takes the lock over and applies": "6\t6",
        ])
    }
}
