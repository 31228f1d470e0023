import Atomics
import CJobrunShims
import Glibc

/// The shared half of `jobrun.Pool` (prelude/pool.lua, PoolBindings.swift):
/// the pool's ledger of which task each worker holds, and the waits of its
/// caller and of its idle workers, both visible to the monitor as what they
/// are.
///
/// Tasks go through the pool's task queue, which only the caller puts to, so
/// a task's number is its place in that queue (from 1): the n-th item taken
/// is task n. A worker takes under the pool's robust `lock` and notes its
/// intent first (stage TAKING with `mark`, the items taken before), then the
/// task it got (stage HOLDING). If it dies in between, the next locker sees
/// TAKING and counts the items taken from the queue: one more than `mark`
/// means the take went through. No death, at any instruction, leaves a task
/// whose holder is unknown; none is guessed from silence.
struct SharedPool {
    let p: UnsafeMutablePointer<jr_pool>

    init(offset: UInt64) { p = Arena.pointer(offset).assumingMemoryBound(to: jr_pool.self) }

    static func create(taskQueue: UInt64, resultQueue: UInt64, slots: Int) throws(Arena.AllocFailure) -> UInt64 {
        let slotsOff = try Arena.allocateZeroed(max(1, slots) * MemoryLayout<jr_pool_slot>.stride)
        let off: UInt64, p: UnsafeMutablePointer<jr_pool>
        do { (off, p) = try Arena.newObject(jr_pool.self, type: JR_OBJ_POOL) } catch {
            Arena.free(slotsOff)
            throw error
        }
        _ = jr_mutex_init(&p.pointee.lock)
        p.pointee.task_queue = taskQueue
        p.pointee.result_queue = resultQueue
        // The pool holds a reference to each of its queues.
        ObjectTable.retain(SharedQueue(offset: taskQueue).q.pointee.hdr.slot)
        ObjectTable.retain(SharedQueue(offset: resultQueue).q.pointee.hdr.slot)
        p.pointee.slots_off = slotsOff
        p.pointee.nslots = UInt32(slots)
        return off
    }

    var id: UInt32 { p.pointee.hdr.id }

    /// The last reference is gone (ObjectTable): frees the slots and drops
    /// the pool's references to its queues.
    func destroy() {
        if p.pointee.slots_off != 0 { Arena.free(p.pointee.slots_off, clearingOffset: &p.pointee.slots_off) }
        ObjectTable.release(taskQueue.q.pointee.hdr.slot)
        ObjectTable.release(resultQueue.q.pointee.hdr.slot)
    }
    var taskQueue: SharedQueue { SharedQueue(offset: p.pointee.task_queue) }
    var resultQueue: SharedQueue { SharedQueue(offset: p.pointee.result_queue) }
    var slotCount: Int { Int(p.pointee.nslots) }

    func slot(_ i: Int) -> UnsafeMutablePointer<jr_pool_slot> {
        Arena.pointer(p.pointee.slots_off).assumingMemoryBound(to: jr_pool_slot.self) + i
    }

    private func lock() {
        RobustMutex.lock(&p.pointee.lock) { finishInterruptedTake() }
    }
    private func unlock() { jr_mutex_unlock(&p.pointee.lock) }

    /// A worker died holding the lock, so in the middle of a take: the take
    /// went through if the task queue has lost one more item than `mark`
    /// (counted under the queue's lock, whose own repair runs first when the
    /// worker died inside the get). Nobody else took since: takes hold this
    /// lock. Lock held.
    private func finishInterruptedTake() {
        for i in 0..<slotCount {
            let s = slot(i)
            guard s.atomic(\.stage).load(ordering: .acquiring) == UInt32(JR_POOL_TAKING) else { continue }
            if taskQueue.takenSoFar > s.pointee.mark {
                s.pointee.task = s.pointee.mark + 1
                s.atomic(\.stage).store(UInt32(JR_POOL_HOLDING), ordering: .releasing)
            } else {
                s.atomic(\.stage).store(UInt32(JR_POOL_IDLE), ordering: .releasing)
            }
        }
    }

    // MARK: worker side

    /// Takes the next task into slot `i`, waiting while there is none, and
    /// hands its bytes to `consume` (after the lock is released: decoding a
    /// chunk does not hold up the other workers).
    ///
    /// An idle worker drops a Deadlock verdict on its wait: it has nothing to
    /// raise it to, and simply goes on waiting for work.
    func take(slot i: Int, scratch: inout ScratchBuffer, consume: (UnsafeRawBufferPointer) -> Void) {
        let s = slot(i)
        let tq = taskQueue
        if s.pointee.pid == 0 { s.pointee.pid = ProcessRegistry.record?.pointee.pid ?? getpid() }
        while true {
            lock()
            s.pointee.mark = tq.takenSoFar
            s.atomic(\.stage).store(UInt32(JR_POOL_TAKING), ordering: .releasing)
            var got = false
            _ = tq.get(block: false, deadline: Deadline(timeout: 0), scratch: &scratch, spin: false) { bytes in
                s.pointee.task = s.pointee.mark + 1
                s.atomic(\.stage).store(UInt32(JR_POOL_HOLDING), ordering: .releasing)
                unlock()
                got = true
                consume(bytes)
            }
            if got { return }
            s.atomic(\.stage).store(UInt32(JR_POOL_IDLE), ordering: .releasing)
            unlock()
            // Nothing queued: sleep until the caller puts a task.
            let seq = p.atomic(\.work_seq).load(ordering: .acquiring)
            if tq.count > 0 { continue }
            p.atomic(\.work_waiters).wrappingIncrement(ordering: .acquiringAndReleasing)
            if tq.count == 0 {
                ProcessRegistry.willWait(JR_WAIT_POOL, object: p, word: &p.pointee.work_seq, value: seq, timed: false)
                let r = jr_futex_wait(&p.pointee.work_seq, seq, -1)
                ProcessRegistry.didWait(r)
                _ = ProcessRegistry.takeVerdict()       // nothing to raise it to
            }
            p.atomic(\.work_waiters).wrappingDecrement(ordering: .acquiringAndReleasing)
        }
    }

    /// The worker of slot `i` has put its task's result: it holds nothing.
    func finished(slot i: Int) {
        slot(i).atomic(\.stage).store(UInt32(JR_POOL_IDLE), ordering: .releasing)
        notifyCaller()
    }

    /// The worker of slot `i` starts item `item` of task `task` (only for a
    /// task with a per-item timeout): two plain stores fenced by the
    /// started_ns word, which the caller reads on both sides (item(slot:)).
    func begin(slot i: Int, task: UInt64, item: UInt64) {
        let s = slot(i)
        s.atomic(\.started_ns).store(0, ordering: .releasing)
        s.atomic(\.item_task).store(task, ordering: .relaxed)
        s.atomic(\.item).store(item, ordering: .relaxed)
        s.atomic(\.started_ns).store(UInt64(max(1, monotonicNanos())), ordering: .releasing)
    }

    /// Wakes the caller if it waits for results.
    func notifyCaller() {
        p.atomic(\.result_seq).wrappingIncrement(ordering: .acquiringAndReleasing)
        if p.atomic(\.result_waiters).load(ordering: .acquiring) > 0 { _ = jr_futex_wake(&p.pointee.result_seq, 1) }
    }

    // MARK: caller side

    /// A task was put: wakes an idle worker if one sleeps.
    func notifyWorkers() {
        p.atomic(\.work_seq).wrappingIncrement(ordering: .acquiringAndReleasing)
        if p.atomic(\.work_waiters).load(ordering: .acquiring) > 0 { _ = jr_futex_wake(&p.pointee.work_seq, 1) }
    }

    /// The worker of slot `i` has ended (and been reaped): the task it held,
    /// if any; the slot is free again.
    func vacate(slot i: Int) -> UInt64? {
        lock()
        defer { unlock() }
        let s = slot(i)
        let held = s.atomic(\.stage).load(ordering: .acquiring) == UInt32(JR_POOL_HOLDING) ? s.pointee.task : nil
        s.atomic(\.stage).store(UInt32(JR_POOL_IDLE), ordering: .releasing)
        s.pointee.task = 0
        s.pointee.pid = 0
        s.atomic(\.started_ns).store(0, ordering: .releasing)
        return held
    }

    /// What the worker of slot `i` last said it started (begin): task,
    /// item, monotonic start in ns; nil while it writes or never did.
    func item(slot i: Int) -> (task: UInt64, item: UInt64, startedNanos: UInt64)? {
        let s = slot(i)
        let t0 = s.atomic(\.started_ns).load(ordering: .acquiring)
        let task = s.atomic(\.item_task).load(ordering: .relaxed)
        let item = s.atomic(\.item).load(ordering: .relaxed)
        let t1 = s.atomic(\.started_ns).load(ordering: .acquiring)
        guard t0 != 0, t0 == t1 else { return nil }
        return (task, item, t0)
    }

    /// The task the worker of slot `i` holds now, read without the lock
    /// (a Pool's halt policy "now" kills the workers of the halted map).
    func held(slot i: Int) -> UInt64? {
        let s = slot(i)
        return s.atomic(\.stage).load(ordering: .acquiring) == UInt32(JR_POOL_HOLDING) ? s.pointee.task : nil
    }

    enum WaitResult { case ready, timedOut, failed(JobrunError) }

    /// Waits until a result is queued, a child of this process has ended
    /// since `seen` (jr_sigchld_count), or the deadline passes. One untimed
    /// futex sleep: the monitor sees a caller that waits for results as
    /// waiting, and what for.
    func waitForResults(deadline: Deadline, seen: UInt32) -> WaitResult {
        let rq = resultQueue
        jr_sigchld_word(&p.pointee.result_seq)
        defer { jr_sigchld_word(nil) }
        while true {
            let seq = p.atomic(\.result_seq).load(ordering: .acquiring)
            if rq.count > 0 || jr_sigchld_count() != seen { return .ready }
            if deadline.expired { return .timedOut }
            p.atomic(\.result_waiters).wrappingIncrement(ordering: .acquiringAndReleasing)
            var verdict: JobrunError? = nil
            if rq.count == 0 {
                ProcessRegistry.willWait(JR_WAIT_POOL, object: p, word: &p.pointee.result_seq, value: seq,
                                         timed: deadline.at != nil)
                let r = jr_futex_wait(&p.pointee.result_seq, seq, deadline.remaining)
                ProcessRegistry.didWait(r)
                verdict = ProcessRegistry.takeVerdict()
            }
            p.atomic(\.result_waiters).wrappingDecrement(ordering: .acquiringAndReleasing)
            // Raised only if there is still nothing to collect.
            if let f = verdict, rq.count == 0, jr_sigchld_count() == seen { return .failed(f) }
        }
    }

    // MARK: for the monitor (Waits)

    /// Whether a pool wait could end without another process acting.
    static func isStuck(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        let pool = SharedPool(offset: r.pointee.wait_object)
        let callerWait = r.pointee.wait_word == Arena.offset(of: &pool.p.pointee.result_seq)
        return (callerWait ? pool.resultQueue : pool.taskQueue).count == 0
    }

    /// "Pool#2, for results (task 3 held by PoolWorker-1 (pid 12); 0 tasks
    /// queued)", or for an idle worker "Pool#2, for a task (none queued)".
    static func describeWait(_ r: UnsafeMutablePointer<jr_process_record>) -> String {
        let pool = SharedPool(offset: r.pointee.wait_object)
        if r.pointee.wait_word != Arena.offset(of: &pool.p.pointee.result_seq) {
            return "Pool#\(pool.id), for a task (none queued)"
        }
        var held: [String] = []
        for i in 0..<pool.slotCount {
            let s = pool.slot(i)
            if s.atomic(\.stage).load(ordering: .acquiring) == UInt32(JR_POOL_HOLDING) && s.pointee.pid != 0 {
                held.append("task \(s.pointee.task) held by \(Waits.owner(s.pointee.pid))")
            }
        }
        let what = held.isEmpty ? "no task running" : held.joined(separator: ", ")
        let queued = pool.taskQueue.count
        return "Pool#\(pool.id), for results (\(what); \(queued) task\(queued == 1 ? "" : "s") queued)"
    }
}
