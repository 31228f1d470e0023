import CJobrunShims
import Glibc

/// Each process of the run keeps a record in the arena saying who it is and
/// what it is blocked on. The records let the monitor (Monitor.swift) notice
/// deaths, fail or requeue a dead consumer's tasks, and see when every live
/// process waits on something no one can do: the run is deadlocked.
enum ProcessRegistry {
    /// This process's record (nil before `register`).
    private(set) static var record: UnsafeMutablePointer<jr_process_record>?

    static var header: UnsafeMutablePointer<jr_arena_header> { Arena.header }

    static func slots() -> UnsafeMutablePointer<jr_process_record> {
        withUnsafeMutablePointer(to: &header.pointee.processes) {
            UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_process_record.self)
        }
    }

    /// Claims a record for the calling process.
    static func register(name: String, parent: pid_t) {
        let h = header
        _ = jr_mutex_lock(&h.pointee.proc_lock)
        defer { jr_mutex_unlock(&h.pointee.proc_lock) }
        // Slots are claimed in order, so the first free one is the next one:
        // no scan through the records, whose pages a fresh fork would fault
        // in. Once all are used, the record of an ended process is reused.
        let all = slots()
        var i = Int(h.pointee.process_slots)
        if i < Int(JR_MAX_PROCESSES) {
            jr_store_u32(&h.pointee.process_slots, UInt32(i + 1))
        } else {
            guard let j = recyclable(all, h) else { record = nil; return }
            i = j
        }
        let r = all + i
        jr_store_u32(&r.pointee.state, UInt32(JR_PROC_FREE))   // the monitor skips it while it is filled
        memset(r, 0, MemoryLayout<jr_process_record>.size)
        r.pointee.pid = getpid()
        r.pointee.parent_pid = parent
        r.pointee.start_ns = monotonicNanos()
        copyCString(name, into: &r.pointee.name)
        jr_store_u32(&r.pointee.state, UInt32(JR_PROC_RUNNING))
        record = r
    }

    /// A record to reuse (proc_lock held): one whose process the monitor has
    /// seen end and its parent has reaped, so no one waits on it any more;
    /// its figures are added to the header's sums first. nil when every
    /// record belongs to a live process.
    private static func recyclable(_ all: UnsafeMutablePointer<jr_process_record>,
                                   _ h: UnsafeMutablePointer<jr_arena_header>) -> Int? {
        let n = Int(JR_MAX_PROCESSES)
        let start = Int(h.pointee.recycle_next) % n
        for k in 0..<n {
            let i = (start + k) % n
            let r = all + i
            guard r.pointee.state == UInt32(JR_PROC_EXITED), r.pointee.has_exit_code != 0, r.pointee.pid != getpid() else { continue }
            h.pointee.recycled += 1
            h.pointee.recycled_got &+= r.pointee.items_got
            h.pointee.recycled_put &+= r.pointee.items_put
            if r.pointee.has_usage != 0 { h.pointee.recycled_cpu_us &+= r.pointee.user_us + r.pointee.system_us }
            h.pointee.recycle_next = UInt32((i + 1) % n)
            return i
        }
        return nil
    }

    static func name(of r: UnsafeMutablePointer<jr_process_record>) -> String { cString(&r.pointee.name) }

    /// Counts an item this process put (for --stats): its own record, so a
    /// plain add.
    @inline(__always) static func countPut() { record?.pointee.items_put &+= 1 }
    /// Counts an item this process got.
    @inline(__always) static func countGot() { record?.pointee.items_got &+= 1 }

    /// Notes that the process of `r` has ended, at the first sighting
    /// (monitor, or a reaper before it reaps: see Monitor.pidfd).
    static func markEnded(_ r: UnsafeMutablePointer<jr_process_record>) {
        withUnsafeMutablePointer(to: &r.pointee.end_ns) {
            $0.withMemoryRebound(to: UInt64.self, capacity: 1) { p in
                _ = jr_cas_u64(p, 0, UInt64(monotonicNanos()))
            }
        }
    }

    static func hasEnded(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        withUnsafeMutablePointer(to: &r.pointee.end_ns) {
            $0.withMemoryRebound(to: UInt64.self, capacity: 1) { jr_load_u64($0) != 0 }
        }
    }

    /// The record of `pid`, if it is a process of this run: the newest one
    /// with that pid (a pid the kernel reused names the later process), found
    /// from the end, where the processes being joined usually are.
    static func find(_ pid: pid_t) -> UnsafeMutablePointer<jr_process_record>? {
        let all = slots()
        var i = Int(jr_load_u32(&header.pointee.process_slots))
        while i > 0 {
            i -= 1
            if all[i].pid == pid && all[i].state != UInt32(JR_PROC_FREE) { return all + i }
        }
        return nil
    }

    /// Notes that this process is about to sleep on `word` (an arena address).
    @inline(__always)
    static func willWait(_ kind: Int, object: UnsafeRawPointer, word: UnsafeRawPointer, timed: Bool) {
        guard let r = record else { return }
        r.pointee.wait_object = Arena.offset(of: object)
        r.pointee.wait_word = Arena.offset(of: word)
        r.pointee.wait_timed = timed ? 1 : 0
        r.pointee.wait_token &+= 1
        jr_store_u32(&r.pointee.wait_kind, UInt32(kind))
    }

    /// `willWait` for a sleep on `word` while it holds `value`: the monitor
    /// compares the two to tell a waiter that was woken (and has not run
    /// since, e.g. stopped) from one still waiting (Waits.woken).
    @inline(__always)
    static func willWait(_ kind: Int, object: UnsafeRawPointer, word: UnsafeRawPointer, value: UInt32, timed: Bool) {
        record?.pointee.wait_value = value
        willWait(kind, object: object, word: word, timed: timed)
    }

    /// Notes the end of one sleep. `futexResult` is what jr_futex_wait
    /// returned: anything but a timeout means another process acted (woke us
    /// or changed the word), which is progress the monitor must see; a sleep
    /// slice that merely ran out is not.
    @inline(__always)
    static func didWait(_ futexResult: Int32 = 0) {
        guard let r = record else { return }
        if futexResult != -ETIMEDOUT { r.pointee.wait_gen &+= 1 }
        jr_store_u32(&r.pointee.wait_kind, UInt32(JR_WAIT_NONE))
    }

    /// The kind of the verdict `takeVerdict` last returned, for `raiseFailure`.
    private static var verdictKind: ErrorKind = .Deadlock

    /// The monitor's verdict on the sleep that just ended (call after
    /// `didWait`), taken once: its message, or nil when there is none. A
    /// verdict judged on an earlier sleep (it arrived after that sleep ended)
    /// is dropped: every wait is judged afresh. Waits raise it only when
    /// their condition is still false, as a verdict can cross a wake.
    static func takeVerdict() -> String? {
        guard let r = record else { return nil }
        let kind = jr_load_u32(&r.pointee.verdict)
        if kind == 0 { return nil }
        let token = r.pointee.verdict_token
        let text = withUnsafeBytes(of: &header.pointee.failure) { buf in
            String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        jr_store_u32(&r.pointee.verdict, 0)
        guard token == r.pointee.wait_token else { return nil }
        verdictKind = kind == 2 ? .WorkerDied : .Deadlock
        return text
    }

    /// Raises the verdict just taken (`takeVerdict`): `WorkerDied` when a
    /// process died on the way to the deadlock, else `Deadlock`. A
    /// `WorkerDied` tells the script about the processes that ended
    /// abnormally (the verdict names them): they are no longer unseen.
    static func raiseFailure(_ L: LuaState, _ message: String) -> Int32 {
        if verdictKind == .WorkerDied {
            let all = slots()
            let n = Int(jr_load_u32(&header.pointee.process_slots))
            for i in 0..<n where all[i].state == UInt32(JR_PROC_EXITED) && all[i].has_exit_code != 0 && all[i].exit_code != 0 {
                jr_store_u32(&all[i].reported, 1)
            }
        }
        return Lua.raise(L, verdictKind, message)
    }

    /// The script has been told how `pid` ended.
    static func markReported(_ pid: pid_t) {
        if let r = find(pid) { jr_store_u32(&r.pointee.reported, 1) }
    }

    /// The script sent `pid` the signal it may die of.
    static func markSignalled(_ pid: pid_t) {
        if let r = find(pid) { jr_store_u32(&r.pointee.signalled, 1) }
    }

    /// Workers that failed (ended with a non-zero status, or by a signal the
    /// script did not send) without the script being told: "consumer-1 (pid
    /// 41) exited with status 1", in the order of their records.
    static func unseenFailures() -> [String] {
        let all = slots()
        let n = Int(jr_load_u32(&header.pointee.process_slots))
        let me = getpid()
        var out: [String] = []
        for i in 0..<n where all[i].state != UInt32(JR_PROC_FREE) && all[i].pid != me {
            let r = all + i
            guard jr_load_u32(&r.pointee.has_exit_code) != 0, jr_load_u32(&r.pointee.reported) == 0 else { continue }
            let code = r.pointee.exit_code
            if code == 0 || (code < 0 && jr_load_u32(&r.pointee.signalled) != 0) || diedWithParent(r) { continue }
            out.append("\(name(of: r)) (pid \(r.pointee.pid)) \(describeExit(code))")
        }
        return out
    }

    /// Whether `r` was killed by the SIGKILL a worker gets when the process
    /// that started it dies (ProcessControl.dieWithParent): it ended with
    /// SIGKILL no earlier than its parent did. The parent's own end is what
    /// the script must hear of.
    private static func diedWithParent(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        guard r.pointee.exit_code == -SIGKILL, let p = find(r.pointee.parent_pid),
              p.pointee.start_ns <= r.pointee.start_ns, hasEnded(p) else { return false }
        // Both ends are noted when first seen, in either order within a tick.
        return r.pointee.end_ns >= p.pointee.end_ns - 200_000_000
    }

    /// A parent that reaped `pid` records its exit code for the monitor's messages.
    static func recordExit(_ pid: pid_t, code: Int32, usage: rusage? = nil) {
        guard let r = find(pid) else { return }
        markEnded(r)
        if let u = usage { store(u, in: r) }
        r.pointee.exit_code = code
        jr_store_u32(&r.pointee.has_exit_code, 1)
    }

    /// A child `pid` has ended and is about to be reaped: mark its record
    /// before its pid can be reused.
    static func willReap(_ pid: pid_t) {
        if let r = find(pid) { markEnded(r) }
    }

    /// CPU time and peak memory from getrusage/wait4.
    static func store(_ u: rusage, in r: UnsafeMutablePointer<jr_process_record>) {
        r.pointee.user_us = UInt64(u.ru_utime.tv_sec) * 1_000_000 + UInt64(u.ru_utime.tv_usec)
        r.pointee.system_us = UInt64(u.ru_stime.tv_sec) * 1_000_000 + UInt64(u.ru_stime.tv_usec)
        r.pointee.max_rss_kib = UInt64(max(0, u.ru_maxrss))
        r.pointee.has_usage = 1
    }

    // MARK: items held for redelivery

    /// Keeps a copy of an item taken from a redeliver queue (called with the
    /// queue's lock held, so a death cannot fall between taking and keeping).
    static func hold(_ bytes: UnsafeRawBufferPointer, from queue: UInt64) {
        hold(bytes, from: queue, in: record)
    }

    static func hold(_ bytes: UnsafeRawBufferPointer, from queue: UInt64, in r: UnsafeMutablePointer<jr_process_record>?) {
        guard let r, let off = try? Arena.allocate(MemoryLayout<jr_held>.size + bytes.count) else { return }
        let h = Arena.pointer(off).assumingMemoryBound(to: jr_held.self)
        h.pointee.next = 0
        h.pointee.queue = queue
        h.pointee.length = UInt64(bytes.count)
        if bytes.count > 0 { memcpy(UnsafeMutableRawPointer(h + 1), bytes.baseAddress!, bytes.count) }
        if r.pointee.held_tail != 0 {
            Arena.pointer(r.pointee.held_tail).assumingMemoryBound(to: jr_held.self).pointee.next = off
        } else {
            r.pointee.held_head = off
        }
        r.pointee.held_tail = off
    }

    /// Unlinks the oldest item this process holds from `queue` (its task is
    /// being marked done) and returns its block for the caller to free, or 0.
    ///
    /// Starts the task_done stages (doneStage 1, naming the node) before the
    /// list changes, so the monitor can put the node back if a SIGKILL lands
    /// anywhere in between.
    static func unlinkHeld(from queue: UInt64) -> UInt64 {
        guard let r = record else { return 0 }
        var prev: UInt64 = 0
        var cur = r.pointee.held_head
        while cur != 0 {
            let h = Arena.pointer(cur).assumingMemoryBound(to: jr_held.self)
            if h.pointee.queue == queue {
                doneStage(1, queue: queue, node: cur)
                if r.pointee.held_tail == cur { r.pointee.held_tail = prev }
                if prev == 0 { r.pointee.held_head = h.pointee.next }
                else { Arena.pointer(prev).assumingMemoryBound(to: jr_held.self).pointee.next = h.pointee.next }
                return cur
            }
            prev = cur
            cur = h.pointee.next
        }
        doneStage(1, queue: queue, node: 0)
        return 0
    }

    /// Whether `node` is on `r`'s list of kept items.
    static func isHeld(_ node: UInt64, in r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        var cur = r.pointee.held_head
        while cur != 0 {
            if cur == node { return true }
            cur = Arena.pointer(cur).assumingMemoryBound(to: jr_held.self).pointee.next
        }
        return false
    }

    /// Notes how far a task_done has got (0: none in progress).
    @inline(__always)
    static func doneStage(_ stage: UInt32, queue: UInt64 = 0, node: UInt64 = 0, clearingNode: Bool = false) {
        guard let r = record else { return }
        if stage == 1 {
            r.pointee.done_queue = queue
            jr_store_u64(&r.pointee.done_node, node)
        }
        if clearingNode { jr_store_u64(&r.pointee.done_node, 0) }
        jr_store_u32(&r.pointee.done_stage, stage)
    }

    /// Puts back an item unlinked by `unlinkHeld` whose task_done failed, at
    /// the front (it was the oldest of its queue).
    static func relinkHeld(_ node: UInt64) {
        relinkHeld(node, in: record)
    }

    static func relinkHeld(_ node: UInt64, in r: UnsafeMutablePointer<jr_process_record>?) {
        guard let r else { return }
        let h = Arena.pointer(node).assumingMemoryBound(to: jr_held.self)
        h.pointee.next = r.pointee.held_head
        r.pointee.held_head = node
        if r.pointee.held_tail == 0 { r.pointee.held_tail = node }
    }

    // MARK: tasks taken from JoinableQueues

    /// Counts an item this process took from a JoinableQueue.
    static func took(from queue: UInt64) {
        took(from: queue, in: record)
    }

    /// How many items `r` holds from `queue` (taken, not yet done).
    static func takenCount(_ queue: UInt64, in r: UnsafeMutablePointer<jr_process_record>) -> UInt64 {
        withUnsafeMutablePointer(to: &r.pointee.taken) {
            $0.withMemoryRebound(to: jr_taken.self, capacity: Int(JR_MAX_TAKEN)) { t in
                for i in 0..<Int(JR_MAX_TAKEN) where t[i].queue == queue { return jr_load_u64(&t[i].count) }
                return 0
            }
        }
    }

    static func took(from queue: UInt64, in r: UnsafeMutablePointer<jr_process_record>?) {
        guard let r else { return }
        withUnsafeMutablePointer(to: &r.pointee.taken) {
            $0.withMemoryRebound(to: jr_taken.self, capacity: Int(JR_MAX_TAKEN)) { t in
                var free = -1
                for i in 0..<Int(JR_MAX_TAKEN) {
                    if t[i].queue == queue { _ = jr_add_u64(&t[i].count, 1); return }
                    if free < 0 && t[i].queue == 0 { free = i }
                }
                if free >= 0 { t[free].count = 1; jr_store_u64(&t[free].queue, queue) }
            }
        }
    }

    /// Forgets one item this process took from `queue`, if it took any.
    static func done(with queue: UInt64) {
        done(with: queue, in: record)
    }

    static func done(with queue: UInt64, in r: UnsafeMutablePointer<jr_process_record>?) {
        guard let r else { return }
        withUnsafeMutablePointer(to: &r.pointee.taken) {
            $0.withMemoryRebound(to: jr_taken.self, capacity: Int(JR_MAX_TAKEN)) { t in
                for i in 0..<Int(JR_MAX_TAKEN) where t[i].queue == queue && t[i].count > 0 {
                    t[i].count -= 1
                    return
                }
            }
        }
    }
}
