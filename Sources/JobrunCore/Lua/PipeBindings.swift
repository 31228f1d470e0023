import CJobrunShims
import CLua
import Glibc

/// `jobrun.Pipe([duplex])`: two connection ends over shared-memory queues.
/// `recv` gives EOF once the other end is closed (or the process that used it
/// died) and nothing is left to read.
enum PipeBindings {
    /// How often a waiting `recv`/`poll` checks that the other end's user lives.
    static let peerCheck = 0.1

    static func register(_ L: LuaState) {
        ObjectBindings.registerType(L, "jobrun.Connection", toString: toString, methods: [
            ("send", send), ("recv", recv), ("poll", poll), ("close", close), ("closed", isClosed),
        ])
        Lua.setFunction(L, "Pipe", newPipe)
    }

    struct End {
        let pipe: UnsafeMutablePointer<jr_pipe>
        let index: Int
        var peer: Int { 1 - index }
        var label: String { "Connection#\(pipe.pointee.hdr.id).\(index == 0 ? "a" : "b")" }
        var canSend: Bool { pipe.pointee.duplex != 0 || index == 1 }
        var canReceive: Bool { pipe.pointee.duplex != 0 || index == 0 }
        var sendQueue: SharedQueue { SharedQueue(offset: field(\jr_pipe.queue, index, UInt64.self).pointee) }
        var receiveQueue: SharedQueue { SharedQueue(offset: field(\jr_pipe.queue, peer, UInt64.self).pointee) }
        private func field<T>(_ key: PartialKeyPath<jr_pipe>, _ i: Int, _: T.Type) -> UnsafeMutablePointer<T> {
            (UnsafeMutableRawPointer(pipe) + MemoryLayout<jr_pipe>.offset(of: key)!).assumingMemoryBound(to: T.self) + i
        }
        var closedFlag: UnsafeMutablePointer<UInt32> { field(\jr_pipe.closed, index, UInt32.self) }
        var isClosed: Bool { jr_load_u32(closedFlag) != 0 }
        var peerClosed: Bool { jr_load_u32(field(\jr_pipe.closed, peer, UInt32.self)) != 0 }
        func touch() { field(\jr_pipe.user, index, Int32.self).pointee = getpid() }
        var peerUser: Int32 { field(\jr_pipe.user, peer, Int32.self).pointee }
    }

    static func check(_ L: LuaState, _ method: String) -> End? {
        if let h = ObjectHandle.check(L, 1), h.type == UInt32(JR_OBJ_PIPE_END0) || h.type == UInt32(JR_OBJ_PIPE_END1) {
            return End(pipe: Arena.pointer(h.offset).assumingMemoryBound(to: jr_pipe.self),
                       index: h.type == UInt32(JR_OBJ_PIPE_END0) ? 0 : 1)
        }
        Lua.pushError(L, .TypeError, "\(method): expected a Pipe end as self (use conn:\(method)(...)), got \(Lua.typeName(L, 1))")
        return nil
    }

    static let newPipe: jr_swift_fn = { L in
        let L = L!
        let duplex: Bool
        do { duplex = try Lua.optBool(L, 1, true, "Pipe", "duplex") } catch { return Lua.raise(L, error) }
        do {
            let (off, p) = try Arena.newObject(jr_pipe.self, type: JR_OBJ_PIPE_END0)
            p.pointee.duplex = duplex ? 1 : 0
            p.pointee.queue.1 = try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false, listed: false)
            p.pointee.queue.0 = duplex ? try SharedQueue.create(maxsize: 0, joinable: false, redeliver: false, listed: false) : p.pointee.queue.1
            ObjectHandle.push(L, ObjectHandle(offset: off, type: UInt32(JR_OBJ_PIPE_END0)))
            ObjectHandle.push(L, ObjectHandle(offset: off, type: UInt32(JR_OBJ_PIPE_END1)))
            return 2
        } catch {
            return Lua.raise(L, .ValueError, "Pipe: out of shared memory")
        }
    }

    static let send: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "send") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).send: this end is closed") }
        if !end.canSend { return Lua.raise(L, .ValueError, "\(end.label).send: this end of a one-way Pipe only receives") }
        if lua_gettop(L) < 2 { return Lua.raise(L, .TypeError, "\(end.label).send: missing value") }
        end.touch()
        Runtime.encoder.reset()
        if let e = Runtime.encoder.encode(L, 2, path: "value") { return Lua.raise(L, .TypeError, "\(end.label).send: \(e)") }
        switch end.sendQueue.put(Runtime.encoder.bytes, block: true, deadline: Deadline(timeout: nil)) {
        case .ok: return 0
        case .closed: return Lua.raise(L, .EOF, "\(end.label).send: the other end is closed")
        case .full: return Lua.raise(L, .Full, "\(end.label).send: shared memory limit reached")
        case .noMemory(let m): return Lua.raise(L, .ValueError, "\(end.label).send: \(m)")
        case .failed(let f): return ProcessRegistry.raiseFailure(L, "\(end.label).send: \(f)")
        }
    }

    /// Whether the other end can no longer send: closed, or its last user died.
    static func peerGone(_ end: End) -> Bool {
        if end.peerClosed { return true }
        let user = end.peerUser
        return user != 0 && user != getpid() && !processIsAlive(user)
    }

    static let recv: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "recv") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).recv: this end is closed") }
        if !end.canReceive { return Lua.raise(L, .ValueError, "\(end.label).recv: this end of a one-way Pipe only sends") }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "recv") } catch { return Lua.raise(L, error) }
        end.touch()
        let deadline = Deadline(timeout: timeout)
        let q = end.receiveQueue
        while true {
            let slice = min(peerCheck, timeout == nil ? peerCheck : Double(deadline.remaining) / 1e9)
            var decodeError: String?
            let r = q.get(block: true, deadline: Deadline(timeout: slice), scratch: &Runtime.scratch, recv: true) { decodeError = ValueDecoder.decode(L, $0) }
            switch r {
            case .ok:
                if let e = decodeError { return Lua.raise(L, .ValueError, "\(end.label).recv: \(e)") }
                return 1
            case .closed:
                return Lua.raise(L, .EOF, "\(end.label).recv: the other end is closed and nothing is left to read")
            case .noMemory(let m, _):
                return Lua.raise(L, .ValueError, "\(end.label).recv: \(m)")
            case .failed(let f):
                return ProcessRegistry.raiseFailure(L, "\(end.label).recv: \(f)")
            case .empty:
                if q.count == 0 && peerGone(end) {
                    return Lua.raise(L, .EOF, "\(end.label).recv: the process using the other end (pid \(end.peerUser)) has ended and nothing is left to read")
                }
                if deadline.expired { return Lua.raise(L, .Timeout, "\(end.label).recv: nothing received within \(timeout ?? 0) s") }
            }
        }
    }

    static let poll: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "poll") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).poll: this end is closed") }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "poll") } catch { return Lua.raise(L, error) }
        let deadline = Deadline(timeout: timeout ?? 0)
        let q = end.receiveQueue
        while true {
            let slice = min(peerCheck, Double(deadline.remaining) / 1e9)
            if q.waitForItems(deadline: Deadline(timeout: slice)) { lua_pushboolean(L, 1); return 1 }
            if peerGone(end) { lua_pushboolean(L, 1); return 1 }   // recv will give EOF at once
            if deadline.expired { lua_pushboolean(L, 0); return 1 }
        }
    }

    static let close: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "close") else { return -1 }
        jr_store_u32(end.closedFlag, 1)
        // The peer reads what was sent, then gets EOF; its sends fail with EOF.
        end.sendQueue.close()
        end.receiveQueue.close()
        return 0
    }

    static let isClosed: jr_swift_fn = { L in
        guard let end = check(L!, "closed") else { return -1 }
        lua_pushboolean(L, end.isClosed ? 1 : 0); return 1
    }

    static let toString: jr_swift_fn = { L in
        guard let end = check(L!, "tostring") else { return -1 }
        Lua.pushString(L!, "\(end.label)\(end.isClosed ? " (closed)" : "")")
        return 1
    }
}
