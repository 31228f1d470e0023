import Atomics
import CJobrunShims
import Glibc

/// Every blocking wait of a Swift host on a queue (`Queue.get`,
/// `JoinableQueue.join`) is served by one thread of the runtime, started on
/// the first wait: an awaiting task costs a continuation, never a thread
/// (1,000 tasks in `get` cost the same one thread as one task).
///
/// The thread sleeps on one word, the arena's `host_seq`. A queue the host
/// waits on counts the host's waits (`beginHostWait(on: .host)`, once per
/// queue and kind however many tasks wait), and while it does, every change
/// that may end one — a put, a close, the task_done that finishes the work,
/// a dead taker's items failed or delivered again, in whichever process it
/// happens — bumps and wakes `host_seq` too. The host bumps it itself when
/// a wait is added or cancelled, and the monitor when it gives a verdict.
///
/// Each round the thread reads `host_seq`, then looks at each queue with
/// waits: it tries the waits in the order they came (under the IPC lock,
/// without waiting), until one finds nothing, and resumes those that are
/// over; a queue whose own word has not moved since the last look that
/// found nothing is not tried again. It then sleeps on `host_seq` while it
/// still holds the value read first (so a change during the round ends the
/// sleep at once), until the nearest deadline, at most a second (a look at
/// every queue then, whatever the words say); with no wait, until one comes.
///
/// Lock order: the waiter's lock, then the IPC lock; no one takes the
/// waiter's lock holding the IPC lock.
final class HostWaiter: @unchecked Sendable {   // state under `lock`
    /// One awaiting task. Made before its task awaits, so that a
    /// cancellation that comes first is kept (`cancel`) and seen once it is added.
    final class Wait: @unchecked Sendable {   // the flags under the waiter's lock
        let queue: UInt64
        let kind: SharedQueue.HostWaitKind
        let deadline: Deadline
        let registering: Bool
        /// Under the IPC lock: tries the operation; true when the wait is
        /// over (its outcome kept for `finish`).
        let attempt: (borrowing Runtime.IPC) -> Bool
        /// Resumes the task: with the kept outcome (nil) or with an error.
        /// Set by `add`.
        fileprivate var finish: (Error?) -> Void = { _ in }
        fileprivate var cancelled = false
        fileprivate var over = false

        init(queue: UInt64, kind: SharedQueue.HostWaitKind, deadline: Deadline, registering: Bool,
             attempt: @escaping (borrowing Runtime.IPC) -> Bool) {
            self.queue = queue; self.kind = kind; self.deadline = deadline; self.registering = registering
            self.attempt = attempt
        }
    }

    private struct Key: Hashable {
        let queue: UInt64
        let items: Bool
        var kind: SharedQueue.HostWaitKind { items ? .items : .done }
    }

    /// The waits on one queue for one kind, in the order they came.
    private final class Group {
        var waits: [Wait] = []
        /// Counted by the queue (beginHostWait), so its changes wake us.
        var registered = false
        /// The queue's word before the last look that found nothing.
        var seen: UInt32?
    }

    /// Longest sleep: every queue is looked at again at least this often.
    static let slice: Int64 = 1_000_000_000

    /// Set when the thread starts, until it ends (the runtime keeps the
    /// waiter, the thread keeps the runtime; the runtime's teardown ends it).
    private var runtime: Runtime?
    private let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    private var groups: [Key: Group] = [:]
    private var thread: pthread_t?
    private var stopping = false

    init() {}

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body()
    }

    /// Adds a wait whose first try found nothing (the caller tried it):
    /// the thread looks again once the queue counts it, and calls `finish`
    /// once when the wait is over. An error when the runtime is shutting
    /// down or the thread cannot start (nothing added, `finish` never called).
    func add(_ w: Wait, runtime: Runtime, finish: @escaping (Error?) -> Void) -> JobrunError? {
        locked { () -> JobrunError? in
            if stopping { return JobrunError(.processError, "the jobrun runtime has shut down") }
            if thread == nil, let e = startThread(runtime) { return e }
            w.finish = finish
            let key = Key(queue: w.queue, items: w.kind == .items)
            let g = groups[key] ?? Group()
            groups[key] = g
            g.waits.append(w)
            SharedQueue.wakeHost()
            return nil
        }
    }

    /// Waits added and not over (for the tests).
    var pending: Int { locked { groups.values.reduce(0) { $0 + $1.waits.count } } }

    /// The task of `w` was cancelled: the thread resumes it with
    /// CancellationError (unless it is over first). Before `add`, it is
    /// noted, and the wait ends at the thread's first look.
    func cancel(_ w: Wait) {
        locked {
            if w.over || stopping { return }
            w.cancelled = true
            if thread != nil { SharedQueue.wakeHost() }
        }
    }

    /// Ends the thread (the runtime shuts down, its arena still mapped):
    /// every wait left throws that the runtime has shut down.
    func stop() {
        let t = locked { () -> pthread_t? in
            stopping = true
            if thread != nil { SharedQueue.wakeHost() }
            return thread
        }
        if let t { pthread_join(t, nil) }
        locked { thread = nil }
    }

    private func startThread(_ runtime: Runtime) -> JobrunError? {
        do throws(JobrunError) {
            thread = try Threads.start(stackSize: 256 * 1024) { self.serve() }
        } catch {
            return error
        }
        self.runtime = runtime
        return nil
    }

    // MARK: the thread

    private func serve() {
        guard let runtime = locked({ self.runtime }) else { return }
        let word = SharedQueue.hostWord
        var lastFullLook = monotonicNanos()
        var verdict: QueueVerdict?
        while true {
            let value = word.atomic.load(ordering: .acquiring)
            // What to look at: each group and its waits, as they are now.
            let (stop, snapshot) = locked { () -> (Bool, [(Key, Group, [(Wait, Bool)])]) in
                (stopping, groups.map { ($0.key, $0.value, $0.value.waits.map { ($0, $0.cancelled) }) })
            }
            if stop { return shutDown() }
            let now = monotonicNanos()
            let full = now - lastFullLook >= HostWaiter.slice || verdict != nil
            if full { lastFullLook = now }
            var over: [(Wait, Error?)] = []
            var nearest: Int64 = HostWaiter.slice
            var again = false            // a queue could not count us: look again soon
            var stuck: Key?              // a registering wait left: its queue, for the ledger
            _ = try? runtime.withOwnIPC { ipc in
                for (key, g, waits) in snapshot {
                    let q = SharedQueue(offset: key.queue)
                    if !g.registered {
                        if q.beginHostWait(key.kind, on: .host) != nil { g.registered = true } else { again = true }
                    }
                    let seen = q.word(key.kind).atomic.load(ordering: .acquiring)
                    var look = full || !g.registered || g.seen != seen
                    for (w, cancelled) in waits {
                        if cancelled { over.append((w, CancellationError())); continue }
                        if look {
                            if w.attempt(ipc) { over.append((w, nil)); continue }
                            look = false
                            g.seen = seen
                        }
                        if let v = verdict, w.registering { over.append((w, v)); continue }
                        if let at = w.deadline.at {
                            if now >= at { over.append((w, QueueTimedOut())); continue }
                            nearest = min(nearest, at - now)
                        }
                        if w.registering && stuck == nil { stuck = key }
                    }
                }
            }
            verdict = nil
            // The waits that are over leave their groups, and a group left
            // with none is uncounted, before any task resumes: a task whose
            // get returned may drop the queue, which is then freed.
            let uncount = locked { () -> [Key] in
                for (w, _) in over { w.over = true }
                var empty: [Key] = []
                for (key, g) in groups {
                    g.waits.removeAll { $0.over }
                    if g.waits.isEmpty {
                        groups[key] = nil
                        if g.registered { empty.append(key) }
                    }
                }
                return empty
            }
            if !uncount.isEmpty {
                _ = try? runtime.withOwnIPC { _ in
                    for key in uncount { SharedQueue(offset: key.queue).endHostWait(key.kind, on: .host) }
                }
            }
            for (w, e) in over { w.finish(e) }
            if again { nearest = min(nearest, 1_000_000) } else if snapshot.isEmpty { nearest = -1 }   // idle: until a wait comes
            verdict = sleep(runtime, on: word, value, timeout: nearest, noting: stuck)
        }
    }

    /// Sleeps on `host_seq` while it holds `value`. With `noting` (a
    /// registering wait's queue), the sleep is noted in the host's ledger
    /// record, so the monitor counts the host as waiting on it; its verdict
    /// on the sleep is returned.
    private func sleep(_ runtime: Runtime, on word: UnsafeMutablePointer<UInt32>, _ value: UInt32, timeout: Int64,
                       noting key: Key?) -> QueueVerdict? {
        guard let key else {
            _ = jr_futex_wait(word, value, timeout)
            return nil
        }
        let noted = (try? runtime.withOwnIPC { _ -> Bool in
            ProcessRegistry.willWait(key.items ? JR_WAIT_GET : JR_WAIT_JOIN, object: SharedQueue(offset: key.queue).q,
                                     word: word, value: value, timed: false)
            return true
        }) ?? false
        let r = jr_futex_wait(word, value, timeout)
        guard noted else { return nil }
        let verdict = try? runtime.withOwnIPC { _ -> QueueVerdict? in
            ProcessRegistry.didWait(r)
            return ProcessRegistry.takeVerdict().map { QueueVerdict(deadlock: $0.code == .deadlock, message: $0.message) }
        }
        return verdict ?? nil
    }

    /// The runtime shuts down: every wait left ends with that error.
    private func shutDown() {
        let left = locked { () -> [Wait] in
            let all = groups.values.flatMap { $0.waits }
            for w in all { w.over = true }
            groups = [:]
            runtime = nil
            return all
        }
        for w in left { w.finish(JobrunError(.processError, "the jobrun runtime has shut down")) }
    }
}

/// A host's wait (`waitForQueue(timeout:)`) found nothing in time.
package struct QueueTimedOut: Error, Sendable {}
