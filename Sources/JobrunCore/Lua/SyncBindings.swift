import CJobrunShims
import CLua
import Glibc

/// Lua bindings of Lock, RLock, Semaphore, BoundedSemaphore, Event, Barrier
/// and Condition (`with`, `wait_for` and Condition's lock methods are in the
/// prelude). Names and errors follow lua-api.md.
enum SyncBindings {
    static let types: [(Int, String)] = [
        (JR_OBJ_LOCK, "Lock"), (JR_OBJ_RLOCK, "RLock"), (JR_OBJ_SEMAPHORE, "Semaphore"),
        (JR_OBJ_BOUNDED_SEMAPHORE, "BoundedSemaphore"), (JR_OBJ_EVENT, "Event"),
        (JR_OBJ_BARRIER, "Barrier"), (JR_OBJ_CONDITION, "Condition"),
    ]

    static func register(_ L: LuaState) {
        for (type, name) in types {
            let methods: [(String, jr_swift_fn)]
            switch type {
            case JR_OBJ_LOCK, JR_OBJ_RLOCK:
                methods = [("acquire", acquire), ("release", release), ("locked", locked), ("_is_owned", isOwned)]
            case JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE:
                methods = [("acquire", semAcquire), ("release", semRelease), ("value", semValue)]
            case JR_OBJ_EVENT:
                methods = [("set", eventSet), ("clear", eventClear), ("is_set", eventIsSet), ("wait", eventWait)]
            case JR_OBJ_BARRIER:
                methods = [("wait", barrierWait), ("parties", barrierParties), ("n_waiting", barrierWaiting), ("broken", barrierBroken)]
            default:
                methods = [("wait", conditionWait), ("notify", conditionNotify), ("notify_all", conditionNotifyAll), ("_lock", conditionLock)]
            }
            ObjectBindings.registerType(L, "jobrun.\(name)", toString: toString, methods: methods)
        }
        Lua.setFunction(L, "Lock", newLock)
        Lua.setFunction(L, "RLock", newRLock)
        Lua.setFunction(L, "Semaphore", newSemaphore)
        Lua.setFunction(L, "BoundedSemaphore", newBoundedSemaphore)
        Lua.setFunction(L, "Event", newEvent)
        Lua.setFunction(L, "Barrier", newBarrier)
        Lua.setFunction(L, "Condition", newCondition)
    }

    static func typeName(_ type: Int) -> String {
        types.first { $0.0 == type }?.1 ?? "object"
    }

    /// The sync object at index 1 if it is one of `accepted`, else nil with an error pushed.
    static func check(_ L: LuaState, _ method: String, _ accepted: [Int]) -> SharedSync? {
        if let h = ObjectHandle.check(L, 1), accepted.contains(Int(h.type)) { return SharedSync(offset: h.offset) }
        let expected = accepted.map { typeName($0) }.joined(separator: " or ")
        Lua.pushError(L, .TypeError, "\(method): expected a \(expected) as self (use obj:\(method)(...)), got \(Lua.typeName(L, 1))")
        return nil
    }

    /// "Lock#3", or with a name: `Lock#3 "guard"`.
    static func label(_ s: SharedSync) -> String { "\(typeName(s.type))#\(s.id)\(quotedName(cString(&s.s.pointee.label)))" }

    /// The table form of a constructor (`Lock{name = "guard"}`,
    /// `Semaphore{value = 2, name = "slots"}`): its `name` and the number in
    /// field `field`, which the positional form takes as argument 1. Leaves
    /// that number (or nil) at index 1 for the positional parsing.
    static func tableForm(_ L: LuaState, _ fn: String, field: String?) throws -> String {
        guard lua_type(L, 1) == LUA_TTABLE else { return "" }
        let name = try Lua.optName(L, 1, fn)
        if let field { Lua.rawField(L, 1, field) } else { lua_pushnil(L) }
        jr_lua_replace(L, 1)
        return name
    }

    static func push(_ L: LuaState, _ type: Int, name: String = "", _ make: () throws(Arena.AllocFailure) -> UInt64) -> Int32 {
        do {
            let off = try ObjectHandle.collectingIfShort(L, make)
            copyCString(name, into: &SharedSync(offset: off).s.pointee.label)
            guard ObjectHandle.pushNew(L, type: type, offset: off) else {
                return Lua.raise(L, .ValueError, "\(typeName(type)): out of shared memory (object table)")
            }
            return 1
        } catch {
            return Lua.raise(L, .ValueError, "\(typeName(type)): out of shared memory")
        }
    }

    /// (block, timeout) at indices i, i+1, as acquire() takes them.
    static func blockAndTimeout(_ L: LuaState, _ i: Int32, _ fn: String) throws -> (Bool, Deadline) {
        let block = try Lua.optBool(L, i, true, fn, "block")
        let timeout = try Lua.optTimeout(L, i + 1, fn)
        return (block, Deadline(timeout: block ? timeout : 0))
    }

    // MARK: constructors

    /// Lock(), RLock(), Event(), or their table form `{name = "..."}`.
    static func newPlain(_ L: LuaState, _ type: Int) -> Int32 {
        let name: String
        do { name = try tableForm(L, typeName(type), field: nil) } catch { return Lua.raise(L, error) }
        return push(L, type, name: name) { () throws(Arena.AllocFailure) in try SharedSync.create(type: type) }
    }
    static let newLock: jr_swift_fn = { L in newPlain(L!, JR_OBJ_LOCK) }
    static let newRLock: jr_swift_fn = { L in newPlain(L!, JR_OBJ_RLOCK) }
    static let newEvent: jr_swift_fn = { L in newPlain(L!, JR_OBJ_EVENT) }

    static func newSem(_ L: LuaState, bounded: Bool) -> Int32 {
        let type = bounded ? JR_OBJ_BOUNDED_SEMAPHORE : JR_OBJ_SEMAPHORE
        let n: Int64
        let name: String
        do {
            name = try tableForm(L, typeName(type), field: "value")
            n = try Lua.optInteger(L, 1, 1, typeName(type), "value") ?? 1
        } catch { return Lua.raise(L, error) }
        if n < 0 { return Lua.raise(L, .ValueError, "\(typeName(type)): value must be >= 0, got \(n)") }
        return push(L, type, name: name) { () throws(Arena.AllocFailure) in try SharedSync.create(type: type, value: n, bound: n) }
    }
    static let newSemaphore: jr_swift_fn = { L in newSem(L!, bounded: false) }
    static let newBoundedSemaphore: jr_swift_fn = { L in newSem(L!, bounded: true) }

    static let newBarrier: jr_swift_fn = { L in
        let L = L!
        let n: Int64
        let name: String
        do {
            name = try tableForm(L, "Barrier", field: "parties")
            guard let v = try Lua.optInteger(L, 1, nil, "Barrier", "parties") else {
                return Lua.raise(L, .TypeError, "Barrier: parties must be an integer, got nil")
            }
            n = v
        } catch { return Lua.raise(L, error) }
        if n < 1 { return Lua.raise(L, .ValueError, "Barrier: parties must be >= 1, got \(n)") }
        return push(L, JR_OBJ_BARRIER, name: name) { () throws(Arena.AllocFailure) in try SharedSync.create(type: JR_OBJ_BARRIER, bound: n) }
    }

    static let newCondition: jr_swift_fn = { L in
        let L = L!
        var lockOffset: UInt64
        let name: String
        do { name = try tableForm(L, "Condition", field: "lock") } catch { return Lua.raise(L, error) }
        // The condition holds a reference to its lock (dropped when it is freed).
        if jr_lua_isnoneornil(L, 1) != 0 {
            do { lockOffset = try SharedSync.create(type: JR_OBJ_RLOCK) } catch {
                return Lua.raise(L, .ValueError, "Condition: out of shared memory")
            }
            guard (try? ObjectTable.register(type: JR_OBJ_RLOCK, offset: lockOffset, held: false)) != nil else {
                Arena.free(lockOffset)
                return Lua.raise(L, .ValueError, "Condition: out of shared memory (object table)")
            }
        } else if let h = ObjectHandle.check(L, 1), h.type == UInt32(JR_OBJ_LOCK) || h.type == UInt32(JR_OBJ_RLOCK) {
            lockOffset = h.offset
            ObjectTable.retain(h.slot)
        } else {
            return Lua.raise(L, .TypeError, "Condition: lock must be a Lock or RLock, got \(Lua.typeName(L, 1))")
        }
        return push(L, JR_OBJ_CONDITION, name: name) { () throws(Arena.AllocFailure) in try SharedSync.create(type: JR_OBJ_CONDITION, link: lockOffset) }
    }

    // MARK: Lock / RLock

    static let acquire: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "acquire", [JR_OBJ_LOCK, JR_OBJ_RLOCK]) else { return -1 }
        let block: Bool, deadline: Deadline
        do { (block, deadline) = try blockAndTimeout(L, 2, "acquire") } catch { return Lua.raise(L, error, object: label(s)) }
        switch s.acquire(block: block, deadline: deadline, reentrant: s.type == JR_OBJ_RLOCK) {
        case .acquired: lua_pushboolean(L, 1); return 1
        case .ownerDied: lua_pushboolean(L, 1); Lua.pushString(L, "owner died"); return 2
        case .timedOut: lua_pushboolean(L, 0); return 1
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(label(s)).acquire")
        }
    }

    /// Pushes a wait's outcome as a boolean, or raises the run's failure.
    static func finish(_ L: LuaState, _ s: SharedSync, _ method: String, _ w: SharedSync.Waited) -> Int32 {
        switch w {
        case .ok: lua_pushboolean(L, 1); return 1
        case .timedOut: lua_pushboolean(L, 0); return 1
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(label(s)).\(method)")
        }
    }

    static let release: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "release", [JR_OBJ_LOCK, JR_OBJ_RLOCK]) else { return -1 }
        switch s.release(reentrant: s.type == JR_OBJ_RLOCK) {
        case .released: return 0
        case .notHeld: return Lua.raise(L, .ValueError, "\(label(s)).release: the lock is not held")
        case .notOwner: return Lua.raise(L, .ValueError, "\(label(s)).release: cannot release an RLock held by another process")
        }
    }

    static let locked: jr_swift_fn = { L in
        guard let s = check(L!, "locked", [JR_OBJ_LOCK, JR_OBJ_RLOCK]) else { return -1 }
        lua_pushboolean(L, s.isLocked ? 1 : 0); return 1
    }

    static let isOwned: jr_swift_fn = { L in
        guard let s = check(L!, "_is_owned", [JR_OBJ_LOCK, JR_OBJ_RLOCK]) else { return -1 }
        lua_pushboolean(L, s.ownerIsMe ? 1 : 0); return 1
    }

    // MARK: Semaphore

    static let semAcquire: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "acquire", [JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE]) else { return -1 }
        let block: Bool, deadline: Deadline
        do { (block, deadline) = try blockAndTimeout(L, 2, "acquire") } catch { return Lua.raise(L, error, object: label(s)) }
        return finish(L, s, "acquire", s.semAcquire(block: block, deadline: deadline))
    }

    static let semRelease: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "release", [JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE]) else { return -1 }
        if !s.semRelease(bounded: s.type == JR_OBJ_BOUNDED_SEMAPHORE) {
            if s.type == JR_OBJ_SEMAPHORE {
                return Lua.raise(L, .ValueError, "\(label(s)).release: the value would pass math.maxinteger")
            }
            return Lua.raise(L, .ValueError, "\(label(s)).release: semaphore released too many times")
        }
        return 0
    }

    static let semValue: jr_swift_fn = { L in
        guard let s = check(L!, "value", [JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE]) else { return -1 }
        lua_pushinteger(L, lua_Integer(s.value)); return 1
    }

    // MARK: Event

    static let eventSet: jr_swift_fn = { L in
        guard let s = check(L!, "set", [JR_OBJ_EVENT]) else { return -1 }
        s.eventSet(true); return 0
    }
    static let eventClear: jr_swift_fn = { L in
        guard let s = check(L!, "clear", [JR_OBJ_EVENT]) else { return -1 }
        s.eventSet(false); return 0
    }
    static let eventIsSet: jr_swift_fn = { L in
        guard let s = check(L!, "is_set", [JR_OBJ_EVENT]) else { return -1 }
        lua_pushboolean(L, s.value != 0 ? 1 : 0); return 1
    }
    static let eventWait: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "wait", [JR_OBJ_EVENT]) else { return -1 }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "wait") } catch { return Lua.raise(L, error, object: label(s)) }
        return finish(L, s, "wait", s.eventWait(deadline: Deadline(timeout: timeout)))
    }

    // MARK: Barrier

    static let barrierWait: jr_swift_fn = { L in
        let L = L!
        guard let s = check(L, "wait", [JR_OBJ_BARRIER]) else { return -1 }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "wait") } catch { return Lua.raise(L, error, object: label(s)) }
        switch s.barrierWait(deadline: Deadline(timeout: timeout)) {
        case .index(let i): lua_pushinteger(L, lua_Integer(i)); return 1
        case .timedOut: return Lua.raise(L, .Timeout, "\(label(s)).wait: timed out after \(timeout ?? 0) s; the barrier is now broken")
        case .broken: return Lua.raise(L, .Timeout, "\(label(s)).wait: the barrier is broken (an earlier wait timed out)")
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(label(s)).wait")
        }
    }
    static let barrierParties: jr_swift_fn = { L in
        guard let s = check(L!, "parties", [JR_OBJ_BARRIER]) else { return -1 }
        lua_pushinteger(L, lua_Integer(s.s.pointee.bound)); return 1
    }
    static let barrierWaiting: jr_swift_fn = { L in
        guard let s = check(L!, "n_waiting", [JR_OBJ_BARRIER]) else { return -1 }
        lua_pushinteger(L, lua_Integer(s.value)); return 1
    }
    static let barrierBroken: jr_swift_fn = { L in
        guard let s = check(L!, "broken", [JR_OBJ_BARRIER]) else { return -1 }
        s.lock(); let b = s.s.pointee.broken != 0; s.unlock()
        lua_pushboolean(L, b ? 1 : 0); return 1
    }

    // MARK: Condition

    static func linkedLock(_ c: SharedSync) -> SharedSync { SharedSync(offset: c.s.pointee.link) }

    /// c:wait([timeout]) -> true if notified, false on timeout. The lock must be held.
    static let conditionWait: jr_swift_fn = { L in
        let L = L!
        guard let c = check(L, "wait", [JR_OBJ_CONDITION]) else { return -1 }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "wait") } catch { return Lua.raise(L, error, object: label(c)) }
        let lock = linkedLock(c)
        if !lock.ownerIsMe {
            return Lua.raise(L, .ValueError, "\(label(c)).wait: the condition's lock must be held (acquire it first)")
        }
        let generation = c.conditionEnter()
        let depth = lock.releaseAll()
        let outcome = c.conditionSleep(entered: generation, deadline: Deadline(timeout: timeout))
        if let f = lock.reacquire(depth: depth, reentrant: lock.type == JR_OBJ_RLOCK) {
            return ProcessRegistry.raiseFailure(L, f, in: "\(label(c)).wait (taking its lock back)")
        }
        return finish(L, c, "wait", outcome)
    }

    static func notify(_ L: LuaState, all: Bool) -> Int32 {
        guard let c = check(L, all ? "notify_all" : "notify", [JR_OBJ_CONDITION]) else { return -1 }
        var n: Int64 = 1
        if !all {
            do { n = try Lua.optInteger(L, 2, 1, "notify", "n") ?? 1 } catch { return Lua.raise(L, error, object: label(c)) }
            if n < 0 { return Lua.raise(L, .ValueError, "\(label(c)).notify: n must be >= 0, got \(n)") }
        }
        if !linkedLock(c).ownerIsMe {
            return Lua.raise(L, .ValueError, "\(label(c)).\(all ? "notify_all" : "notify"): the condition's lock must be held")
        }
        if n > 0 { c.notify(all ? Int64.max : n) }
        return 0
    }
    static let conditionNotify: jr_swift_fn = { L in notify(L!, all: false) }
    static let conditionNotifyAll: jr_swift_fn = { L in notify(L!, all: true) }

    /// c:_lock() -> the Lock/RLock the condition uses (for acquire/release/with).
    static let conditionLock: jr_swift_fn = { L in
        let L = L!
        guard let c = check(L, "_lock", [JR_OBJ_CONDITION]) else { return -1 }
        guard ObjectHandle.pushExisting(L, slot: c.linkedSlot) else {
            return Lua.raise(L, .ValueError, "\(label(c))._lock: its lock is gone")
        }
        return 1
    }

    static let toString: jr_swift_fn = { L in
        let L = L!
        if let n = ObjectHandle.closedToString(L, 1) { return n }
        guard let h = ObjectHandle.check(L, 1) else { return 0 }
        let s = SharedSync(offset: h.offset)
        var extra = ""
        switch s.type {
        case JR_OBJ_LOCK, JR_OBJ_RLOCK: extra = s.isLocked ? " (locked by pid \(s.s.pointee.owner))" : " (unlocked)"
        case JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE: extra = " (value \(s.value))"
        case JR_OBJ_EVENT: extra = s.value != 0 ? " (set)" : " (clear)"
        case JR_OBJ_BARRIER: extra = " (\(s.value) of \(s.s.pointee.bound) waiting)"
        default: break
        }
        Lua.pushString(L, "\(label(s))\(extra)")
        return 1
    }
}

/// Metamethods shared by every jobrun object type.
enum ObjectBindings {
    /// Registers a userdata type after liolib.c's pattern: metatable `name`
    /// (marked `__jobrun` for the codec) with `__tostring`, `__eq` and a method
    /// table as `__index`. Returns the metatable's address (the identity the
    /// hot-path self checks compare against).
    @discardableResult
    static func registerType(_ L: LuaState, _ name: String, toString: jr_swift_fn,
                             methods: [(String, jr_swift_fn)]) -> UnsafeRawPointer? {
        luaL_newmetatable(L, name)
        let meta = lua_topointer(L, -1)
        lua_pushboolean(L, 1); lua_setfield(L, -2, "__jobrun")
        Lua.setFunction(L, "__tostring", toString)
        Lua.setFunction(L, "__eq", equals)
        Lua.setFunction(L, "__gc", release)
        Lua.setFunction(L, "__close", release)
        lua_createtable(L, 0, Int32(methods.count) + 1)
        // `close` releases the handle, unless the type has a close of its
        // own (Queue: end of stream; Connection: this process's copy).
        if !methods.contains(where: { $0.0 == "close" }) { Lua.setFunction(L, "close", release) }
        for (method, fn) in methods { Lua.setFunction(L, method, fn) }
        lua_setfield(L, -2, "__index")
        jr_lua_pop(L, 1)
        return meta
    }

    /// `__gc`, `__close` and `close()`: releases the handle (once).
    static let release: jr_swift_fn = { L in
        ObjectHandle.release(L!, 1)
        return 0
    }

    /// Two handles are equal when they name the same shared object.
    static let equals: jr_swift_fn = { L in
        let L = L!
        let a = ObjectHandle.check(L, 1), b = ObjectHandle.check(L, 2)
        lua_pushboolean(L, a != nil && b != nil && a!.slot == b!.slot ? 1 : 0)
        return 1
    }
}
