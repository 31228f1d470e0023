import CJobrunShims
import CLua
@testable import JobrunCore

/// A Lua state with the standard libraries and JobrunCore's codec: the
/// worker's side of an exchange, for checking that the host's pure-Swift
/// codec speaks the same format. Closed when the test drops it.
final class LuaSide {
    let L: LuaState

    init() {
        L = luaL_newstate()!
        _ = jr_openlibs(L)
    }

    deinit { lua_close(L) }

    /// Decodes `bytes` into the state (ValueDecoder) and encodes the value
    /// back (ValueEncoder): the bytes a worker would send back.
    func echo(_ bytes: [UInt8]) throws -> [UInt8] {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        if let e = bytes.withUnsafeBytes({ ValueDecoder.decode(L, $0) }) { throw LuaSideError(message: "decode: \(e)") }
        return try encodeTop()
    }

    /// As `echo`, for a several-value message (decodeValues, encodeValues).
    func echoValues(_ bytes: [UInt8]) throws -> [UInt8] {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        let (n, e) = bytes.withUnsafeBytes { ValueDecoder.decodeValues(L, $0) }
        if let e { throw LuaSideError(message: "decodeValues: \(e)") }
        var enc = ValueEncoder(capacity: 64)
        if let e = enc.encodeValues(L, from: top + 1, count: n, path: "values") { throw LuaSideError(message: "encodeValues: \(e)") }
        return Array(enc.bytes)
    }

    /// The bytes ValueEncoder writes for the value `code` returns.
    func encode(_ code: String) throws -> [UInt8] {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        if luaL_loadstring(L, code) != LUA_OK || jr_lua_pcall(L, 0, 1, 0) != LUA_OK {
            throw LuaSideError(message: "Lua: \(Lua.string(L, -1) ?? "?")")
        }
        return try encodeTop()
    }

    /// Whether `check`, a Lua function body run with the decoded value as
    /// `...`, returns true.
    func check(_ bytes: [UInt8], _ check: String) throws -> Bool {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        guard luaL_loadstring(L, check) == LUA_OK else { throw LuaSideError(message: "Lua: \(Lua.string(L, -1) ?? "?")") }
        if let e = bytes.withUnsafeBytes({ ValueDecoder.decode(L, $0) }) { throw LuaSideError(message: "decode: \(e)") }
        guard jr_lua_pcall(L, 1, 1, 0) == LUA_OK else { throw LuaSideError(message: "Lua: \(Lua.string(L, -1) ?? "?")") }
        return lua_toboolean(L, -1) != 0
    }

    /// Runs `code`, which leaves one value, and keeps that value as the
    /// global `orig`; returns the bytes ValueEncoder writes for it.
    func keep(_ code: String) throws -> [UInt8] {
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        if luaL_loadstring(L, code) != LUA_OK || jr_lua_pcall(L, 0, 1, 0) != LUA_OK {
            throw LuaSideError(message: "Lua: \(Lua.string(L, -1) ?? "?")")
        }
        lua_pushvalue(L, -1)
        lua_setglobal(L, "orig")
        return try encodeTop()
    }

    private func encodeTop() throws -> [UInt8] {
        var enc = ValueEncoder(capacity: 64)
        if let e = enc.encode(L, -1, path: "value") { throw LuaSideError(message: "encode: \(e)") }
        return Array(enc.bytes)
    }
}

struct LuaSideError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
