import CJobrunShims
import Glibc

/// Queue and JoinableQueue in shared memory, after CPython's queues.py: a
/// queue is a FIFO of encoded items plus, when joinable, an unfinished-tasks
/// counter. Unlike CPython there is no feeder thread and no pipe: producers
/// copy records into a byte ring in the arena under the queue's robust mutex,
/// and consumers copy them out. A side that must wait spins briefly (the other
/// side is usually about to act) and then sleeps on a futex word; a wake-up
/// system call is made only when someone sleeps.
struct SharedQueue {
    let q: UnsafeMutablePointer<jr_queue>

    init(offset: UInt64) { q = Arena.pointer(offset).assumingMemoryBound(to: jr_queue.self) }

    static let initialRing: UInt64 = 64 * 1024
    /// Items larger than this live in their own block; the ring holds a reference.
    static let inlineLimit = 16 * 1024
    static let spinIterations = 4000
    /// Longest single sleep: waits re-check their conditions at least this often.
    static let sleepSlice: Int64 = 1_000_000_000

    /// A new queue. `label` (the user's `name`) and `site` ("file:line") name
    /// it in the progress line and --stats; a `listed` queue appears there.
    static func create(maxsize: Int64, joinable: Bool, redeliver: Bool,
                       label: String = "", site: String = "", listed: Bool = true) throws(Arena.AllocFailure) -> UInt64 {
        let (off, q) = try Arena.newObject(jr_queue.self, type: joinable ? JR_OBJ_JOINABLE_QUEUE : JR_OBJ_QUEUE)
        _ = jr_mutex_init(&q.pointee.lock)
        q.pointee.maxsize = maxsize
        q.pointee.flags = (joinable ? UInt32(JR_QUEUE_JOINABLE) : 0) | (redeliver ? UInt32(JR_QUEUE_REDELIVER) : 0)
        q.pointee.ring_off = try Arena.allocate(Int(initialRing))
        q.pointee.ring_cap = initialRing
        copyCString(label, into: &q.pointee.label)
        copyCString(site, into: &q.pointee.site)
        if listed {
            let h = Arena.header
            _ = jr_mutex_lock(&h.pointee.proc_lock)
            q.pointee.next_queue = h.pointee.queues_head
            jr_store_u64(&h.pointee.queues_head, off)
            jr_mutex_unlock(&h.pointee.proc_lock)
        }
        return off
    }

    /// Every listed queue of the run, oldest first.
    static func all() -> [SharedQueue] {
        var out: [SharedQueue] = []
        var cur = jr_load_u64(&Arena.header.pointee.queues_head)
        while cur != 0 {
            let q = SharedQueue(offset: cur)
            out.append(q)
            cur = q.q.pointee.next_queue
        }
        return out.reversed()
    }

    var label: String { cString(&q.pointee.label) }
    var site: String { cString(&q.pointee.site) }

    var id: UInt32 { q.pointee.hdr.id }
    var isJoinable: Bool { q.pointee.flags & UInt32(JR_QUEUE_JOINABLE) != 0 }
    var maxsize: Int64 { q.pointee.maxsize }
    var count: UInt64 { jr_load_u64(&q.pointee.count) }
    var isClosed: Bool { jr_load_u32(&q.pointee.closed) != 0 }

    @inline(__always) private func lock() {
        if jr_mutex_lock(&q.pointee.lock) == 1 { repair() }
    }

    /// Calls `body` with the start and size of each live record, oldest
    /// first, skipping wrap markers. Lock held.
    private func forEachRecord(_ body: (UnsafeMutableRawPointer, Int) -> Void) {
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var h = q.pointee.head
        while h < q.pointee.tail {
            let pos = h & (cap - 1)
            let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
            if r.pointee.kind == UInt32(JR_REC_WRAP) { h += cap - pos; continue }
            let size = 8 + Int(SharedQueue.padded(Int(r.pointee.length)))
            body(ring + Int(pos), size)
            h += UInt64(size)
        }
    }

    /// Copies the live records to `ring` (a new ring of `cap` bytes) from byte
    /// `at` on, then makes it the queue's ring in place of the old one. Lock held.
    private func replaceRing(with newOff: UInt64, cap: UInt64, at: Int) {
        let new = Arena.pointer(newOff)
        var w = at
        forEachRecord { record, size in
            memcpy(new + w, record, size)
            w += size
        }
        Arena.free(q.pointee.ring_off)
        q.pointee.ring_off = newOff
        q.pointee.ring_cap = cap
        q.pointee.head = 0
        q.pointee.tail = UInt64(w)
    }

    /// A process died holding the lock: records are committed by moving
    /// `head`/`tail`, so recount the items between them, in case it died
    /// between moving one and updating `count`.
    private func repair() {
        finishInterruptedGet()
        var n: UInt64 = 0
        forEachRecord { _, _ in n += 1 }
        jr_store_u64(&q.pointee.count, n)
    }

    /// The process that died holding the lock may have been inside `get`
    /// (its record's get_stage): if the item had left the ring, it is that
    /// process's, taken and (on a redeliver queue) kept, as if the get had
    /// finished, so the monitor fails or delivers it again; if not, it is
    /// still in the queue and nothing was counted. Lock held; nothing has
    /// touched the queue since the death, so the item's bytes are intact.
    private func finishInterruptedGet() {
        let all = ProcessRegistry.slots()
        let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
        let me = offset
        for i in 0..<n where jr_load_u32(&all[i].get_stage) != 0 && all[i].get_queue == me {
            let r = all + i
            if jr_load_u64(&q.pointee.head) >= r.pointee.get_item_end {
                if ProcessRegistry.takenCount(me, in: r) == r.pointee.get_taken {
                    ProcessRegistry.took(from: me, in: r)
                }
                let cap = q.pointee.ring_cap
                let rec = Arena.pointer(q.pointee.ring_off) + Int(r.pointee.get_item_head & (cap - 1))
                let header = rec.assumingMemoryBound(to: jr_record.self)
                let external = header.pointee.kind == UInt32(JR_REC_EXTERNAL) ? (rec + 8).assumingMemoryBound(to: UInt64.self) : nil
                if q.pointee.flags & UInt32(JR_QUEUE_REDELIVER) != 0 && r.pointee.held_tail == r.pointee.get_held_tail {
                    if let p = external {
                        ProcessRegistry.hold(UnsafeRawBufferPointer(start: Arena.pointer(p[0]), count: Int(p[1])), from: me, in: r)
                    } else {
                        ProcessRegistry.hold(UnsafeRawBufferPointer(start: rec + 8, count: Int(header.pointee.length)), from: me, in: r)
                    }
                }
                // Its block would have been freed by the dead process once read.
                if let p = external { Arena.free(p[0]) }
            }
            jr_store_u32(&r.pointee.get_stage, 0)
        }
    }
    @inline(__always) private func unlock() { jr_mutex_unlock(&q.pointee.lock) }

    /// Takes and releases the lock: if its holder died, the repair runs now.
    func settle() { lock(); unlock() }

    enum PutResult { case ok, full, closed, noMemory(String), failed(String) }
    enum GetResult: Equatable { case ok, empty, closed, failed(String) }
    enum JoinResult { case ok, timedOut, failed(String), workerDied(String) }

    var offset: UInt64 { Arena.offset(of: q) }

    @inline(__always) private static func padded(_ n: Int) -> UInt64 { (UInt64(n) + 7) & ~7 }

    /// Puts one encoded item. `bytes` is copied; the caller keeps it.
    func put(_ bytes: UnsafeRawBufferPointer, block: Bool, deadline: Deadline) -> PutResult {
        if bytes.count > SharedQueue.inlineLimit {
            return putExternal(count: bytes.count, block: block, deadline: deadline) {
                memcpy($0, bytes.baseAddress!, bytes.count)
            }
        }
        return enqueue(count: bytes.count, external: 0, block: block, deadline: deadline) {
            if bytes.count > 0 { memcpy($0, bytes.baseAddress!, bytes.count) }
        }
    }

    /// Puts an item of `count` (at most `inlineLimit`) encoded bytes that
    /// `fill` writes straight into the ring, under the lock: a small string
    /// item is encoded in place, with no copy through the encoder's buffer.
    func putInline(count: Int, block: Bool, deadline: Deadline, fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        enqueue(count: count, external: 0, block: block, deadline: deadline, fill: fill)
    }

    /// Puts an item of `count` encoded bytes (more than `inlineLimit`) that
    /// `fill` writes straight into the item's own arena block: a big string
    /// is copied once on its way in, not into a buffer and then again.
    func putExternal(count: Int, block: Bool, deadline: Deadline, fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        let external: UInt64
        switch allocateWaiting(count, block: block, deadline: deadline) {
        case .success(let off): external = off
        case .failure(let message): return message.isEmpty ? .full : .noMemory(message)
        }
        fill(Arena.pointer(external))
        return enqueue(count: count, external: external, block: block, deadline: deadline) { _ in }
    }

    /// Adds a record for an item of `count` bytes: inline, written by `fill`
    /// into the ring, or a reference to `external` (the block holding the
    /// bytes, which is freed if the put fails; `fill` is not called).
    @inline(__always)
    private func enqueue(count: Int, external: UInt64, block: Bool, deadline: Deadline,
                         fill: (UnsafeMutableRawPointer) -> Void) -> PutResult {
        let payload = external != 0 ? 16 : count
        let need = UInt64(MemoryLayout<jr_record>.size) + SharedQueue.padded(payload)
        lock()
        while true {
            if q.pointee.closed != 0 {
                unlock(); if external != 0 { Arena.free(external) }
                return .closed
            }
            if q.pointee.maxsize <= 0 || Int64(q.pointee.count) < q.pointee.maxsize { break }
            if !block || deadline.expired {
                unlock(); if external != 0 { Arena.free(external) }
                return .full
            }
            let t0 = monotonicNanos()
            let verdict = waitLocked(&q.pointee.space_seq, waiters: &q.pointee.put_waiters, deadline: deadline, kind: JR_WAIT_PUT)
            q.pointee.put_wait_ns &+= UInt64(max(0, monotonicNanos() - t0))
            if let f = verdict, q.pointee.closed == 0, Int64(q.pointee.count) >= q.pointee.maxsize {
                unlock(); if external != 0 { Arena.free(external) }
                return .failed(f)
            }
        }
        if !ensureRoom(need) {
            unlock(); if external != 0 { Arena.free(external) }
            return .noMemory("out of shared memory growing the queue's buffer")
        }
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var pos = q.pointee.tail & (cap - 1)
        if pos + need > cap {
            // Not enough contiguous room before the end: mark the rest as skipped.
            let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
            r.pointee.kind = UInt32(JR_REC_WRAP)
            r.pointee.length = UInt32(cap - pos - 8)
            q.pointee.tail += cap - pos
            pos = 0
        }
        let r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
        if external != 0 {
            r.pointee.kind = UInt32(JR_REC_EXTERNAL)
            r.pointee.length = 16
            let p = (ring + Int(pos) + 8).assumingMemoryBound(to: UInt64.self)
            p[0] = external
            p[1] = UInt64(count)
        } else {
            r.pointee.kind = UInt32(JR_REC_INLINE)
            r.pointee.length = UInt32(count)
            fill(ring + Int(pos) + 8)
        }
        q.pointee.tail += need
        let depth = q.pointee.count + 1
        jr_store_u64(&q.pointee.count, depth)
        q.pointee.total_put += 1
        q.pointee.total_bytes &+= UInt64(count)
        if depth > q.pointee.peak_count { q.pointee.peak_count = depth }
        if isJoinable { _ = jr_add_u64(&q.pointee.unfinished, 1) }
        let wake = q.pointee.get_waiters > 0
        if wake { q.pointee.items_seq &+= 1 }
        unlock()
        if wake { _ = jr_futex_wake(&q.pointee.items_seq, 1) }
        ProcessRegistry.countPut()
        return .ok
    }

    private enum Allocation { case success(UInt64), failure(String) }

    /// Allocates an item block, waiting for memory when blocking.
    private func allocateWaiting(_ n: Int, block: Bool, deadline: Deadline) -> Allocation {
        while true {
            do {
                return .success(try Arena.allocate(n))
            } catch .overLimit(let need, let inUse, let limit) {
                if need > limit {
                    return .failure("item of \(n) bytes is larger than the shared memory limit (\(limit >> 20) MiB)")
                }
                _ = inUse
                if !block || deadline.expired { return .failure("") }
                _ = Arena.waitForSpace(deadline)
            } catch {
                return .failure("shared memory address space exhausted")
            }
        }
    }

    /// Makes room for `need` more bytes (plus a possible wrap) by growing the ring.
    private func ensureRoom(_ need: UInt64) -> Bool {
        let cap = q.pointee.ring_cap
        let used = q.pointee.tail - q.pointee.head
        if used + need * 2 <= cap { return true }
        var newCap = cap * 2
        while used + need * 2 > newCap { newCap *= 2 }
        guard let newOff = try? Arena.allocate(Int(newCap)) else { return false }
        replaceRing(with: newOff, cap: newCap, at: 0)
        return true
    }

    /// Takes one item and hands its bytes to `consume` (outside the lock).
    /// `scratch` is the caller's reusable buffer for small items.
    func get(block: Bool, deadline: Deadline, scratch: inout ScratchBuffer, recv: Bool = false, spin: Bool = true,
             consume: (UnsafeRawBufferPointer) -> Void) -> GetResult {
        // Time spent waiting is measured only when there is a wait.
        var waitedSince: Int64 = 0
        if block && jr_load_u64(&q.pointee.count) == 0 {
            waitedSince = monotonicNanos()
            if spin { spinUntilItems() }
        }
        lock()
        while q.pointee.count == 0 {
            if q.pointee.closed != 0 { unlock(); return .closed }
            if !block || deadline.expired { unlock(); return .empty }
            if waitedSince == 0 { waitedSince = monotonicNanos() }
            let verdict = waitLocked(&q.pointee.items_seq, waiters: &q.pointee.get_waiters, deadline: deadline, kind: recv ? JR_WAIT_RECV : JR_WAIT_GET)
            if let f = verdict, q.pointee.count == 0, q.pointee.closed == 0 { unlock(); return .failed(f) }
        }
        if waitedSince != 0 { q.pointee.get_wait_ns &+= UInt64(max(0, monotonicNanos() - waitedSince)) }
        let ring = Arena.pointer(q.pointee.ring_off)
        let cap = q.pointee.ring_cap
        var pos = q.pointee.head & (cap - 1)
        var r = (ring + Int(pos)).assumingMemoryBound(to: jr_record.self)
        if r.pointee.kind == UInt32(JR_REC_WRAP) {
            q.pointee.head += cap - pos
            pos = 0
            r = ring.assumingMemoryBound(to: jr_record.self)
        }
        let length = Int(r.pointee.length)
        let joinable = isJoinable
        let me = joinable ? ProcessRegistry.record : nil
        if let me {
            // Noted so that a SIGKILL from here to the end of the critical
            // section is finished or undone by the next locker (repair).
            me.pointee.get_queue = offset
            me.pointee.get_item_head = q.pointee.head
            me.pointee.get_item_end = q.pointee.head + 8 + SharedQueue.padded(length)
            me.pointee.get_taken = ProcessRegistry.takenCount(offset, in: me)
            me.pointee.get_held_tail = me.pointee.held_tail
            jr_store_u32(&me.pointee.get_stage, 1)
        }
        var external: UInt64 = 0
        var externalLength = 0
        if r.pointee.kind == UInt32(JR_REC_EXTERNAL) {
            let p = (ring + Int(pos) + 8).assumingMemoryBound(to: UInt64.self)
            external = p[0]
            externalLength = Int(p[1])
        } else {
            scratch.reserve(length)
            if length > 0 { memcpy(scratch.base, ring + Int(pos) + 8, length) }
        }
        jr_store_u64(&q.pointee.head, q.pointee.head + 8 + SharedQueue.padded(length))
        jr_store_u64(&q.pointee.count, q.pointee.count - 1)
        q.pointee.total_got += 1
        if let me {
            jr_store_u32(&me.pointee.get_stage, 2)
            ProcessRegistry.took(from: offset)
            if q.pointee.flags & UInt32(JR_QUEUE_REDELIVER) != 0 {
                let bytes = external != 0
                    ? UnsafeRawBufferPointer(start: Arena.pointer(external), count: externalLength)
                    : UnsafeRawBufferPointer(start: scratch.base, count: length)
                ProcessRegistry.hold(bytes, from: offset)
            }
            jr_store_u32(&me.pointee.get_stage, 0)
        }
        let wake = q.pointee.put_waiters > 0
        if wake { q.pointee.space_seq &+= 1 }
        unlock()
        if wake { _ = jr_futex_wake(&q.pointee.space_seq, 1) }
        ProcessRegistry.countGot()
        if external != 0 {
            consume(UnsafeRawBufferPointer(start: Arena.pointer(external), count: externalLength))
            Arena.free(external)
        } else {
            consume(UnsafeRawBufferPointer(start: scratch.base, count: length))
        }
        return .ok
    }

    /// Waits until an item is there or the queue is closed; false on timeout.
    func waitForItems(deadline: Deadline) -> Bool {
        lock()
        defer { unlock() }
        while q.pointee.count == 0 && q.pointee.closed == 0 {
            if deadline.expired { return false }
            if waitLocked(&q.pointee.items_seq, waiters: &q.pointee.get_waiters, deadline: deadline, kind: JR_WAIT_RECV) != nil { return true }
        }
        return true
    }

    private func spinUntilItems() {
        var i = 0
        while i < SharedQueue.spinIterations {
            if jr_load_u64(&q.pointee.count) != 0 || jr_load_u32(&q.pointee.closed) != 0 { return }
            // As jr_mutex_lock: past a while, let a producer that is not
            // running have the CPU.
            if i >= 1000 && i & 63 == 0 { sched_yield() } else { jr_cpu_relax() }
            i += 1
        }
    }

    /// Called with the lock held; returns with it held. Sleeps on `word` until
    /// it changes, the deadline passes, or a slice elapses. Returns the
    /// monitor's verdict on this sleep, if it gave one: the caller raises it
    /// when what it waits for has still not happened.
    @discardableResult
    private func waitLocked(_ word: UnsafeMutablePointer<UInt32>, waiters: UnsafeMutablePointer<UInt32>,
                            deadline: Deadline, kind: Int) -> String? {
        let seq = word.pointee
        waiters.pointee += 1
        ProcessRegistry.willWait(kind, object: q, word: word, value: seq, timed: deadline.at != nil)
        unlock()
        let remaining = deadline.remaining
        let r = jr_futex_wait(word, seq, remaining < 0 ? SharedQueue.sleepSlice : min(remaining, SharedQueue.sleepSlice))
        lock()
        ProcessRegistry.didWait(r)
        waiters.pointee -= 1
        return ProcessRegistry.takeVerdict()
    }

    enum TaskDoneResult { case ok, tooMany }

    /// Without the queue's lock in the common case: `unfinished` is atomic.
    /// Only when it falls to the point where join may return is the lock
    /// taken, so a joiner about to sleep cannot miss the wake-up.
    ///
    /// On a redeliver queue the kept copy of the item is unlinked before the
    /// count falls, so a SIGKILL between the two cannot have the monitor
    /// deliver again an item already counted done (which would let `join`
    /// return one item early); the stage noted in the record tells the
    /// monitor how far it got (Monitor.State.finishTaskDone).
    func taskDone() -> TaskDoneResult {
        if jr_load_u64(&q.pointee.unfinished) == 0 { return .tooMany }
        // Each step is noted in this process's record, so that a SIGKILL
        // between two of them is finished or undone by the monitor.
        let held: UInt64
        if q.pointee.flags & UInt32(JR_QUEUE_REDELIVER) != 0 {
            held = ProcessRegistry.unlinkHeld(from: offset)        // notes stage 1 itself
        } else {
            held = 0
            ProcessRegistry.doneStage(1, queue: offset, node: 0)
        }
        var v = jr_load_u64(&q.pointee.unfinished)
        while true {
            if v == 0 {
                if held != 0 { ProcessRegistry.relinkHeld(held) }
                ProcessRegistry.doneStage(0)
                return .tooMany
            }
            if jr_cas_u64(&q.pointee.unfinished, v, v - 1) != 0 { break }
            v = jr_load_u64(&q.pointee.unfinished)
        }
        ProcessRegistry.doneStage(2)
        ProcessRegistry.done(with: offset)
        ProcessRegistry.doneStage(3)
        if held != 0 {
            ProcessRegistry.doneStage(3, clearingNode: true)   // the monitor must not free it too
            Arena.free(held)
        }
        ProcessRegistry.doneStage(0)
        if v - 1 <= jr_load_u64(&q.pointee.failed_tasks) {
            lock()
            q.pointee.done_seq &+= 1
            let wake = q.pointee.join_waiters > 0
            unlock()
            if wake { _ = jr_futex_wake(&q.pointee.done_seq, Int32.max) }
        }
        return .ok
    }

    /// Waits until every item put has been marked done, or was taken by a
    /// process that died before marking it (then `.workerDied`).
    ///
    /// Items that can never be done (their taker died) never make join wait;
    /// each process is told of them once (`.workerDied`, or the monitor's
    /// WorkerDied verdict naming the dead), and from then on they count as
    /// done for its later joins (SharedQueue.failedTold).
    func join(deadline: Deadline) -> JoinResult {
        lock()
        defer { unlock() }
        while jr_load_u64(&q.pointee.unfinished) > q.pointee.failed_tasks {
            if deadline.expired { return .timedOut }
            let verdict = waitLocked(&q.pointee.done_seq, waiters: &q.pointee.join_waiters, deadline: deadline, kind: JR_WAIT_JOIN)
            if let f = verdict, jr_load_u64(&q.pointee.unfinished) > q.pointee.failed_tasks {
                let told = SharedQueue.failedTold[offset, default: 0]
                if q.pointee.failed_tasks > told { return .failed("\(f)\n\(tellFailedTasks(since: told))") }
                return .failed(f)
            }
        }
        let told = SharedQueue.failedTold[offset, default: 0]
        if q.pointee.failed_tasks > told { return .workerDied(tellFailedTasks(since: told)) }
        return .ok
    }

    /// Per queue (by offset), how many of its failed tasks, and of the
    /// processes that held them, this process has been told of.
    static var failedTold: [UInt64: UInt64] = [:]
    static var failedPidsTold: [UInt64: UInt32] = [:]

    /// With the lock held: "2 items will never be marked done: consumer-1
    /// (pid 41) was killed by signal 9 (SIGKILL), consumer-2 (pid 42) exited
    /// with status 1 while holding them", about the failed tasks this process
    /// has not been told of (`since` of them it has). They are told now: the
    /// script has heard of those processes' ends, and later joins count the
    /// tasks as done.
    private func tellFailedTasks(since told: UInt64) -> String {
        let n = q.pointee.failed_tasks - told
        SharedQueue.failedTold[offset] = q.pointee.failed_tasks
        let total = q.pointee.failed_pid_count
        let from = SharedQueue.failedPidsTold[offset, default: 0]
        SharedQueue.failedPidsTold[offset] = total
        var who: [String] = []
        withUnsafeMutableBytes(of: &q.pointee.failed_pids) { raw in
            let pids = raw.bindMemory(to: Int32.self)
            for i in Int(from)..<Int(min(total, UInt32(JR_QUEUE_FAILED_PIDS))) {
                let pid = pids[i]
                ProcessRegistry.markReported(pid)
                guard let r = ProcessRegistry.find(pid) else { who.append("pid \(pid)"); continue }
                let code = jr_load_u32(&r.pointee.has_exit_code) != 0 ? r.pointee.exit_code : Int32.min
                who.append("\(ProcessRegistry.name(of: r)) (pid \(pid)) \(describeExit(code))")
            }
        }
        if total > UInt32(JR_QUEUE_FAILED_PIDS) && total > from {
            who.append("\(total - max(from, UInt32(JR_QUEUE_FAILED_PIDS))) more")
        }
        return "\(n) item\(n == 1 ? "" : "s") will never be marked done: \(who.joined(separator: ", ")) while holding \(n == 1 ? "it" : "them")"
    }

    /// Called by the monitor: puts items a dead process held back at the
    /// front of the queue, in their order, to be delivered again. `unfinished`
    /// already counts them. Rare, so the ring is simply rebuilt.
    func requeueFront(_ items: [UnsafeRawBufferPointer]) -> Bool {
        lock()
        defer { unlock() }
        var records: [(UInt64, Int, UnsafeRawBufferPointer)] = []   // (external, length, inline bytes)
        var need: UInt64 = 0
        for item in items {
            if item.count > SharedQueue.inlineLimit {
                guard let ext = try? Arena.allocate(item.count) else { return false }
                memcpy(Arena.pointer(ext), item.baseAddress!, item.count)
                records.append((ext, item.count, item))
                need += 8 + 16
            } else {
                records.append((0, item.count, item))
                need += 8 + SharedQueue.padded(item.count)
            }
        }
        let cap = q.pointee.ring_cap
        let used = q.pointee.tail - q.pointee.head
        var newCap = cap
        while used + need * 2 > newCap { newCap *= 2 }
        guard let newOff = try? Arena.allocate(Int(newCap)) else { return false }
        let new = Arena.pointer(newOff)
        var w = 0
        for (ext, length, bytes) in records {
            let r = (new + w).assumingMemoryBound(to: jr_record.self)
            if ext != 0 {
                r.pointee.kind = UInt32(JR_REC_EXTERNAL); r.pointee.length = 16
                let p = (new + w + 8).assumingMemoryBound(to: UInt64.self)
                p[0] = ext; p[1] = UInt64(length)
                w += 24
            } else {
                r.pointee.kind = UInt32(JR_REC_INLINE); r.pointee.length = UInt32(length)
                if length > 0 { memcpy(new + w + 8, bytes.baseAddress!, length) }
                w += 8 + Int(SharedQueue.padded(length))
            }
        }
        replaceRing(with: newOff, cap: newCap, at: w)
        jr_store_u64(&q.pointee.count, q.pointee.count + UInt64(items.count))
        q.pointee.items_seq &+= 1
        _ = jr_futex_wake(&q.pointee.items_seq, Int32.max)
        return true
    }

    /// Called by the monitor: `n` items taken by a process that died will never be marked done.
    func failTasks(_ n: UInt64, pid: Int32, code: Int32, name: String) {
        lock()
        q.pointee.failed_tasks += n
        if q.pointee.failed_pid_count < UInt32(JR_QUEUE_FAILED_PIDS) {
            withUnsafeMutableBytes(of: &q.pointee.failed_pids) { $0.bindMemory(to: Int32.self)[Int(q.pointee.failed_pid_count)] = pid }
        }
        q.pointee.failed_pid_count += 1
        q.pointee.failed_pid = pid
        q.pointee.failed_code = code
        withUnsafeMutableBytes(of: &q.pointee.failed_name) { buf in
            let bytes = Array(name.utf8.prefix(buf.count - 1))
            buf.copyBytes(from: bytes)
            buf[bytes.count] = 0
        }
        q.pointee.done_seq &+= 1
        unlock()
        _ = jr_futex_wake(&q.pointee.done_seq, Int32.max)
    }

    var unfinished: UInt64 { lock(); defer { unlock() }; return q.pointee.unfinished }

    func close() {
        lock()
        q.pointee.closed = 1
        q.pointee.items_seq &+= 1
        q.pointee.space_seq &+= 1
        unlock()
        _ = jr_futex_wake(&q.pointee.items_seq, Int32.max)
        _ = jr_futex_wake(&q.pointee.space_seq, Int32.max)
    }
}

/// A per-process growable buffer reused across calls, so the hot path does not allocate.
struct ScratchBuffer {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init(capacity: Int = 64 * 1024) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    @inline(__always)
    mutating func reserve(_ n: Int) {
        if n <= capacity { return }
        var c = capacity * 2
        while c < n { c *= 2 }
        let nb = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
        base.deallocate()
        base = nb
        capacity = c
    }
}
