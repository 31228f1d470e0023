import CJobrunShims
import CLua
import Glibc
import SystemPackage

/// The Lua state of a plug-in worker (PluginWorker holds it): made as the
/// command line makes one (Host.newState: standard libraries, the whole
/// `jobrun` module, text-only loaders), with a memory budget of its own,
/// then prelude/plugins.lua, which loads, reloads and calls plug-ins and
/// returns its `dispatch` function, kept in the registry.
final class PluginState {
    private let L: LuaState
    private let dispatchRef: Int32
    private var encoder = ValueEncoder(capacity: 256)
    private var memoryLimit: Int?
    private let pluginMemory: [String: Int]

    init(directory: String, options: PluginWorker.Options, allowed: [String]) throws(JobrunError) {
        memoryLimit = options.memoryLimit
        pluginMemory = options.pluginMemory
        // The module and the prelude are made before the limit applies: a
        // limit too small for them fails the first call, not the worker.
        guard let L = Host.newState(packageDirectory: directory, budget: 0) else {
            throw JobrunError(.processError, "cannot create the plug-in worker's Lua state")
        }
        self.L = L
        guard Prelude.load(L, "plugins.lua") == LUA_OK else {
            let message = Lua.string(L, -1) ?? "?"
            jr_lua_close_budgeted(L)
            throw JobrunError(.processError, "internal error: \(message)")
        }
        Lua.pushModule(L)
        Lua.pushString(L, directory)
        lua_pushboolean(L, options.restricted ? 1 : 0)
        lua_createtable(L, Int32(allowed.count), 0)
        for (i, a) in allowed.enumerated() { Lua.pushString(L, a); lua_rawseti(L, -2, lua_Integer(i + 1)) }
        jr_push_swift_function(L, PluginState.signature)
        jr_push_swift_function(L, PluginState.realPath)
        jr_push_swift_function(L, PluginState.write)
        lua_pushinteger(L, lua_Integer(options.outputFD))
        jr_push_swift_function(L, CoreBindings.getpid)
        guard jr_lua_pcall(L, 9, 1, 0) == LUA_OK, lua_type(L, -1) == LUA_TFUNCTION else {
            let message = Lua.string(L, -1) ?? "plugins.lua did not return its dispatch function"
            jr_lua_close_budgeted(L)
            throw JobrunError(.processError, "internal error: \(message)")
        }
        dispatchRef = luaL_ref(L, jr_registryindex())
        jr_lua_collect(L)
        if let limit = options.memoryLimit { _ = jr_lua_set_limit(L, max(1, limit)) }
    }

    deinit {
        // Not Host.closeState: this state's budget goes with it. Objects the
        // plug-ins held are released by their finalizers.
        jr_lua_close_budgeted(L)
    }

    /// Stops the processes the plug-ins started and did not join
    /// (jobrun._shutdown after an error: terminate, then kill), as a worker
    /// ends. The state stays usable.
    func stopChildren() { Host.shutdown(L, abort: true) }

    func setMemoryLimit(_ bytes: Int?) {
        memoryLimit = bytes
        _ = jr_lua_set_limit(L, bytes.map { max(1, $0) } ?? 0)
    }

    var memoryInUse: Int { jr_lua_allocated_bytes(L) }

    /// One request -> one response (PluginMessage). The Swift steps (decode,
    /// encode) run as a bound function would (jr_swift_depth), so Lua's
    /// allocator never fails under them; only the call itself, run by
    /// jr_lua_pcall, may meet the memory limit.
    func handle(_ request: [UInt8], check: Bool) -> [UInt8] {
        request.withUnsafeBytes { handle($0, check: check) }
    }

    func handle(_ request: UnsafeRawBufferPointer, check: Bool) -> [UInt8] {
        jr_swift_enter()
        defer { jr_swift_leave() }
        let top = lua_gettop(L)
        defer { lua_settop(L, top) }
        let (n, err) = ValueDecoder.decodeValues(L, request)
        if let err { return PluginMessage.errorResponse(id: 0, code: .badRequest, message: "request: \(err)") }
        let id = lua_isinteger(L, top + 1) != 0 ? lua_tointegerx(L, top + 1, nil) : 0
        guard n == Int32(PluginMessage.requestCount), lua_isinteger(L, top + 1) != 0,
              lua_type(L, top + 2) == LUA_TSTRING, lua_type(L, top + 3) == LUA_TSTRING else {
            return PluginMessage.errorResponse(id: id, code: .badRequest,
                message: "request: expected (id, plugin, function, argument): an integer and two strings first, then any value")
        }
        if !pluginMemory.isEmpty {
            // This plug-in's limit while its call runs, else the worker's.
            let limit = Lua.string(L, top + 2).flatMap { pluginMemory[$0] } ?? memoryLimit
            _ = jr_lua_set_limit(L, limit.map { max(1, $0) } ?? 0)
        }
        // dispatch(plugin, function, argument, check) -> ok, result | false, error
        lua_rawgeti(L, jr_registryindex(), lua_Integer(dispatchRef))
        lua_pushvalue(L, top + 2)
        lua_pushvalue(L, top + 3)
        lua_pushvalue(L, top + 4)
        lua_pushboolean(L, check ? 1 : 0)
        let status = jr_lua_pcall(L, 4, 2, 0)
        if status != LUA_OK {
            let message = status == LUA_ERRMEM ? "not enough memory: the worker's Lua memory limit was reached"
                : (Lua.string(L, -1) ?? "internal error in the plug-in worker")
            jr_lua_collect(L)
            return PluginMessage.errorResponse(id: id, code: status == LUA_ERRMEM ? .limitExceeded : .luaError,
                                               message: message, plugin: Lua.string(L, top + 2) ?? "",
                                               function: Lua.string(L, top + 3) ?? "")
        }
        // The response: id, ok, result or error.
        lua_pushvalue(L, top + 1)
        lua_rotate(L, -3, 1)
        defer { encoder.reset() }
        if let e = encoder.encodeValues(L, from: -3, count: 3, path: "response") {
            let reason = e.hasPrefix("response[3]") ? "result" + e.dropFirst("response[3]".count) : Substring(e)
            return PluginMessage.errorResponse(id: id, code: .unsendableResult, message: String(reason),
                                               plugin: Lua.string(L, top + 2) ?? "", function: Lua.string(L, top + 3) ?? "")
        }
        if !encoder.references.isEmpty {   // a jobrun object the check missed: never sent to the host
            return PluginMessage.errorResponse(id: id, code: .unsendableResult, message: "result: a jobrun object cannot be a LuaValue",
                                               plugin: Lua.string(L, top + 2) ?? "", function: Lua.string(L, top + 3) ?? "")
        }
        return Array(encoder.bytes)
    }

    // MARK: bound functions (plugins.lua's signature, realpath, write)

    /// signature(path) -> an integer that changes when the file does
    /// (device, inode, size, mtime, ctime), or false and "missing" or the reason.
    static let signature: jr_swift_fn = { L in
        let L = L!
        var len = 0
        guard lua_type(L, 1) == LUA_TSTRING, let p = jr_lua_tostring(L, 1, &len) else { lua_pushboolean(L, 0); return 1 }
        var st = stat()
        if stat(p, &st) != 0 {
            let e = errno
            lua_pushboolean(L, 0)
            Lua.pushString(L, e == ENOENT || e == ENOTDIR ? "missing" : String(cString: strerror(e)))
            return 2
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { lua_pushboolean(L, 0); Lua.pushString(L, "missing"); return 2 }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ v: UInt64) { h = (h ^ v) &* 0x100_0000_01b3; h ^= h >> 29 }
        mix(UInt64(st.st_dev)); mix(UInt64(st.st_ino)); mix(UInt64(bitPattern: Int64(st.st_size)))
        mix(UInt64(bitPattern: Int64(st.st_mtim.tv_sec))); mix(UInt64(bitPattern: Int64(st.st_mtim.tv_nsec)))
        mix(UInt64(bitPattern: Int64(st.st_ctim.tv_sec))); mix(UInt64(bitPattern: Int64(st.st_ctim.tv_nsec)))
        lua_pushinteger(L, lua_Integer(bitPattern: h))
        return 1
    }

    /// realpath(path) -> the real path, or nil.
    static let realPath: jr_swift_fn = { L in
        let L = L!
        guard let s = Lua.string(L, 1), let real = PluginWorker.realPath(s) else { lua_pushnil(L); return 1 }
        Lua.pushString(L, real)
        return 1
    }

    /// write(fd, text): all of it, on the descriptor.
    static let write: jr_swift_fn = { L in
        let L = L!
        var len = 0
        guard let p = jr_lua_tostring(L, 2, &len) else { return 0 }
        // Bytes as they are (a plug-in may write binary); swift-system retries interrupted writes.
        _ = try? FileDescriptor(rawValue: Int32(truncatingIfNeeded: lua_tointegerx(L, 1, nil)))
            .writeAll(UnsafeRawBufferPointer(start: p, count: len))
        return 0
    }
}
