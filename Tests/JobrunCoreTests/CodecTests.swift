import CJobrunShims
import CLua
import Testing
@testable import JobrunCore

/// A fresh state with the standard libraries (no jobrun module needed).
private func newState() -> LuaState {
    let L = luaL_newstate()!
    _ = jr_openlibs(L)
    return L
}

/// Runs `code` (which must return one value), encodes the value, decodes it
/// in a second state, and runs `check` there with the copy as `...`; returns
/// what `check` returns as a string, or the error.
private func roundTrip(_ code: String, check: String) -> String {
    let A = newState(), B = newState()
    defer { lua_close(A); lua_close(B) }
    guard luaL_loadstring(A, code) == LUA_OK, jr_lua_pcall(A, 0, 1, 0) == LUA_OK else {
        return "source error: \(Lua.string(A, -1) ?? "?")"
    }
    var enc = ValueEncoder()
    if let e = enc.encode(A, -1, path: "item") { return "encode error: \(e)" }
    let top = lua_gettop(B)
    if let e = ValueDecoder.decode(B, enc.bytes) { return "decode error: \(e)" }
    #expect(lua_gettop(B) == top + 1)
    guard luaL_loadstring(B, check) == LUA_OK else { return "check error: \(Lua.string(B, -1) ?? "?")" }
    jr_lua_insert(B, -2)
    guard jr_lua_pcall(B, 1, 1, 0) == LUA_OK else { return "check error: \(Lua.string(B, -1) ?? "?")" }
    var len = 0
    guard let p = luaL_tolstring(B, -1, &len) else { return "?" }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
}

private func encodeError(_ code: String) -> String? {
    let L = newState()
    defer { lua_close(L) }
    guard luaL_loadstring(L, code) == LUA_OK, jr_lua_pcall(L, 0, 1, 0) == LUA_OK else { return "source error" }
    var enc = ValueEncoder()
    let top = lua_gettop(L)
    let e = enc.encode(L, -1, path: "item")
    #expect(lua_gettop(L) == top)
    return e
}

@Suite("Codec")
struct CodecTests {
    @Test(arguments: [
        ("return nil", "local v = ...; return tostring(v)", "nil"),
        ("return false", "return tostring(...)", "false"),
        ("return 0", "return math.type(...) .. ' ' .. tostring(...)", "integer 0"),
        ("return -1", "return math.type(...) .. ' ' .. tostring(...)", "integer -1"),
        ("return math.maxinteger", "return tostring(... == math.maxinteger)", "true"),
        ("return math.mininteger", "return tostring(... == math.mininteger)", "true"),
        ("return 0.5", "return math.type(...) .. ' ' .. tostring(...)", "float 0.5"),
        ("return -0.0", "return tostring(1 / ...)", "-inf"),
        ("return 1/0", "return tostring(...)", "inf"),
        ("return -1/0", "return tostring(...)", "-inf"),
        ("return 0/0", "local v = ...; return tostring(v ~= v)", "true"),
        ("return 3.0", "return math.type(...)", "float"),
        ("return ''", "return '[' .. ... .. ']'", "[]"),
        ("return 'a\\0b\\255'", "local s = ...; return #s .. ' ' .. s:byte(2) .. ' ' .. s:byte(4)", "4 0 255"),
    ])
    func scalars(code: String, check: String, expected: String) {
        #expect(roundTrip(code, check: check) == expected)
    }

    @Test func bigString() {
        #expect(roundTrip("return string.rep('xy', 5 * 1024 * 512)", check: "local s = ...; return #s .. s:sub(-2)") == "5242880xy")
    }

    @Test func nestedTablesSharedReferencesAndCycles() {
        let r = roundTrip("""
            local shared = {n = 1}
            local t = {1, 2, {3, {4}}, a = shared, b = shared, [true] = 'yes', [2.5] = 'float', [-7] = 'neg'}
            t.self = t
            return t
            """, check: """
            local t = ...
            return table.concat({#t, t[3][2][1], tostring(t.a == t.b), tostring(t.self == t), t[true], t[2.5], t[-7], t.a.n}, ' ')
            """)
        #expect(r == "3 4 true true yes float neg 1")
    }

    @Test func functionsWithUpvaluesAndGlobals() {
        let r = roundTrip("""
            local count = 10
            local helper = {step = 5}
            return function(x) count = count + helper.step; return count + x, string.format('%d', x), type(print) end
            """, check: "local f = ...; local a, b, c = f(1); local d = f(1); return a .. ' ' .. b .. ' ' .. c .. ' ' .. d")
        #expect(r == "16 1 function 21")
    }

    @Test func recursiveFunctionAndStandardFunctions() {
        let r = roundTrip("""
            local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
            return {fact = fact, fmt = string.format, p = print}
            """, check: "local t = ...; return t.fact(5) .. ' ' .. t.fmt('%03d', 7) .. ' ' .. tostring(t.p == print)")
        #expect(r == "120 007 true")
    }

    @Test func unsendableValuesNameTheirPlace() {
        #expect(encodeError("return coroutine.create(print)") == "item: cannot send a coroutine")
        #expect(encodeError("return {cb = {on_done = coroutine.create(print)}}") == "item.cb.on_done: cannot send a coroutine")
        #expect(encodeError("return {1, {2, io.stdout}}") == "item[2][2]: cannot send a userdata (FILE*)")
        #expect(encodeError("return {['my key'] = coroutine.create(print)}") == "item[\"my key\"]: cannot send a coroutine")
        let co = encodeError("local co = coroutine.create(print); return function() return co end")
        #expect(co == "item (upvalue co): cannot send a coroutine")
        #expect(encodeError("return io.lines") == nil)
        #expect(encodeError("local t = {}; local cur = t; for i = 1, 10000 do cur.next = {}; cur = cur.next end; return t")?
            .contains("nested too deeply") == true)
    }

    @Test func severalValues() {
        let A = newState(), B = newState()
        defer { lua_close(A); lua_close(B) }
        lua_pushinteger(A, 7); Lua.pushString(A, "x"); lua_pushnil(A); lua_pushboolean(A, 1)
        var enc = ValueEncoder()
        #expect(enc.encodeValues(A, from: 1, count: 4, path: "args") == nil)
        let (n, e) = ValueDecoder.decodeValues(B, enc.bytes)
        #expect(e == nil && n == 4)
        #expect(lua_tointegerx(B, 1, nil) == 7 && Lua.string(B, 2) == "x" && lua_type(B, 3) == LUA_TNIL && lua_toboolean(B, 4) == 1)
        lua_settop(A, 0)
        lua_pushinteger(A, 1); lua_pushthread(A)
        enc.reset()
        #expect(enc.encodeValues(A, from: 1, count: 2, path: "args") == "args[2]: cannot send a coroutine")
    }

    /// The decoder returns an error, never crashes, on any input; the stack is unchanged then.
    @Test func decoderSurvivesRandomAndDamagedInput() {
        let A = newState(), B = newState()
        defer { lua_close(A); lua_close(B) }
        var rng = SystemRandomNumberGenerator()
        // Valid encodings to damage.
        var samples: [[UInt8]] = []
        for code in ["return {1, 2, {x = 'y', [3.5] = true}, s = string.rep('q', 300)}",
                     "local t = {}; t.t = t; return t",
                     "local n = 3; return function(a) return a + n end",
                     "return {string.format, -12345678901, 0.1, false}"] {
            _ = luaL_loadstring(A, code); _ = jr_lua_pcall(A, 0, 1, 0)
            var enc = ValueEncoder()
            _ = enc.encode(A, -1, path: "item")
            samples.append(Array(enc.bytes))
            lua_settop(A, 0)
        }
        let top = lua_gettop(B)
        for i in 0..<40_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = samples[i % samples.count]
                switch Int.random(in: 0...2, using: &rng) {
                case 0: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
                case 1: for _ in 0...Int.random(in: 0...3, using: &rng) { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                default: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                }
            }
            let err = bytes.withUnsafeBytes { ValueDecoder.decode(B, $0) }
            if err == nil { #expect(lua_gettop(B) == top + 1); lua_settop(B, top) }
            else { #expect(lua_gettop(B) == top) }
        }
    }
}
