import CJobrunShims
import Glibc

/// Reference cycles between shared objects: a queue holding an item with a
/// handle to itself, a Dict holding a queue whose item holds the Dict, a
/// Pipe sent through itself. Counting alone never frees them: each object
/// of the cycle keeps the next one's count above zero after every process
/// has dropped its handles.
///
/// So, when a reference to an object that has held a handle
/// (`hdr.held_handles`) goes and the object stays alive, this looks for a
/// cycle through it by trial deletion (Bacon and Rajan's synchronous cycle
/// collection, on one candidate at a time): it takes the locks of every
/// object reachable from it through their contents (the encoded handles
/// in their items and values) and their links (a Dict's update lock, a
/// Condition's lock, a Pipe's end 1 its end 0), counts the references
/// each gets from inside that set, and, under the object table's lock,
/// compares them with the counts. An object with more references than the
/// set gives it is held from outside (a process's handle, an item on its
/// way to a process, a copy kept elsewhere), and so is everything it
/// reaches. The rest is garbage: no process can reach it any more. It is
/// emptied (its items and values dropped, their references with them) and
/// then freed by the counts, as any object is.
///
/// Sound while other processes run: every reference that does not come
/// from the set's contents counts as outside, and the contents cannot
/// change while their locks are held. A reference taken before its bytes
/// are stored (the encoder), or dropped after they are discarded (the
/// `DroppedReferences` of SharedDict and SharedQueue), is outside for the
/// moment between: the set is kept alive, never freed early. Locks are only
/// tried, never waited for (the monitor must not wait on a stopped
/// process, and a releasing caller may hold one): a busy lock gives up the
/// attempt, which is made again a few times, a little apart (two processes
/// dropping a cycle's last references at once each hold locks the other's
/// look needs), then left to the next reference dropped.
extension ObjectTable {
    /// After a reference to (slot, generation) went and the object stayed
    /// alive. Candidates met while one is looked at wait their turn (the
    /// collection's own releases find more), as in `drain`.
    static func collectCycles(through slot: UInt32, generation: UInt32) {
        let c = ProcessContext.current
        // This process has a handle to it: held from outside, no walk. (Read
        // on the monitor's threads too: its process holds no handle, and
        // the table is never written there.)
        if c.objects.holdings[slot] != nil { return }
        pthread_mutex_lock(c.dyingLock)
        c.dying.cycleCandidates.append((slot, generation))
        if c.dying.collectingCycles { pthread_mutex_unlock(c.dyingLock); return }
        c.dying.collectingCycles = true
        pthread_mutex_unlock(c.dyingLock)
        while true {
            pthread_mutex_lock(c.dyingLock)
            guard let (s, g) = c.dying.cycleCandidates.popLast() else {
                c.dying.collectingCycles = false
                pthread_mutex_unlock(c.dyingLock)
                return
            }
            pthread_mutex_unlock(c.dyingLock)
            // Two processes dropping a cycle's last two references at once
            // may each find a lock the other's look holds: a few more tries,
            // apart, before this one is left to the next reference dropped.
            var tries = 0
            while !collectCycle(through: s, generation: g) && tries < 6 {
                tries += 1
                usleep(UInt32(50 << tries))
            }
        }
    }

    /// An object of the set: what points out of it, and how many references
    /// it gets from inside the set.
    private struct Member {
        var type: UInt32
        var offset: UInt64
        var inside = 0
        var edges: [UInt32] = []
    }

    /// False if a lock was busy (the look may be tried again).
    private static func collectCycle(through start: UInt32, generation: UInt32) -> Bool {
        var members: [UInt32: Member] = [:]
        var locked: [UnsafeMutablePointer<pthread_mutex_t>] = []
        var work = [start]
        var complete = true, busy = false
        while complete, let s = work.popLast() {
            if members[s] != nil { continue }
            guard let e = entry(s) else { complete = false; break }
            lock()
            let live = e.pointee.state == UInt32(JR_SLOT_LIVE) && (s != start || e.pointee.generation == generation)
            var m = Member(type: e.pointee.type, offset: e.pointee.offset)
            unlock()
            guard live, m.offset != 0 else { complete = false; break }   // freed meanwhile: nothing to look at
            complete = references(of: m.type, at: m.offset, locking: &locked) { m.edges.append($0) }
            busy = !complete
            work += m.edges
            members[s] = m
        }
        var garbage: [UInt32] = []
        if complete {
            for m in members.values { for t in m.edges { members[t]?.inside += 1 } }
            lock()
            // What a reference from outside the set reaches stays.
            var reached = Set<UInt32>()
            var stack: [UInt32] = []
            for (s, m) in members {
                let refs = entry(s)!.pointee.refs
                if refs < UInt64(m.inside) { complete = false }     // counts in flux: try another time
                if refs > UInt64(m.inside) { stack.append(s); reached.insert(s) }
            }
            while let s = stack.popLast() {
                for t in members[s]!.edges where reached.insert(t).inserted { stack.append(t) }
            }
            if complete {
                garbage = members.keys.filter { !reached.contains($0) }
                // Held meanwhile, so that emptying one cannot free another under us.
                for s in garbage { entry(s)!.pointee.refs += 1 }
            }
            unlock()
        }
        for m in locked.reversed() { RobustMutex.unlock(m) }
        for s in garbage { empty(members[s]!) }
        for s in garbage { release(s) }
        return !busy
    }

    /// Calls `body` with each reference the object at `offset` holds (one
    /// per handle in its contents, one per link), its lock taken into
    /// `locked` first; false if a lock is busy.
    private static func references(of type: UInt32, at offset: UInt64,
                                   locking locked: inout [UnsafeMutablePointer<pthread_mutex_t>],
                                   _ body: (UInt32) -> Void) -> Bool {
        func items(_ q: SharedQueue) -> Bool {
            guard q.tryLockForCollector() else { return false }
            locked.append(q.lockWord)
            q.forEachItemLocked { bytes, _ in ValueScan.forEachObject(bytes, body) }
            return true
        }
        switch Int(type) {
        case JR_OBJ_QUEUE, JR_OBJ_JOINABLE_QUEUE:
            return items(SharedQueue(offset: offset))
        case JR_OBJ_DICT:
            let d = SharedDict(offset: offset)
            guard d.tryLockForCollector() else { return false }
            locked.append(d.lockWord)
            d.forEachValueLocked { ValueScan.forEachObject($0, body) }
            body(d.updateLockSlot)
            return true
        case JR_OBJ_CONDITION:
            body(SharedSync(offset: offset).linkedSlot)
            return true
        case JR_OBJ_PIPE_END0:
            for q in pipeQueues(offset) where !items(SharedQueue(offset: q)) { return false }
            return true
        case JR_OBJ_PIPE_END1:
            body(Arena.pointer(offset).assumingMemoryBound(to: jr_pipe.self).pointee.hdr.slot)
            return true
        default:
            // A lock, a Value...: holds nothing. A Pool holds its queues, but
            // no handle can name it, so no cycle passes through it.
            return true
        }
    }

    /// A Pipe's queues, each once (a one-way pipe's two may be one).
    static func pipeQueues(_ offset: UInt64) -> [UInt64] {
        let p = Arena.pointer(offset).assumingMemoryBound(to: jr_pipe.self)
        let q = p.pointee.queue
        return (q.0 == q.1 ? [q.0] : [q.0, q.1]).filter { $0 != 0 }
    }

    /// Drops what a garbage object's contents hold (its links go when it is freed).
    private static func empty(_ m: Member) {
        switch Int(m.type) {
        case JR_OBJ_QUEUE, JR_OBJ_JOINABLE_QUEUE: SharedQueue(offset: m.offset).discardItems()
        case JR_OBJ_DICT: SharedDict(offset: m.offset).discardEntries()
        case JR_OBJ_PIPE_END0: for q in pipeQueues(m.offset) { SharedQueue(offset: q).discardItems() }
        default: break
        }
    }

    /// Notes that `header`'s object holds, or held, a handle: a drop of one
    /// of its references then looks for a cycle through it.
    @inline(__always)
    static func noteHoldsHandles(_ header: UnsafeMutablePointer<jr_object_header>) {
        if header.pointee.held_handles == 0 { header.atomic(\.held_handles).store(1, ordering: .releasing) }
    }
}
