import CJobrunShims
import CLua

/// A Lua state pointer as Swift sees it.
public typealias LuaState = OpaquePointer

/// The error kinds of lua-api.md; each is also a field of the module.
enum ErrorKind: String, CaseIterable {
    case Empty, Full, Closed, Timeout, ValueError, TypeError, EOF, WorkerDied, Deadlock, ProcessError
}

/// Small helpers over the Lua C API. None of them raises: functions bound to
/// Lua return `raise(...)` (-1) and the C trampoline raises after they return.
enum Lua {
    @inline(__always)
    static func pushString(_ L: LuaState, _ s: String) {
        var s = s
        s.withUTF8 { buf in _ = lua_pushlstring(L, UnsafeRawPointer(buf.baseAddress)?.assumingMemoryBound(to: CChar.self), buf.count) }
    }

    static func string(_ L: LuaState, _ index: Int32) -> String? {
        guard lua_type(L, index) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = jr_lua_tostring(L, index, &len) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    static func typeName(_ L: LuaState, _ index: Int32) -> String {
        if ObjectHandle.isClosed(L, index), lua_getmetatable(L, index) != 0 {
            Lua.rawField(L, -1, "__name")
            defer { jr_lua_pop(L, 2) }
            return "a closed handle (\(string(L, -1) ?? "jobrun object"): close() or <close> released it)"
        }
        if lua_type(L, index) == LUA_TUSERDATA, lua_getmetatable(L, index) != 0 {
            rawField(L, -1, "__name")          // raw: the metatable may have a raising __index
            defer { jr_lua_pop(L, 2) }
            if let n = string(L, -1) { return n }
        }
        return String(cString: lua_typename(L, lua_type(L, index)))
    }

    /// "file:line: " of the Lua code calling the current C function.
    static func whereString(_ L: LuaState, level: Int32 = 1) -> String {
        luaL_where(L, level)
        defer { jr_lua_pop(L, 1) }
        return string(L, -1) ?? ""
    }

    /// "file:line" of the script's code that called the current C function,
    /// through jobrun's prelude (a Pool's queues are made at the line that
    /// made the Pool); "" when no script frame is on the stack.
    static func userWhere(_ L: LuaState) -> String {
        var buf = [CChar](repeating: 0, count: 256)
        jr_lua_user_where(L, 1, &buf, buf.count)
        return String(cString: buf)
    }

    /// Pushes a jobrun error table `{kind=, message=, where=}` with the shared
    /// metatable and returns -1, for a bound function to return.
    static func raise(_ L: LuaState, _ kind: ErrorKind, _ message: String) -> Int32 {
        pushError(L, kind, message)
        return -1
    }

    /// `raise` with a message built only when the error happens. The
    /// per-item functions (put, get, task_done) raise through it, so their
    /// messages' code stays out of them: their size is what the instruction
    /// cache holds per item (docs/performance.md).
    @inline(never)
    static func raise(_ L: LuaState, _ kind: ErrorKind, message: () -> String) -> Int32 {
        raise(L, kind, message())
    }

    /// `pushError`, out of line as `raise(_:_:message:)` is.
    @inline(never)
    static func pushError(_ L: LuaState, _ kind: ErrorKind, message: () -> String) {
        pushError(L, kind, message())
    }

    static func pushError(_ L: LuaState, _ kind: ErrorKind, _ message: String) {
        let place = whereString(L)
        lua_createtable(L, 0, 3)
        pushString(L, kind.rawValue); lua_setfield(L, -2, "kind")
        pushString(L, message); lua_setfield(L, -2, "message")
        if !place.isEmpty {
            pushString(L, String(place.dropLast(2))); lua_setfield(L, -2, "where")
        }
        lua_getfield(L, jr_registryindex(), "jobrun.Error")
        lua_setmetatable(L, -2)
    }

    // MARK: argument checking (lua-api.md names arguments in messages)

    /// A bad argument: wrong type (TypeError) or a value out of range (ValueError).
    /// Raises an argument error caught from the `opt*` helpers.
    static func raise(_ L: LuaState, _ error: Error) -> Int32 {
        if let e = error as? JobrunError { return raise(L, e.code.kind, e.message) }
        return raise(L, .ValueError, "\(error)")
    }

    /// Raises an argument error of a method of `object` (its label), which
    /// the message then names: `Queue#3 "results".get: timeout must be ...`.
    static func raise(_ L: LuaState, _ error: Error, object: String) -> Int32 {
        if let e = error as? JobrunError { return raise(L, e.code.kind, "\(object).\(e.message)") }
        return raise(L, error)
    }

    static func argTypeMessage(_ L: LuaState, _ index: Int32, _ fn: String, _ arg: String, _ expected: String) -> String {
        "\(fn): \(arg) must be \(expected), got \(typeName(L, index))"
    }

    /// Optional boolean (nil/none -> default).
    static func optBool(_ L: LuaState, _ index: Int32, _ def: Bool, _ fn: String, _ arg: String) throws(JobrunError) -> Bool {
        switch lua_type(L, index) {
        case LUA_TNONE, LUA_TNIL: return def
        case LUA_TBOOLEAN: return lua_toboolean(L, index) != 0
        default: throw JobrunError(.typeError, argTypeMessage(L, index, fn, arg, "a boolean"))
        }
    }

    /// The one reading of a timeout, for every binding and (through
    /// `core.timeout`) the prelude: nil/none -> nil (no deadline); a number of
    /// seconds, any size (math.huge -> nil); negative means 0, as in Python.
    /// `negativeIsZero: false` (sleep's seconds) rejects a negative instead.
    static func optTimeout(_ L: LuaState, _ index: Int32, _ fn: String, _ arg: String = "timeout",
                           negativeIsZero: Bool = true) throws(JobrunError) -> Double? {
        switch lua_type(L, index) {
        case LUA_TNONE, LUA_TNIL: return nil
        case LUA_TNUMBER:
            let v = jr_lua_tonumberx(L, index, nil)
            if v.isNaN || (v < 0 && !negativeIsZero) {
                throw JobrunError(.valueError, "\(fn): \(arg) must be a \(negativeIsZero ? "number of seconds" : "non-negative number"), got \(Lua.numberText(v))")
            }
            if v >= Deadline.longest { return nil }   // math.huge, 1e300: no deadline
            return max(0, v)
        default: throw JobrunError(.typeError, argTypeMessage(L, index, fn, arg, "a number"))
        }
    }

    /// Pushes `t[key]` of the table at `table` without metamethods (an
    /// options table's __index must not run, and could raise, from Swift).
    /// Every read of a table a user can reach (options, `self`, metatables,
    /// the globals) goes through here or another raw access: lua_getfield,
    /// lua_gettable, lua_geti, lua_len and lua_getglobal run metamethods.
    @discardableResult
    static func rawField(_ L: LuaState, _ table: Int32, _ key: String) -> Int32 {
        let t = lua_absindex(L, table)
        pushString(L, key)
        return lua_rawget(L, t)
    }

    /// The `name` field of the options table at `table`: a non-empty string
    /// of at most 47 bytes (it is kept in shared memory), or "" when absent.
    static func optName(_ L: LuaState, _ table: Int32, _ fn: String) throws(JobrunError) -> String {
        rawField(L, table, "name")
        defer { jr_lua_pop(L, 1) }
        if jr_lua_isnoneornil(L, -1) != 0 { return "" }
        guard lua_type(L, -1) == LUA_TSTRING, let n = Lua.string(L, -1), !n.isEmpty, n.utf8.count < 48 else {
            let got = lua_type(L, -1) == LUA_TSTRING ? "a string of \(Lua.string(L, -1)?.utf8.count ?? 0) bytes" : typeName(L, -1)
            throw JobrunError(.typeError, "\(fn): name must be a non-empty string of at most 47 bytes, got \(got)")
        }
        return n
    }

    static func optInteger(_ L: LuaState, _ index: Int32, _ def: Int64?, _ fn: String, _ arg: String) throws(JobrunError) -> Int64? {
        switch lua_type(L, index) {
        case LUA_TNONE, LUA_TNIL: return def
        case LUA_TNUMBER:
            var ok: Int32 = 0
            let v = jr_lua_tointegerx(L, index, &ok)
            if ok == 0 {
                // A whole number too large for a Lua integer (2^63, 1e300) is
                // a value out of range; 1.5 and NaN are not integers at all.
                let n = jr_lua_tonumberx(L, index, nil)
                if n.isFinite && n == n.rounded() { throw JobrunError(.valueError, "\(fn): \(arg) must be an integer in range, got \(numberText(n))") }
                throw JobrunError(.typeError, "\(fn): \(arg) must be an integer, got \(numberText(n))")
            }
            return v
        default: throw JobrunError(.typeError, argTypeMessage(L, index, fn, arg, "an integer"))
        }
    }

    static func numberText(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    /// Registry key of the `jobrun` module table: Swift finds it there with
    /// raw lookups, whatever the script did to the global `jobrun` or to
    /// the globals' metatable.
    static let moduleKey = "jobrun.module"

    /// Pushes the `jobrun` module table (raw lookup in the registry).
    static func pushModule(_ L: LuaState) {
        rawField(L, jr_registryindex(), moduleKey)
    }

    /// Sets `t[name] = fn` for the table at the top of the stack.
    static func setFunction(_ L: LuaState, _ name: String, _ fn: jr_swift_fn) {
        jr_push_swift_function(L, fn)
        lua_setfield(L, -2, name)
    }
}
