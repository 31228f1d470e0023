import CJobrunShims
import CLua
import Glibc

/// `jobrun.Queue` and `jobrun.JoinableQueue`: a userdata type per liolib.c's
/// pattern (metatable name, check helper, method table, metamethods). The
/// methods are Swift functions that return a status; the trampoline raises.
enum QueueBindings {
    static let queueName = "jobrun.Queue"
    static let joinableName = "jobrun.JoinableQueue"
    static func register(_ L: LuaState, module: Int32) {
        let methods: [(String, jr_swift_fn)] = [
            ("put", queuePut), ("get", queueGet), ("put_nowait", queuePutNowait), ("get_nowait", queueGetNowait),
            ("qsize", queueQsize), ("empty", queueEmpty), ("full", queueFull), ("close", queueClose), ("_next", queueNext),
            ("_put_slice", queuePutSlice), ("_get_into", queueGetInto),
        ]
        // This process's two metatables (one Lua state per process).
        let hot = ProcessContext.hot(L)
        hot.pointee.queueMeta = ObjectBindings.registerType(L, queueName, toString: queueToString, methods: methods)
        hot.pointee.joinableMeta = ObjectBindings.registerType(L, joinableName, toString: queueToString,
                                                             methods: methods + [("task_done", queueTaskDone), ("join", queueJoin)])
        Lua.setFunction(L, "Queue", newQueue)
        Lua.setFunction(L, "JoinableQueue", newJoinableQueue)
        PoolBindings.register(L)
    }

    // MARK: helpers

    /// The queue at index 1, or nil (an error is then pushed).
    /// One metatable lookup for both kinds: this runs for every put, get
    /// and task_done.
    @inline(__always)
    static func check(_ L: LuaState, _ method: String, joinableOnly: Bool = false) -> SharedQueue? {
        if let p = lua_touserdata(L, 1), lua_getmetatable(L, 1) != 0 {
            let mt = lua_topointer(L, -1)
            jr_lua_pop(L, 1)
            let hot = ProcessContext.hot(L)
            if mt == hot.pointee.joinableMeta || (!joinableOnly && mt == hot.pointee.queueMeta) {
                let h = p.assumingMemoryBound(to: ObjectHandle.self)
                if h.pointee.closed == 0 { return SharedQueue(offset: h.pointee.offset) }
            }
        }
        Lua.pushError(L, .TypeError) {
            "\(method): expected \(joinableOnly ? "a JoinableQueue" : "a Queue") as self (use q:\(method)(...)), got \(Lua.typeName(L, 1))"
        }
        return nil
    }

    /// "Queue#3", or with a name: `Queue#3 "results"`.
    static func label(_ q: SharedQueue) -> String { "\(q.isJoinable ? "JoinableQueue" : "Queue")#\(q.id)\(quotedName(q.label))" }

    static func fail(_ L: LuaState, _ e: Error) -> Int32 { Lua.raise(L, e) }

    /// Reads put's or get's optional `block` and `timeout` at `index` and
    /// `index + 1`; false with the error pushed when they are wrong (out of
    /// line: the common call has neither).
    @inline(never)
    static func blockAndTimeout(_ L: LuaState, _ q: SharedQueue, at index: Int32, _ method: String,
                                _ block: inout Bool, _ timeout: inout Double?) -> Bool {
        do {
            block = try Lua.optBool(L, index, true, method, "block")
            timeout = try Lua.optTimeout(L, index + 1, method)
            return true
        } catch {
            _ = Lua.raise(L, error, object: label(q))
            return false
        }
    }

    // MARK: constructors

    static let newQueue: jr_swift_fn = { L in construct(L!, joinable: false) }
    static let newJoinableQueue: jr_swift_fn = { L in construct(L!, joinable: true) }

    static func construct(_ L: LuaState, joinable: Bool) -> Int32 {
        let fn = joinable ? "JoinableQueue" : "Queue"
        var maxsize: Int64 = 0
        var redeliver = false
        var name = ""
        var listed = true
        do {
            if lua_type(L, 1) == LUA_TTABLE {
                Lua.rawField(L, 1, "maxsize")
                maxsize = try Lua.optInteger(L, -1, 0, fn, "maxsize") ?? 0
                Lua.rawField(L, 1, "redeliver")
                redeliver = try Lua.optBool(L, -1, false, fn, "redeliver")
                name = try Lua.optName(L, 1, fn)
                // The pool's scratch queue for probing values: not shown in --stats.
                Lua.rawField(L, 1, "_unlisted")
                listed = lua_toboolean(L, -1) == 0
                jr_lua_pop(L, 3)
            } else {
                maxsize = try Lua.optInteger(L, 1, 0, fn, "maxsize") ?? 0
            }
        } catch { return fail(L, error) }
        if redeliver && !joinable {
            return Lua.raise(L, .ValueError, "Queue: redeliver needs a JoinableQueue (it redelivers items not marked done)")
        }
        do {
            let site = Lua.userWhere(L)
            let off = try ObjectHandle.collectingIfShort(L) { () throws(Arena.AllocFailure) in
                try SharedQueue.create(maxsize: max(0, maxsize), joinable: joinable, redeliver: redeliver,
                                       label: name, site: site, listed: listed)
            }
            guard ObjectHandle.pushNew(L, type: joinable ? JR_OBJ_JOINABLE_QUEUE : JR_OBJ_QUEUE, offset: off) else {
                return Lua.raise(L, .ValueError, "\(fn): out of shared memory (object table)")
            }
            return 1
        } catch {
            return Lua.raise(L, .ValueError, "\(fn): out of shared memory")
        }
    }

    // MARK: put / get

    static let queuePut: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "put") else { return -1 }
        var block = true, timeout: Double? = nil
        // q:put(item), the common call, has no options.
        if lua_gettop(L) > 2 && !blockAndTimeout(L, q, at: 3, "put", &block, &timeout) { return -1 }
        return put(L, q, block: block, timeout: timeout)
    }

    static let queuePutNowait: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "put_nowait") else { return -1 }
        return put(L, q, block: false, timeout: nil)
    }

    static func put(_ L: LuaState, _ q: SharedQueue, block: Bool, timeout: Double?) -> Int32 {
        if lua_gettop(L) < 2 {
            return Lua.raise(L, .TypeError) { "\(label(q)).put: missing item (use q:put(nil) to send nil)" }
        }
        if lua_type(L, 2) == LUA_TSTRING {
            var len = 0
            let p = jr_lua_tostring(L, 2, &len)!
            let size = ValueEncoder.stringSize(len)
            // Straight into the ring, or into the item's own block when too
            // big for it: one copy instead of two.
            let deadline = Deadline(timeout: block ? timeout : 0)
            let r = size > SharedQueue.inlineLimit
                ? q.putExternal(count: size, block: block, deadline: deadline) { ValueEncoder.writeString(p, len, to: $0) }
                : q.putInline(count: size, block: block, deadline: deadline) { ValueEncoder.writeString(p, len, to: $0) }
            return outcome(L, q, r, block: block, timeout: timeout)
        }
        ProcessContext.hot(L).pointee.encoder.reset()
        if let err = ProcessContext.hot(L).pointee.encoder.encode(L, 2, path: "item") {
            return Lua.raise(L, .TypeError) { "\(label(q)).put: \(err)" }
        }
        return enqueue(L, q, block: block, timeout: timeout)
    }

    /// `q:_put_slice(head, list, first, count)`, for `Pool` only: a blocking
    /// put of `{head[1], ..., head[m], {list[first], ..., list[first + count - 1]}}`
    /// (raw reads), without building the slice as a table; see
    /// `ValueEncoder.encodeWithSlice`.
    static let queuePutSlice: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "_put_slice") else { return -1 }
        return putSlice(L, q)
    }

    /// `_put_slice`'s put, of the arguments at 2...5, into `q` (also Pool's
    /// ledgered puts, PoolBindings).
    static func putSlice(_ L: LuaState, _ q: SharedQueue) -> Int32 {
        let first = lua_tointegerx(L, 4, nil), count = lua_tointegerx(L, 5, nil)
        guard lua_type(L, 2) == LUA_TTABLE, lua_type(L, 3) == LUA_TTABLE, lua_isinteger(L, 4) != 0,
              lua_isinteger(L, 5) != 0, first >= 1, count >= 0, count <= lua_Integer(Int32.max),
              first <= lua_Integer.max - count else {
            return Lua.raise(L, .TypeError, "\(label(q))._put_slice: expected (head table, list table, first >= 1, count >= 0)")
        }
        ProcessContext.hot(L).pointee.encoder.reset()
        if let err = ProcessContext.hot(L).pointee.encoder.encodeWithSlice(L, head: 2, list: 3, first: first, length: Int(count), path: "item") {
            return Lua.raise(L, .TypeError, "\(label(q)).put: \(err)")
        }
        return enqueue(L, q, block: true, timeout: nil)
    }

    /// `q:_get_into(block, timeout, field, routes, key)`: `get` of a message
    /// `{...}` whose field `field` (a list) is decoded straight into the table
    /// that `routes[message[key]]` names (`ValueDecoder.Destination.routed`);
    /// Pool's caller receives its chunks of results this way.
    static let queueGetInto: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "_get_into") else { return -1 }
        let field = lua_tointegerx(L, 4, nil), key = lua_tointegerx(L, 6, nil)
        guard lua_isinteger(L, 4) != 0, lua_type(L, 5) == LUA_TTABLE, lua_isinteger(L, 6) != 0,
              field >= 2, field <= 255, key >= 1, key < field else {
            return Lua.raise(L, .TypeError, "\(label(q))._get_into: expected (block, timeout, field, routes table, key field before it)")
        }
        let block: Bool, timeout: Double?
        do {
            block = try Lua.optBool(L, 2, true, "_get_into", "block")
            timeout = try Lua.optTimeout(L, 3, "_get_into")
        } catch { return fail(L, error) }
        return get(L, q, block: block, timeout: timeout, spreading: (Int(field), .routed(routes: 5, key: Int(key))))
    }

    /// Puts the message in `ProcessContext.hot(L).pointee.encoder` and maps the outcome to Lua.
    static func enqueue(_ L: LuaState, _ q: SharedQueue, block: Bool, timeout: Double?) -> Int32 {
        let r = q.put(ProcessContext.hot(L).pointee.encoder.bytes, block: block, deadline: Deadline(timeout: block ? timeout : 0))
        if case .ok = r { ProcessContext.hot(L).pointee.encoder.keepReferences(in: &q.q.pointee.hdr) } else { ProcessContext.hot(L).pointee.encoder.dropReferences() }
        return outcome(L, q, r, block: block, timeout: timeout)
    }

    /// 0, or the error a put's result calls for.
    @inline(__always)
    static func outcome(_ L: LuaState, _ q: SharedQueue, _ result: SharedQueue.PutResult, block: Bool, timeout: Double?) -> Int32 {
        if case .ok = result { return 0 }
        return putFailed(L, q, result, block: block, timeout: timeout)
    }

    /// The error a put that did not happen raises (out of line: the per-item
    /// path never comes here).
    @inline(never)
    private static func putFailed(_ L: LuaState, _ q: SharedQueue, _ result: SharedQueue.PutResult, block: Bool, timeout: Double?) -> Int32 {
        switch result {
        case .ok: return 0
        case .closed: return Lua.raise(L, .Closed, "\(label(q)).put: the queue is closed")
        case .full:
            if q.maxsize > 0 && Int64(q.count) >= q.maxsize {
                let waited = block && timeout != nil ? " after waiting \(timeout!) s" : ""
                return Lua.raise(L, .Full, "\(label(q)) is full (maxsize \(q.maxsize))\(waited)")
            }
            return Lua.raise(L, .Full, "\(label(q)).put: shared memory limit reached (\(Arena.bytesInUse >> 20) of \(Arena.limit >> 20) MiB in use)")
        case .noMemory(let m): return Lua.raise(L, .ValueError, "\(label(q)).put: \(m)")
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(label(q)).put")
        }
    }

    static let queueGet: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "get") else { return -1 }
        var block = true, timeout: Double? = nil
        // q:get(), the common call, has no options.
        if lua_gettop(L) > 1 && !blockAndTimeout(L, q, at: 2, "get", &block, &timeout) { return -1 }
        return get(L, q, block: block, timeout: timeout)
    }

    static let queueGetNowait: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "get_nowait") else { return -1 }
        return get(L, q, block: false, timeout: nil)
    }

    /// `spreading`: a field of the message decoded in place (`_get_into`).
    /// Always inlined into queueGet: see SharedQueue.get.
    @inline(__always)
    static func get(_ L: LuaState, _ q: SharedQueue, block: Bool, timeout: Double?) -> Int32 {
        var decodeError: String? = nil
        let r = q.get(block: block, deadline: Deadline(timeout: block ? timeout : 0), scratch: &ProcessContext.hot(L).pointee.scratch) { bytes in
            decodeError = ValueDecoder.decode(L, bytes, adopting: q.itemsAreHandedOver)
        }
        if case .ok = r, decodeError == nil { return 1 }
        return getFailed(L, q, r, decodeError: decodeError, block: block, timeout: timeout)
    }

    /// `get` for a receiver of chunks of a list (Pool's results): the field
    /// `spreading.field` of the message is decoded into `spreading.into`. A
    /// pool's caller waits for whole chunks, tens of microseconds apart at
    /// best: it sleeps at once rather than spin on a core its workers need.
    static func get(_ L: LuaState, _ q: SharedQueue, block: Bool, timeout: Double?,
                    spreading: (field: Int, into: ValueDecoder.Destination)) -> Int32 {
        var decodeError: String? = nil
        let r = q.get(block: block, deadline: Deadline(timeout: block ? timeout : 0), scratch: &ProcessContext.hot(L).pointee.scratch,
                      spin: false) { bytes in
            decodeError = ValueDecoder.decode(L, bytes, spreading: spreading.field, into: spreading.into, adopting: q.itemsAreHandedOver)
        }
        if case .ok = r, decodeError == nil { return 1 }
        return getFailed(L, q, r, decodeError: decodeError, block: block, timeout: timeout)
    }

    /// The error a get that found no item, or could not decode it, raises
    /// (out of line: the per-item path never comes here).
    @inline(never)
    private static func getFailed(_ L: LuaState, _ q: SharedQueue, _ r: SharedQueue.GetResult, decodeError: String?,
                                  block: Bool, timeout: Double?) -> Int32 {
        switch r {
        case .ok:
            return Lua.raise(L, .ValueError, "\(label(q)).get: \(decodeError ?? "")")
        case .empty:
            let waited = block && timeout != nil ? " after waiting \(timeout!) s" : ""
            return Lua.raise(L, .Empty, "\(label(q)) is empty\(waited)")
        case .closed:
            return Lua.raise(L, .Closed, "\(label(q)).get: the queue is closed and drained")
        case .noMemory(let m, let lasting):
            return Lua.raise(L, lasting ? .ValueError : .Empty, "\(label(q)).get: \(m)")
        case .failed(let f):
            return ProcessRegistry.raiseFailure(L, f, in: "\(label(q)).get")
        }
    }

    /// `_next()` for `items()`: returns true, item; or false once closed and drained.
    static let queueNext: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "items") else { return -1 }
        lua_pushboolean(L, 1)
        var decodeError: String? = nil
        let r = q.get(block: true, deadline: Deadline(timeout: nil), scratch: &ProcessContext.hot(L).pointee.scratch) { bytes in
            decodeError = ValueDecoder.decode(L, bytes, adopting: q.itemsAreHandedOver)
        }
        switch r {
        case .ok:
            if let e = decodeError { return Lua.raise(L, .ValueError, "\(label(q)).get: \(e)") }
            return 2
        case .closed, .empty:
            jr_lua_pop(L, 1)
            lua_pushboolean(L, 0)
            return 1
        case .noMemory(let m, _):
            return Lua.raise(L, .ValueError, "\(label(q)).get: \(m)")
        case .failed(let f):
            return ProcessRegistry.raiseFailure(L, f, in: "\(label(q)).get")
        }
    }

    // MARK: state

    static let queueQsize: jr_swift_fn = { L in
        guard let q = check(L!, "qsize") else { return -1 }
        lua_pushinteger(L, lua_Integer(q.count)); return 1
    }
    static let queueEmpty: jr_swift_fn = { L in
        guard let q = check(L!, "empty") else { return -1 }
        lua_pushboolean(L, q.count == 0 ? 1 : 0); return 1
    }
    static let queueFull: jr_swift_fn = { L in
        guard let q = check(L!, "full") else { return -1 }
        lua_pushboolean(L, q.maxsize > 0 && Int64(q.count) >= q.maxsize ? 1 : 0); return 1
    }
    static let queueClose: jr_swift_fn = { L in
        guard let q = check(L!, "close") else { return -1 }
        q.close(); return 0
    }

    static let queueTaskDone: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "task_done", joinableOnly: true) else { return -1 }
        switch q.taskDone() {
        case .ok: return 0
        case .tooMany: return Lua.raise(L, .ValueError) { "\(label(q)).task_done() called too many times" }
        }
    }

    static let queueJoin: jr_swift_fn = { L in
        let L = L!
        guard let q = check(L, "join", joinableOnly: true) else { return -1 }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "join") } catch { return Lua.raise(L, error, object: label(q)) }
        switch q.join(deadline: Deadline(timeout: timeout)) {
        case .ok: lua_pushboolean(L, 1); return 1
        case .timedOut: lua_pushboolean(L, 0); return 1
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(label(q)).join")
        case .workerDied(let m): return Lua.raise(L, .WorkerDied, "\(label(q)).join: \(m)")
        }
    }

    static let queueToString: jr_swift_fn = { L in
        let L = L!
        if let n = ObjectHandle.closedToString(L, 1) { return n }
        guard let q = check(L, "__tostring") else { return -1 }
        let size = q.maxsize > 0 ? ", maxsize \(q.maxsize)" : ""
        Lua.pushString(L, "\(label(q)) (\(q.count) items\(size))")
        return 1
    }
}
