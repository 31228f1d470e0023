import CLua
import Glibc
import Jobrun

// The plug-in rows of scripts/bench (scripts/benchlib/bench.py): a release
// build of a Swift host with a PluginHost, measuring
//   start_s         host start with 4 warm workers (the process's first: runtime included)
//   rt_median_us    round trip of calc.add({a=1, b=2}) on a warm worker, one call at a time
//   rt_p99_us
//   rt2_median_us   round trip with 2 workers and 2 calls in flight (2 tasks, each one call at a time)
//   calls_per_s     2 workers, `inflight` calls in flight from as many tasks
//   inproc_us       the same call in a Lua state in this process (the floor, not isolated)
//   naive_us        `lua5.4 plugin_naive.lua DIR` started per call (a naive host)
// and prints them as one JSON line.
//
//   jobrun-plugin-bench DIR NAIVE_SCRIPT [round trips] [calls] [inflight]

func now() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

func fail(_ text: String) -> Never {
    _ = text.withCString { write(2, $0, strlen($0)) }
    exit(1)
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
func p99(_ xs: [Double]) -> Double { xs.sorted()[min(xs.count - 1, Int(Double(xs.count) * 0.99))] }

let args = CommandLine.arguments
guard args.count >= 3 else { fail("usage: jobrun-plugin-bench DIR NAIVE_SCRIPT [round trips] [calls] [inflight]\n") }
let dir = args[1], naiveScript = args[2]
let roundTrips = args.count > 3 ? Int(args[3]) ?? 20_000 : 20_000
let calls = args.count > 4 ? Int(args[4]) ?? 200_000 : 200_000
let inflight = args.count > 5 ? Int(args[5]) ?? 64 : 64
let argument: LuaValue = ["a": 1, "b": 2]

do {
    // Host start, 4 warm workers.
    let t0 = now()
    let four = try PluginHost(directory: dir, workers: 4)
    let startS = Double(now() - t0) / 1e9
    // Round trips, one at a time.
    for _ in 0..<1000 { _ = try await four.call("calc", "add", argument) }
    var rts: [Double] = []
    rts.reserveCapacity(roundTrips)
    for _ in 0..<roundTrips {
        let a = now()
        let r = try await four.call("calc", "add", argument)
        rts.append(Double(now() - a) / 1e3)
        if r != 3 { fail("calc.add gave \(r)\n") }
    }
    await four.shutdown()
    // Throughput: 2 workers, calls in flight.
    let two = try PluginHost(directory: dir, workers: 2)
    for _ in 0..<1000 { _ = try await two.call("calc", "add", argument) }
    // Round trips with 2 calls in flight: 2 tasks, each one call at a time.
    let rts2 = try await withThrowingTaskGroup(of: [Double].self) { group in
        for _ in 0..<2 {
            group.addTask(priority: nil) {
                var own: [Double] = []
                own.reserveCapacity(roundTrips / 2)
                for _ in 0..<(roundTrips / 2) {
                    let a = now()
                    _ = try await two.call("calc", "add", argument)
                    own.append(Double(now() - a) / 1e3)
                }
                return own
            }
        }
        var all: [Double] = []
        for try await own in group { all += own }
        return all
    }
    let t1 = now()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for t in 0..<inflight {
            group.addTask(priority: nil) {   // (a host process: it never forks)
                for _ in stride(from: t, to: calls, by: inflight) { _ = try await two.call("calc", "add", argument) }
            }
        }
        try await group.waitForAll()
    }
    let rate = Double(calls) / (Double(now() - t1) / 1e9)
    await two.shutdown()

    // The floor: the same call in a Lua state of this process.
    guard let L = luaL_newstate() else { fail("no Lua state\n") }
    luaL_openlibs(L)
    if luaL_loadfilex(L, dir + "/calc.lua", nil) != 0 || lua_pcallk(L, 0, 1, 0, 0, nil) != 0 { fail("calc.lua does not load\n") }
    lua_pushstring(L, "add")
    _ = lua_rawget(L, -2)   // the plug-in table at 1, add at 2
    var inproc: [Double] = []
    for i in 0..<(roundTrips + 1000) {
        let a = now()
        lua_pushvalue(L, 2)
        lua_createtable(L, 0, 2)
        lua_pushinteger(L, 1); lua_setfield(L, -2, "a")
        lua_pushinteger(L, 2); lua_setfield(L, -2, "b")
        if lua_pcallk(L, 1, 1, 0, 0, nil) != 0 { fail("add failed\n") }
        let r = lua_tointegerx(L, -1, nil)
        lua_settop(L, 2)
        if i >= 1000 { inproc.append(Double(now() - a) / 1e3) }
        if r != 3 { fail("in-process add gave \(r)\n") }
    }
    lua_close(L)

    // A naive host: lua5.4 per call.
    var naive: [Double] = []
    for _ in 0..<30 {
        let a = now()
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("lua5.4"), strdup(naiveScript), strdup(dir), nil]
        defer { for p in argv { free(p) } }
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)   // the result line, unread
        defer { posix_spawn_file_actions_destroy(&fa) }
        if posix_spawnp(&pid, "lua5.4", &fa, nil, argv, environ) != 0 { fail("cannot start lua5.4\n") }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        naive.append(Double(now() - a) / 1e3)
    }
    print("{\"start_s\": \(startS), \"rt_median_us\": \(median(rts)), \"rt_p99_us\": \(p99(rts)), \"rt2_median_us\": \(median(rts2)), "
          + "\"calls_per_s\": \(rate), \"inflight\": \(inflight), \"inproc_us\": \(median(inproc)), \"naive_us\": \(median(naive))}")
} catch {
    fail("jobrun-plugin-bench: \(error)\n")
}
