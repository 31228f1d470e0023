import Atomics
import CJobrunShims
import Glibc

/// jobrun inside a multi-threaded Swift host: the run's arena, the host as
/// the run's main process, a supervising monitor and the workers, all
/// started with posix_spawn of the host's own executable (Reentry), never
/// with fork.
///
/// One per process, made on first use (`shared()`), thread-safe. The
/// process context (ProcessContext) is per process and its per-item part is
/// not thread-safe, so every operation on the run's shared objects goes
/// through `withIPC`, which holds the runtime's one IPC lock and hands the
/// body the only value (`IPC`) that can perform them. Bookkeeping of the
/// children (who runs, who ended) has a lock of its own; the two are never
/// held together.
///
/// The host learns of a worker's end through its pidfd: one thread of the
/// runtime waits on every pidfd with epoll and reaps the ended child (its
/// own children only, by pid: a host's other children are not touched).
/// Threads are allowed here: a host process never forks (the command line,
/// which forks, never makes a Runtime).
///
/// `shutdown()` ends everything; afterwards the process holds no child,
/// descriptor or mapping of the runtime's, and `shared()` starts a new one.
package final class Runtime: @unchecked Sendable {
    // MARK: one per process

    private static let registry = Registry()

    private final class Registry: @unchecked Sendable {
        let lock = Runtime.newMutex()
        var current: Runtime?
    }

    /// The process's runtime, started if there is none.
    package static func shared() throws(JobrunError) -> Runtime {
        pthread_mutex_lock(registry.lock)
        defer { pthread_mutex_unlock(registry.lock) }
        if let r = registry.current { return r }
        let r = try Runtime()
        registry.current = r
        return r
    }

    /// The running runtime, if any (none is started).
    package static var running: Runtime? {
        pthread_mutex_lock(registry.lock)
        defer { pthread_mutex_unlock(registry.lock) }
        return registry.current
    }

    // MARK: state

    /// Guards the process context and every arena operation (`withIPC`).
    private let ipcLock = Runtime.newMutex()
    /// Guards the fields below; `changed` is broadcast when a child ends.
    private let stateLock = Runtime.newMutex()
    private let changed: UnsafeMutablePointer<pthread_cond_t> = {
        let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(c, &attr)
        pthread_condattr_destroy(&attr)
        return c
    }()

    /// The host's pid (the run's main process).
    package let hostPid: pid_t
    private var workers: [Int32: Worker] = [:]    // by pidfd
    private var spawnRequests: [SpawnRequest] = []
    private var shutDown = false
    private var pinnedByUser = false
    private var stopping = false
    private var started = 0
    /// The monitor: pid, pidfd, the write end of the pipe that ends it.
    private struct MonitorHandle { var pid: pid_t = 0; var pidfd: Int32 = -1; var doneFD: Int32 = -1 }
    private var monitor = MonitorHandle()
    /// Monitors that died while the runtime ran (each is replaced, up to
    /// Monitor.maxReplacements, as the command line does).
    private var monitorDeaths = 0
    /// Workers reaped so far (rises after `exit` is set): a poller sees a
    /// change before it looks at each worker's `exitCode(of:)`.
    private let exits = ManagedAtomic<UInt64>(0)
    private var epollFD: Int32 = -1
    private var wakeFD: Int32 = -1
    private var thread: pthread_t?
    /// This runtime made the process's arena (under the IPC lock): only
    /// then does its teardown unmap it.
    private var ownsArena = false
    /// Serves every wait of the host on a queue (Runtime+Waits.swift).
    let waiter = HostWaiter()

    private init() throws(JobrunError) {
        Reentry.anchor()
        hostPid = getpid()
        do {
            try start()
        } catch {
            teardown()
            throw error
        }
    }

    private func start() throws(JobrunError) {
        try withIPCLocked { () throws(JobrunError) in
            if Arena.isAttached || Reentry.isReentered {
                throw JobrunError(.processError, "this process already belongs to a jobrun run (a worker, or the command line)")
            }
            do { try Arena.create(limit: nil) } catch let e as JobrunError { throw e } catch {
                throw JobrunError(.processError, "cannot create shared memory: \(error)")
            }
            ownsArena = true
            ProcessRegistry.register(name: "host", parent: getppid())
        }
        epollFD = jr_epoll_create()
        if epollFD < 0 { throw JobrunError(call: "epoll_create1", errno: Glibc.errno) }
        wakeFD = jr_eventfd()
        if wakeFD < 0 { throw JobrunError(call: "eventfd", errno: Glibc.errno) }
        try watch(wakeFD)
        try startMonitor()
        try startThread()
    }

    // MARK: the IPC lock

    /// What only code holding the IPC lock can do: the run's shared objects
    /// from the host. Not copyable, borrowed by `withIPC`'s body: it cannot
    /// leave the body, so nothing touches the arena without the lock.
    package struct IPC: ~Copyable {
        fileprivate init() {}

        /// A new JoinableQueue (held by the host until the run ends); its arena offset.
        package func makeJoinableQueue(redeliver: Bool = false, label: String = "") throws(JobrunError) -> UInt64 {
            do {
                let off = try SharedQueue.create(maxsize: 0, joinable: true, redeliver: redeliver, label: label, site: "host")
                _ = try ObjectTable.register(type: JR_OBJ_JOINABLE_QUEUE, offset: off)
                return off
            } catch {
                throw JobrunError(.processError, "cannot create a JoinableQueue: \(error)")
            }
        }

        /// Puts raw bytes without waiting; false when the queue is full or closed.
        package func put(_ bytes: [UInt8], on queue: UInt64) -> Bool {
            let r = bytes.withUnsafeBytes { SharedQueue(offset: queue).put($0, block: false, deadline: Deadline(timeout: 0)) }
            if case .ok = r { return true }
            return false
        }

        /// Takes one item without waiting; nil when there is none.
        package func get(from queue: UInt64) -> [UInt8]? {
            var item: [UInt8]?
            let r = SharedQueue(offset: queue).get(block: false, deadline: Deadline(timeout: 0),
                                                    scratch: &ProcessContext.processHot.pointee.scratch) { item = Array($0) }
            if case .ok = r { return item }
            return nil
        }

        package func taskDone(_ queue: UInt64) { _ = SharedQueue(offset: queue).taskDone() }

        /// Tasks of `queue` not yet done, and those failed (their taker died).
        package func tasks(of queue: UInt64) -> (unfinished: UInt64, failed: UInt64) {
            let q = SharedQueue(offset: queue).q
            return (q.atomic(\.unfinished).load(ordering: .acquiring), q.pointee.failed_tasks)
        }

        /// Items waiting in `queue`.
        package func itemCount(_ queue: UInt64) -> UInt64 { SharedQueue(offset: queue).q.atomic(\.count).load(ordering: .acquiring) }

        /// The state of a worker's ledger record: running (taken over by the
        /// worker), and how it ended once the monitor or the reaper saw it.
        package func isRunning(_ worker: Worker) -> Bool {
            let r = ProcessRegistry.slots() + worker.slot
            return r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) && r.pointee.pid == worker.pid
        }
    }

    /// Runs `body` holding the IPC lock; throws `.hostShutDown`-like error
    /// once the runtime has shut down.
    package func withIPC<T>(_ body: (borrowing IPC) throws -> T) throws -> T {
        try withIPCLocked { () throws -> T in
            if Arena.base == nil { throw JobrunError(.processError, "the jobrun runtime has shut down") }
            return try body(IPC())
        }
    }

    /// Items waiting in `queue`, read without the IPC lock (one atomic
    /// load: for a spin). The caller keeps the runtime from shutting down
    /// meanwhile (its queue lives in the arena).
    package func peekItemCount(_ queue: UInt64) -> UInt64 {
        SharedQueue(offset: queue).q.atomic(\.count).load(ordering: .acquiring)
    }

    /// Sleeps up to `timeout` seconds until `queue` has an item, without
    /// holding the IPC lock while asleep (it is taken only to register and
    /// unregister as a waiter): a host thread that waits for responses
    /// leaves the lock to the threads that put. Returns at once when items
    /// are there. The caller keeps the runtime from shutting down meanwhile
    /// (its queue lives in the arena).
    package func waitForItems(on queue: UInt64, timeout: Double) {
        let registered = try? withIPC { _ in SharedQueue(offset: queue).beginHostWait(.items, on: .queue) }
        guard let (word, seq) = registered ?? nil else { return }
        _ = jr_futex_wait(word, seq, Int64(max(0, timeout) * 1e9))
        _ = try? withIPC { _ in SharedQueue(offset: queue).endHostWait(.items, on: .queue) }
    }

    private func withIPCLocked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(ipcLock)
        defer { pthread_mutex_unlock(ipcLock) }
        return try body()
    }

    private func withState<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(stateLock)
        defer { pthread_mutex_unlock(stateLock) }
        return body()
    }

    // MARK: workers

    /// A worker process of this runtime. Its pidfd is the runtime's, closed
    /// once the worker is reaped.
    package final class Worker: @unchecked Sendable, CustomStringConvertible {
        package let pid: pid_t
        package let role: String
        package let name: String
        /// Its ledger record (index).
        package let slot: Int
        fileprivate let pidfd: Int32
        /// Under the runtime's state lock.
        fileprivate var exit: Int32?
        fileprivate var waiters: [CheckedContinuation<Int32, Never>] = []

        fileprivate init(pid: pid_t, role: String, name: String, slot: Int, pidfd: Int32) {
            self.pid = pid; self.role = role; self.name = name; self.slot = slot; self.pidfd = pidfd
        }

        package var description: String { "\(name) (pid \(pid))" }
    }

    /// Starts a worker running `role` (WorkerRoles), with `environment`
    /// added to the host's (its parameters). The worker is the host's own
    /// executable re-entered (Reentry), handed the arena as descriptor 3 and
    /// nothing else beyond stdio; its ledger record is reserved (STARTING)
    /// before it starts, so the monitor counts it from the start.
    ///
    /// The spawn itself runs on the runtime's thread, whatever thread calls:
    /// a worker's PR_SET_PDEATHSIG fires when the *thread* that started it
    /// ends, and a host's threads come and go (Dispatch retires idle ones);
    /// the runtime's thread lives until every worker is gone.
    package func spawnWorker(role: String, name: String? = nil, environment: [String: String] = [:]) throws(JobrunError) -> Worker {
        guard WorkerRoles.exists(role) else { throw JobrunError(.processError, "no worker role named '\(role)'") }
        let request = SpawnRequest(role: role, name: name, environment: environment)
        let queued = withState { () -> Bool in
            if stopping || shutDown { return false }
            spawnRequests.append(request)
            return true
        }
        guard queued else { throw JobrunError(.processError, "the jobrun runtime has shut down") }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        let result = withState { () -> Result<Worker, JobrunError> in
            while request.result == nil { wait(until: Deadline(timeout: nil)) }
            return request.result!
        }
        return try result.get()
    }

    /// A spawn asked of the runtime's thread; `result` set under the state lock.
    private final class SpawnRequest {
        let role: String, name: String?, environment: [String: String]
        var result: Result<Worker, JobrunError>?
        init(role: String, name: String?, environment: [String: String]) {
            self.role = role; self.name = name; self.environment = environment
        }
    }

    /// The runtime's thread: starts the workers asked for.
    private func serveSpawnRequests() {
        while let request = withState({ spawnRequests.isEmpty ? nil : spawnRequests.removeFirst() }) {
            let result: Result<Worker, JobrunError>
            do throws(JobrunError) {
                result = .success(try spawnNow(role: request.role, name: request.name, environment: request.environment))
            } catch {
                result = .failure(error)
            }
            withState {
                request.result = result
                pthread_cond_broadcast(changed)
            }
        }
    }

    private func spawnNow(role: String, name: String?, environment: [String: String]) throws(JobrunError) -> Worker {
        let number = withState { () -> Int? in
            if stopping || shutDown { return nil }
            started += 1
            return started
        }
        guard let number else { throw JobrunError(.processError, "the jobrun runtime has shut down") }
        let workerName = name ?? "\(role)-\(number)"
        return try withIPCLocked { () throws(JobrunError) -> Worker in
            guard Arena.base != nil else { throw JobrunError(.processError, "the jobrun runtime has shut down") }
            guard let slot = ProcessRegistry.reserve(name: workerName) else {
                throw JobrunError(.processError, "cannot start worker \(workerName): every process record is in use")
            }
            let args = ["fd": "3", "token": Arena.tokenText, "slot": String(slot), "parent": String(hostPid),
                        "role": role, "name": workerName]
            let env = Runtime.childEnvironment(Reentry.environment(role: "worker", args: args), adding: environment)
            let pid: pid_t
            do throws(JobrunError) {
                pid = try ProcessControl.spawnExecutable(arguments: [workerName], passing: [Arena.fd], environment: env, resetSignals: true)
            } catch {
                ProcessRegistry.abandon(slot)
                throw error
            }
            ProcessRegistry.started(slot, pid: pid)
            let fd = jr_pidfd_open(pid)   // unreaped: the pid is still this child's
            if fd < 0 {
                let e = Glibc.errno
                _ = kill(pid, SIGKILL)
                var status: Int32 = 0
                _ = valueOrErrno("waitpid") { waitpid(pid, &status, 0) }
                ProcessRegistry.recordExit(pid, code: ProcessControl.exitCode(status))
                throw JobrunError(call: "pidfd_open", errno: e)
            }
            let w = Worker(pid: pid, role: role, name: workerName, slot: slot, pidfd: fd)
            withState { workers[fd] = w }
            do throws(JobrunError) { try watch(fd) } catch {
                // Not watched: kill it and reap it here.
                _ = jr_pidfd_send_signal(fd, SIGKILL)
                _ = ProcessControl.reap(pid)
                withState { _ = workers.removeValue(forKey: fd) }
                close(fd)
                throw error
            }
            return w
        }
    }

    /// Set by users of the runtime that never shut it down (Swift-made
    /// queues, script workers): the last PluginHost to shut down then
    /// leaves the runtime running (it lives until the process exits).
    package func pin() { withState { pinnedByUser = true } }
    package var isPinned: Bool { withState { pinnedByUser } }

    /// The workers started and not yet reaped.
    package var liveWorkers: [Worker] { withState { Array(workers.values) } }

    /// How `worker` ended (lua-api.md's code: n for exit(n), -N for signal
    /// N), or nil while it runs.
    package func exitCode(of worker: Worker) -> Int32? { withState { worker.exit } }

    /// How many workers have ended (been reaped) so far, without a lock: a
    /// poller compares it with the count it saw last and asks `exitCode(of:)`
    /// only when it changed.
    package var workerExits: UInt64 { exits.load(ordering: .acquiring) }

    /// Waits up to `timeout` seconds for `worker` to end; its exit code, or nil.
    package func waitForExit(_ worker: Worker, timeout: Double) -> Int32? {
        let deadline = Deadline(timeout: timeout)
        return withState { () -> Int32? in
            while worker.exit == nil && !deadline.expired { wait(until: deadline) }
            return worker.exit
        }
    }

    /// Waits for `worker` to end.
    package func exited(_ worker: Worker) async -> Int32 {
        await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            let code = withState { () -> Int32? in
                if worker.exit == nil { worker.waiters.append(c) }
                return worker.exit
            }
            if let code { c.resume(returning: code) }
        }
    }

    /// Waits up to `timeout` seconds until `worker` has taken over its
    /// ledger record (it runs its role); false if it has not (or ended).
    package func waitUntilRunning(_ worker: Worker, timeout: Double) -> Bool {
        let deadline = Deadline(timeout: timeout)
        while true {
            if (try? withIPC({ $0.isRunning(worker) })) == true { return true }
            if exitCode(of: worker) != nil || deadline.expired { return false }
            usleep(100)
        }
    }

    /// Sends `sig` to `worker` if it has not been reaped (through its pidfd:
    /// never to a later process that reused its pid).
    package func signal(_ worker: Worker, _ sig: Int32) {
        withState {
            if worker.exit == nil { _ = jr_pidfd_send_signal(worker.pidfd, sig) }
        }
    }

    /// Waits on `changed` until `deadline` (state lock held).
    private func wait(until deadline: Deadline) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let slice = min(deadline.remaining < 0 ? 100_000_000 : deadline.remaining, 100_000_000)
        let ns = Int64(ts.tv_nsec) + slice
        ts.tv_sec += Int(ns / 1_000_000_000)
        ts.tv_nsec = Int(ns % 1_000_000_000)
        _ = pthread_cond_timedwait(changed, stateLock, &ts)
    }

    // MARK: the monitor

    /// The monitor's pid (0 when there is none).
    package var monitorPid: pid_t { withState { monitor.pid } }

    /// How many monitors died (and were replaced) while the runtime ran.
    package var monitorsLost: Int { withState { monitorDeaths } }

    private func startMonitor() throws(JobrunError) {
        var fds: [Int32] = [-1, -1]
        if jr_pipe_cloexec(&fds) != 0 { throw JobrunError(call: "pipe2", errno: Glibc.errno) }
        defer { close(fds[0]) }
        let pid: pid_t
        do throws(JobrunError) {
            pid = try withIPCLocked { () throws(JobrunError) -> pid_t in
                let args = ["fd": "3", "token": Arena.tokenText, "main": String(hostPid), "done": "4"]
                let env = Runtime.childEnvironment(Reentry.environment(role: "monitor", args: args), adding: [:])
                let pid = try ProcessControl.spawnExecutable(arguments: ["jobrun-monitor"], passing: [Arena.fd, fds[0]],
                                                             environment: env, resetSignals: true)
                Arena.header.pointee.monitor_pid = pid
                return pid
            }
        } catch {
            close(fds[1])
            throw error
        }
        let pidfd = jr_pidfd_open(pid)
        if pidfd < 0 {
            let e = Glibc.errno
            _ = kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = valueOrErrno("waitpid") { waitpid(pid, &status, 0) }
            close(fds[1])
            throw JobrunError(call: "pidfd_open", errno: e)
        }
        withState { monitor = MonitorHandle(pid: pid, pidfd: pidfd, doneFD: fds[1]) }
        try watch(pidfd)   // if not, teardown kills and reaps it
    }

    // MARK: the reaper thread

    private func watch(_ fd: Int32) throws(JobrunError) {
        if jr_epoll_add(epollFD, fd) != 0 { throw JobrunError(call: "epoll_ctl", errno: Glibc.errno) }
    }

    private func startThread() throws(JobrunError) {
        thread = try Threads.start { self.reaperLoop() }
    }

    /// The reaper thread: reaps each child whose pidfd becomes readable,
    /// until `wakeFD` is written while `stopping`... and no child is left.
    private func reaperLoop() {
        var ready = [Int32](repeating: -1, count: 16)
        while true {
            let n: Int32
            switch valueOrErrno("epoll_wait", { jr_epoll_wait(epollFD, &ready, 16, -1) }) {
            case .success(let k): n = k
            case .failure: return
            }
            for fd in ready[0..<Int(n)] {
                if fd == wakeFD {
                    var v: UInt64 = 0
                    _ = read(wakeFD, &v, 8)
                    if withState({ shutDown }) { return }
                    serveSpawnRequests()
                } else {
                    ended(fd)
                }
            }
        }
    }

    /// The child of pidfd `fd` has ended: reap it, tell its waiters.
    private func ended(_ fd: Int32) {
        _ = jr_epoll_del(epollFD, fd)
        let m = withState { monitor }
        if fd == m.pidfd {
            var status: Int32 = 0
            _ = valueOrErrno("waitpid") { waitpid(m.pid, &status, 0) }
            let replace = withState { () -> Bool in
                close(m.pidfd)
                if m.doneFD >= 0 { close(m.doneFD) }
                monitor = MonitorHandle()
                pthread_cond_broadcast(changed)
                if stopping || shutDown { return false }
                monitorDeaths += 1
                return monitorDeaths <= Monitor.maxReplacements
            }
            withIPCLocked { if Arena.base != nil { Arena.header.pointee.monitor_pid = 0 } }
            guard replace else {
                if !withState({ stopping || shutDown }) {
                    writeAll(2, "jobrun: the runtime's monitor (pid \(m.pid)) \(describeExit(ProcessControl.exitCode(status))); \(Monitor.maxReplacements) were replaced already: the host's workers run unsupervised\n")
                }
                return
            }
            do throws(JobrunError) { try startMonitor() } catch {
                writeAll(2, "jobrun: the runtime's monitor (pid \(m.pid)) \(describeExit(ProcessControl.exitCode(status))) and cannot be replaced: \(error)\n")
            }
            return
        }
        guard let w = withState({ workers[fd] }) else { return }
        let code = withIPCLocked { () -> Int32 in
            if Arena.base != nil, let (status, _) = ProcessControl.reap(w.pid) { return ProcessControl.exitCode(status) }
            var status: Int32 = 0
            if case .success(w.pid) = valueOrErrno("waitpid", { waitpid(w.pid, &status, 0) }) { return ProcessControl.exitCode(status) }
            return 255
        }
        let waiters = withState { () -> [CheckedContinuation<Int32, Never>] in
            w.exit = code
            exits.wrappingIncrement(ordering: .releasing)
            workers.removeValue(forKey: fd)
            close(fd)
            let ws = w.waiters
            w.waiters = []
            pthread_cond_broadcast(changed)
            return ws
        }
        for c in waiters { c.resume(returning: code) }
    }

    // MARK: shutdown

    /// Ends the runtime: asks every worker to stop (SIGTERM), waits up to
    /// `grace` seconds, SIGKILLs the rest and reaps them; ends the monitor
    /// and reaps it; stops the reaper thread; closes every descriptor and
    /// unmaps the arena. Idempotent. Afterwards `shared()` starts a new runtime.
    package func shutdown(grace: Double = 1) {
        let first = withState { () -> Bool in
            if stopping { return false }
            stopping = true
            return true
        }
        guard first else {
            // Another caller is shutting down: wait until it is done (bounded).
            let deadline = Deadline(timeout: 30)
            withState { while !shutDown && !deadline.expired { wait(until: deadline) } }
            return
        }
        for w in liveWorkers { signal(w, SIGTERM) }
        let soft = Deadline(timeout: grace)
        withState { while !workers.isEmpty && !soft.expired { wait(until: soft) } }
        for w in liveWorkers { signal(w, SIGKILL) }
        let hard = Deadline(timeout: 10)
        withState { while !workers.isEmpty && !hard.expired { wait(until: hard) } }
        // The monitor ends when its pipe closes (it kills what is left of the run).
        let done = withState { () -> Int32 in
            let fd = monitor.doneFD
            monitor.doneFD = -1
            return fd
        }
        if done >= 0 { close(done) }
        let monitorDeadline = Deadline(timeout: 2)
        withState { while monitor.pidfd >= 0 && !monitorDeadline.expired { wait(until: monitorDeadline) } }
        withState { if monitor.pidfd >= 0 { _ = jr_pidfd_send_signal(monitor.pidfd, SIGKILL) } }
        withState { while monitor.pidfd >= 0 && !hard.expired { wait(until: hard) } }
        teardown()
        pthread_mutex_lock(Runtime.registry.lock)
        if Runtime.registry.current === self { Runtime.registry.current = nil }
        pthread_mutex_unlock(Runtime.registry.lock)
    }

    /// Stops the thread, closes what is left, unmaps the arena (also after a
    /// failed start).
    private func teardown() {
        waiter.stop()   // before the arena goes: its thread sleeps on a word of it
        withState {
            shutDown = true
            for r in spawnRequests { r.result = .failure(JobrunError(.processError, "the jobrun runtime has shut down")) }
            spawnRequests = []
            pthread_cond_broadcast(changed)
        }
        if let t = thread {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
            pthread_join(t, nil)
            thread = nil
        }
        // What the thread did not reap (it stopped first, or never ran).
        let left = withState { Array(workers.keys) }
        for fd in left {
            _ = jr_pidfd_send_signal(fd, SIGKILL)
            ended(fd)
        }
        let m = withState { monitor }
        if m.pidfd >= 0 {
            _ = jr_pidfd_send_signal(m.pidfd, SIGKILL)
            ended(m.pidfd)   // closes its descriptors
        } else if m.doneFD >= 0 {
            close(m.doneFD)
        }
        if wakeFD >= 0 { close(wakeFD); wakeFD = -1 }
        if epollFD >= 0 { close(epollFD); epollFD = -1 }
        withIPCLocked {
            guard ownsArena, Arena.base != nil else { return }
            ownsArena = false
            if let r = ProcessRegistry.record { r.atomic(\.state).store(UInt32(JR_PROC_EXITED), ordering: .releasing) }
            let fd = Arena.fd
            munmap(Arena.base, Int(Arena.reservedBytes))
            close(fd)
            ProcessContext.current.forgetRun()
        }
    }

    // MARK: helpers

    /// This process's environment without a re-entry's variables, with `entry` and `extra`.
    private static func childEnvironment(_ entry: [String], adding extra: [String: String]) -> [String] {
        var env: [String] = []
        var p = environ
        while let s = p.pointee {
            let text = String(cString: s)
            let key = text.split(separator: "=", maxSplits: 1).first.map(String.init) ?? text
            if key != Reentry.roleVariable && key != Reentry.argsVariable && extra[key] == nil { env.append(text) }
            p += 1
        }
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { env.append("\(k)=\(v)") }
        return env + entry
    }

    private static func newMutex() -> UnsafeMutablePointer<pthread_mutex_t> {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }
}
