import JobrunCore

#if canImport(Glibc)
import Glibc
#endif

/// Bytes of memory, for `PluginHost.Limits`.
public struct ByteCount: Sendable, Hashable, CustomStringConvertible {
    public var bytes: Int
    public init(bytes: Int) { self.bytes = bytes }
    public static func bytes(_ n: Int) -> ByteCount { ByteCount(bytes: n) }
    public static func kibibytes(_ n: Int) -> ByteCount { ByteCount(bytes: n << 10) }
    public static func mebibytes(_ n: Int) -> ByteCount { ByteCount(bytes: n << 20) }
    public static func gibibytes(_ n: Int) -> ByteCount { ByteCount(bytes: n << 30) }
    /// No limit (for `Limits.addressSpace`).
    public static let unlimited = ByteCount(bytes: .max)
    public var description: String { "\(bytes) bytes" }
}

/// Lua plug-ins of one folder, run in warm worker processes: a plug-in that
/// crashes, loops or allocates without bound costs one call, never the host.
///
/// ```swift
/// let host = try PluginHost(directory: "plugins", workers: 2,
///                           limits: .init(memory: .mebibytes(256), callTimeout: .seconds(5)))
/// let out = try await host.call("thumbnail", "resize", ["path": "a.png", "width": 128])
/// await host.shutdown()
/// ```
///
/// Calls from any number of tasks are spread over the workers, at most
/// 16 queued on each; the others wait, in order, without
/// blocking a thread. Workers are this process's executable re-entered
/// (posix_spawn, never fork). See docs/embedding.md.
public final class PluginHost: Sendable {
    /// A host's limits, or a plug-in's (`pluginLimits`: there a nil field
    /// means the host's).
    public struct Limits: Sendable {
        /// Lua memory of a worker (the whole state: ~300 KiB before any
        /// plug-in); a call past it fails `limitExceeded`. nil: no limit.
        public var memory: ByteCount?
        /// How long one call may run; past it the worker is killed and
        /// replaced and the call fails `timedOut`. nil: no limit.
        public var callTimeout: Duration?
        /// Address space a worker may map past what it maps when it starts
        /// (RLIMIT_AS above its start: the runtime's shared memory and the
        /// executable are not counted), for what Lua's allocator does not
        /// see: C modules, the worker's own buffers. An allocation past it
        /// fails (Lua's: `limitExceeded`; a C module's malloc returns NULL).
        /// nil: 1.5 × `memory` + `addressSpaceMargin` when `memory` is set,
        /// else no cap; `.unlimited`: no cap. One cap per worker: the largest
        /// of the host's and the plug-ins' applies.
        public var addressSpace: ByteCount?
        public init(memory: ByteCount? = nil, callTimeout: Duration? = nil, addressSpace: ByteCount? = nil) {
            self.memory = memory; self.callTimeout = callTimeout; self.addressSpace = addressSpace
        }

        /// What the default address-space cap adds to 1.5 × `memory`.
        /// Measured (docs/embedding.md): a warm worker serving small calls
        /// maps nothing past its start; malloc's overhead on Lua's many
        /// small blocks adds up to 25% to what Lua counts (64 MiB of small
        /// tables map 80 MiB); the margin holds a request and its response
        /// as the worker's codec copies them, and a C module's buffers.
        public static let addressSpaceMargin = ByteCount.mebibytes(64)

        /// The worker's cap in bytes (nil: none).
        var addressSpaceCap: Int? {
            if let a = addressSpace { return a == .unlimited ? nil : a.bytes }
            return memory.map { $0.bytes + $0.bytes / 2 + Limits.addressSpaceMargin.bytes }
        }

        /// A plug-in's limits over the host's `base`.
        func over(_ base: Limits) -> Limits {
            Limits(memory: memory ?? base.memory, callTimeout: callTimeout ?? base.callTimeout,
                   addressSpace: addressSpace ?? base.addressSpace)
        }
    }

    public let directory: String
    public let workerCount: Int
    public let limits: Limits
    /// Limits of some plug-ins, over `limits` (a nil field: the host's).
    public let pluginLimits: [String: Limits]
    public let restricted: Bool
    let pool: PluginPool
    /// Call timeouts of the plug-ins whose timeout is not the host's.
    private let timeouts: [String: Double?]

    /// Starts `workers` warm workers serving the plug-ins of `directory`.
    /// `pluginLimits` gives some plug-ins limits of their own, by name
    /// (`["slow": .init(callTimeout: .seconds(30))]`): a nil field is the
    /// host's. Throws `pluginNotFound` when the folder does not exist (or
    /// is not a folder), `pluginNotReadable` when it cannot be read,
    /// `startFailed` when the workers cannot start, `runtimeUnavailable`
    /// when this process cannot have jobrun's runtime (it runs a jobrun script).
    public convenience init(directory: String, workers: Int = 2, limits: Limits = .init(), pluginLimits: [String: Limits] = [:],
                            restricted: Bool = false, allowedFolders: [String] = []) throws(JobrunError) {
        try self.init(directory: directory, workers: workers, limits: limits, pluginLimits: pluginLimits,
                      restricted: restricted, allowedFolders: allowedFolders, workerEnvironment: [:])
    }

    /// As the public one, with more variables in the workers' environment (tests' hooks).
    init(directory: String, workers: Int, limits: Limits, pluginLimits: [String: Limits],
         restricted: Bool, allowedFolders: [String], workerEnvironment: [String: String]) throws(JobrunError) {
        var st = stat()
        if stat(directory, &st) != 0 {
            let e = errno
            let why = String(cString: strerror(e))
            if e == ENOENT || e == ENOTDIR {
                throw JobrunError(.pluginNotFound, "plug-in folder \(directory): \(why)")
            }
            throw JobrunError(.pluginNotReadable, "plug-in folder \(directory) cannot be read: \(why)")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw JobrunError(.pluginNotFound, "plug-in folder \(directory) is not a folder")
        }
        guard access(directory, R_OK | X_OK) == 0 else {
            throw JobrunError(.pluginNotReadable, "plug-in folder \(directory) cannot be read")
        }
        self.directory = directory
        workerCount = max(1, workers)
        self.limits = limits
        self.pluginLimits = pluginLimits
        self.restricted = restricted
        func seconds(_ d: Duration?) -> Double? { d.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 } }
        var timeouts: [String: Double?] = [:], memory: [String: Int] = [:]
        var cap = limits.addressSpaceCap
        for (name, own) in pluginLimits {
            let l = own.over(limits)
            if l.callTimeout != limits.callTimeout { timeouts[name] = seconds(l.callTimeout) }
            if l.memory != limits.memory, let m = l.memory { memory[name] = m.bytes }
            cap = cap.flatMap { c in l.addressSpaceCap.map { max(c, $0) } }   // one cap per worker: the largest
        }
        self.timeouts = timeouts
        var config = PluginPool.Config(directory: directory, workers: workerCount, memoryLimit: limits.memory?.bytes,
                                       callTimeout: seconds(limits.callTimeout), restricted: restricted,
                                       allowedFolders: allowedFolders, addressSpace: cap, pluginMemory: memory)
        config.workerEnvironment = workerEnvironment
        // The runtime first, so that a process that cannot have one (it
        // runs a jobrun script) is told so as a Queue would be; the pool
        // takes this one, and shuts it down if it cannot start its workers.
        do { _ = try Runtime.shared() } catch {
            throw JobrunError(.runtimeUnavailable, "jobrun's runtime cannot start: \(error.message)")
        }
        do {
            pool = try PluginPool(config: config, responseID: { PluginWire.id(of: $0) })
        } catch {
            throw JobrunError(.startFailed, "the plug-in workers cannot start: \(error.message)")
        }
    }

    deinit { pool.shutdownAndWait() }

    /// The workers now (they change when one is replaced).
    public var workers: [JobrunError.Worker] { pool.workers.map { JobrunError.Worker(pid: $0.pid, name: $0.name) } }

    /// Calls `function` of plug-in `plugin` with `argument`; its first
    /// result. Every error names the plug-in and the function, and the
    /// worker when the call reached one.
    ///
    /// Runs on the caller's executor (`nonisolated(nonsending)`, Swift 6.2
    /// and later): no hop to the global executor and back, which costs two
    /// thread wake-ups. The caller's thread waits a few µs for a fast
    /// call's response (PluginPool's note on speed), then suspends.
    #if compiler(>=6.2)
    nonisolated(nonsending)
    public func call(_ plugin: String, _ function: String, _ argument: LuaValue = .nil) async throws(JobrunError) -> LuaValue {
        try await serve(plugin, function, argument).result
    }
    #else
    public func call(_ plugin: String, _ function: String, _ argument: LuaValue = .nil) async throws(JobrunError) -> LuaValue {
        try await serve(plugin, function, argument).result
    }
    #endif

    /// One call: its result and the worker that served it; on the caller's
    /// isolation (`isolation`: no hop to run it).
    private func serve(_ plugin: String, _ function: String, _ argument: LuaValue,
                       isolation: isolated (any Actor)? = #isolation) async throws(JobrunError)
        -> (result: LuaValue, worker: JobrunError.Worker) {
        let id = pool.makeID()
        let bytes: [UInt8]
        do {
            bytes = try PluginWire.request(id: id, plugin: plugin, function: function, argument: argument)
        } catch {
            throw JobrunError(.badValue, error.description, plugin: plugin, function: function)
        }
        let timeout: Double? = timeouts.isEmpty ? nil : timeouts[plugin].map { $0 ?? .infinity }
        let pool = self.pool
        // spin: a fast call's response is often taken on this thread
        // (PluginPool's note on speed); the task then never suspends, and
        // never hops: withTaskCancellationHandler runs its operation on the
        // global executor, two thread wake-ups from a caller on an actor.
        // A task cancelled already does not spin: its call fails below.
        let reply = PluginPool.Reply()
        pool.submit(id: id, bytes: bytes, timeout: timeout, spin: !Task.isCancelled) { reply.complete($0) }
        // Cancelled before the call reached the pool: onCancel found
        // nothing, this check does it; after: onCancel does.
        if Task.isCancelled { pool.cancel(id: id) }
        let outcome: PluginPool.Outcome
        if let ready = reply.ready {
            outcome = ready
        } else {
            outcome = await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<PluginPool.Outcome, Never>) in reply.wait(c) }
            } onCancel: {
                pool.cancel(id: id)
            }
        }
        switch outcome {
        case .failed(let failure, let message, let name, let pid):
            let code: JobrunError.Code = switch failure {
            case .timedOut: .timedOut
            case .workerDied: .workerDied
            case .hostShutDown: .hostShutDown
            case .cancelled: .cancelled
            }
            throw JobrunError(code, message, plugin: plugin, function: function,
                              worker: name.isEmpty ? nil : .init(pid: pid, name: name))
        case .response(let bytes, let name, let pid):
            let worker = JobrunError.Worker(pid: pid, name: name)
            let response: PluginWire.Response
            do { response = try PluginWire.response(bytes) } catch {
                throw JobrunError(.workerDied, "the worker's response cannot be read: \(error)",
                                  plugin: plugin, function: function, worker: worker)
            }
            switch response {
            case .success(_, let result):
                return (result, worker)
            case .failure(_, let f):
                throw JobrunError(JobrunError.Code(worker: f.code), f.message, plugin: plugin, function: function,
                                  worker: worker, traceback: f.traceback)
            }
        }
    }

    /// Calls with a Codable argument and decodes the result as `R`. A
    /// conversion failure is a `JobrunError` with code `badValue`.
    /// On the caller's executor, as `call(_:_:_:)`.
    #if compiler(>=6.2)
    nonisolated(nonsending)
    public func call<A: Encodable, R: Decodable>(_ plugin: String, _ function: String, _ argument: A,
                                                 as type: R.Type = R.self) async throws(JobrunError) -> R {
        try await typed(plugin, function, argument, as: type)
    }
    #else
    public func call<A: Encodable, R: Decodable>(_ plugin: String, _ function: String, _ argument: A,
                                                 as type: R.Type = R.self) async throws(JobrunError) -> R {
        try await typed(plugin, function, argument, as: type)
    }
    #endif

    private func typed<A: Encodable, R: Decodable>(_ plugin: String, _ function: String, _ argument: A, as type: R.Type,
                                                   isolation: isolated (any Actor)? = #isolation) async throws(JobrunError) -> R {
        let value: LuaValue
        do { value = try LuaValueEncoder().encode(argument) } catch {
            throw JobrunError(.badValue, "the argument: \(error)", plugin: plugin, function: function)
        }
        let (result, worker) = try await serve(plugin, function, value)
        do { return try LuaValueDecoder().decode(R.self, from: result) } catch {
            throw JobrunError(.badValue, "the result as \(R.self): \(error)", plugin: plugin, function: function, worker: worker)
        }
    }

    /// Ends the workers: calls waiting or running fail `hostShutDown`, as
    /// does every later call. After the process's last host shuts down, it
    /// holds no child, descriptor or shared memory of jobrun's.
    public func shutdown() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            pool.shutdown { c.resume() }
        }
    }
}
