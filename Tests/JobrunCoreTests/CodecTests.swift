import CJobrunShims
import CLua
import Glibc
import Testing
@testable import JobrunCore

/// A fresh Lua state with the standard libraries and `deepeq`, closed when
/// the test drops it.
private final class LuaFixture {
    let L: LuaState

    init() {
        L = luaL_newstate()!
        _ = jr_openlibs(L)
        let e = run("""
            -- Structural equality: same types (and math.type), nan == nan, 0.0 ~= -0.0,
            -- and the same sharing (each table of `a` maps to exactly one of `b`).
            function deepeq(a, b, seen)
              if type(a) ~= type(b) then return false end
              if type(a) == "number" then
                if math.type(a) ~= math.type(b) then return false end
                if a ~= a then return b ~= b end
                if a == 0 and b == 0 then return 1/a == 1/b end
                return a == b
              end
              if type(a) == "function" then return true end   -- behaviour is tested by calling
              if type(a) ~= "table" then return a == b end
              seen = seen or {}
              if seen[a] ~= nil then return seen[a] == b end
              seen[a] = b
              local n = 0
              for k, v in next, a do
                n = n + 1
                if type(k) == "table" or type(k) == "function" then return false end
                if not deepeq(v, rawget(b, k), seen) then return false end
              end
              for _ in next, b do n = n - 1 end
              return n == 0
            end
            """)
        precondition(e == nil, e ?? "")
    }

    deinit { lua_close(L) }

    /// Runs a chunk leaving `results` values; the error message if it fails.
    @discardableResult
    func run(_ code: String, results: Int32 = 0) -> String? {
        if luaL_loadstring(L, code) != LUA_OK || jr_lua_pcall(L, 0, results, 0) != LUA_OK {
            let e = Lua.string(L, -1) ?? "?"
            jr_lua_pop(L, 1)
            return e
        }
        return nil
    }

    /// Pushes the one value `code` returns (nil, and an issue, if it fails).
    func push(_ code: String, sourceLocation: SourceLocation = #_sourceLocation) {
        if let e = run(code, results: 1) {
            Issue.record("Lua error: \(e)", sourceLocation: sourceLocation)
            lua_pushnil(L)
        }
    }

    /// Evaluates `return <condition>` as a boolean.
    func isTrue(_ condition: String) -> Bool {
        guard run("return " + condition, results: 1) == nil else { return false }
        defer { jr_lua_pop(L, 1) }
        return lua_toboolean(L, -1) != 0
    }

    func setGlobal(_ name: String, _ index: Int32) {
        lua_pushvalue(L, index)
        lua_setglobal(L, name)
    }

    /// A metatable for handles of `name` ("jobrun.Queue"), as the bindings
    /// make it (`__jobrun`), releasing them when collected if `collected`.
    func handleMetatable(_ name: String, collected: Bool = false) {
        luaL_newmetatable(L, name)
        lua_pushboolean(L, 1)
        lua_setfield(L, -2, "__jobrun")
        if collected { Lua.setFunction(L, "__gc", ObjectBindings.release) }
        jr_lua_pop(L, 1)
    }
}

/// The bytes of a handle (tag 0x0C) as a sender would write it, or forge it.
private func handleBytes(_ type: Int, _ slot: UInt32, _ generation: UInt32) -> [UInt8] {
    var m: [UInt8] = [0x0c]
    withUnsafeBytes(of: UInt32(type).littleEndian) { m += $0 }
    withUnsafeBytes(of: slot.littleEndian) { m += $0 }
    withUnsafeBytes(of: generation.littleEndian) { m += $0 }
    return m
}

/// Encodes the value at the top of `L`; the bytes, or the error.
private func encoded(_ L: LuaState, path: String = "item") -> Result<[UInt8], EncodeFailure> {
    var enc = ValueEncoder(capacity: 16)
    let top = lua_gettop(L)
    let e = enc.encode(L, -1, path: path)
    #expect(lua_gettop(L) == top, "encode must leave the stack as it was")
    if let e {
        #expect(enc.count == 0, "a failed encode must append nothing")
        return .failure(EncodeFailure(message: e))
    }
    return .success(Array(enc.bytes))
}

private struct EncodeFailure: Error { let message: String }

/// The error `encode` gives for the value `code` returns.
private func encodeError(_ s: LuaFixture, _ code: String, path: String = "item") -> String? {
    s.push(code)
    defer { jr_lua_pop(s.L, 1) }
    if case .failure(let f) = encoded(s.L, path: path) { return f.message }
    return nil
}

/// Decodes `bytes` into `L`; checks the stack grows by exactly one value on
/// success and not at all on failure.
@discardableResult
private func decoded(_ L: LuaState, _ bytes: [UInt8]) -> String? {
    let top = lua_gettop(L)
    let e = bytes.withUnsafeBytes { ValueDecoder.decode(L, $0) }
    #expect(lua_gettop(L) == top + (e == nil ? 1 : 0))
    return e
}

/// Runs `code` in `s`, sends the value through the codec into `to` (default
/// `s`) as the global `copy`, with the original as the global `orig`, and
/// checks `condition` there.
private func roundTrip(_ s: LuaFixture, _ code: String, to: LuaFixture? = nil, _ condition: String = "deepeq(orig, copy)",
                       sourceLocation: SourceLocation = #_sourceLocation) {
    let dst = to ?? s
    s.push(code, sourceLocation: sourceLocation)
    s.setGlobal("orig", -1)
    defer { jr_lua_pop(s.L, 1) }
    switch encoded(s.L) {
    case .failure(let f):
        Issue.record("encode failed: \(f.message)", sourceLocation: sourceLocation)
    case .success(let bytes):
        if let e = decoded(dst.L, bytes) {
            Issue.record("decode failed: \(e)", sourceLocation: sourceLocation)
            return
        }
        dst.setGlobal("copy", -1)
        jr_lua_pop(dst.L, 1)
        #expect(dst.isTrue(condition), "\(code) => \(condition)", sourceLocation: sourceLocation)
    }
}

private func bytes(_ s: LuaFixture, _ code: String) -> [UInt8] {
    s.push(code)
    defer { jr_lua_pop(s.L, 1) }
    if case .success(let b) = encoded(s.L) { return b }
    Issue.record("cannot encode \(code)")
    return []
}

/// A small deterministic generator, so a failing fuzz case can be replayed.
private struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e3779b97f4a7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
}

@Suite("Value codec")
struct CodecTests {
    // MARK: - Scalars and strings

    @Test func scalars() {
        let s = LuaFixture()
        for code in ["return nil", "return true", "return false", "return 0", "return -1", "return 42",
                     "return math.maxinteger", "return math.mininteger", "return (1 << 53) + 1",
                     "return 0.5", "return -0.0", "return 0.0", "return 1/0", "return -1/0", "return 0/0",
                     "return 3.0", "return math.pi", "return 1e308", "return 5e-324"] {
            roundTrip(s, code)
        }
        roundTrip(s, "return -0.0", "1/copy == -math.huge")
        roundTrip(s, "return 3.0", "math.type(copy) == 'float'")
        roundTrip(s, "return math.mininteger", "math.type(copy) == 'integer' and copy == math.mininteger")
        roundTrip(s, "return 0/0", "copy ~= copy")
    }

    @Test func floatsAreBitExact() throws {
        let s = LuaFixture()
        for bits: UInt64 in [0x7ff8_0000_0000_0001, 0xfff0_0000_0000_0000, 0x8000_0000_0000_0000, 0x0000_0000_0000_0001] {
            lua_pushnumber(s.L, Double(bitPattern: bits))
            let b = try encoded(s.L).get()
            jr_lua_pop(s.L, 1)
            #expect(decoded(s.L, b) == nil)
            #expect(lua_tonumberx(s.L, -1, nil).bitPattern == bits)
            jr_lua_pop(s.L, 1)
        }
    }

    @Test func compactFormat() {
        let s = LuaFixture()
        #expect(bytes(s, "return nil") == [0x00])
        #expect(bytes(s, "return false") == [0x01])
        #expect(bytes(s, "return true") == [0x02])
        #expect(bytes(s, "return 5") == [0x03, 0x0a])
        #expect(bytes(s, "return -1") == [0x03, 0x01])
        #expect(bytes(s, "return 300") == [0x03, 0xd8, 0x04])
        #expect(bytes(s, "return 'abc'") == [0x05, 0x03, 0x61, 0x62, 0x63])
        #expect(bytes(s, "return 1.0") == [0x04, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f])
        #expect(bytes(s, "return {7}") == [0x06, 1, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x0e])
        #expect(bytes(s, "return {x = true}") == [0x06, 0, 0, 0, 0, 1, 0, 0, 0, 0x05, 0x01, 0x78, 0x02])
        #expect(bytes(s, "return print") == [0x0b, 0x05] + Array("print".utf8))
        #expect(bytes(s, "return string.format") == [0x0b, 0x0d] + Array("string.format".utf8))
        // A shared table: its tag gets the "referenced later" bit, the reference its offset.
        #expect(bytes(s, "local t = {} return {t, t}") == [0x06, 2, 0, 0, 0, 0, 0, 0, 0, 0x86, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x09])
        // Dict keys rely on equal scalars giving equal bytes.
        #expect(bytes(s, "return math.tointeger(2^40)") == bytes(s, "return 1 << 40"))
    }

    @Test func strings() {
        let s = LuaFixture()
        roundTrip(s, "return ''")
        roundTrip(s, #"return "\0\255abc\0\1\127\128""#)
        roundTrip(s, #"local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end return table.concat(t)"#)
        roundTrip(s, #"return string.rep("ab\0\255", 5 * 2^20 // 4)"#, "#copy == 5 * 2^20 and copy == orig")
    }

    /// The direct path for big strings (QueueBindings.put) writes the same
    /// bytes as the encoder, at every varint length boundary.
    @Test func directStringEncodingMatchesTheEncoder() {
        let s = LuaFixture()
        for len in [0, 1, 127, 128, 16383, 16384, 16385, 2_097_151, 2_097_152] {
            let text = String(repeating: "x", count: len)
            lua_settop(s.L, 0)
            lua_pushstring(s.L, text)
            var enc = ValueEncoder()
            #expect(enc.encode(s.L, 1, path: "item") == nil)
            var n = 0
            let p = jr_lua_tostring(s.L, 1, &n)!
            #expect(ValueEncoder.stringSize(n) == enc.count, "length \(len)")
            let dst = UnsafeMutableRawPointer.allocate(byteCount: max(1, enc.count), alignment: 8)
            defer { dst.deallocate() }
            ValueEncoder.writeString(p, n, to: dst)
            #expect(memcmp(dst, enc.bytes.baseAddress!, enc.count) == 0, "length \(len)")
        }
        lua_settop(s.L, 0)
    }

    @Test func encoderAppendsAndResets() {
        let s = LuaFixture()
        var enc = ValueEncoder(capacity: 8)
        lua_pushstring(s.L, "hello")
        lua_pushinteger(s.L, 7)
        #expect(enc.encode(s.L, -2, path: "item") == nil)
        #expect(enc.encode(s.L, -1, path: "item") == nil)
        #expect(Array(enc.bytes) == [0x05, 0x05] + Array("hello".utf8) + [0x03, 0x0e])
        _ = s.run("co = coroutine.create(print)")
        lua_getglobal(s.L, "co")
        #expect(enc.encode(s.L, -1, path: "item") == "item: cannot send a coroutine")
        #expect(enc.count == 9, "a failed encode appends nothing")
        enc.reset()
        #expect(enc.count == 0)
        lua_settop(s.L, 0)
    }

    // MARK: - Tables

    @Test func tables() {
        let s = LuaFixture()
        roundTrip(s, "return {}")
        roundTrip(s, "return {1, 2, 3, 'four', 5.5, true}")
        roundTrip(s, "return {1, 2, {3, {4, {5}}}, a = {b = {c = 'd'}}}")
        roundTrip(s, "return {1, nil, 3}", "copy[1] == 1 and copy[2] == nil and copy[3] == 3")
        roundTrip(s, "local t = {} for i = 1, 100000 do t[i] = i * 3 end return t")
        roundTrip(s, """
            return {[1] = 'one', [2] = 'two', [10] = 'ten', [-3] = 'neg', [0] = 'zero', [0.5] = 'half',
                    [math.maxinteger] = 'max', [math.mininteger] = 'min', [1/0] = 'inf',
                    [true] = 'yes', [false] = 'no', s = 'str', ['with space'] = 1, [''] = 'empty'}
            """)
        roundTrip(s, "return {[{}] = 'table key', [print] = 'function key'}", """
            (function() local n = 0 for k, v in pairs(copy) do
               if type(k) == 'table' then n = n + (v == 'table key' and 1 or 100) end
               if k == print then n = n + (v == 'function key' and 1 or 100) end end return n == 2 end)()
            """)
    }

    @Test func cyclesAndSharedReferences() {
        let s = LuaFixture()
        roundTrip(s, "local t = {} t.self = t return t", "copy.self == copy and copy ~= orig")
        roundTrip(s, "local a, b = {}, {} a.b = b b.a = a return a", "copy.b.a == copy")
        roundTrip(s, "local s = {1} return {a = s, b = s, c = {s}}", "copy.a == copy.b and copy.c[1] == copy.a and deepeq(orig, copy)")
        roundTrip(s, "local t = {} t[t] = t return t", "next(copy) == copy and copy[copy] == copy")
        // More tables than the encoder tracks inline: the spill table takes over.
        roundTrip(s, """
            local shared, t = {}, {}
            for i = 1, 200 do t[i] = {shared, i, {}} end
            t.last = t[150]
            return t
            """, "copy.last == copy[150] and copy[1][1] == copy[200][1] and deepeq(orig, copy)")
        // Into another state: references do not depend on the sender.
        let other = LuaFixture()
        roundTrip(s, "local t = {1} return {t, t, {t}}", to: other, "copy[1] == copy[2] and copy[3][1] == copy[1]")
    }

    @Test func metatablesAreNotSentNorRun() {
        let s = LuaFixture()
        roundTrip(s, """
            local boom = function() error('metamethod ran') end
            return setmetatable({1, 2, x = 3}, {__index = boom, __newindex = boom, __len = boom, __pairs = boom})
            """, "getmetatable(copy) == nil and copy[1] == 1 and copy[2] == 2 and copy.x == 3 and #copy == 2")
    }

    // MARK: - Functions

    @Test func closuresKeepTheirUpvalues() {
        let s = LuaFixture()
        roundTrip(s, """
            local n = 0
            local f = function() n = n + 1 return n end
            f() f()
            return f
            """, "copy() == 3 and copy() == 4 and orig() == 3")
        roundTrip(s, "local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end return fact",
                  "copy(10) == 3628800")
        roundTrip(s, "local f = function(x) return x end return {f, f, g = f}", "copy[1] == copy[2] and copy.g == copy[1] and copy[1](7) == 7")
        // Two closures over one local keep sharing it.
        roundTrip(s, """
            local n = 10
            return {inc = function() n = n + 1 end, get = function() return n end}
            """, "(function() copy.inc() copy.inc() return copy.get() == 12 and orig.get() == 10 end)()")
        roundTrip(s, "local cfg = {scale = 3} return function(x) return x * cfg.scale end", "copy(5) == 15")
    }

    @Test func globalsResolveInTheReceiver() {
        let a = LuaFixture(), b = LuaFixture()
        _ = a.run("GREETING = 'from a'")
        _ = b.run("GREETING = 'from b'")
        roundTrip(a, """
            return function(x) return string.format('%s %d', GREETING, x) end
            """, to: b, "copy(5) == 'from b 5'")
        roundTrip(a, "return {f = string.format, p = print, i = ipairs, c = coroutine.wrap}", to: b,
                  "copy.f == string.format and copy.p == print and copy.i == ipairs and copy.c == coroutine.wrap")
        // The sender's global table, wherever it appears, stands for the receiver's.
        roundTrip(a, "local G = _G return {g = _G, f = function() return G.GREETING end}", to: b,
                  "copy.g == _G and copy.f() == 'from b'")
        // A function keeps its chunk name and lines: the bytecode is not stripped.
        roundTrip(a, "return load('return debug.getinfo(1, \"S\").source', '@stage.lua')", to: b, "copy() == '@stage.lua'")
    }

    // MARK: - Unsendable values

    @Test func unsendableValuesNameWhereTheySit() {
        let s = LuaFixture()
        _ = s.run("co = coroutine.create(print)")
        #expect(encodeError(s, "return co") == "item: cannot send a coroutine")
        #expect(encodeError(s, "return {list = {1, 2, io.stdout}}") == "item.list[3]: cannot send a userdata (FILE*)")
        #expect(encodeError(s, "local co = co return function() return co end") == "item (upvalue co): cannot send a coroutine")
        #expect(encodeError(s, "local co = co return {f = function() return {co} end, g = function() return co end}")?
            .hasSuffix(" (upvalue co): cannot send a coroutine") == true)
        #expect(encodeError(s, "return {[co] = 1}") == "item (key): cannot send a coroutine")
        #expect(encodeError(s, "return {['a b'] = {[2.5] = {[true] = co}}}") == #"item["a b"][2.5][true]: cannot send a coroutine"#)
        #expect(encodeError(s, "return {x = {[{}] = co}}") == "item.x[<table>]: cannot send a coroutine")
        #expect(encodeError(s, "return {require}") == "item[1]: cannot send a C function with upvalues (require)")
        lua_pushlightuserdata(s.L, UnsafeMutableRawPointer(bitPattern: 0x1234))
        lua_setglobal(s.L, "light")
        #expect(encodeError(s, "return {light}") == "item[1]: cannot send a light userdata")
        let myc: lua_CFunction = { _ in 0 }
        lua_pushcclosure(s.L, myc, 0)
        lua_setglobal(s.L, "myc")
        #expect(encodeError(s, "return {cb = myc}") == "item.cb: cannot send a C function (myc); only standard library ones can be sent")
        #expect(encodeError(s, "return setmetatable({}, {__name = 'Thing'})") == nil)
        _ = s.run("ud = io.stdout")
        #expect(encodeError(s, "return {ud}", path: "value") == "value[1]: cannot send a userdata (FILE*)")
    }

    @Test func argumentPaths() {
        let s = LuaFixture()
        _ = s.run("co = coroutine.create(print)")
        let top = lua_gettop(s.L)
        s.push("return 1")
        s.push("return {on_done = co}")
        var enc = ValueEncoder()
        #expect(enc.encodeValues(s.L, from: top + 1, count: 2, path: "args") == "args[2].on_done: cannot send a coroutine")
        #expect(enc.count == 0)
        #expect(lua_gettop(s.L) == top + 2)
        lua_settop(s.L, top)
    }

    @Test func nestingIsBounded() throws {
        let s = LuaFixture()
        func deep(_ n: Int) -> String { "local t = {} local c = t for i = 2, \(n) do c.a = {} c = c.a end return t" }
        let e = encodeError(s, deep(10_000))
        #expect(e?.hasPrefix("item.a.a.a.a.a.a.a.a<184 more>.a.a") == true, "\(e ?? "nil")")
        #expect(e?.hasSuffix(".a: value nested too deeply (more than 200 levels)") == true)
        #expect(encodeError(s, deep(201)) != nil)
        // Exactly 200 levels is fine, both ways.
        roundTrip(s, deep(200))
        // Functions count as levels too, and upvalue chains are bounded the same way.
        let chain = "local f = function() return 0 end for i = 1, 10000 do local g = f f = function() return g() + 1 end end return f"
        #expect(encodeError(s, chain)?.hasSuffix(": value nested too deeply (more than 200 levels)") == true)
        #expect(lua_gettop(s.L) == 0)
    }

    // MARK: - Several values, objects

    @Test func tableWithArrayPartHashPartAndHoles() {
        let s = LuaFixture()
        roundTrip(s, """
            local t = {1, 2, 3, 4, 5, 6, 7, 8, x = 'x', [2.5] = 'f'}
            t[3], t[8] = nil, nil
            t[9], t[12], t[-1], t[0] = 9, 12, -1, 0
            for i = 20, 40 do t[i] = i end
            t[30] = nil
            return t
            """)
        // Keys 1, 2, 3 living in the hash part, in any order.
        roundTrip(s, "local t = {a = 1, b = 2, c = 3} t[3] = 'c' t[1] = 'a' t[2] = 'b' t.a = nil return t")
    }

    @Test func sliceOfAListTravelsAsATable() {
        let s = LuaFixture()
        _ = s.run("""
            shared = {k = 1}
            head = {7, 'f', shared}
            list = {10, 2.5, 'three', false, nil, shared, {head}, n = 9}
            list[9] = 9
            co = coroutine.create(print)
            """)
        let top = lua_gettop(s.L)
        lua_getglobal(s.L, "head")
        lua_getglobal(s.L, "list")
        var enc = ValueEncoder(capacity: 16)
        #expect(enc.encodeWithSlice(s.L, head: top + 1, list: top + 2, first: 2, length: 8, path: "item") == nil)
        #expect(lua_gettop(s.L) == top + 2)
        #expect(decoded(s.L, Array(enc.bytes)) == nil)
        s.setGlobal("copy", -1)
        lua_settop(s.L, top)
        #expect(s.isTrue("""
            copy[1] == 7 and copy[2] == 'f' and copy[3].k == 1 and #copy == 4 and next(copy, 4) == nil
            and copy[4][1] == 2.5 and copy[4][2] == 'three' and copy[4][3] == false and copy[4][4] == nil
            and copy[4][5] == copy[3] and copy[4][6][1] == copy and copy[4][7] == nil and copy[4][8] == 9
            and copy[4].n == nil
            """))
        // An empty slice, and an unsendable item named by its place in the slice.
        lua_getglobal(s.L, "head")
        lua_getglobal(s.L, "list")
        enc.reset()
        #expect(enc.encodeWithSlice(s.L, head: top + 1, list: top + 2, first: 1, length: 0, path: "item") == nil)
        #expect(decoded(s.L, Array(enc.bytes)) == nil)
        s.setGlobal("copy", -1)
        jr_lua_pop(s.L, 1)
        #expect(s.isTrue("#copy == 4 and next(copy[4]) == nil"))
        _ = s.run("list[4] = {x = co}")
        enc.reset()
        #expect(enc.encodeWithSlice(s.L, head: top + 1, list: top + 2, first: 2, length: 3, path: "item")
            == "item[4][3].x: cannot send a coroutine")
        #expect(enc.count == 0)
        #expect(lua_gettop(s.L) == top + 2)
        lua_settop(s.L, top)
    }

    /// decode(spreading:into:): a field that is a list is decoded straight
    /// into a table the caller names, at any index, by stack slot or through
    /// a route `{t, first, count}`; anything else decodes as decode() would.
    @Test func aListFieldDecodesInPlace() {
        let s = LuaFixture()
        let top = lua_gettop(s.L)
        func spread(_ code: String, field: Int, _ destination: ValueDecoder.Destination) -> String? {
            let b = bytes(s, code)
            let before = lua_gettop(s.L)
            let e = b.withUnsafeBytes { ValueDecoder.decode(s.L, $0, spreading: field, into: destination) }
            #expect(lua_gettop(s.L) == before + (e == nil ? 1 : 0))
            if e == nil { s.setGlobal("m", -1); jr_lua_pop(s.L, 1) }
            return e
        }
        _ = s.run("dst = {'keep'}; routes = {[7] = {dst, 3, 2}}")
        lua_getglobal(s.L, "dst")
        lua_getglobal(s.L, "routes")
        // A field in the middle, by stack slot, from index 2; the fields after it stay.
        #expect(spread("return {1, {'a', {b = 1}}, 'after', {x = 2}}", field: 2, .table(top + 1, first: 2)) == nil)
        #expect(s.isTrue("m[2] == dst and dst[1] == 'keep' and dst[2] == 'a' and dst[3].b == 1 and m[3] == 'after' and m[4].x == 2 and #m == 4"))
        // Routed by field 1: into routes[7] = {dst, 3, 2}.
        #expect(spread("return {7, {'p', 'q'}}", field: 2, .routed(routes: top + 2, key: 1)) == nil)
        #expect(s.isTrue("m[2] == dst and dst[3] == 'p' and dst[4] == 'q'"))
        // No route, a route of another size, a field that is not a list, a
        // message that is not a list: decoded as they were sent.
        #expect(spread("return {8, {'r'}}", field: 2, .routed(routes: top + 2, key: 1)) == nil)
        #expect(s.isTrue("m[2] ~= dst and m[2][1] == 'r' and dst[3] == 'p'"))
        #expect(spread("return {7, {'r', 's', 't'}}", field: 2, .routed(routes: top + 2, key: 1)) == nil)
        #expect(s.isTrue("m[2] ~= dst and #m[2] == 3 and dst[5] == nil"))
        #expect(spread("return {7, 'str'}", field: 2, .routed(routes: top + 2, key: 1)) == nil)
        #expect(s.isTrue("m[2] == 'str'"))
        #expect(spread("return 'plain'", field: 2, .table(top + 1, first: 1)) == nil)
        #expect(s.isTrue("m == 'plain'"))
        #expect(spread("return {1}", field: 2, .table(top + 1, first: 1)) == nil)
        #expect(s.isTrue("m[1] == 1 and #m == 1"))
        lua_settop(s.L, top)
    }

    @Test func valuesForProcessArguments() {
        let s = LuaFixture()
        s.push("return 1")
        s.push("return 'two'")
        s.push("return nil")
        s.push("local t = {3} return {t, t}")
        s.push("local n = 5 return function() return n end")
        var enc = ValueEncoder()
        #expect(enc.encodeValues(s.L, from: 1, count: 5, path: "args") == nil)
        #expect(lua_gettop(s.L) == 5)
        let b = Array(enc.bytes)
        let (n, e) = b.withUnsafeBytes { ValueDecoder.decodeValues(s.L, $0) }
        #expect(e == nil && n == 5)
        #expect(lua_gettop(s.L) == 10)
        for i: Int32 in 1...5 { s.setGlobal("v\(i)", 5 + i) }
        #expect(s.isTrue("v1 == 1 and v2 == 'two' and v3 == nil and v4[1] == v4[2] and v4[1][1] == 3 and v5() == 5"))
        lua_settop(s.L, 0)

        enc.reset()
        #expect(enc.encodeValues(s.L, from: 1, count: 0, path: "args") == nil)
        let empty = Array(enc.bytes)
        #expect(empty == [0])
        #expect(empty.withUnsafeBytes { ValueDecoder.decodeValues(s.L, $0) } == (0, nil))
        #expect(lua_gettop(s.L) == 0)
        for bad: [UInt8] in [[], [3, 0], [2, 0, 0x63], [0x80]] {
            let (n, e) = bad.withUnsafeBytes { ValueDecoder.decodeValues(s.L, $0) }
            #expect(n == 0 && e?.hasPrefix("corrupt message: ") == true)
            #expect(lua_gettop(s.L) == 0)
        }
    }

    @Test func jobrunObjectsTravelAsHandles() throws {
        _ = arenaReady
        let s = LuaFixture()
        for name in ["jobrun.Queue", "jobrun.Dict"] { s.handleMetatable(name) }
        let off = try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false)
        #expect(ObjectHandle.pushNew(s.L, type: JR_OBJ_QUEUE, offset: off))
        let made = try #require(ObjectHandle.check(s.L, -1))
        let entry = try #require(ObjectTable.entry(made.slot))
        #expect(entry.pointee.refs == 1)                  // this process's
        lua_createtable(s.L, 0, 0)
        lua_pushvalue(s.L, -2)
        lua_setfield(s.L, -2, "q")
        let b = try encoded(s.L).get()
        #expect(entry.pointee.refs == 2)                  // and the message's
        lua_settop(s.L, 0)
        #expect(decoded(s.L, b) == nil)
        #expect(entry.pointee.refs == 2)                  // the process holds one, however many handles
        lua_getfield(s.L, -1, "q")
        let h = ObjectHandle.check(s.L, -1)
        #expect(h?.offset == off && h?.type == UInt32(JR_OBJ_QUEUE) && h?.slot == made.slot)
        lua_settop(s.L, 0)

        // Crafted handles: a Dict handle naming the queue, a slot never
        // used, a generation the slot does not have. Each is an error.
        let handle = handleBytes
        #expect(decoded(s.L, handle(JR_OBJ_DICT, made.slot, made.generation)) == "corrupt message: bad object handle: a Dict handle naming a Queue (byte 0)")
        #expect(decoded(s.L, handle(JR_OBJ_QUEUE, 4_000_000, 1))?.hasPrefix("corrupt message: bad object handle (no object 4000000)") == true)
        #expect(decoded(s.L, handle(JR_OBJ_QUEUE, made.slot, made.generation &+ 7))?.hasPrefix("corrupt message: stale object handle") == true)
        #expect(decoded(s.L, handle(999, made.slot, made.generation)) == "corrupt message: unknown object type 999 at byte 0")
        #expect(lua_gettop(s.L) == 0)

        // The last references go (this process's, the message's): the
        // queue is freed, its slot's generation moves on, and the message
        // still naming it is refused.
        ProcessContext.current.objects.holdings[made.slot] = nil
        ObjectTable.release(made.slot)
        #expect(entry.pointee.state == UInt32(JR_SLOT_LIVE))
        ValueScan.forEachObject(b.withUnsafeBytes { $0 }) { ObjectTable.release($0) }
        #expect(entry.pointee.state == UInt32(JR_SLOT_FREE))
        #expect(entry.pointee.generation == made.generation &+ 1)
        #expect(decoded(s.L, b)?.hasPrefix("corrupt message: stale object handle: the Queue it named was freed") == true)
        #expect(lua_gettop(s.L) == 0)
    }

    /// A message whose handles' references are handed over (a queue item, a
    /// worker's arguments) and that fails to decode partway leaks none: the
    /// handles met are the decoded userdata's (released when they are
    /// collected), those not met are dropped with the message, and a stale
    /// or mistyped one, which holds no reference, drops nothing.
    @Test func aMessageRefusedPartwayLeaksNoReference() throws {
        _ = arenaReady
        let s = LuaFixture()
        s.handleMetatable("jobrun.Queue", collected: true)
        var made: [ObjectHandle] = []
        for _ in 0..<3 {
            #expect(ObjectHandle.pushNew(s.L, type: JR_OBJ_QUEUE, offset: try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false)))
            made.append(try #require(ObjectHandle.check(s.L, -1)))
            lua_setglobal(s.L, "q\(made.count)")      // this process's handle, kept
        }
        let (a, b, c) = (made[0], made[1], made[2])
        func refs(_ h: ObjectHandle) -> UInt64 { ObjectTable.entry(h.slot)!.pointee.refs }
        func handle(_ type: Int, _ h: ObjectHandle, generation: UInt32? = nil) -> [UInt8] {
            handleBytes(type, h.slot, generation ?? h.generation)
        }
        let refused: [(String, [UInt8])] = [
            ("unknown standard function", [0x0b, 0x0d] + Array("string.nosuch".utf8)),
            ("stale object handle", handle(JR_OBJ_QUEUE, c, generation: c.generation &+ 7)),
            ("bad object handle: a Dict handle naming a Queue", handle(JR_OBJ_DICT, c)),
        ]
        for (why, middle) in refused {
            for values in [false, true] {
                // {a, <refused>, b}, whose copies of a and b hold a reference each.
                ObjectTable.retain(a.slot)
                ObjectTable.retain(b.slot)
                #expect(refs(a) == 2 && refs(b) == 2 && refs(c) == 1)
                let items = handle(JR_OBJ_QUEUE, a) + middle + handle(JR_OBJ_QUEUE, b)
                let message = values ? [3] + items : [0x06, 3, 0, 0, 0, 0, 0, 0, 0] + items
                let top = lua_gettop(s.L)
                let e = message.withUnsafeBytes {
                    values ? ValueDecoder.decodeValues(s.L, $0, adopting: true).1 : ValueDecoder.decode(s.L, $0, adopting: true)
                }
                #expect(e?.hasPrefix("corrupt message: \(why)") == true, "\(e ?? "decoded")")
                #expect(lua_gettop(s.L) == top)
                jr_lua_collect(s.L)
                #expect(refs(a) == 1 && refs(b) == 1 && refs(c) == 1, "\(why), values: \(values): \(refs(a)) \(refs(b)) \(refs(c))")
            }
        }
        // Refused after the value: every handle was met and is the userdata's.
        ObjectTable.retain(a.slot)
        #expect(decoded(s.L, handle(JR_OBJ_QUEUE, a) + [0x00]) == "corrupt message: 1 bytes after the value")
        let trailing = handle(JR_OBJ_QUEUE, a) + [0x00]
        #expect(trailing.withUnsafeBytes { ValueDecoder.decode(s.L, $0, adopting: true) } == "corrupt message: 1 bytes after the value")
        jr_lua_collect(s.L)
        #expect(refs(a) == 1)
        for h in made {
            ProcessContext.current.objects.holdings[h.slot] = nil
            ObjectTable.release(h.slot)
            #expect(ObjectTable.entry(h.slot)?.pointee.state == UInt32(JR_SLOT_FREE))
        }
    }

    /// ValueScan finds every handle of a message (in nested tables, keys
    /// and upvalues) without decoding it, for bytes dropped undecoded.
    @Test func handlesAreFoundWithoutDecoding() throws {
        _ = arenaReady
        let s = LuaFixture()
        s.handleMetatable("jobrun.Lock")
        var slots: [UInt32] = []
        for _ in 0..<3 {
            #expect(ObjectHandle.pushNew(s.L, type: JR_OBJ_LOCK, offset: try SharedSync.create(type: JR_OBJ_LOCK)))
            slots.append(ObjectHandle.check(s.L, -1)!.slot)
            lua_setglobal(s.L, "h\(slots.count)")
        }
        #expect(s.run("local x = h3; local f = function() return x end; item = {1, 'x', {deep = {h1}}, [h2] = true, f = f}") == nil)
        lua_getglobal(s.L, "item")
        let b = try encoded(s.L).get()
        lua_settop(s.L, 0)
        var found: [UInt32] = []
        b.withUnsafeBytes { ValueScan.forEachObject($0) { found.append($0) } }
        #expect(found.sorted() == slots.sorted())
        for slot in found { ObjectTable.release(slot) }    // the message's references
        for slot in slots { ProcessContext.current.objects.holdings[slot] = nil; ObjectTable.release(slot) }
        for slot in slots { #expect(ObjectTable.entry(slot)?.pointee.state == UInt32(JR_SLOT_FREE)) }
    }

    // MARK: - Decoder robustness

    @Test func corruptMessagesAreRefused() {
        let s = LuaFixture()
        func expectRefused<B: Collection<UInt8>>(_ b: B, _ prefixes: String..., sourceLocation: SourceLocation = #_sourceLocation) {
            let e = decoded(s.L, Array(b)) ?? "decoded"
            #expect(prefixes.contains { e.hasPrefix("corrupt message: " + $0) }, "\(e)", sourceLocation: sourceLocation)
        }
        expectRefused([], "empty")
        expectRefused([0x05, 0x05, 0x61], "bad string length")
        expectRefused([0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], "bad string length")
        expectRefused([0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "bad integer")
        expectRefused([0x04, 0, 0, 0], "truncated float")
        expectRefused([0x02, 0x02], "1 bytes after the value")
        expectRefused([0x06, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0], "bad table header")
        expectRefused([0x06, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], "bad table header")
        expectRefused([0x06, 1, 0, 0, 0, 0, 0, 0], "bad table header")
        expectRefused([0x06, 0, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x02], "nil table key")
        expectRefused([0x06, 0, 0, 0, 0, 1, 0, 0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0x02], "NaN table key")
        expectRefused([0x06, 1, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x00], "bad reference")  // not marked as remembered
        expectRefused([0x86, 1, 0, 0, 0, 0, 0, 0, 0, 0x07, 0x05], "bad reference")  // no object at byte 5
        expectRefused([0x07, 0x00], "bad reference")
        expectRefused([0x0a], "unknown tag 0xa")
        expectRefused([0x85], "unknown tag 0x85")
        expectRefused([0x0b, 0x0d] + Array("string.nosuch".utf8), "unknown standard function \"string.nosuch\"")
        expectRefused([0x0b, 0x08] + Array("jobrun.x".utf8), "unknown standard function")
        expectRefused([0x0b, 0x07] + Array("string.".utf8), "unknown standard function")
        let object: [UInt8] = [0x0c, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        expectRefused(object.dropLast(), "truncated object")
        // Whether another test has attached the arena yet or not (slot 0 may
        // be in use: generation 0 is never one).
        expectRefused(object, "a jobrun object outside a run", "bad object handle", "stale object handle")
        // Nesting far past the limit, as a sender could never write it.
        var deep: [UInt8] = []
        for _ in 0..<10_000 { deep += [0x06, 1, 0, 0, 0, 0, 0, 0, 0] }
        deep += [0x00]
        expectRefused(deep, "nested too deeply")
        // Bytecode is checked before Lua sees it.
        var f = bytes(s, "local n = 1 return function() return n end")
        #expect(decoded(s.L, f) == nil)
        lua_settop(s.L, 0)
        f[f.count / 2] ^= 0x10
        expectRefused(f, "function bytecode damaged")
        #expect(lua_gettop(s.L) == 0)
    }

    /// CODEC_FUZZ_ITERATIONS and CODEC_FUZZ_SEED run it longer or differently.
    @Test func anyBytesDecodeOrFailCleanly() {
        let s = LuaFixture()
        let L = s.L
        let env = { (name: String) in getenv(name).flatMap { UInt64(String(cString: $0)) } }
        let iterations = Int(env("CODEC_FUZZ_ITERATIONS") ?? 20_000)
        var rng = SplitMix64(state: env("CODEC_FUZZ_SEED") ?? 0x5eed_c0de)
        var decodedCount = 0
        // A destination and routes for decode(spreading:into:).
        _ = s.run("dst = {} routes = {[7] = {dst, 1, 2}, [8] = {dst, 5, 1}}")
        lua_getglobal(L, "dst")
        lua_getglobal(L, "routes")
        let top = lua_gettop(L)
        func attempt(_ b: [UInt8]) {
            let e = b.withUnsafeBytes { ValueDecoder.decode(L, $0) }
            if e == nil {
                decodedCount += 1
                if lua_gettop(L) != top + 1 { Issue.record("stack \(lua_gettop(L)) after decoding \(b)") }
            } else if lua_gettop(L) != top {
                Issue.record("stack \(lua_gettop(L)) after failing on \(b)")
            } else if e?.hasPrefix("corrupt message: ") != true {
                Issue.record("unexpected error \(e!)")
            }
            lua_settop(L, top)
            // The same bytes as a message of several values.
            let (n, e2) = b.withUnsafeBytes { ValueDecoder.decodeValues(L, $0) }
            if lua_gettop(L) != top + (e2 == nil ? n : 0) { Issue.record("stack \(lua_gettop(L)) after decodeValues(\(b))") }
            lua_settop(L, top)
            // As a message with a list field decoded in place.
            for destination in [ValueDecoder.Destination.routed(routes: top, key: 1), .table(top - 1, first: 3)] {
                let e3 = b.withUnsafeBytes { ValueDecoder.decode(L, $0, spreading: 2, into: destination) }
                if lua_gettop(L) != top + (e3 == nil ? 1 : 0) { Issue.record("stack \(lua_gettop(L)) after decode(spreading:) of \(b)") }
                lua_settop(L, top)
            }
        }

        // Random bytes, half of them starting with a valid tag.
        for i in 0..<iterations {
            var b = (0..<rng.below(48)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if i % 2 == 0, !b.isEmpty { b[0] = [0x03, 0x05, 0x06, 0x86, 0x08, 0x0b, 0x0c][rng.below(7)] }
            attempt(b)
            if i % 5_000 == 0 { _ = s.run("collectgarbage()") }
        }

        // Mutations of valid messages: every kind of tag, references, joined upvalues.
        let corpus = [
            "return {1, 2.5, 'three', true, false, nil, {x = {y = 'z'}}, [0.25] = -7}",
            "local t = {'a', 'b'} t.self = t t[t] = {t, t} return t",
            "local n = 0 return {inc = function() n = n + 1 end, get = function() return n end, s = string.format}",
            "local function f(x) if x > 0 then return f(x - 1) end return GLOBAL end return {f, f, print}",
            "return {[true] = {[false] = {math.maxinteger, math.mininteger, 0/0, -0.0}}}",
            "local t = {} for i = 1, 40 do t[i] = {i, tostring(i), t} end return t",
            "return 'a string item'",
            "return 12345678901234",
            "return {7, {'p', {q = 1}}, 'after', false}",
            "local t = {} return {8, {t}, t}",
        ].map { bytes(s, $0) }
        for i in 0..<iterations {
            var b = corpus[i % corpus.count]
            for _ in 0...rng.below(3) {
                switch rng.below(6) {
                case 0: if !b.isEmpty { b[rng.below(b.count)] ^= UInt8(1 << rng.below(8)) }
                case 1: if !b.isEmpty { b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next()) }
                case 2: b = Array(b.prefix(rng.below(b.count + 1)))
                case 3: b.insert(contentsOf: (0..<1 + rng.below(4)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: rng.below(b.count + 1))
                case 4:
                    if !b.isEmpty { let a = rng.below(b.count); b.removeSubrange(a..<min(b.count, a + 1 + rng.below(8))) }
                default:
                    if !b.isEmpty { let a = rng.below(b.count); b.insert(contentsOf: b[a..<min(b.count, a + 1 + rng.below(16))], at: rng.below(b.count + 1)) }
                }
            }
            attempt(b)
            if i % 5_000 == 0 { _ = s.run("collectgarbage()") }
        }
        _ = s.run("collectgarbage()")
        #expect(decodedCount > 100, "the mutations should still leave some valid messages")
    }
}
