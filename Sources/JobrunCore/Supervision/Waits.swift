import Atomics
import CJobrunShims
import Glibc

/// What the monitor can tell about a blocked process: whether the condition
/// it waits for could come true without some other process acting, and a
/// description for the deadlock message. Read without the objects' locks:
/// the monitor only trusts a verdict that stays the same for several ticks.
enum Waits {
    static func queue(_ r: UnsafeMutablePointer<jr_process_record>) -> UnsafeMutablePointer<jr_queue> {
        Arena.pointer(r.pointee.wait_object).assumingMemoryBound(to: jr_queue.self)
    }
    static func sync(_ r: UnsafeMutablePointer<jr_process_record>) -> UnsafeMutablePointer<jr_sync> {
        Arena.pointer(r.pointee.wait_object).assumingMemoryBound(to: jr_sync.self)
    }

    static func isStuck(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        switch Int(r.atomic(\.wait_kind).load(ordering: .acquiring)) {
        case JR_WAIT_GET, JR_WAIT_RECV:
            let q = queue(r)
            return q.atomic(\.count).load(ordering: .acquiring) == 0 && q.atomic(\.closed).load(ordering: .acquiring) == 0
        case JR_WAIT_PUT:
            let q = queue(r)
            return q.pointee.maxsize > 0 && Int64(q.atomic(\.count).load(ordering: .acquiring)) >= q.pointee.maxsize && q.pointee.closed == 0
        case JR_WAIT_JOIN:
            let q = queue(r)
            return q.pointee.unfinished > q.pointee.failed_tasks
        case JR_WAIT_LOCK:
            let s = sync(r)
            return s.pointee.value != 0 && processIsAlive(s.pointee.owner, start: s.pointee.owner_start)
        case JR_WAIT_SEMAPHORE:
            return sync(r).pointee.value <= 0
        case JR_WAIT_EVENT:
            return sync(r).pointee.value == 0 && !woken(r)
        case JR_WAIT_BARRIER, JR_WAIT_CONDITION, JR_WAIT_MEMORY:
            return !woken(r)
        case JR_WAIT_PROCESS:
            let target = Arena.pointer(r.pointee.wait_object).assumingMemoryBound(to: jr_process_record.self)
            let state = target.atomic(\.state).load(ordering: .acquiring)
            return (state == UInt32(JR_PROC_RUNNING) || state == UInt32(JR_PROC_STARTING))
                && processIsAlive(target.pointee.pid, start: ProcessIdentity.start(of: target))
        case JR_WAIT_POOL:
            return SharedPool.isStuck(r)
        default:
            return true
        }
    }

    /// Whether the word `r` sleeps on has moved since it went to sleep: it
    /// was released (a Barrier opened, an Event was set, a Condition was
    /// notified) and has not run since, e.g. it was stopped. It is not stuck:
    /// it will go on when it runs. Only for words whose every change wakes
    /// every sleeper on them (a sleeper left asleep after a change would
    /// look released forever).
    static func woken(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        let word = Arena.pointer(r.pointee.wait_word).assumingMemoryBound(to: UInt32.self)
        return word.atomic.load(ordering: .acquiring) != r.pointee.wait_value
    }

    static func label(_ type: UInt32, _ id: UInt32) -> String {
        switch Int(type) {
        case JR_OBJ_QUEUE: return "Queue#\(id)"
        case JR_OBJ_JOINABLE_QUEUE: return "JoinableQueue#\(id)"
        case JR_OBJ_PIPE_END0, JR_OBJ_PIPE_END1: return "Pipe#\(id)"
        default: return "\(SyncBindings.typeName(Int(type)))#\(id)"
        }
    }

    /// The object's label as its own messages give it, with its name: a
    /// queue under a Pipe end is named as that end ("Connection#3.a").
    static func label(of offset: UInt64, _ h: UnsafeMutablePointer<jr_object_header>) -> String {
        switch Int(h.pointee.type) {
        case JR_OBJ_QUEUE, JR_OBJ_JOINABLE_QUEUE:
            let q = SharedQueue(offset: offset)
            let site = q.site
            return site.hasPrefix("Connection#") ? site : QueueBindings.label(q)
        case JR_OBJ_LOCK, JR_OBJ_RLOCK, JR_OBJ_SEMAPHORE, JR_OBJ_BOUNDED_SEMAPHORE, JR_OBJ_EVENT, JR_OBJ_BARRIER, JR_OBJ_CONDITION:
            return SyncBindings.label(SharedSync(offset: offset))
        default:
            return label(h.pointee.type, h.pointee.id)
        }
    }

    static func owner(_ pid: Int32) -> String {
        if let r = ProcessRegistry.find(pid) { return "\(ProcessRegistry.name(of: r)) (pid \(pid))" }
        return "pid \(pid)"
    }

    /// `kind` is the wait the monitor judged: a waiter that sleeps in
    /// slices notes no wait for an instant between two, so its record's
    /// `wait_kind` may read as none while the verdict is written.
    static func describe(_ r: UnsafeMutablePointer<jr_process_record>, kind: Int) -> String {
        if kind == JR_WAIT_PROCESS || kind == JR_WAIT_MEMORY { return describeOther(r, kind: kind) }
        if kind == JR_WAIT_POOL { return SharedPool.describeWait(r) }
        // Every object starts with its header: name it once.
        let h = Arena.pointer(r.pointee.wait_object).assumingMemoryBound(to: jr_object_header.self)
        let object = label(of: r.pointee.wait_object, h)
        switch kind {
        case JR_WAIT_GET, JR_WAIT_RECV:
            return kind == JR_WAIT_RECV ? "\(object).recv (nothing to read)" : "\(object).get (the queue is empty)"
        case JR_WAIT_PUT:
            let q = queue(r)
            return "\(object).put (the queue is full: \(q.pointee.count) of \(q.pointee.maxsize))"
        case JR_WAIT_JOIN:
            let q = queue(r)
            let n = q.pointee.unfinished
            return "\(object).join (\(n) item\(n == 1 ? "" : "s") not marked done, \(q.pointee.count) still queued)"
        case JR_WAIT_LOCK:
            return "\(object).acquire (held by \(owner(sync(r).pointee.owner)))"
        case JR_WAIT_SEMAPHORE:
            return "\(object).acquire (value 0)"
        case JR_WAIT_EVENT:
            return "\(object).wait (not set)"
        case JR_WAIT_BARRIER:
            let s = sync(r)
            return "\(object).wait (\(s.pointee.value) of \(s.pointee.bound) parties arrived)"
        case JR_WAIT_CONDITION:
            return "\(object).wait (no notify)"
        default:
            return "an unknown wait on \(object)"
        }
    }

    private static func describeOther(_ r: UnsafeMutablePointer<jr_process_record>, kind: Int) -> String {
        switch kind {
        case JR_WAIT_PROCESS:
            let target = Arena.pointer(r.pointee.wait_object).assumingMemoryBound(to: jr_process_record.self)
            return "join of process \(ProcessRegistry.name(of: target)) (pid \(target.pointee.pid))"
        case JR_WAIT_MEMORY:
            return "a wait for shared memory (\(kibibytes(Arena.bytesInUse)) of \(kibibytes(Arena.limit)) KiB in use)"
        default:
            return "an unknown wait"
        }
    }

    /// Whole KiB, rounded up, with thousands separators: a limit of a few
    /// MiB and what is in use under it read right ("768 of 1,024 KiB").
    static func kibibytes(_ bytes: UInt64) -> String {
        let k = String((bytes + 1023) / 1024)
        var out = ""
        for (i, ch) in k.enumerated() {
            if i > 0 && (k.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return out
    }
}
