import Glibc
import JobrunCore

/// One argument of a script worker: a value, or a queue the script reads or writes.
public enum ScriptArgument: Sendable, ExpressibleByIntegerLiteral, ExpressibleByStringLiteral,
                            ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral {
    case value(LuaValue)
    case queue(Queue)

    public init(integerLiteral v: Int64) { self = .value(.integer(v)) }
    public init(stringLiteral v: String) { self = .value(LuaValue(stringLiteral: v)) }
    public init(floatLiteral v: Double) { self = .value(.number(v)) }
    public init(booleanLiteral v: Bool) { self = .value(.boolean(v)) }
}

/// A worker process running a Lua script file, as `Process{script = ...}`
/// runs one in the command line: the script gets the arguments as `...`
/// (and `arg[1..n]`), the whole `jobrun` module, and queues passed to it
/// are the host's. The worker is the host's own executable re-entered
/// (docs/embedding.md, "Workers"), so no `jobrun` binary is needed.
public final class ScriptWorker: Sendable {
    let worker: Runtime.Worker
    let runtime: Runtime
    /// The worker's name (in jobrun's messages, and `jobrun.current_process().name`).
    public var name: String { worker.name }
    /// Its process id.
    public var pid: Int32 { worker.pid }

    init(worker: Runtime.Worker, runtime: Runtime) {
        self.worker = worker
        self.runtime = runtime
    }

    /// Starts `script` (a path; relative to the working directory) with
    /// `arguments`. `name`: default "script-N".
    public static func start(script: String, arguments: [ScriptArgument] = [], name: String? = nil) throws(JobrunError) -> ScriptWorker {
        var bytes: [UInt8] = []
        varint(UInt64(arguments.count), into: &bytes)
        for (i, a) in arguments.enumerated() {
            switch a {
            case .value(let v):
                do { bytes += try LuaWire.encode(v, path: "arguments[\(i + 1)]") } catch {
                    throw JobrunError(.badValue, "\(error)")
                }
            case .queue(let q):
                bytes.append(WireFormat.Tag.object)
                for word in [q.handle.type, q.handle.slot, q.handle.generation] {
                    withUnsafeBytes(of: word.littleEndian) { bytes += $0 }
                }
            }
        }
        guard access(script) else { throw JobrunError(.startFailed, "cannot read script \(script)") }
        let runtime: Runtime
        do {
            runtime = try Runtime.shared()
        } catch {
            throw JobrunError(.runtimeUnavailable, "jobrun's runtime cannot start: \(error.message)")
        }
        runtime.pin()   // a PluginHost's shutdown must not end the runtime under this worker
        let args = try Queue.ipc(runtime) { ipc throws(JobrunError) in
            do throws(JobrunCore.JobrunError) { return try ipc.storeArguments(bytes) } catch {
                throw JobrunError(.systemError, error.message)   // out of shared memory
            }
        }
        do {
            let w = try runtime.spawnWorker(role: "script", name: name,
                                            environment: ["JOBRUN_SCRIPT": script, "JOBRUN_SCRIPT_ARGS": args])
            return ScriptWorker(worker: w, runtime: runtime)
        } catch {
            _ = try? runtime.withOwnIPC { $0.discardArguments(args) }
            throw JobrunError(.startFailed, "\(error)")
        }
    }

    /// Waits for the worker to end; its exit code (n for exit(n), -N for signal N).
    public func wait() async -> Int32 { await runtime.exited(worker) }

    /// How it ended, or nil while it runs.
    public var exitCode: Int32? { runtime.exitCode(of: worker) }

    /// Sends a signal (SIGTERM by default) if it has not ended.
    public func kill(_ signal: Int32 = 15) { runtime.signal(worker, signal) }

    private static func varint(_ v: UInt64, into bytes: inout [UInt8]) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    private static func access(_ path: String) -> Bool {
        Glibc.access(path, R_OK) == 0
    }
}
