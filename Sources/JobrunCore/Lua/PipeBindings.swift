import CJobrunShims
import CLua
import Glibc

/// `jobrun.Pipe([duplex])`: two connection ends over shared-memory queues.
/// Each process has its own copy of an end (PipeHolders); `recv` gives EOF
/// once no process holds the other end any more and nothing is left to read.
enum PipeBindings {
    static func register(_ L: LuaState) {
        ObjectBindings.registerType(L, "jobrun.Connection", toString: toString, methods: [
            ("send", send), ("recv", recv), ("poll", poll), ("close", close), ("closed", isClosed),
        ])
        Lua.setFunction(L, "Pipe", newPipe)
    }

    struct End {
        let pipe: UnsafeMutablePointer<jr_pipe>
        let index: Int
        var offset: UInt64 { Arena.offset(of: pipe) }
        var label: String { PipeBindings.label(pipe, index) }
        var canSend: Bool { pipe.pointee.duplex != 0 || index == 1 }
        var canReceive: Bool { pipe.pointee.duplex != 0 || index == 0 }
        var sendQueue: SharedQueue { SharedQueue(offset: index == 0 ? pipe.pointee.queue.0 : pipe.pointee.queue.1) }
        var receiveQueue: SharedQueue { SharedQueue(offset: index == 0 ? pipe.pointee.queue.1 : pipe.pointee.queue.0) }
        /// Closed for this process: it has no copy of the end (any more).
        var isClosed: Bool { !PipeHolders.holds(offset, index) }
    }

    /// "Connection#3.a", or with a name: `Connection#3.a "control"`.
    static func label(_ pipe: UnsafeMutablePointer<jr_pipe>, _ index: Int) -> String {
        "Connection#\(pipe.pointee.hdr.id).\(index == 0 ? "a" : "b")\(quotedName(cString(&pipe.pointee.label)))"
    }

    static func check(_ L: LuaState, _ method: String) -> End? {
        if let h = ObjectHandle.check(L, 1), h.type == UInt32(JR_OBJ_PIPE_END0) || h.type == UInt32(JR_OBJ_PIPE_END1) {
            return End(pipe: Arena.pointer(h.offset).assumingMemoryBound(to: jr_pipe.self),
                       index: h.type == UInt32(JR_OBJ_PIPE_END0) ? 0 : 1)
        }
        Lua.pushError(L, .TypeError, "\(method): expected a Pipe end as self (use conn:\(method)(...)), got \(Lua.typeName(L, 1))")
        return nil
    }

    /// `Pipe([duplex])` or `Pipe{duplex = bool, name = "..."}`.
    static let newPipe: jr_swift_fn = { L in
        let L = L!
        var duplex = true
        var name = ""
        do {
            if lua_type(L, 1) == LUA_TTABLE {
                Lua.rawField(L, 1, "duplex")
                duplex = try Lua.optBool(L, -1, true, "Pipe", "duplex")
                jr_lua_pop(L, 1)
                name = try Lua.optName(L, 1, "Pipe")
            } else {
                duplex = try Lua.optBool(L, 1, true, "Pipe", "duplex")
            }
        } catch { return Lua.raise(L, error) }
        // Lua does not see what a Pipe costs in the arena: dropped ends not
        // yet collected may hold memory that a collection frees.
        guard let (off, p) = make(duplex: duplex, name: name) ?? { jr_lua_collect(L); return make(duplex: duplex, name: name) }() else {
            return Lua.raise(L, .ValueError, "Pipe: out of shared memory")
        }
        do {
            // Two entries, one per end. End 0's owns the block (its queues
            // are freed with it); end 1's holds a reference to end 0's.
            let a = try ObjectTable.register(type: JR_OBJ_PIPE_END0, offset: off)
            let b = try ObjectTable.register(type: JR_OBJ_PIPE_END1, offset: off)
            p.pointee.hdr.slot = a.slot
            p.pointee.end0_generation = a.generation
            ObjectTable.retain(a.slot)
            guard PipeHolders.hold(off, 0), PipeHolders.hold(off, 1) else { throw Arena.AllocFailure.exhausted }
            ObjectHandle.push(L, ObjectHandle(offset: off, slot: a.slot, generation: a.generation, type: UInt32(JR_OBJ_PIPE_END0)))
            ObjectHandle.push(L, ObjectHandle(offset: off, slot: b.slot, generation: b.generation, type: UInt32(JR_OBJ_PIPE_END1)))
            return 2
        } catch {
            return Lua.raise(L, .ValueError, "Pipe: out of shared memory")
        }
    }

    /// The pipe's block and queues, or nil (nothing left allocated) when
    /// shared memory is short.
    private static func make(duplex: Bool, name: String) -> (UInt64, UnsafeMutablePointer<jr_pipe>)? {
        guard let (off, p) = try? Arena.newObject(jr_pipe.self, type: JR_OBJ_PIPE_END0) else { return nil }
        p.pointee.duplex = duplex ? 1 : 0
        copyCString(name, into: &p.pointee.label)
        func drop(_ q: UInt64) { SharedQueue(offset: q).destroy(); Arena.free(q) }
        guard let q1 = try? SharedQueue.create(maxsize: 0, joinable: false, redeliver: false, site: label(p, 0), listed: false) else {
            Arena.free(off); return nil
        }
        p.pointee.queue.1 = q1
        if duplex {
            guard let q0 = try? SharedQueue.create(maxsize: 0, joinable: false, redeliver: false, site: label(p, 1), listed: false) else {
                drop(q1); Arena.free(off); return nil
            }
            p.pointee.queue.0 = q0
        } else {
            p.pointee.queue.0 = q1
        }
        return (off, p)
    }

    static let send: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "send") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).send: this end is closed") }
        if !end.canSend { return Lua.raise(L, .ValueError, "\(end.label).send: this end of a one-way Pipe only receives") }
        if lua_gettop(L) < 2 { return Lua.raise(L, .TypeError, "\(end.label).send: missing value") }
        ProcessContext.hot(L).pointee.encoder.reset()
        if let e = ProcessContext.hot(L).pointee.encoder.encode(L, 2, path: "value") { return Lua.raise(L, .TypeError, "\(end.label).send: \(e)") }
        let r = end.sendQueue.put(ProcessContext.hot(L).pointee.encoder.bytes, block: true, deadline: Deadline(timeout: nil))
        if case .ok = r { ProcessContext.hot(L).pointee.encoder.keepReferences(in: &end.pipe.pointee.hdr) } else { ProcessContext.hot(L).pointee.encoder.dropReferences() }
        switch r {
        case .ok: return 0
        case .closed: return Lua.raise(L, .EOF, "\(end.label).send: no process holds the other end any more")
        case .full: return Lua.raise(L, .Full, "\(end.label).send: shared memory limit reached")
        case .noMemory(let m): return Lua.raise(L, .ValueError, "\(end.label).send: \(m)")
        case .failed(let f): return ProcessRegistry.raiseFailure(L, f, in: "\(end.label).send")
        }
    }

    static let recv: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "recv") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).recv: this end is closed") }
        if !end.canReceive { return Lua.raise(L, .ValueError, "\(end.label).recv: this end of a one-way Pipe only sends") }
        let timeout: Double?
        do { timeout = try Lua.optTimeout(L, 2, "\(end.label).recv") } catch { return Lua.raise(L, error) }
        // One untimed wait when there is no timeout: the monitor sees it as a
        // recv and reports two processes each waiting on the other.
        var decodeError: String?
        let r = end.receiveQueue.get(block: true, deadline: Deadline(timeout: timeout), scratch: &ProcessContext.hot(L).pointee.scratch, recv: true) {
            decodeError = ValueDecoder.decode(L, $0, adopting: true)
        }
        switch r {
        case .ok:
            if let e = decodeError { return Lua.raise(L, .ValueError, "\(end.label).recv: \(e)") }
            return 1
        case .closed:
            return Lua.raise(L, .EOF, "\(end.label).recv: no process holds the other end any more and nothing is left to read")
        case .noMemory(let m, _):
            return Lua.raise(L, .ValueError, "\(end.label).recv: \(m)")
        case .failed(let f):
            return ProcessRegistry.raiseFailure(L, f, in: "\(end.label).recv")
        case .empty:
            return Lua.raise(L, .Timeout, "\(end.label).recv: nothing received within \(Lua.numberText(timeout ?? 0)) s")
        }
    }

    static let poll: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "poll") else { return -1 }
        if end.isClosed { return Lua.raise(L, .ValueError, "\(end.label).poll: this end is closed") }
        if !end.canReceive { return Lua.raise(L, .ValueError, "\(end.label).poll: this end of a one-way Pipe only sends") }
        // poll() looks without waiting; poll(math.huge) waits as long as it takes.
        let timeout: Double?
        do { timeout = jr_lua_isnoneornil(L, 2) != 0 ? 0 : try Lua.optTimeout(L, 2, "\(end.label).poll") } catch { return Lua.raise(L, error) }
        // True when recv would not wait: an item, or EOF.
        var verdict: JobrunError?
        let ready = end.receiveQueue.waitForItems(deadline: Deadline(timeout: timeout), verdict: &verdict)
        if let f = verdict { return ProcessRegistry.raiseFailure(L, f, in: "\(end.label).poll") }
        lua_pushboolean(L, ready ? 1 : 0)
        return 1
    }

    /// Closes this process's copy of the end; other processes' copies stay
    /// open. Once no process holds it, the other end gets EOF.
    static let close: jr_swift_fn = { L in
        let L = L!
        guard let end = check(L, "close") else { return -1 }
        PipeHolders.release(end.offset, end.index)
        return 0
    }

    static let isClosed: jr_swift_fn = { L in
        guard let end = check(L!, "closed") else { return -1 }
        lua_pushboolean(L, end.isClosed ? 1 : 0); return 1
    }

    static let toString: jr_swift_fn = { L in
        if let n = ObjectHandle.closedToString(L!, 1) { return n }
        guard let end = check(L!, "tostring") else { return -1 }
        Lua.pushString(L!, "\(end.label)\(end.isClosed ? " (closed)" : "")")
        return 1
    }
}
