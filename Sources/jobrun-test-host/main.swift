import Glibc
import Jobrun
import JobrunCore

// A small Swift host for the runtime's tests (RuntimeTests): a plain
// executable whose workers and monitor are itself re-entered.
//
//   jobrun-test-host echo N      4 echo workers pass N items through; prints "ok <N> <ms>"
//   jobrun-test-host wait        2 idle workers; prints "pids <monitor> <w1> <w2>", then
//                                sleeps until killed (a SIGKILLed host leaves no worker)
//   jobrun-test-host plugins DIR a PluginHost with 2 workers on DIR calls calc.add once; prints
//                                "pids <monitor> <w1> <w2>", then sleeps until killed
//
// Its `main` never runs in a worker: the re-entry constructor ends those first.

func fail(_ text: String) -> Never {
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

let args = CommandLine.arguments
guard args.count >= 2 else { fail("usage: jobrun-test-host echo N | wait\n") }
do {
    switch args[1] {
    case "echo":
        let n = args.count > 2 ? Int(args[2]) ?? 100 : 100
        let t0 = monotonicNanosForTests()
        let rt = try Runtime.shared()
        let (input, output) = try rt.withIPC { ipc in (try ipc.makeJoinableQueue(), try ipc.makeJoinableQueue()) }
        let env = ["JOBRUN_ECHO_IN": String(input), "JOBRUN_ECHO_OUT": String(output)]
        var workers: [Runtime.Worker] = []
        for _ in 0..<4 { workers.append(try rt.spawnWorker(role: "echo", environment: env)) }
        for w in workers where !rt.waitUntilRunning(w, timeout: 10) { fail("worker \(w) did not start\n") }
        let ms = Double(monotonicNanosForTests() - t0) / 1e6
        for i in 0..<n { _ = try rt.withIPC { $0.put(Array("item \(i)".utf8), on: input) } }
        var got = 0
        let deadline = monotonicNanosForTests() + 20_000_000_000
        while got < n && monotonicNanosForTests() < deadline {
            if try rt.withIPC({ $0.get(from: output) }) != nil { got += 1 } else { usleep(200) }
        }
        for _ in workers { _ = try rt.withIPC { $0.put([], on: input) } }
        for w in workers where rt.waitForExit(w, timeout: 10) != 0 { fail("worker \(w) did not end cleanly\n") }
        rt.shutdown()
        print("ok \(got) \(ms)")
    case "wait":
        let rt = try Runtime.shared()
        let a = try rt.spawnWorker(role: "idle"), b = try rt.spawnWorker(role: "idle")
        for w in [a, b] where !rt.waitUntilRunning(w, timeout: 10) { fail("worker \(w) did not start\n") }
        print("pids \(rt.monitorPid) \(a.pid) \(b.pid)")
        fflush(nil)
        while true { pause() }
    case "plugins":
        guard args.count > 2 else { fail("usage: jobrun-test-host plugins DIR\n") }
        let host = try PluginHost(directory: args[2], workers: 2)
        let sum = try await host.call("calc", "add", ["a": 1, "b": 2])
        guard sum == 3 else { fail("calc.add gave \(sum)\n") }
        let pids = host.workers.map { String($0.pid) }.joined(separator: " ")
        print("pids \(Runtime.running?.monitorPid ?? 0) \(pids)")
        fflush(nil)
        while true { pause() }
    default:
        fail("unknown command \(args[1])\n")
    }
} catch {
    fail("jobrun-test-host: \(error)\n")
}

func monotonicNanosForTests() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
