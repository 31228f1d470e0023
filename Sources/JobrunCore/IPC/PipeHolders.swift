import Atomics
import CJobrunShims
import Glibc

/// Who holds which Pipe end, after the file-descriptor rule of CPython's
/// connection.py: each process has its own copy of an end, `close` closes the
/// caller's copy only, and the other end sees EOF once no process holds that
/// end any more. A process holds an end it created, inherited at fork (every
/// end its parent held), was given as an argument of `Process{script}`, or
/// decoded from a queue, Dict or result.
///
/// The truth is each process's list (jr_pipe_ends, from its record), written
/// only by that process: nothing to repair when a process is SIGKILLed,
/// since a list counts only while its process is alive. Whoever may have
/// dropped the last copy of an end (a `close`, or the monitor seeing a death)
/// looks through the lists of the live processes, and if none holds the end
/// any more, closes the pipe's queues, which wakes the other end.
///
/// A process holds its copy of an end only while it holds the end's
/// reference in the object table (a handle): the last handle dropped
/// (`__gc`, `<close>`, a worker's end) releases the copy before the
/// reference (ObjectTable.dropHandle), and the pipe is freed once neither
/// end has a reference left. An entry names the pipe by its offset and end
/// 0's (slot, generation), so an entry left by a freed pipe never matches a
/// new pipe made at the same offset, and the pipe's queues are touched only
/// under a reference taken on that entry (`shut`). An entry no longer held
/// is reused by the next hold, so a list stays as long as the ends held.
enum PipeHolders {
    /// This process's list (follows the record; 0 before the first hold), and
    /// a list filled before fork for the child to adopt: ProcessContext.objects.
    private static var mine: UInt64 {
        get { ProcessContext.current.objects.pipeList }
        set { ProcessContext.current.objects.pipeList = newValue }
    }
    private static var forChild: UInt64 {
        get { ProcessContext.current.objects.pipeListForChild }
        set { ProcessContext.current.objects.pipeListForChild = newValue }
    }

    static let headerBytes = MemoryLayout<jr_pipe_ends>.size
    static let entryBytes = MemoryLayout<jr_pipe_hold>.stride

    static func list(_ off: UInt64) -> UnsafeMutablePointer<jr_pipe_ends> {
        Arena.pointer(off).assumingMemoryBound(to: jr_pipe_ends.self)
    }
    static func entries(_ l: UnsafeMutablePointer<jr_pipe_ends>) -> UnsafeMutablePointer<jr_pipe_hold> {
        (UnsafeMutableRawPointer(l) + headerBytes).assumingMemoryBound(to: jr_pipe_hold.self)
    }

    private static func newList(capacity: Int) -> UInt64? {
        guard let off = try? Arena.allocateZeroed(headerBytes + capacity * entryBytes) else { return nil }
        list(off).pointee.capacity = UInt32(capacity)
        return off
    }

    /// Makes `off` this process's list, seen by the monitor through the record.
    private static func install(_ off: UInt64) {
        mine = off
        if let r = ProcessRegistry.record { r.atomic(\.pipe_ends).store(off, ordering: .releasing) }
    }

    /// End 0's entry in the object table, read from the pipe (which the
    /// caller holds a reference to).
    struct Ident: Equatable { var slot: UInt32; var generation: UInt32 }
    static func ident(_ pipe: UInt64) -> Ident {
        let p = Arena.pointer(pipe).assumingMemoryBound(to: jr_pipe.self)
        return Ident(slot: p.pointee.hdr.slot, generation: p.pointee.end0_generation)
    }

    /// The held entry for the end in `l`. `held` is read first: an entry
    /// is rewritten (reused) only while not held, and marked held last.
    private static func find(_ l: UnsafeMutablePointer<jr_pipe_ends>, _ pipe: UInt64, _ end: Int, _ id: Ident) -> UnsafeMutablePointer<jr_pipe_hold>? {
        let e = entries(l)
        for i in 0..<Int(l.atomic(\.count).load(ordering: .acquiring)) where (e + i).atomic(\.held).load(ordering: .acquiring) != 0 {
            if e[i].pipe == pipe && e[i].end == UInt32(end) && e[i].slot == id.slot && e[i].generation == id.generation { return e + i }
        }
        return nil
    }

    /// Whether this process holds its copy of the end.
    static func holds(_ pipe: UInt64, _ end: Int) -> Bool {
        guard mine != 0 else { return false }
        return find(list(mine), pipe, end, ident(pipe)) != nil
    }

    /// This process now holds the end (created, or decoded). False when
    /// shared memory is exhausted.
    @discardableResult
    static func hold(_ pipe: UInt64, _ end: Int) -> Bool {
        if mine == 0 {
            guard let off = newList(capacity: 8) else { return false }
            install(off)
        }
        var l = list(mine)
        let id = ident(pipe)
        if find(l, pipe, end, id) != nil { return true }
        let all = entries(l)
        for i in 0..<Int(l.pointee.count) where all[i].held == 0 {
            // Reused: written while not held, then marked held.
            all[i].pipe = pipe
            all[i].end = UInt32(end)
            all[i].slot = id.slot
            all[i].generation = id.generation
            (all + i).atomic(\.held).store(1, ordering: .releasing)
            return true
        }
        if l.pointee.count == l.pointee.capacity {
            // A larger copy; the old block stays readable for a scan in
            // progress (it is not freed: it is small and this is rare).
            let cap = Int(l.pointee.capacity) * 2
            guard let off = newList(capacity: cap) else { return false }
            let n = list(off)
            memcpy(entries(n), entries(l), Int(l.pointee.count) * entryBytes)
            n.pointee.children = l.pointee.children
            n.atomic(\.count).store(l.pointee.count, ordering: .releasing)
            install(off)
            l = n
        }
        let e = entries(l) + Int(l.pointee.count)
        e.pointee.pipe = pipe
        e.pointee.end = UInt32(end)
        e.pointee.slot = id.slot
        e.pointee.generation = id.generation
        e.pointee.held = 1
        l.atomic(\.count).store(l.pointee.count + 1, ordering: .releasing)
        return true
    }

    /// This process closes its copy; false if it had none. When no process
    /// holds the end any more, the pipe shuts.
    @discardableResult
    static func release(_ pipe: UInt64, _ end: Int) -> Bool {
        let id = ident(pipe)
        guard mine != 0, let h = find(list(mine), pipe, end, id) else { return false }
        h.atomic(\.held).store(0, ordering: .releasing)
        atomicMemoryFence(ordering: .sequentiallyConsistent)   // two last holders closing at once: at least one sees the other's release
        if !anyHolder(pipe, end, id) { shut(pipe, id) }
        return true
    }

    /// Whether a live process (or a child being started with a list filled
    /// by its parent) holds the end.
    ///
    /// A holder starts a child (claiming its record, handing it the end)
    /// before it lets go of its own copy, and that child may adopt its list
    /// and take a record this scan has already passed (or one past the
    /// count it read at the start): a scan that saw the holder's copy
    /// released but not the child is repeated as long as records were
    /// claimed meanwhile. The release it saw comes after the claim in the
    /// holder, so the next scan sees the child.
    static func anyHolder(_ pipe: UInt64, _ end: Int, _ id: Ident) -> Bool {
        var claims = ProcessRegistry.claimsSoFar()
        while true {
            if holderFound(pipe, end, id) { return true }
            let now = ProcessRegistry.claimsSoFar()
            if now == claims { return false }
            claims = now
        }
    }

    private static func holderFound(_ pipe: UInt64, _ end: Int, _ id: Ident) -> Bool {
        let all = ProcessRegistry.slots()
        let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
        for i in 0..<n where (all + i).atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) {
            let r = all + i
            if ProcessRegistry.hasEnded(r) { continue }
            let off = r.atomic(\.pipe_ends).load(ordering: .acquiring)
            if off == 0 { continue }
            let l = list(off)
            if find(l, pipe, end, id) != nil { return true }
            var child = l.atomic(\.children).load(ordering: .acquiring)
            while child != 0 {
                let c = list(child)
                if c.atomic(\.pending).load(ordering: .acquiring) != 0 {
                    let pid = c.pointee.pid
                    if (pid == 0 || processIsAlive(pid)), find(c, pipe, end, id) != nil { return true }
                }
                child = c.atomic(\.sibling).load(ordering: .acquiring)
            }
        }
        return false
    }

    /// No process holds one of the ends: the other end reads what is left,
    /// then gets EOF; its sends fail. Nothing to do once the pipe is freed
    /// (`id` no longer live): a reference is held while its queues are closed.
    static func shut(_ pipe: UInt64, _ id: Ident) {
        guard ObjectTable.retain(id.slot, generation: id.generation) else { return }
        let p = Arena.pointer(pipe).assumingMemoryBound(to: jr_pipe.self)
        SharedQueue(offset: p.pointee.queue.0).close()
        if p.pointee.queue.1 != p.pointee.queue.0 { SharedQueue(offset: p.pointee.queue.1).close() }
        ObjectTable.release(id.slot)
    }

    private static func ident(_ h: jr_pipe_hold) -> Ident { Ident(slot: h.slot, generation: h.generation) }

    /// Monitor: the process of `r` has ended (its record marked so): every
    /// end it held may have lost its last holder.
    /// A child that died before adopting the list its parent filled held
    /// those ends too.
    static func ended(_ r: UnsafeMutablePointer<jr_process_record>) {
        var lists: [UInt64] = []
        let off = r.atomic(\.pipe_ends).load(ordering: .acquiring)
        if off != 0 { lists.append(off) }
        if let parent = ProcessRegistry.find(r.pointee.parent_pid), parent != r, parent.pointee.pipe_ends != 0 {
            var child = list(parent.pointee.pipe_ends).atomic(\.children).load(ordering: .acquiring)
            while child != 0 {
                let c = list(child)
                if c.pointee.pid == r.pointee.pid && c.atomic(\.pending).load(ordering: .acquiring) != 0 && child != off { lists.append(child) }
                child = c.atomic(\.sibling).load(ordering: .acquiring)
            }
        }
        for off in lists {
            let l = list(off)
            let e = entries(l)
            for i in 0..<Int(l.atomic(\.count).load(ordering: .acquiring)) where e[i].held != 0 {
                if !anyHolder(e[i].pipe, Int(e[i].end), ident(e[i])) { shut(e[i].pipe, ident(e[i])) }
            }
        }
    }

    /// Monitor, each tick: a child that died before it even registered
    /// (so the monitor never watched it) held the ends of the list its
    /// parent filled for it; they may have no holder left now.
    static func sweep() {
        let all = ProcessRegistry.slots()
        let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
        for i in 0..<n where (all + i).atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) {
            let off = (all + i).atomic(\.pipe_ends).load(ordering: .acquiring)
            if off == 0 { continue }
            var child = list(off).atomic(\.children).load(ordering: .acquiring)
            while child != 0 {
                let c = list(child)
                if c.atomic(\.pending).load(ordering: .acquiring) != 0 && c.pointee.pid != 0 && !processIsAlive(c.pointee.pid) {
                    c.atomic(\.pending).store(0, ordering: .releasing)
                    let e = entries(c)
                    for k in 0..<Int(c.pointee.count) where !anyHolder(e[k].pipe, Int(e[k].end), ident(e[k])) { shut(e[k].pipe, ident(e[k])) }
                }
                child = c.atomic(\.sibling).load(ordering: .acquiring)
            }
        }
    }

    // MARK: handing ends to a child

    /// The Pipe ends met by the encoder since `startCollecting` (for the
    /// arguments of a `script` worker).
    static func startCollecting() { ProcessContext.current.objects.collectedPipeEnds = [] }
    static func stopCollecting() -> [(UInt64, Int)] {
        let ctx = ProcessContext.current
        defer { ctx.objects.collectedPipeEnds = nil }
        return ctx.objects.collectedPipeEnds ?? []
    }
    static func encoded(_ h: ObjectHandle) {
        ProcessContext.current.objects.collectedPipeEnds?.append((h.offset, h.type == UInt32(JR_OBJ_PIPE_END0) ? 0 : 1))
    }

    /// Before a child starts: fills a list with `ends` (nil: every end this
    /// process holds, for a fork) and chains it to this process's list, so
    /// the ends count as held by the child from this moment on. Returns the
    /// list (0: nothing to hand over).
    static func prepareChild(ends: [(UInt64, Int)]? = nil) -> UInt64 {
        forChild = 0
        guard mine != 0 else {
            // Ends given as arguments are held by this process (it has them):
            // without a list of its own it holds none.
            return 0
        }
        let l = list(mine)
        var wanted: [jr_pipe_hold] = []
        let e = entries(l)
        for i in 0..<Int(l.pointee.count) where e[i].held != 0 {
            let item = (e[i].pipe, Int(e[i].end))
            if let ends, !ends.contains(where: { $0 == item }) { continue }
            wanted.append(e[i])
        }
        if wanted.isEmpty { return 0 }
        guard let off = newList(capacity: max(8, wanted.count)) else { return 0 }
        let c = list(off)
        for (k, h) in wanted.enumerated() { entries(c)[k] = h }
        c.pointee.count = UInt32(wanted.count)
        c.pointee.pending = 1
        pruneChildren(l)
        c.pointee.sibling = l.pointee.children
        l.atomic(\.children).store(off, ordering: .releasing)
        forChild = off
        return off
    }

    /// Parent, once the child is started (pid) or failed to start (nil).
    static func childStarted(_ off: UInt64, pid: pid_t?) {
        guard off != 0 else { return }
        if let pid { list(off).pointee.pid = pid } else { list(off).atomic(\.pending).store(0, ordering: .releasing) }
        forChild = 0
    }

    /// Child, once registered: the list its parent filled is now its own.
    static func adopt(_ off: UInt64? = nil) {
        let off = off ?? forChild
        forChild = 0
        mine = 0
        guard off != 0 else {
            if let r = ProcessRegistry.record { r.atomic(\.pipe_ends).store(0, ordering: .releasing) }
            return
        }
        let l = list(off)
        install(off)
        l.atomic(\.children).store(0, ordering: .releasing)
        l.atomic(\.pending).store(0, ordering: .releasing)
    }

    /// Unlinks the lists that no longer count (adopted, or their child
    /// ended before adopting); they are not freed, a scan may be reading them.
    private static func pruneChildren(_ l: UnsafeMutablePointer<jr_pipe_ends>) {
        var prev: UnsafeMutablePointer<jr_pipe_ends>? = nil
        var cur = l.pointee.children
        while cur != 0 {
            let c = list(cur)
            let next = c.pointee.sibling
            if c.pointee.pending != 0 && c.pointee.pid != 0 && !processIsAlive(c.pointee.pid) {
                c.atomic(\.pending).store(0, ordering: .releasing)
            }
            if c.pointee.pending == 0 {
                (prev?.atomic(\.sibling) ?? l.atomic(\.children)).store(next, ordering: .releasing)
            } else {
                prev = c
            }
            cur = next
        }
    }
}
