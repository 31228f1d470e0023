import JobrunCore

/// A jobrun `Queue` made by a Swift host: the same object a Lua script's
/// `jobrun.Queue()` makes, in the run's shared memory, so a `ScriptWorker`
/// given it as an argument reads and writes it in Lua while the host
/// `put`s and `get`s from Swift. `JoinableQueue` adds `taskDone` and `join`.
///
/// Every call is safe from any task or thread. `get` (and `join`) wait
/// without blocking a cooperative thread, and without a thread of their
/// own: one thread of the runtime serves every wait of the program (1,000
/// tasks in `get` cost that one thread), holding no lock while it sleeps.
/// Items cross as jobrun's codec (LuaValue, or any Codable through
/// LuaValueEncoder), never as JSON. Queues made from Swift have no size
/// limit: `put` never waits. A queue leaves shared memory when the last
/// Swift reference to it goes and no worker holds it.
public class Queue: @unchecked Sendable {   // only constants
    let handle: Runtime.IPC.QueueHandle
    let runtime: Runtime
    /// The name given (shown in jobrun's messages), if any.
    public let name: String?

    /// A new queue.
    public convenience init(name: String? = nil) throws(JobrunError) {
        try self.init(joinable: false, redeliver: false, name: name)
    }

    init(joinable: Bool, redeliver: Bool, name: String?) throws(JobrunError) {
        do {
            runtime = try Runtime.shared()
        } catch {
            throw JobrunError(.runtimeUnavailable, "jobrun's runtime cannot start: \(error.message)")
        }
        runtime.pin()   // a PluginHost's shutdown must not end the runtime under this queue
        handle = try Queue.ipc(runtime) { ipc throws(JobrunError) in
            do throws(JobrunCore.JobrunError) {
                return try ipc.makeQueueHandle(joinable: joinable, redeliver: redeliver, label: name ?? "")
            } catch {
                throw JobrunError(.systemError, error.message)   // out of shared memory
            }
        }
        self.name = name
    }

    /// The last Swift reference is gone: the program's reference to the
    /// shared queue goes with it, and the queue leaves shared memory once
    /// no worker holds it either. (A pending `get` or `join` keeps the
    /// object alive until it returns.)
    deinit {
        let h = handle
        _ = try? runtime.withOwnIPC { ipc in ipc.dropQueueHandle(h) }
    }

    /// Puts one value (never waits: the queue has no size limit).
    public func put(_ value: LuaValue) async throws(JobrunError) {
        try putNow(value)
    }

    /// Puts a Codable value, encoded as the Lua table (or value) LuaValueEncoder makes of it.
    public func put<T: Encodable>(_ value: T) async throws(JobrunError) {
        let v: LuaValue
        do { v = try LuaValueEncoder().encode(value) } catch { throw JobrunError(.badValue, "\(error)") }
        try putNow(v)
    }

    /// Puts several values.
    public func put(contentsOf values: some Sequence<LuaValue>) async throws(JobrunError) {
        for v in values { try putNow(v) }
    }

    func putNow(_ value: LuaValue) throws(JobrunError) {
        let bytes: [UInt8]
        do { bytes = try LuaWire.encode(value, path: "item") } catch { throw JobrunError(.badValue, "\(error)") }
        let outcome = try ipc { $0.putItem(bytes, on: handle.offset) }
        switch outcome {
        case .ok: return
        case .closed: throw JobrunError(.closed, "put on a closed queue")
        case .failed(let why): throw JobrunError(.systemError, why)
        }
    }

    /// Takes the next value, waiting for one: at most `timeout`, if given,
    /// then it throws `.timedOut`. A cancelled task's wait ends at once with
    /// CancellationError; no item is taken then.
    ///
    /// `detectDeadlock`: pass true when nothing else in your program will
    /// put to or take from the run's queues while this call waits (your
    /// program is, like a script's main process, blocked here). Then, when
    /// every worker waits too, jobrun's monitor declares a deadlock and the
    /// call throws `.deadlock` (or `.workerDied` when a worker's death
    /// caused it) naming each process and what it waits on. Off by default:
    /// the monitor cannot see your program's other tasks.
    public func get(timeout: Duration? = nil, detectDeadlock: Bool = false) async throws -> LuaValue {
        let offset = handle.offset
        let bytes: [UInt8] = try await wait(for: .items, timeout: timeout, detectDeadlock: detectDeadlock) { ipc in
            switch ipc.getItem(from: offset) {
            case .item(let b): return .success(b)
            case .empty: return nil
            case .closed: return .failure(JobrunError(.closed, "get on a closed queue"))
            case .failed(let why): return .failure(JobrunError(.systemError, why))
            }
        }
        do { return try LuaWire.decode(bytes, path: "item") } catch { throw JobrunError(.badValue, "\(error)") }
    }

    /// Takes the next value and decodes it as `T` (LuaValueDecoder).
    public func get<T: Decodable>(as type: T.Type, timeout: Duration? = nil, detectDeadlock: Bool = false) async throws -> T {
        let v = try await get(timeout: timeout, detectDeadlock: detectDeadlock)
        do { return try LuaValueDecoder().decode(T.self, from: v) } catch { throw JobrunError(.badValue, "\(error)") }
    }

    /// Closes the queue: no more puts; a get that finds it empty throws `.closed`.
    public func close() throws(JobrunError) {
        try ipc { $0.closeQueue(handle.offset) }
    }

    /// Waits (Runtime.waitForQueue) until `attempt` gives a result, and
    /// turns every way the wait can end into a JobrunError (or the
    /// task's CancellationError).
    func wait<T: Sendable>(for event: Runtime.QueueWait, timeout: Duration?, detectDeadlock: Bool,
                 _ attempt: @escaping @Sendable (borrowing Runtime.IPC) -> Result<T, JobrunError>?) async throws -> T {
        let seconds = timeout.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        do {
            return try await runtime.waitForQueue(handle.offset, event, timeout: seconds, registering: detectDeadlock, attempt).get()
        } catch let e as JobrunError { throw e } catch let e as CancellationError { throw e } catch let v as QueueVerdict {
            throw JobrunError(v.deadlock ? .deadlock : .workerDied, v.message)
        } catch is QueueTimedOut {
            throw JobrunError(.timedOut, "\(event == .items ? "get" : "join") found nothing in \(seconds ?? 0) s")
        } catch {
            throw JobrunError(.runtimeUnavailable, "\(error)")
        }
    }

    func ipc<T>(_ body: (borrowing Runtime.IPC) throws(JobrunError) -> T) throws(JobrunError) -> T {
        try Queue.ipc(runtime, body)
    }

    /// `body` under the runtime's lock; a runtime that has shut down is `runtimeUnavailable`.
    static func ipc<T>(_ runtime: Runtime, _ body: (borrowing Runtime.IPC) throws(JobrunError) -> T) throws(JobrunError) -> T {
        do { return try runtime.withOwnIPC(body) } catch let e as JobrunError { throw e } catch {
            throw JobrunError(.runtimeUnavailable, "\(error)")
        }
    }
}

/// A jobrun `JoinableQueue` made by a Swift host: a Queue whose items are
/// marked done (`taskDone`) and waited for (`join`).
///
/// Supervision is the command line's: a worker that dies holding items
/// makes the next `join` throw `.workerDied` naming it; on a
/// `redeliver: true` queue its items go back to the front of the queue instead.
public final class JoinableQueue: Queue, @unchecked Sendable {
    /// A new queue. `redeliver`: items a dead worker took are delivered
    /// again instead of failed.
    public init(redeliver: Bool = false, name: String? = nil) throws(JobrunError) {
        try super.init(joinable: true, redeliver: redeliver, name: name)
    }

    /// Marks one taken item done (Python's task_done).
    public func taskDone() throws(JobrunError) {
        let ok = try ipc { $0.markDone(handle.offset) }
        if !ok { throw JobrunError(.tooManyTaskDone, "task_done() called more times than items were put") }
    }

    /// Waits until every item put has been marked done (at most `timeout`,
    /// if given, then it throws `.timedOut`). Throws `.workerDied` (naming
    /// the worker) when items were taken by a worker that died before
    /// marking them done. `detectDeadlock`: as for `get`.
    public func join(timeout: Duration? = nil, detectDeadlock: Bool = false) async throws {
        let offset = handle.offset
        try await wait(for: .done, timeout: timeout, detectDeadlock: detectDeadlock) { ipc -> Result<Void, JobrunError>? in
            switch ipc.joinNow(offset) {
            case .done: return .success(())
            case .waiting: return nil
            case .workerDied(let why): return .failure(JobrunError(.workerDied, why))
            case .failed(let why): return .failure(JobrunError(.systemError, why))
            }
        }
    }

}
