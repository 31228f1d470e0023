import CJobrunShims
import Glibc

/// Lock, RLock, Semaphore, BoundedSemaphore, Event, Barrier and Condition in
/// shared memory, after CPython's synchronize.py but without SemLock: each is
/// a `jr_sync` record whose short critical sections take a robust mutex and
/// whose waits sleep on a futex word. A lock remembers its holder's pid, so a
/// holder that died is noticed by the next acquirer, which takes the lock
/// over and is told so ("owner died"). The holder is (pid, start) (ProcessIdentity), so a
/// later process that got the dead holder's pid does not inherit the lock.
struct SharedSync {
    let s: UnsafeMutablePointer<jr_sync>

    init(offset: UInt64) { s = Arena.pointer(offset).assumingMemoryBound(to: jr_sync.self) }

    /// How often a waiter re-checks whether the holder it waits for is alive.
    static let ownerCheckSlice: Int64 = 100_000_000

    static func create(type: Int, value: Int64 = 0, bound: Int64 = 0, link: UInt64 = 0) throws(Arena.AllocFailure) -> UInt64 {
        let (off, s) = try Arena.newObject(jr_sync.self, type: type)
        _ = jr_mutex_init(&s.pointee.lock)
        s.pointee.value = value
        s.pointee.bound = bound
        s.pointee.link = link
        return off
    }

    var id: UInt32 { s.pointee.hdr.id }
    /// A Condition's lock's slot in the object table.
    var linkedSlot: UInt32 { SharedSync(offset: s.pointee.link).s.pointee.hdr.slot }
    var type: Int { Int(s.pointee.hdr.type) }

    /// A holder that died here left nothing to repair: each change under
    /// this lock leaves a state the others accept. A Lock whose `value` is
    /// 1 with an `owner` that is not alive (or 0, killed between the two
    /// stores) is taken over by the next acquire (processIsAlive); a waiter
    /// count one too high costs a wake with no sleeper; a Semaphore or Event
    /// value is one store; a Barrier or Condition count bumped by a party
    /// that died is the same as that party dying just after the lock.
    @inline(__always) func lock() { RobustMutex.lock(&s.pointee.lock, ownerDied: RobustMutex.nothingToRepair) }
    @inline(__always) func unlock() { jr_mutex_unlock(&s.pointee.lock) }

    /// Bumps `seq` and wakes up to `count` sleepers. Call with the lock held;
    /// the wake itself happens after `unlock` via the returned flag.
    @inline(__always) func bumpLocked() -> Bool {
        s.pointee.seq &+= 1
        return s.pointee.waiters > 0
    }

    func wake(_ count: Int32 = Int32.max) { _ = jr_futex_wake(&s.pointee.seq, count) }

    /// With the lock held: sleeps until `seq` changes, a slice passes or the
    /// deadline does; returns with the lock held.
    /// Returns the monitor's verdict on this sleep (Deadlock/WorkerDied), if
    /// it gave one: the caller raises it when its condition is still false.
    @discardableResult
    func sleepLocked(_ deadline: Deadline, kind: Int, slice: Int64 = 1_000_000_000) -> JobrunError? {
        let seq = s.pointee.seq
        s.pointee.waiters += 1
        ProcessRegistry.willWait(kind, object: s, word: &s.pointee.seq, value: seq, timed: deadline.at != nil)
        unlock()
        let remaining = deadline.remaining
        let r = jr_futex_wait(&s.pointee.seq, seq, remaining < 0 ? slice : min(remaining, slice))
        lock()
        ProcessRegistry.didWait(r)
        s.pointee.waiters -= 1
        return ProcessRegistry.takeVerdict()
    }

    // MARK: Lock and RLock

    enum Acquired { case acquired, ownerDied, timedOut, failed(JobrunError) }

    /// Lock.acquire / RLock.acquire.
    func acquire(block: Bool, deadline: Deadline, reentrant: Bool) -> Acquired {
        let me = getpid()
        let start = ProcessIdentity.mine
        lock()
        defer { unlock() }
        var verdict: JobrunError?
        while true {
            if s.pointee.value == 0 {
                s.pointee.value = 1; s.pointee.owner = me; s.pointee.owner_start = start; s.pointee.depth = 1
                return .acquired
            }
            if reentrant && isMine {
                s.pointee.depth += 1
                return .acquired
            }
            if !processIsAlive(s.pointee.owner, start: s.pointee.owner_start) {
                s.pointee.owner = me; s.pointee.owner_start = start; s.pointee.depth = 1
                return .ownerDied
            }
            if let f = verdict { return .failed(f) }
            if !block || deadline.expired { return .timedOut }
            verdict = sleepLocked(deadline, kind: JR_WAIT_LOCK, slice: SharedSync.ownerCheckSlice)
        }
    }

    /// With the lock held: whether the holder is this very process (its pid
    /// and its record's start).
    private var isMine: Bool {
        s.pointee.owner == getpid() && (s.pointee.owner_start == 0 || s.pointee.owner_start == ProcessIdentity.mine)
    }

    enum Released { case released, notHeld, notOwner }

    func release(reentrant: Bool) -> Released {
        lock()
        if s.pointee.value == 0 { unlock(); return .notHeld }
        if reentrant {
            if !isMine { unlock(); return .notOwner }
            s.pointee.depth -= 1
            if s.pointee.depth > 0 { unlock(); return .released }
        }
        s.pointee.value = 0; s.pointee.owner = 0; s.pointee.owner_start = 0; s.pointee.depth = 0
        let wake = bumpLocked()
        unlock()
        if wake { self.wake(1) }
        return .released
    }

    var isLocked: Bool { lock(); defer { unlock() }; return s.pointee.value != 0 }
    var ownerIsMe: Bool { lock(); defer { unlock() }; return s.pointee.value != 0 && isMine }

    /// For Condition.wait: releases an RLock completely, returning its depth.
    func releaseAll() -> UInt32 {
        lock()
        let depth = s.pointee.depth
        s.pointee.value = 0; s.pointee.owner = 0; s.pointee.owner_start = 0; s.pointee.depth = 0
        let wake = bumpLocked()
        unlock()
        if wake { self.wake(1) }
        return depth
    }

    /// Re-acquires after Condition.wait, restoring the depth. Waits as long
    /// as it takes (Condition.wait returns with the lock held, whatever its
    /// timeout); returns the monitor's verdict instead only when the process
    /// holding the lock can never release it.
    func reacquire(depth: UInt32, reentrant: Bool) -> JobrunError? {
        switch acquire(block: true, deadline: Deadline(timeout: nil), reentrant: reentrant) {
        case .failed(let f): return f
        case .acquired, .ownerDied, .timedOut: break
        }
        if reentrant && depth > 1 { lock(); s.pointee.depth = depth; unlock() }
        return nil
    }

    // MARK: Semaphore

    enum Waited: Equatable { case ok, timedOut, failed(JobrunError) }

    func semAcquire(block: Bool, deadline: Deadline) -> Waited {
        lock()
        defer { unlock() }
        var verdict: JobrunError?
        while s.pointee.value <= 0 {
            if let f = verdict { return .failed(f) }
            if !block || deadline.expired { return .timedOut }
            verdict = sleepLocked(deadline, kind: JR_WAIT_SEMAPHORE)
        }
        s.pointee.value -= 1
        return .ok
    }

    /// false when a BoundedSemaphore would go past its bound, or any
    /// semaphore past Int64.max.
    func semRelease(bounded: Bool) -> Bool {
        lock()
        if (bounded && s.pointee.value >= s.pointee.bound) || s.pointee.value == Int64.max { unlock(); return false }
        s.pointee.value += 1
        let wake = bumpLocked()
        unlock()
        if wake { self.wake(1) }
        return true
    }

    var value: Int64 { lock(); defer { unlock() }; return s.pointee.value }

    // MARK: Event

    func eventSet(_ on: Bool) {
        lock()
        s.pointee.value = on ? 1 : 0
        let wake = on && bumpLocked()
        unlock()
        if wake { self.wake() }
    }

    /// Returns once the event is set, or was set at any time during the wait
    /// (as CPython's Event.wait: a set then clear releases the waiters, even
    /// one that was stopped in between). `seq` moves only at a set, and when
    /// the monitor wakes a waiter with a verdict: the verdict comes first.
    func eventWait(deadline: Deadline) -> Waited {
        lock()
        defer { unlock() }
        let seq = s.pointee.seq
        while s.pointee.value == 0 && s.pointee.seq == seq {
            if deadline.expired { return .timedOut }
            if let f = sleepLocked(deadline, kind: JR_WAIT_EVENT) { return .failed(f) }
        }
        return .ok
    }

    // MARK: Barrier

    enum BarrierResult { case index(Int64), timedOut, broken, failed(JobrunError) }

    func barrierWait(deadline: Deadline) -> BarrierResult {
        lock()
        defer { unlock() }
        if s.pointee.broken != 0 { return .broken }
        let generation = s.pointee.generation
        let index = s.pointee.value
        s.pointee.value += 1
        if s.pointee.value >= s.pointee.bound {
            s.pointee.value = 0
            s.pointee.generation += 1
            if bumpLocked() { unlock(); wake(); lock() }
            return .index(index)
        }
        var verdict: JobrunError?
        while s.pointee.generation == generation {
            if s.pointee.broken != 0 { return .broken }
            // It leaves the barrier: its arrival no longer counts, so a party
            // that catches the verdict can wait again.
            if let f = verdict { s.pointee.value -= 1; return .failed(f) }
            if deadline.expired {
                s.pointee.broken = 1
                if bumpLocked() { unlock(); wake(); lock() }
                return .timedOut
            }
            verdict = sleepLocked(deadline, kind: JR_WAIT_BARRIER)
        }
        return .index(index)
    }

    // MARK: Condition (on its own seq; the lock is the linked jr_sync)
    //
    // As CPython's threading.Condition, notify(n) chooses at most n of the
    // processes waiting at that moment. Counted under the condition's own
    // mutex: `value` waiters not chosen yet, `bound` chosen ones that have
    // not left yet, `generation` bumped by each notify that chose some. A
    // waiter may leave with a choice only if it entered before the notify
    // that made it (its generation is older), so a process that starts
    // waiting after a notify cannot take the place of one it chose.

    /// Counts the caller as waiting, before it lets go of the lock (so a
    /// notify made as soon as it does counts it); returns its generation.
    func conditionEnter() -> UInt64 {
        lock()
        defer { unlock() }
        s.pointee.value += 1
        return s.pointee.generation
    }

    /// Sleeps until a notify chose a waiter of the caller's generation (or
    /// an older one's place is free) or the deadline; the caller then leaves.
    func conditionSleep(entered generation: UInt64, deadline: Deadline) -> Waited {
        lock()
        defer { unlock() }
        var verdict: JobrunError?
        while true {
            if s.pointee.bound > 0 && s.pointee.generation > generation {
                s.pointee.bound -= 1
                return .ok
            }
            if let f = verdict { s.pointee.value -= 1; return .failed(f) }
            if deadline.expired { s.pointee.value -= 1; return .timedOut }
            verdict = sleepLocked(deadline, kind: JR_WAIT_CONDITION)
        }
    }

    /// Chooses up to `n` of the waiters; the others go on waiting.
    func notify(_ n: Int64) {
        lock()
        let k = min(n, s.pointee.value)
        guard k > 0 else { unlock(); return }
        s.pointee.value -= k
        s.pointee.bound += k
        s.pointee.generation += 1
        s.pointee.seq &+= 1
        unlock()
        // Every sleeper looks: the futex cannot pick the ones of the right generation.
        wake()
    }
}

/// True while the process (`pid`, `start`) runs (a zombie, dead but not yet
/// reaped, counts as dead). `start` is its identity (ProcessIdentity; 0:
/// unknown, then the newest record with that pid stands for it), so a pid
/// reused by a later process is not taken for the process that had it. A
/// process of the run whose record says it has ended, or whose record is
/// gone (reused), is dead even if its pid now names another process.
func processIsAlive(_ pid: Int32, start: UInt64 = 0) -> Bool {
    if pid <= 0 { return false }
    if let r = ProcessRegistry.find(pid, start: start) {
        if ProcessRegistry.hasEnded(r) { return false }
    } else if start != 0 {
        return false
    }
    return ProcessIdentity.isAlive(pid)
}
