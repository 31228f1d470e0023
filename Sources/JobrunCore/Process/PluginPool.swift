import Atomics
import CJobrunShims
import Glibc

/// The transport under Jobrun's PluginHost: plug-in workers (role "plugin")
/// of the process's Runtime, one request queue per worker (the pool knows
/// which worker holds which call), one response queue for all of them,
/// drained by one thread of the pool that hands each response to its call
/// by id.
///
/// - Back-pressure: at most `maxInFlight` calls are put on a worker's queue;
///   the rest wait in the pool, in FIFO order, and go to the first worker
///   with room (no thread blocked: a call is a callback).
/// - Timeout: the call at the head of a worker's queue (the one it runs)
///   past its own timeout (`submit`'s, else `callTimeout`) gets its worker
///   SIGKILLed; it fails `timedOut`. Its clock starts when the worker
///   takes it from the queue (seen within the pool thread's 5 ms round),
///   so a worker's start does not count.
/// - Cancellation (`cancel`): a call still waiting in the pool is removed;
///   one on a worker's queue fails `cancelled` at once and its response,
///   if one comes, is dropped; when it is the one the worker runs, the
///   worker is killed and replaced, as for a timeout (but a cancel does not
///   count as a worker dying).
/// - A worker that ends (killed, crashed): the call it had taken fails
///   (`timedOut` if the pool killed it, else `workerDied` with how it
///   ended); the calls behind it in its queue were never started and stay
///   there: the replacement worker, started on the same queue, serves them.
/// - Shutdown: every waiting and running call fails `hostShutDown`, each
///   worker is asked to end (an empty request), then killed after a grace.
///   The last pool of the process to shut down shuts the Runtime down,
///   unless Swift-made queues or script workers use it too (Runtime.pin).
///
/// Speed (docs/performance.md, "Issue 14"): a futex wake-up costs ~10 µs
/// on a small machine, a call's work a few. So a caller that asks for it
/// (`submit(spin: true)`) and whose call is alone on the workers, while
/// calls answer fast (an average of recent round trips), spins a short
/// while on the response queue on its own thread and takes the responses
/// itself: no wake-up of the pool's thread, and the caller's continuation
/// is resumed before it suspends. The pool's thread sleeps on the
/// response queue only while calls are in flight and nobody spins;
/// otherwise on a word of its own (`kick`), which a submit or a spinner
/// that gives up bumps. Draining is one thread at a time (`drainLock`):
/// a worker's end is noted before the drain that follows it.
package final class PluginPool: @unchecked Sendable {
    package struct Config: Sendable {
        package var directory: String
        package var workers: Int
        package var memoryLimit: Int?
        package var callTimeout: Double?
        package var restricted: Bool
        package var allowedFolders: [String]
        package var maxInFlight: Int
        /// Bytes a worker may map past what it maps at its start (RLIMIT_AS; nil: no cap).
        package var addressSpace: Int?
        /// Lua memory of some plug-ins, in place of `memoryLimit` during their calls.
        package var pluginMemory: [String: Int]
        /// More variables for the workers' environment (tests' hooks).
        package var workerEnvironment: [String: String] = [:]
        package init(directory: String, workers: Int, memoryLimit: Int?, callTimeout: Double?, restricted: Bool,
                     allowedFolders: [String], maxInFlight: Int = 16, addressSpace: Int? = nil, pluginMemory: [String: Int] = [:]) {
            self.directory = directory; self.workers = max(1, workers); self.memoryLimit = memoryLimit
            self.callTimeout = callTimeout; self.restricted = restricted; self.allowedFolders = allowedFolders
            self.maxInFlight = max(1, maxInFlight); self.addressSpace = addressSpace; self.pluginMemory = pluginMemory
        }
    }

    /// What the pool itself can tell a call.
    package enum Failure: Sendable { case timedOut, workerDied, hostShutDown, cancelled }

    package enum Outcome: Sendable {
        /// The worker's response bytes (PluginMessage).
        case response([UInt8], worker: String, pid: Int32)
        case failed(Failure, message: String, worker: String, pid: Int32)
    }

    package typealias Completion = @Sendable (Outcome) -> Void

    /// A call's outcome for a caller that may have it before it suspends
    /// (a spin in `submit` took it): `complete` is the call's completion;
    /// `ready` is the outcome if it came, else `wait` resumes a
    /// continuation with it (at once if it came meanwhile).
    package final class Reply: @unchecked Sendable {
        private let lock: UnsafeMutablePointer<pthread_mutex_t>
        private var outcome: Outcome?
        private var waiter: CheckedContinuation<Outcome, Never>?

        package init() {
            lock = .allocate(capacity: 1)
            pthread_mutex_init(lock, nil)
        }

        deinit {
            pthread_mutex_destroy(lock)
            lock.deallocate()
        }

        package func complete(_ o: Outcome) {
            pthread_mutex_lock(lock)
            guard let w = waiter else {
                outcome = o
                pthread_mutex_unlock(lock)
                return
            }
            waiter = nil
            pthread_mutex_unlock(lock)
            w.resume(returning: o)
        }

        package var ready: Outcome? {
            pthread_mutex_lock(lock)
            defer { pthread_mutex_unlock(lock) }
            return outcome
        }

        package func wait(_ c: CheckedContinuation<Outcome, Never>) {
            pthread_mutex_lock(lock)
            guard let o = outcome else {
                waiter = c
                pthread_mutex_unlock(lock)
                return
            }
            pthread_mutex_unlock(lock)
            c.resume(returning: o)
        }
    }

    private struct Call {
        let id: Int64
        let bytes: [UInt8]
        /// Seconds it may run (nil: no limit).
        let timeout: Double?
        let done: Completion
        var sent: Int64 = 0
    }

    /// Why the pool killed a slot's worker.
    private enum Kill { case timeout(Double), cancel }

    private final class Slot {
        var worker: Runtime.Worker?
        let queue: UInt64
        var inFlight: [Call] = []
        var headSince: Int64 = 0
        var killed: Kill?
        /// Workers of this slot that died in a row without answering; past
        /// `PluginPool.quickDeaths` the next one starts only at `respawnAt`.
        var deathsInRow = 0
        var respawnAt: Int64 = 0
        init(worker: Runtime.Worker?, queue: UInt64) { self.worker = worker; self.queue = queue }
    }

    package let config: Config
    private let runtime: Runtime
    private let responses: UInt64
    private let responseID: @Sendable ([UInt8]) -> Int64?
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let downCond: UnsafeMutablePointer<pthread_cond_t>
    /// Held by whoever takes responses (the pool's thread, a spinning
    /// caller); taken before `lock`, never inside it.
    private let drainLock: UnsafeMutablePointer<pthread_mutex_t>
    /// The word the pool's thread sleeps on when not on the response queue
    /// (bumped under `lock` by whoever wakes it).
    private let kick: UnsafeMutablePointer<UInt32>
    private let ids = ManagedAtomic<Int64>(1)
    // Under `lock`:
    /// The pool's thread sleeps on `kick`.
    private var onKick = false
    /// Callers spinning for their response now.
    private var spinners = 0
    /// Average round trip of recent spun calls (ns; an exponential average
    /// of eighths; a spin that ran out counts twice its budget): a caller
    /// spins while it is below `spinAverage`, and every 16th caller spins
    /// anyway (a probe: calls may have become fast again; the trips of
    /// calls not spun tell little: they include the thread wake-ups).
    private var averageTrip: Int64 = 0
    private var spinChances: UInt = 0
    private var slots: [Slot] = []
    private var waiting: [Call] = []
    private var waitingHead = 0
    private var owner: [Int64: Int] = [:]   // call id -> slot
    /// Calls on a worker's queue already failed `cancelled`: their
    /// response (or failure) is dropped.
    private var cancelled: Set<Int64> = []
    private var stopping = false
    private var down = false
    private var onDown: [@Sendable () -> Void] = []

    // MARK: the process's pools

    nonisolated(unsafe) private static let countLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    nonisolated(unsafe) private static var live = 0

    /// Starts `config.workers` plug-in workers (warm when this returns:
    /// each has taken over its record); `responseID` reads a response's id.
    package init(config: Config, responseID: @escaping @Sendable ([UInt8]) -> Int64?) throws(JobrunError) {
        self.config = config
        self.responseID = responseID
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        drainLock = .allocate(capacity: 1)
        pthread_mutex_init(drainLock, nil)
        kick = .allocate(capacity: 1)
        kick.initialize(to: 0)
        downCond = .allocate(capacity: 1)
        pthread_cond_init(downCond, nil)
        pthread_mutex_lock(PluginPool.countLock)
        defer { pthread_mutex_unlock(PluginPool.countLock) }
        let rt = try Runtime.shared()
        runtime = rt
        PluginPool.live += 1
        do {
            let queues = try rt.withIPC { ipc in
                (try ipc.makeJoinableQueue(label: "plugin responses"),
                 try (0..<config.workers).map { _ in try ipc.makeJoinableQueue(label: "plugin requests") })
            }
            responses = queues.0
            for q in queues.1 { slots.append(Slot(worker: nil, queue: q)) }
            for s in slots { s.worker = try spawn(on: s.queue) }
            for s in slots where !rt.waitUntilRunning(s.worker!, timeout: 10) {
                throw JobrunError(.processError, "plug-in worker \(s.worker!) did not start")
            }
        } catch {
            for s in slots { if let w = s.worker { rt.signal(w, SIGKILL); _ = rt.waitForExit(w, timeout: 5) } }
            PluginPool.live -= 1
            if PluginPool.live == 0 { rt.shutdown() }
            pthread_mutex_destroy(lock); lock.deallocate()
            pthread_mutex_destroy(drainLock); drainLock.deallocate()
            kick.deallocate()
            pthread_cond_destroy(downCond); downCond.deallocate()
            if let e = error as? JobrunError { throw e }
            throw JobrunError(.processError, "\(error)")
        }
        try startThread()
    }

    /// Workers dying in a row (no answer between) before the pool waits
    /// between restarts and fails what their queue holds.
    static let quickDeaths = 3

    private func spawn(on queue: UInt64) throws(JobrunError) -> Runtime.Worker {
        var env = config.workerEnvironment
        env.merge(["JOBRUN_PLUGIN_DIR": config.directory, "JOBRUN_PLUGIN_REQUESTS": String(queue),
                   "JOBRUN_PLUGIN_RESPONSES": String(responses)]) { $1 }
        if let m = config.memoryLimit { env["JOBRUN_PLUGIN_MEMORY"] = String(m) }
        if config.restricted { env["JOBRUN_PLUGIN_RESTRICTED"] = "1" }
        if !config.allowedFolders.isEmpty { env["JOBRUN_PLUGIN_ALLOWED"] = config.allowedFolders.joined(separator: "\n") }
        if let a = config.addressSpace { env["JOBRUN_PLUGIN_ADDRESS_SPACE"] = String(a) }
        if !config.pluginMemory.isEmpty {
            env["JOBRUN_PLUGIN_LIMITS"] = config.pluginMemory.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n")
        }
        return try runtime.spawnWorker(role: "plugin", environment: env)
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    /// A fresh call id (for the request's bytes).
    package func makeID() -> Int64 { ids.loadThenWrappingIncrement(ordering: .relaxed) }

    /// A caller spins for its response only while calls in flight are at
    /// most this many (one per two CPUs: the worker needs one) ...
    static let spinMaxInFlight = max(1, Int(jr_cpu_count()) / 2)
    /// ... while recent round trips averaged less than this (ns) ...
    static let spinAverage: Int64 = 40_000
    /// ... and for at most this long (ns).
    static let spinBudget: Int64 = 50_000

    /// Wakes the pool's thread if it sleeps on `kick` (lock held); true:
    /// the caller calls `wakeThread()` after unlocking.
    private func kickLocked() -> Bool {
        guard onKick else { return false }
        onKick = false
        kick.pointee &+= 1
        return true
    }

    private func wakeThread() { _ = jr_futex_wake(kick, 1) }

    /// The workers now (name, pid).
    package var workers: [(name: String, pid: Int32)] { locked { slots.compactMap { $0.worker.map { ($0.name, $0.pid) } } } }

    /// Calls the pool holds (waiting, or on a worker's queue, a cancelled
    /// one until its response is dropped), and its records of them (owner,
    /// cancelled): both 0 when the host is idle.
    package var held: (calls: Int, records: Int) {
        locked { (waiting.count - waitingHead + inFlightLocked(), owner.count + cancelled.count) }
    }

    /// Sends a request (its bytes carry `id`) that may run `timeout`
    /// seconds (nil: the config's `callTimeout`); `done` is called once, on
    /// another thread or this one, never with the pool's lock held.
    /// `spin`: the caller may spend up to `spinBudget` in this call waiting
    /// for the response (see the type's note); `done` has then often been
    /// called when this returns.
    package func submit(id: Int64, bytes: [UInt8], timeout: Double? = nil, spin: Bool = false, done: @escaping Completion) {
        let call = Call(id: id, bytes: bytes, timeout: timeout ?? config.callTimeout, done: done)
        var finished: [(Completion, Outcome)] = []
        var wake = false
        let spinning = locked { () -> Bool in
            if stopping {
                finished.append((done, .failed(.hostShutDown, message: "the plug-in host has shut down", worker: "", pid: 0)))
                return false
            }
            waiting.append(call)
            dispatchLocked(&finished)
            if spin, owner[id] != nil, spinners == 0, inFlightLocked() <= PluginPool.spinMaxInFlight {
                spinChances &+= 1
                if averageTrip < PluginPool.spinAverage || spinChances & 15 == 0 {
                    spinners += 1
                    return true
                }
            }
            wake = kickLocked()
            return false
        }
        if wake { wakeThread() }
        for (c, o) in finished { c(o) }
        if spinning { spinFor(id) }
    }

    private func inFlightLocked() -> Int {
        var n = 0
        for s in slots { n += s.inFlight.count }
        return n
    }

    /// A caller's spin for the response of call `id` (counted in `spinners`).
    private func spinFor(_ id: Int64) {
        let deadline = monotonicNanos() + PluginPool.spinBudget
        var done = false
        var i = 0
        while true {
            if runtime.peekItemCount(responses) > 0 && pthread_mutex_trylock(drainLock) == 0 {
                var finished: [(Completion, Outcome)] = []
                done = drainLocked(&finished, mine: id)
                pthread_mutex_unlock(drainLock)
                for (c, o) in finished { c(o) }
                if done { break }
            }
            i += 1
            if i & 15 == 0 {
                if monotonicNanos() > deadline { break }
                if i & 255 == 0, locked({ owner[id] == nil || stopping }) { break }
            }
            jr_cpu_relax()
        }
        let wake = locked { () -> Bool in
            spinners -= 1
            let pending = owner[id] != nil
            if pending && !done { averageTrip += (2 * PluginPool.spinBudget - averageTrip) / 8 }   // ran out
            return (pending || inFlightLocked() > 0) && kickLocked()
        }
        if wake { wakeThread() }
    }

    /// Takes every response and hands each to its call (drainLock held);
    /// then moves waiting calls to the workers. True when call `mine` is
    /// no longer in flight.
    @discardableResult
    private func drainLocked(_ finished: inout [(Completion, Outcome)], mine: Int64 = 0) -> Bool {
        var got: [[UInt8]] = []
        _ = try? runtime.withIPC { ipc in
            while let b = ipc.get(from: responses) {
                ipc.taskDone(responses)
                got.append(b)
            }
        }
        return locked { () -> Bool in
            if !got.isEmpty {
                let now = monotonicNanos()
                for b in got {
                    guard !b.isEmpty, let id = responseID(b), let i = owner.removeValue(forKey: id) else { continue }
                    let s = slots[i]
                    guard let k = s.inFlight.firstIndex(where: { $0.id == id }) else { continue }
                    let call = s.inFlight.remove(at: k)
                    s.headSince = now
                    s.deathsInRow = 0
                    if id == mine { averageTrip += (now - call.sent - averageTrip) / 8 }
                    endLocked(call, .response(b, worker: s.worker?.name ?? "", pid: s.worker?.pid ?? 0), &finished)
                }
                dispatchLocked(&finished)
            }
            return mine != 0 && owner[mine] == nil
        }
    }

    /// Fails call `id` with `cancelled` if it has not ended (see the type's
    /// comment); nothing for a call that ended or is unknown.
    package func cancel(id: Int64) {
        var finished: [(Completion, Outcome)] = []
        locked {
            let why = "the call was cancelled"
            if let k = waiting[waitingHead...].firstIndex(where: { $0.id == id }) {
                finished.append((waiting[k].done, .failed(.cancelled, message: why, worker: "", pid: 0)))
                waiting.remove(at: k)
                return
            }
            guard let i = owner[id], !cancelled.contains(id) else { return }
            let s = slots[i]
            guard let k = s.inFlight.firstIndex(where: { $0.id == id }) else { return }
            cancelled.insert(id)
            finished.append((s.inFlight[k].done, .failed(.cancelled, message: why + (k == 0 ? " while it ran: its worker was killed and replaced" : ""),
                                                         worker: s.worker?.name ?? "", pid: s.worker?.pid ?? 0)))
            if k == 0, s.killed == nil, let w = s.worker {
                s.killed = .cancel
                runtime.signal(w, SIGKILL)
            }
        }
        for (c, o) in finished { c(o) }
    }

    /// `call` ended with `outcome`: its completion, unless it was cancelled (lock held).
    private func endLocked(_ call: Call, _ outcome: Outcome, _ finished: inout [(Completion, Outcome)]) {
        if cancelled.remove(call.id) == nil { finished.append((call.done, outcome)) }
    }

    /// Moves waiting calls to workers with room (lock held).
    private func dispatchLocked(_ finished: inout [(Completion, Outcome)]) {
        let now = waitingHead < waiting.count ? monotonicNanos() : 0
        while waitingHead < waiting.count {
            var best: Int?
            for (i, s) in slots.enumerated() where s.worker != nil && s.killed == nil && s.inFlight.count < config.maxInFlight {
                if best == nil || s.inFlight.count < slots[best!].inFlight.count { best = i }
            }
            guard let i = best else { break }
            var call = waiting[waitingHead]
            call.sent = now
            waitingHead += 1
            let s = slots[i]
            let ok = (try? runtime.withIPC { $0.put(call.bytes, on: s.queue) }) ?? false
            if !ok {
                finished.append((call.done, .failed(.workerDied, message: "the request could not be queued (shared memory full?)",
                                                    worker: s.worker?.name ?? "", pid: s.worker?.pid ?? 0)))
                continue
            }
            if s.inFlight.isEmpty { s.headSince = now }
            s.inFlight.append(call)
            owner[call.id] = i
        }
        if waitingHead > 64 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
    }

    // MARK: the pool's thread

    private func startThread() throws(JobrunError) {
        try Threads.start(detached: true) { self.serve() }
    }

    private enum Sleep { case none, responses(Double), kick(UInt32, Double) }

    private func serve() {
        var seenExits = runtime.workerExits &- 1   // the first round looks at every worker
        while true {
            var finished: [(Completion, Outcome)] = []
            pthread_mutex_lock(drainLock)
            // Which workers ended, before draining: their last responses are in the queue by now.
            var dead: [Int] = []
            let exits = runtime.workerExits
            if exits != seenExits {
                seenExits = exits
                dead = locked { slots.indices.filter { i in slots[i].worker.map { runtime.exitCode(of: $0) != nil } ?? false } }
            }
            let took = runtime.peekItemCount(responses) > 0
            if took { drainLocked(&finished) }
            let (stop, sleep) = locked { () -> (Bool, Sleep) in
                onKick = false
                for i in dead { replaceLocked(i, &finished) }
                let now = monotonicNanos()
                for s in slots where s.worker == nil && s.respawnAt > 0 && now >= s.respawnAt {
                    s.respawnAt = 0
                    s.worker = try? spawn(on: s.queue)
                    s.headSince = now
                    if s.worker == nil { s.respawnAt = now + 1_000_000_000 }
                }
                for s in slots where s.killed == nil {
                    guard let limit = s.inFlight.first?.timeout, let w = s.worker else { continue }
                    // The head call's clock runs from when its worker takes
                    // it: while its request still waits in the queue (the
                    // worker is starting, after a crash or a timeout), it
                    // has not begun.
                    if runtime.peekItemCount(s.queue) >= UInt64(s.inFlight.count) { s.headSince = now; continue }
                    if Double(now - s.headSince) / 1e9 > limit {
                        s.killed = .timeout(limit)
                        runtime.signal(w, SIGKILL)
                    }
                }
                if waitingHead < waiting.count { dispatchLocked(&finished) }
                if stopping { return (true, .none) }
                if took || !dead.isEmpty { return (false, .none) }
                // Asleep on the response queue only when a response may come
                // and no caller takes it; else on `kick` (submit, a spinner
                // giving up and shutdown bump it), still waking for timeouts
                // and ended workers.
                let busy = inFlightLocked() > 0
                if busy && spinners == 0 { return (false, .responses(0.005)) }
                onKick = true
                return (false, .kick(kick.pointee, busy ? 0.005 : 0.05))
            }
            pthread_mutex_unlock(drainLock)
            for (c, o) in finished { c(o) }
            if stop { break }
            switch sleep {
            case .none: break
            case .responses(let timeout): runtime.waitForItems(on: responses, timeout: timeout)
            case .kick(let seq, let timeout): _ = jr_futex_wait(kick, seq, Int64(timeout * 1e9))
            }
        }
        finish()
    }

    /// Slot `i`'s worker ended: fail the call it had taken, start a new one
    /// on the same queue (lock held).
    private func replaceLocked(_ i: Int, _ finished: inout [(Completion, Outcome)]) {
        let s = slots[i]
        guard let w = s.worker, let code = runtime.exitCode(of: w) else { return }
        let queued = Int((try? runtime.withIPC { $0.itemCount(s.queue) }) ?? 0)
        if s.inFlight.count > queued, !s.inFlight.isEmpty {
            let call = s.inFlight.removeFirst()
            owner[call.id] = nil
            let outcome: Outcome = if case .timeout(let limit)? = s.killed {
                .failed(.timedOut, message: "the call ran past its timeout of \(limit) s: its worker was killed and replaced",
                        worker: w.name, pid: w.pid)
            } else if case .cancel? = s.killed {
                // The cancelled call had just ended when its kill came: this one had started.
                .failed(.workerDied, message: "the worker was killed to cancel the call before this one, which had just ended",
                        worker: w.name, pid: w.pid)
            } else {
                .failed(.workerDied, message: "the worker \(describeExit(code))", worker: w.name, pid: w.pid)
            }
            endLocked(call, outcome, &finished)
        }
        // A worker killed for a cancel did nothing wrong.
        if case .cancel? = s.killed {} else { s.deathsInRow += 1 }
        s.killed = nil
        s.worker = nil
        if s.deathsInRow >= PluginPool.quickDeaths {
            // Workers that die before answering anything (the folder went
            // away, a plug-in crashes at every call): fail what waits for
            // this slot, take the requests back, start again later.
            _ = try? runtime.withIPC { ipc in
                while ipc.get(from: s.queue) != nil { ipc.taskDone(s.queue) }
            }
            for call in s.inFlight {
                owner[call.id] = nil
                endLocked(call, .failed(.workerDied, message: "\(s.deathsInRow) workers in a row died (the last \(describeExit(code))): not run",
                                        worker: w.name, pid: w.pid), &finished)
            }
            s.inFlight = []
            s.respawnAt = monotonicNanos() + min(1_000_000_000, Int64(50_000_000) << min(10, s.deathsInRow - PluginPool.quickDeaths))
            return
        }
        do throws(JobrunError) {
            s.worker = try spawn(on: s.queue)
            s.headSince = monotonicNanos()
        } catch {
            for call in s.inFlight {
                owner[call.id] = nil
                endLocked(call, .failed(.workerDied, message: "no worker could replace \(w.name): \(error)", worker: w.name, pid: w.pid), &finished)
            }
            s.inFlight = []
        }
    }

    // MARK: shutdown

    /// Fails every call `hostShutDown`, ends the workers, and (the last
    /// pool) the runtime; `then` runs when all is done, on the pool's thread.
    package func shutdown(then: @escaping @Sendable () -> Void) {
        let already = locked { () -> Bool in
            if down { return true }
            onDown.append(then)
            let was = stopping
            stopping = true
            return was
        }
        if already && locked({ down }) { then(); return }
        if locked({ kickLocked() }) { wakeThread() }
        _ = try? runtime.withIPC { $0.put([], on: responses) }   // wakes the thread
    }

    /// As shutdown, waiting until it is done (up to 30 s).
    package func shutdownAndWait() {
        shutdown(then: {})
        let deadline = Deadline(timeout: 30)
        locked {
            while !down && !deadline.expired {
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                ts.tv_nsec += 50_000_000
                if ts.tv_nsec >= 1_000_000_000 { ts.tv_sec += 1; ts.tv_nsec -= 1_000_000_000 }
                _ = pthread_cond_timedwait(downCond, lock, &ts)
            }
        }
    }

    /// On the pool's thread, once stopping.
    private func finish() {
        var finished: [(Completion, Outcome)] = []
        let workers = locked { () -> [Runtime.Worker] in
            let message = "the plug-in host shut down before the call ended"
            for s in slots {
                // A call given to a worker names it, as every other failure does.
                let shut = Outcome.failed(.hostShutDown, message: message, worker: s.worker?.name ?? "", pid: s.worker?.pid ?? 0)
                for c in s.inFlight { endLocked(c, shut, &finished) }
                s.inFlight = []
            }
            for c in waiting[waitingHead...] { finished.append((c.done, .failed(.hostShutDown, message: message, worker: "", pid: 0))) }
            waiting = []; waitingHead = 0; owner = [:]; cancelled = []
            return slots.compactMap(\.worker)
        }
        // A caller still spinning reads the response queue: it sees `stopping`
        // and its call gone within a few µs (spinBudget at most).
        while locked({ spinners > 0 }) { sched_yield() }
        for (c, o) in finished { c(o) }
        // An empty request ends a worker once it is done with what it runs.
        for s in locked({ slots }) { _ = try? runtime.withIPC { $0.put([], on: s.queue) } }
        for w in workers where runtime.waitForExit(w, timeout: 1) == nil { runtime.signal(w, SIGKILL) }
        for w in workers { _ = runtime.waitForExit(w, timeout: 10) }
        pthread_mutex_lock(PluginPool.countLock)
        PluginPool.live -= 1
        if PluginPool.live == 0 && !runtime.isPinned { runtime.shutdown() }
        pthread_mutex_unlock(PluginPool.countLock)
        let then = locked { () -> [@Sendable () -> Void] in
            down = true
            pthread_cond_broadcast(downCond)
            defer { onDown = [] }
            return onDown
        }
        for t in then { t() }
    }
}
