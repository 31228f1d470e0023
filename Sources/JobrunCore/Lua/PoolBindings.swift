import CJobrunShims
import CLua
import Glibc

/// The Lua side of a Pool's shared state (SharedPool): a handle only
/// prelude/pool.lua uses (`core`-like, not part of the API), with methods
/// `_take`, `_send`, `_put`, `_wait`, `_ended`, `_vacate`, `_notify`, and for
/// per-item timeouts `_begin` (worker) and `_item`, `_held` (caller).
/// Forked workers inherit it with the Lua state; it cannot be sent through a
/// queue.
enum PoolBindings {
    static let typeName = "jobrun.PoolState"

    static func register(_ L: LuaState) {
        luaL_newmetatable(L, typeName)
        ProcessContext.hot(L).pointee.poolMeta = lua_topointer(L, -1)
        Lua.setFunction(L, "__gc", release)
        lua_createtable(L, 0, 10)
        for (name, fn) in [("_take", take), ("_send", send), ("_put", put), ("_wait", wait),
                           ("_vacate", vacate), ("_notify", notify), ("_ended", ended),
                           ("_begin", begin), ("_item", item), ("_held", held)] as [(String, jr_swift_fn)] {
            Lua.setFunction(L, name, fn)
        }
        lua_setfield(L, -2, "__index")
        jr_lua_pop(L, 1)
        Lua.setFunction(L, "_pool_state", new)
    }

    /// `__gc`: the pool's state is released with the pool (not sendable,
    /// so not marked `__jobrun`: released here by its metatable alone).
    static let release: jr_swift_fn = { L in
        if let p = lua_touserdata(L, 1)?.assumingMemoryBound(to: ObjectHandle.self), p.pointee.closed == 0 {
            p.pointee.closed = 1
            ObjectTable.dropHandle(p.pointee.slot)
        }
        return 0
    }

    static func check(_ L: LuaState) -> SharedPool? {
        if let h = ObjectHandle.check(L, 1, metatable: ProcessContext.hot(L).pointee.poolMeta) { return SharedPool(offset: h.offset) }
        Lua.pushError(L, .TypeError, "Pool: internal state expected")
        return nil
    }

    /// The queue at `index` (a Queue handle).
    static func queue(_ L: LuaState, _ index: Int32) -> SharedQueue? {
        guard let h = ObjectHandle.check(L, index), h.type == UInt32(JR_OBJ_QUEUE) else { return nil }
        return SharedQueue(offset: h.offset)
    }

    /// `_pool_state(task_q, res_q, nslots)`.
    static let new: jr_swift_fn = { L in
        let L = L!
        guard let tq = queue(L, 1), let rq = queue(L, 2), lua_isinteger(L, 3) != 0 else {
            return Lua.raise(L, .TypeError, "Pool: internal state needs (task queue, result queue, slots)")
        }
        let n = Int(max(1, min(lua_tointegerx(L, 3, nil), 1 << 20)))
        PoolBindings.startCounting()
        do {
            let off = try SharedPool.create(taskQueue: tq.offset, resultQueue: rq.offset, slots: n)
            guard let (slot, generation) = try? ObjectTable.register(type: JR_OBJ_POOL, offset: off) else {
                SharedPool(offset: off).destroy()
                Arena.free(off)
                return Lua.raise(L, .ValueError, "Pool: out of shared memory (object table)")
            }
            let ud = jr_lua_newuserdata(L, MemoryLayout<ObjectHandle>.size)!
            ud.assumingMemoryBound(to: ObjectHandle.self).initialize(
                to: ObjectHandle(offset: off, slot: slot, generation: generation, type: UInt32(JR_OBJ_POOL)))
            luaL_setmetatable(L, typeName)
            return 1
        } catch {
            return Lua.raise(L, .ValueError, "Pool: out of shared memory")
        }
    }

    static func slotIndex(_ L: LuaState, _ pool: SharedPool, _ index: Int32) -> Int? {
        guard lua_isinteger(L, index) != 0 else { return nil }
        let i = Int(lua_tointegerx(L, index, nil)) - 1
        return i >= 0 && i < pool.slotCount ? i : nil
    }

    /// `state:_take(slot, field, buffer)` (worker): the next task, a message
    /// whose field `field` (the list of items) is decoded into `buffer` from
    /// 1 on, or nil (the sentinel put by join). Waits while there is none.
    static let take: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        let field = lua_tointegerx(L, 3, nil)
        guard let i = slotIndex(L, pool, 2), lua_isinteger(L, 3) != 0, field >= 1, field <= 255,
              lua_type(L, 4) == LUA_TTABLE else {
            return Lua.raise(L, .TypeError, "Pool: _take(slot, field, buffer)")
        }
        var decodeError: String? = nil
        pool.take(slot: i, scratch: &ProcessContext.hot(L).pointee.scratch) { bytes in
            decodeError = ValueDecoder.decode(L, bytes, spreading: Int(field), into: .table(4, first: 1), adopting: true)
        }
        if let e = decodeError { return Lua.raise(L, .ValueError, "Pool: cannot read a task: \(e)") }
        return 1
    }

    /// `state:_send(slot, head, list, first, count)` (worker): puts the
    /// result message on the result queue as `_put_slice` does, then frees
    /// the slot and wakes the caller.
    static let send: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        guard let i = slotIndex(L, pool, 2) else { return Lua.raise(L, .TypeError, "Pool: _send(slot, ...)") }
        jr_lua_remove(L, 2)          // now (state, head, list, first, count)
        let r = QueueBindings.putSlice(L, pool.resultQueue)
        if r < 0 { return r }
        pool.finished(slot: i)
        return 0
    }

    /// `state:_put(head, list, first, count)` (caller): puts a task on the
    /// task queue (`state:_put()`: the nil sentinel) and returns its number.
    static let put: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        let tq = pool.taskQueue
        if lua_gettop(L) == 1 {
            ProcessContext.hot(L).pointee.encoder.reset()
            lua_pushnil(L)
            if let err = ProcessContext.hot(L).pointee.encoder.encode(L, 2, path: "item") { return Lua.raise(L, .TypeError, "Pool: \(err)") }
            let r = QueueBindings.enqueue(L, tq, block: true, timeout: nil)
            if r < 0 { return r }
        } else {
            let r = QueueBindings.putSlice(L, tq)
            if r < 0 { return r }
        }
        pool.notifyWorkers()
        lua_pushinteger(L, lua_Integer(truncatingIfNeeded: tq.q.pointee.total_put))
        return 1
    }

    /// `state:_wait(timeout, seen)` (caller): returns the count of ended
    /// children (to compare with `seen`) once a result is queued, a child
    /// has ended, or the timeout (nil: none) has passed.
    static let wait: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "Pool") } catch { return Lua.raise(L, error) }
        let seen = UInt32(truncatingIfNeeded: lua_tointegerx(L, 3, nil))
        switch pool.waitForResults(deadline: Deadline(timeout: timeout), seen: seen) {
        case .ready, .timedOut:
            lua_pushinteger(L, lua_Integer(jr_sigchld_count()))
            return 1
        case .failed(let f):
            return ProcessRegistry.raiseFailure(L, f, in: "Pool#\(pool.id) results")
        }
    }

    /// `state:_vacate(slot)` (caller, after the slot's worker ended): the
    /// number of the task it held, or nil.
    static let vacate: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        guard let i = slotIndex(L, pool, 2) else { return Lua.raise(L, .TypeError, "Pool: _vacate(slot)") }
        if let t = pool.vacate(slot: i) { lua_pushinteger(L, lua_Integer(truncatingIfNeeded: t)) } else { lua_pushnil(L) }
        return 1
    }

    /// `state:_begin(slot, task, item)` (worker): starts item `item` of task
    /// `task` now (SharedPool.begin); only for a task with a timeout.
    static let begin: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        guard let i = slotIndex(L, pool, 2), lua_isinteger(L, 3) != 0, lua_isinteger(L, 4) != 0 else {
            return Lua.raise(L, .TypeError, "Pool: _begin(slot, task, item)")
        }
        pool.begin(slot: i, task: UInt64(truncatingIfNeeded: lua_tointegerx(L, 3, nil)),
                   item: UInt64(truncatingIfNeeded: lua_tointegerx(L, 4, nil)))
        return 0
    }

    /// `state:_item(slot)` (caller) -> task, item, started (seconds on
    /// core.time's clock) of the item the slot's worker last began, or nil.
    static let item: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        guard let i = slotIndex(L, pool, 2) else { return Lua.raise(L, .TypeError, "Pool: _item(slot)") }
        guard let at = pool.item(slot: i) else { lua_pushnil(L); return 1 }
        lua_pushinteger(L, lua_Integer(truncatingIfNeeded: at.task))
        lua_pushinteger(L, lua_Integer(truncatingIfNeeded: at.item))
        lua_pushnumber(L, Double(at.startedNanos) / 1e9)
        return 3
    }

    /// `state:_held(slot)` (caller) -> the number of the task the slot's
    /// worker holds now, or nil.
    static let held: jr_swift_fn = { L in
        let L = L!
        guard let pool = check(L) else { return -1 }
        guard let i = slotIndex(L, pool, 2) else { return Lua.raise(L, .TypeError, "Pool: _held(slot)") }
        if let t = pool.held(slot: i) { lua_pushinteger(L, lua_Integer(truncatingIfNeeded: t)) } else { lua_pushnil(L) }
        return 1
    }

    /// `state:_notify()` (worker): after a message of its own ("x", "i").
    static let notify: jr_swift_fn = { L in
        guard let pool = check(L!) else { return -1 }
        pool.notifyCaller()
        return 0
    }

    /// `state:_ended()`: the count of ended children of this process, at once.
    static let ended: jr_swift_fn = { L in
        lua_pushinteger(L, lua_Integer(jr_sigchld_count()))
        return 1
    }

    /// The number of children of this process that have ended so far; the
    /// first call starts counting (a SIGCHLD handler).
    static func startCounting() { jr_sigchld_install() }
}
