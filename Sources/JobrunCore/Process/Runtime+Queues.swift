import CJobrunShims
import Glibc

/// The host's side of queues and script workers, for the `Jobrun` library's
/// JoinableQueue and ScriptWorker: every operation is non-blocking under
/// the IPC lock; a wait (`waitForQueue`) is served by the runtime's one
/// waiter thread (Runtime+Waits.swift), holding no lock while it sleeps and
/// blocking no cooperative thread.
extension Runtime.IPC {
    /// A queue the host made: its arena offset and its object-table handle
    /// (what a worker's argument names it by).
    package struct QueueHandle: Sendable, Hashable {
        package let offset: UInt64
        package let type: UInt32
        package let slot: UInt32
        package let generation: UInt32
    }

    /// A new Queue or JoinableQueue (no size limit), held by the host until
    /// `dropQueueHandle` (the Swift object's deinit).
    package func makeQueueHandle(joinable: Bool, redeliver: Bool, label: String) throws(JobrunError) -> QueueHandle {
        let type = joinable ? JR_OBJ_JOINABLE_QUEUE : JR_OBJ_QUEUE
        do {
            let off = try SharedQueue.create(maxsize: 0, joinable: joinable, redeliver: redeliver, label: label, site: "host")
            let (slot, generation) = try ObjectTable.register(type: type, offset: off)
            return QueueHandle(offset: off, type: UInt32(type), slot: slot, generation: generation)
        } catch {
            throw JobrunError(.processError, "cannot create a \(joinable ? "JoinableQueue" : "Queue"): \(error)")
        }
    }

    /// The host lets go of a queue it made: its reference goes, and the
    /// queue is freed once no process holds it (no worker given it as an
    /// argument, no item naming it) — at once when none does.
    package func dropQueueHandle(_ queue: QueueHandle) {
        ObjectTable.dropHandle(queue.slot)
    }

    package enum PutOutcome { case ok, closed, failed(String) }

    /// Puts encoded bytes (the queue has no size limit: never waits).
    package func putItem(_ bytes: [UInt8], on queue: UInt64) -> PutOutcome {
        let r = bytes.withUnsafeBytes { SharedQueue(offset: queue).put($0, block: false, deadline: Deadline(timeout: 0)) }
        switch r {
        case .ok: return .ok
        case .closed: return .closed
        case .full: return .failed("the queue is full")
        case .noMemory(let why): return .failed("out of shared memory: \(why)")
        case .failed(let e): return .failed("\(e)")
        }
    }

    package enum GetOutcome { case item([UInt8]), empty, closed, failed(String) }

    /// Takes one item if there is one.
    package func getItem(from queue: UInt64) -> GetOutcome {
        var item: [UInt8] = []
        let r = SharedQueue(offset: queue).get(block: false, deadline: Deadline(timeout: 0),
                                                scratch: &ProcessContext.processHot.pointee.scratch, spin: false) { item = Array($0) }
        switch r {
        case .ok: return .item(item)
        case .empty: return .empty
        case .closed: return .closed
        case .noMemory(let why, _): return .failed("out of shared memory: \(why)")
        case .failed(let e): return .failed("\(e)")
        }
    }

    /// task_done; false when called more times than items were put.
    package func markDone(_ queue: UInt64) -> Bool {
        if case .ok = SharedQueue(offset: queue).taskDone() { return true }
        return false
    }

    package enum JoinOutcome { case done, waiting, workerDied(String), failed(String) }

    /// join without waiting: done, still waiting, or the items a dead
    /// worker held (told once, as a script's join is told).
    package func joinNow(_ queue: UInt64) -> JoinOutcome {
        switch SharedQueue(offset: queue).join(deadline: Deadline(timeout: 0)) {
        case .ok: return .done
        case .timedOut: return .waiting
        case .workerDied(let why): return .workerDied(why)
        case .failed(let e): return .failed(e.message)
        }
    }

    package func closeQueue(_ queue: UInt64) { SharedQueue(offset: queue).close() }

    /// Stores a script worker's encoded arguments (a several-value message)
    /// in the arena, followed by an empty list of Pipe ends, and takes a
    /// reference to each object among them for the worker (it adopts them
    /// when it decodes). Returns `OFFSET:LENGTH` for JOBRUN_SCRIPT_ARGS.
    package func storeArguments(_ bytes: [UInt8]) throws(JobrunError) -> String {
        let listAt = (bytes.count + 7) & ~7
        let off: UInt64
        do { off = try Arena.allocate(listAt + 8) } catch {
            throw JobrunError(.processError, "out of shared memory for a script worker's arguments")
        }
        bytes.withUnsafeBytes { b in
            if b.count > 0 { memcpy(Arena.pointer(off), b.baseAddress!, b.count) }
            ValueScan.forEachObjectInValues(b) { ObjectTable.retain($0) }
        }
        (Arena.pointer(off) + listAt).storeBytes(of: UInt64(0), as: UInt64.self)
        return "\(off):\(bytes.count)"
    }

    /// Undoes storeArguments for a worker that did not start.
    package func discardArguments(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let off = UInt64(parts[0]), let n = Int(parts[1]) else { return }
        ValueScan.forEachObjectInValues(UnsafeRawBufferPointer(start: Arena.pointer(off), count: n)) { ObjectTable.release($0) }
        Arena.free(off)
    }
}

/// The monitor's verdict on a host's wait that registered itself
/// (`waitForQueue(registering: true)`): a deadlock, or a deadlock a dead
/// worker caused (`deadlock` false: WorkerDied).
package struct QueueVerdict: Error, Sendable {
    package let deadlock: Bool
    package let message: String
}

extension Runtime {
    /// `withIPC` for a queue or worker this runtime made: refused once it
    /// has shut down, even when a new runtime has mapped an arena since (the
    /// queue's offset is no object of that arena).
    package func withOwnIPC<T>(_ body: (borrowing IPC) throws -> T) throws -> T {
        try withIPC { ipc in
            guard Runtime.running === self else { throw JobrunError(.processError, "the jobrun runtime has shut down") }
            return try body(ipc)
        }
    }

    /// What a host's queue wait waits for: items (get) or task_done (join).
    package enum QueueWait: Sendable { case items, done }

    /// Calls `attempt` under the IPC lock until it gives a value. When it
    /// gives none, the wait joins the runtime's waiter (HostWaiter, one
    /// thread for every wait of the host), which tries it again whenever
    /// the queue changes: no cooperative thread blocks and no thread is
    /// started per wait. Throws what `attempt` throws, QueueTimedOut once
    /// `timeout` seconds (if any) have passed, an error when the runtime
    /// shuts down, or CancellationError when the task is cancelled.
    ///
    /// `registering`: the wait is noted in the host's ledger record while it
    /// sleeps, so the monitor declares a deadlock when every worker waits
    /// too; the wait then throws QueueVerdict (if `attempt` still gives nothing).
    package func waitForQueue<T: Sendable>(_ queue: UInt64, _ kind: QueueWait, timeout: Double? = nil, registering: Bool = false,
                                           _ attempt: @escaping @Sendable (borrowing IPC) throws -> T?) async throws -> T {
        let deadline = Deadline(timeout: timeout)
        if let v = try withOwnIPC({ try attempt($0) }) { return v }
        try Task.checkCancellation()
        if deadline.expired { throw QueueTimedOut() }
        let box = Outcome<T>()
        let w = HostWaiter.Wait(queue: queue, kind: kind == .items ? .items : .done, deadline: deadline, registering: registering) { ipc in
            do {
                guard let v = try attempt(ipc) else { return false }
                box.value = .success(v)
            } catch {
                box.value = .failure(error)
            }
            return true
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
                let added = waiter.add(w, runtime: self) { error in
                    if let error { c.resume(throwing: error) } else { c.resume(with: box.value!) }
                }
                if let e = added { c.resume(throwing: e) }
            }
        } onCancel: {
            waiter.cancel(w)
        }
    }
}

/// A wait's outcome: set by `attempt` and read by `finish`, both on the
/// waiter's thread.
private final class Outcome<T>: @unchecked Sendable {
    var value: Result<T, Error>?
}
