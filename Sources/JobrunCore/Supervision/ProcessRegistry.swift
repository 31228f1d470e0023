import Atomics
import CJobrunShims
import Glibc

/// Each process of the run keeps a record in the arena saying who it is and
/// what it is blocked on. The records let the monitor (Monitor.swift) notice
/// deaths, fail or requeue a dead consumer's tasks, and see when every live
/// process waits on something no one can do: the run is deadlocked.
enum ProcessRegistry {
    /// This process's record (nil before `register`): ProcessContext.identity.
    static var record: UnsafeMutablePointer<jr_process_record>? {
        @inline(__always) get { ProcessContext.processHot.pointee.record }
    }

    static var header: UnsafeMutablePointer<jr_arena_header> { Arena.header }

    static func slots() -> UnsafeMutablePointer<jr_process_record> {
        withUnsafeMutablePointer(to: &header.pointee.processes) {
            UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_process_record.self)
        }
    }

    /// Takes proc_lock. A holder that died here left nothing to repair:
    /// claiming a record stores its state FREE before it fills it (the
    /// monitor skips it; at worst one record is never used), a process
    /// count or a list head is one store of a value filled in first; a
    /// death while a reused record's figures are summed may count them
    /// twice in --stats, nothing more.
    static func lockProcessTable() {
        RobustMutex.lock(&header.pointee.proc_lock, ownerDied: RobustMutex.nothingToRepair)
    }

    /// Claims a record for the calling process.
    static func register(name: String, parent: pid_t) {
        let h = header
        lockProcessTable()
        defer { jr_mutex_unlock(&h.pointee.proc_lock) }
        guard let i = claimLocked(name: name, parent: parent) else { ProcessContext.current.own(nil, slot: 0); return }
        let r = slots() + i
        own(r)
    }

    /// Makes `r` this process's record.
    private static func own(_ r: UnsafeMutablePointer<jr_process_record>) {
        ProcessContext.current.identity.start = ProcessIdentity.start(of: r)
        r.pointee.pid = getpid()
        r.atomic(\.state).store(UInt32(JR_PROC_RUNNING), ordering: .releasing)
        ProcessContext.current.own(r, slot: UInt32(slots().distance(to: r) + 1))
    }

    /// Changes whenever a record is claimed (a new one, or a reused one):
    /// for a scan of the records to tell that it may have missed one.
    static func claimsSoFar() -> UInt64 {
        let h = header
        return UInt64(h.atomic(\.process_slots).load(ordering: .acquiring)) << 32 | UInt64(h.atomic(\.recycle_next).load(ordering: .acquiring))
    }

    /// Claims and fills a record (proc_lock held), still FREE to the monitor;
    /// nil when every record belongs to a live process.
    private static func claimLocked(name: String, parent: pid_t) -> Int? {
        let h = header
        // Slots are claimed in order, so the first free one is the next one:
        // no scan through the records, whose pages a fresh fork would fault
        // in. Once all are used, the record of an ended process is reused.
        let all = slots()
        var i = Int(h.pointee.process_slots)
        if i < Int(JR_MAX_PROCESSES) {
            h.atomic(\.process_slots).store(UInt32(i + 1), ordering: .releasing)
        } else {
            guard let j = recyclable(all, h) else { return nil }
            i = j
        }
        let r = all + i
        r.atomic(\.state).store(UInt32(JR_PROC_FREE), ordering: .releasing)   // the monitor skips it while it is filled
        memset(r, 0, MemoryLayout<jr_process_record>.size)
        r.pointee.parent_pid = parent
        r.pointee.start_ns = monotonicNanos()
        copyCString(name, into: &r.pointee.name)
        return i
    }

    /// Parent, before fork/spawn: a STARTING record for the child, so the
    /// monitor counts it from the start (no deadlock is declared while a
    /// process starts). nil when every record belongs to a live process: the
    /// start must be refused, never run unsupervised.
    static func reserve(name: String) -> Int? {
        let h = header
        lockProcessTable()
        defer { jr_mutex_unlock(&h.pointee.proc_lock) }
        guard let i = claimLocked(name: name, parent: getpid()) else { return nil }
        (slots() + i).atomic(\.state).store(UInt32(JR_PROC_STARTING), ordering: .releasing)
        return i
    }

    /// Parent, once fork/spawn returned: the child's pid (the child writes it
    /// too, whichever comes first; 0 until then).
    static func started(_ slot: Int, pid: pid_t) {
        let r = slots() + slot
        if r.pointee.pid == 0 { r.pointee.pid = pid }
    }

    /// Parent, when fork/spawn failed: the reserved record is free again.
    static func abandon(_ slot: Int) {
        let h = header
        lockProcessTable()
        defer { jr_mutex_unlock(&h.pointee.proc_lock) }
        let r = slots() + slot
        r.atomic(\.state).store(UInt32(JR_PROC_FREE), ordering: .releasing)
        r.pointee.pid = 0
    }

    /// Child: takes over the record its parent reserved (`slot`), or claims
    /// one when that is not a STARTING record of `parent`'s.
    static func takeOver(_ slot: Int, name: String, parent: pid_t) {
        let r = slots() + slot
        guard slot >= 0, slot < Int(JR_MAX_PROCESSES),
              r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_STARTING),
              r.pointee.parent_pid == parent || r.pointee.pid == getpid() else {
            register(name: name, parent: parent)
            return
        }
        own(r)
    }

    /// A record to reuse (proc_lock held): one whose process the monitor has
    /// seen end and its parent has reaped, so no one waits on it any more;
    /// its figures are added to the header's sums first. A record of an
    /// unseen failure is reused only when there is no other, and counted in
    /// `recycled_unseen` first, so the run's summary still counts it. nil
    /// when every record belongs to a live process.
    private static func recyclable(_ all: UnsafeMutablePointer<jr_process_record>,
                                   _ h: UnsafeMutablePointer<jr_arena_header>) -> Int? {
        recyclable(all, h, takingUnseen: false) ?? recyclable(all, h, takingUnseen: true)
    }

    private static func recyclable(_ all: UnsafeMutablePointer<jr_process_record>,
                                   _ h: UnsafeMutablePointer<jr_arena_header>, takingUnseen: Bool) -> Int? {
        let n = Int(JR_MAX_PROCESSES)
        let start = Int(h.pointee.recycle_next) % n
        for k in 0..<n {
            let i = (start + k) % n
            let r = all + i
            if r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_FREE) {   // a start that failed
                h.atomic(\.recycle_next).store(UInt32((i + 1) % n), ordering: .releasing)
                return i
            }
            guard r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_EXITED),
                  r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0, r.pointee.pid != getpid() else { continue }
            if isUnseenFailure(r) {
                guard takingUnseen else { continue }
                h.pointee.recycled_unseen += 1
            }
            h.pointee.recycled += 1
            h.pointee.recycled_got &+= r.pointee.items_got
            h.pointee.recycled_put &+= r.pointee.items_put
            if r.pointee.has_usage != 0 { h.pointee.recycled_cpu_us &+= r.pointee.user_us + r.pointee.system_us }
            h.atomic(\.recycle_next).store(UInt32((i + 1) % n), ordering: .releasing)
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
        _ = r.atomic(\.end_ns).compareExchange(expected: 0, desired: monotonicNanos(), ordering: .acquiringAndReleasing)
    }

    static func hasEnded(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        r.atomic(\.end_ns).load(ordering: .acquiring) != 0
    }

    /// The record of `pid`, if it is a process of this run: the newest one
    /// with that pid (a pid the kernel reused names the later process), found
    /// from the end, where the processes being joined usually are.
    static func find(_ pid: pid_t) -> UnsafeMutablePointer<jr_process_record>? {
        find(pid, start: 0)
    }

    /// The record of the process (pid, start) (ProcessIdentity); `start` 0
    /// (unknown) matches the newest record with that pid.
    static func find(_ pid: pid_t, start: UInt64) -> UnsafeMutablePointer<jr_process_record>? {
        let all = slots()
        var i = Int(header.atomic(\.process_slots).load(ordering: .acquiring))
        while i > 0 {
            i -= 1
            if all[i].pid == pid && (all + i).atomic(\.state).load(ordering: .acquiring) != UInt32(JR_PROC_FREE)
                && (start == 0 || ProcessIdentity.start(of: all + i) == start) { return all + i }
        }
        return nil
    }

    /// Notes that this process is about to sleep on `word` (an arena address).
    @inline(__always)
    static func willWait(_ kind: Int, object: UnsafeRawPointer, word: UnsafeRawPointer, timed: Bool) {
        Monitor.watch()
        guard let r = record else { return }
        r.pointee.wait_object = Arena.offset(of: object)
        r.pointee.wait_word = Arena.offset(of: word)
        r.pointee.wait_timed = timed ? 1 : 0
        r.pointee.wait_token &+= 1
        r.atomic(\.wait_kind).store(UInt32(kind), ordering: .releasing)
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
        // Read by the monitor, which loads it with acquire: one atomic store.
        if futexResult != -ETIMEDOUT { r.atomic(\.wait_gen).store(r.pointee.wait_gen &+ 1, ordering: .releasing) }
        r.atomic(\.wait_kind).store(UInt32(JR_WAIT_NONE), ordering: .releasing)
    }

    /// The monitor's verdict on the sleep that just ended (call after
    /// `didWait`), taken once: a `.deadlock` or `.workerDied` error with
    /// the monitor's message, or nil when there is none. A
    /// verdict judged on an earlier sleep (it arrived after that sleep ended)
    /// is dropped: every wait is judged afresh. Waits raise it only when
    /// their condition is still false, as a verdict can cross a wake.
    static func takeVerdict() -> JobrunError? {
        guard let r = record else { return nil }
        let kind = r.atomic(\.verdict).load(ordering: .acquiring)
        if kind == 0 { return nil }
        let token = r.pointee.verdict_token
        let text = withUnsafeBytes(of: &header.pointee.failure) { buf in
            String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        r.atomic(\.verdict).store(0, ordering: .releasing)
        guard token == r.pointee.wait_token else { return nil }
        return JobrunError(kind == 2 ? .workerDied : .deadlock, text)
    }

    /// Raises a verdict (`takeVerdict`) as the error of `operation`
    /// ("Queue#3.get: <the monitor's message>"): `WorkerDied` when a
    /// process died on the way to the deadlock, else `Deadlock`. A
    /// `WorkerDied` tells the script about the processes that ended
    /// abnormally (the verdict names them): they are no longer unseen.
    static func raiseFailure(_ L: LuaState, _ verdict: JobrunError, in operation: String) -> Int32 {
        awaitVerdictsTaken()
        TestHooks.pausePoint("verdict-raising")
        if verdict.code == .workerDied {
            let all = slots()
            let n = Int(header.atomic(\.process_slots).load(ordering: .acquiring))
            for i in 0..<n {
                let r = all + i
                guard r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_EXITED),
                      r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0, r.pointee.exit_code != 0 else { continue }
                r.atomic(\.reported).store(1, ordering: .releasing)
            }
        }
        return Lua.raise(L, verdict.code.kind, "\(operation): \(verdict.message)")
    }

    /// How long a process acting on a verdict waits for the others judged
    /// with it to take theirs (a stopped process may never take it).
    static let verdictGraceNanos: Int64 = 5_000_000_000

    /// Waits (bounded) until every other process that holds a verdict it has
    /// not taken yet has taken it (called outside any lock, before a verdict
    /// is raised). A verdict is a snapshot: every waiter it names was stuck
    /// when it was given. A waiter decides under its wait's lock whether to
    /// raise it, and takes an item that arrived first instead
    /// (`takeVerdict`); without this wait, a process that raised its verdict
    /// and went on (a put after a caught Deadlock) could feed a waiter that
    /// the same verdict concerned and that had not run yet, so whether that
    /// waiter raised or took the new item depended on scheduling.
    static func awaitVerdictsTaken() {
        guard let me = record else { return }
        let all = slots()
        let start = monotonicNanos()
        while monotonicNanos() - start < verdictGraceNanos {
            let n = Int(header.atomic(\.process_slots).load(ordering: .acquiring))
            var pending = false
            for i in 0..<n where all + i != me {
                let r = all + i
                guard r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) else { continue }
                if r.atomic(\.verdict).load(ordering: .acquiring) != 0
                    && r.atomic(\.verdict_token).load(ordering: .acquiring) == r.atomic(\.wait_token).load(ordering: .acquiring) {
                    pending = true
                    break
                }
            }
            if !pending { return }
            usleep(1000)
        }
    }

    /// Whether `pid` was given a verdict on its latest wait and has not
    /// waited since: it is raising it (or caught it, or found its wait
    /// satisfied after all), so it may be writing its own report.
    static func isActingOnVerdict(_ pid: pid_t) -> Bool {
        guard let r = find(pid), r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING),
              !hasEnded(r) else { return false }
        let token = r.atomic(\.verdict_token).load(ordering: .acquiring)
        return token != 0 && token == r.atomic(\.wait_token).load(ordering: .acquiring)
    }

    /// The script has been told how `pid` ended.
    static func markReported(_ pid: pid_t) {
        if let r = find(pid) { r.atomic(\.reported).store(1, ordering: .releasing) }
    }

    /// The script sent `pid` the signal it may die of: `signalled` 1, or
    /// `stoppedAtEnd` when the end of the run stopped it (a daemon, or
    /// every worker after an error: jobrun._shutdown), which --stats shows
    /// as "stopped at end of run".
    static func markSignalled(_ pid: pid_t, atEnd: Bool = false) {
        guard let r = find(pid) else { return }
        if atEnd {
            r.atomic(\.signalled).store(stoppedAtEnd, ordering: .releasing)
        } else {
            _ = r.atomic(\.signalled).compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing)
        }
    }

    static let stoppedAtEnd: UInt32 = 2

    /// Workers that failed (ended with a non-zero status, or by a signal the
    /// script did not send) without the script being told: "consumer-1 (pid
    /// 41) exited with status 1", in the order of their records.
    static func unseenFailures() -> [String] {
        let all = slots()
        let n = Int(header.atomic(\.process_slots).load(ordering: .acquiring))
        let me = getpid()
        var out: [String] = []
        for i in 0..<n {
            let r = all + i
            guard r.atomic(\.state).load(ordering: .acquiring) != UInt32(JR_PROC_FREE), r.pointee.pid != me, isUnseenFailure(r) else { continue }
            out.append("\(name(of: r)) (pid \(r.pointee.pid)) \(describeExit(r.pointee.exit_code))")
        }
        return out
    }

    /// Unseen failures whose records were reused (their names are gone).
    static var recycledUnseenFailures: Int { Int(header.pointee.recycled_unseen) }

    /// Whether the reaped process of `r` failed and the script was never told.
    private static func isUnseenFailure(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        guard r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0, r.atomic(\.reported).load(ordering: .acquiring) == 0 else { return false }
        let code = r.pointee.exit_code
        return !(code == 0 || (code < 0 && r.atomic(\.signalled).load(ordering: .acquiring) != 0) || diedWithParent(r))
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
        r.atomic(\.has_exit_code).store(1, ordering: .releasing)
    }

    /// A child `pid` has ended and is about to be reaped: mark its record
    /// before its pid can be reused.
    static func willReap(_ pid: pid_t) {
        if let r = find(pid) { markEnded(r) }
    }

    /// CPU time and peak memory from getrusage/wait4.
    static func store(_ u: rusage, in r: UnsafeMutablePointer<jr_process_record>) {
        func micros(_ t: timeval) -> UInt64 {
            UInt64(clamping: t.tv_sec).multipliedReportingOverflow(by: 1_000_000).partialValue &+ UInt64(clamping: t.tv_usec)
        }
        r.pointee.user_us = micros(u.ru_utime)
        r.pointee.system_us = micros(u.ru_stime)
        r.pointee.max_rss_kib = UInt64(max(0, u.ru_maxrss))
        r.pointee.has_usage = 1
    }

    /// A field of record `r`, as a pointer (for `Arena.allocate(recordingIn:)`).
    static func field(_ r: UnsafeMutablePointer<jr_process_record>,
                      _ key: WritableKeyPath<jr_process_record, UInt64>) -> UnsafeMutablePointer<UInt64> {
        (UnsafeMutableRawPointer(r) + MemoryLayout<jr_process_record>.offset(of: key)!).assumingMemoryBound(to: UInt64.self)
    }

    // Items taken from JoinableQueues and the kept copies of redeliver
    // queues are the queue's own (SharedQueue: its taker table).
}
