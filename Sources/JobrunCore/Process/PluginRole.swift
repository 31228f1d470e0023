import Glibc

/// The plug-in worker's role (WorkerRoles "plugin"): a PluginWorker serving
/// the requests of one JoinableQueue and answering on another, as the
/// PluginHost will run it. Parameters in the environment:
/// JOBRUN_PLUGIN_DIR (the folder), JOBRUN_PLUGIN_REQUESTS and
/// JOBRUN_PLUGIN_RESPONSES (arena offsets of the two queues),
/// JOBRUN_PLUGIN_MEMORY (bytes of Lua memory; unset: no limit),
/// JOBRUN_PLUGIN_RESTRICTED ("1": restricted mode), JOBRUN_PLUGIN_ALLOWED
/// (restricted mode's allowed folders, one a line),
/// JOBRUN_PLUGIN_ADDRESS_SPACE (bytes of address space the worker may map
/// past what it maps when it starts; unset: no cap), JOBRUN_PLUGIN_LIMITS
/// (per plug-in Lua memory, `name=bytes` one a line). An empty request
/// ends the worker (status 0).
enum PluginRole {
    static func run(_ start: WorkerStart) -> Int32 {
        // The worker's standard output is the host's: a plug-in that writes
        // there from C (a module, os.execute, /dev/stdout) would mix into
        // the host's own output. Its descriptor 1 is its stderr instead
        // (print and io.write already go there, tagged).
        _ = dup2(2, 1)
        if let budget = number("JOBRUN_PLUGIN_ADDRESS_SPACE") { capAddressSpace(budget, name: start.name) }
        guard let dir = getenv("JOBRUN_PLUGIN_DIR").map({ String(cString: $0) }),
              let requests = number("JOBRUN_PLUGIN_REQUESTS"), let responses = number("JOBRUN_PLUGIN_RESPONSES") else {
            writeAll(2, "jobrun: plug-in worker \(start.name): JOBRUN_PLUGIN_DIR, _REQUESTS or _RESPONSES not set\n")
            return 2
        }
        let options = PluginWorker.Options(memoryLimit: number("JOBRUN_PLUGIN_MEMORY").map { Int($0) },
                                           restricted: getenv("JOBRUN_PLUGIN_RESTRICTED").map { String(cString: $0) == "1" } ?? false,
                                                 allowedFolders: getenv("JOBRUN_PLUGIN_ALLOWED").map {
                                                     String(cString: $0).split(separator: "\n").map(String.init)
                                                 } ?? [],
                                           pluginMemory: pluginMemory())
        let worker: PluginWorker
        do { worker = try PluginWorker(directory: dir, options: options) } catch {
            writeAll(2, "jobrun: plug-in worker \(start.name): \(error)\n")
            return 2
        }
        // Test-only: a slow start (milliseconds), as a loaded machine gives.
        if let ms = number("JOBRUN_TEST_PLUGIN_START_DELAY_MS") { usleep(useconds_t(min(ms, 60_000)) * 1000) }
        let inQ = SharedQueue(offset: requests), outQ = SharedQueue(offset: responses)
        let hot = ProcessContext.processHot
        while true {
            // Copied out of the scratch buffer: a plug-in may use queues
            // itself, which reuse it.
            var request: [UInt8] = []
            let got = inQ.get(block: true, deadline: Deadline(timeout: nil), scratch: &hot.pointee.scratch) { request = Array($0) }
            guard case .ok = got else { return 3 }
            if request.isEmpty {
                worker.stopChildren()
                _ = inQ.taskDone()
                return 0
            }
            let response = worker.handle(request)
            let put = response.withUnsafeBytes { outQ.put($0, block: true, deadline: Deadline(timeout: nil)) }
            guard case .ok = put else { return 4 }
            _ = inQ.taskDone()
        }
    }

    /// RLIMIT_AS: what the worker maps now (the arena, hundreds of GiB of
    /// reserved address space, the executable, its libraries) plus
    /// `budget`, so a C module's malloc past it fails as Lua's would
    /// (NULL), and a plug-in cannot take the machine's memory.
    private static func capAddressSpace(_ budget: UInt64, name: String) {
        let size = mappedBytes()
        guard size > 0 else {
            writeAll(2, "jobrun: plug-in worker \(name): cannot read /proc/self/statm: no address-space cap\n")
            return
        }
        var rl = rlimit()
        _ = getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &rl)
        let (sum, overflow) = size.addingReportingOverflow(budget)
        let cap = min(overflow ? UInt64.max : sum, UInt64(rl.rlim_max))   // RLIM_INFINITY is all ones
        rl.rlim_cur = rlim_t(cap); rl.rlim_max = rlim_t(cap)
        if setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &rl) != 0 {
            writeAll(2, "jobrun: plug-in worker \(name): setrlimit(RLIMIT_AS): \(String(cString: strerror(errno))): no address-space cap\n")
        }
    }

    /// The process's mapped bytes (/proc/self/statm's first field); 0 if unknown.
    static func mappedBytes() -> UInt64 {
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0, let pages = UInt64(String(decoding: buffer[..<n].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)) else { return 0 }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// JOBRUN_PLUGIN_LIMITS: `name=bytes` lines.
    private static func pluginMemory() -> [String: Int] {
        guard let text = getenv("JOBRUN_PLUGIN_LIMITS").map({ String(cString: $0) }) else { return [:] }
        var out: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.lastIndex(of: "="), let n = Int(line[line.index(after: eq)...]) else { continue }
            out[String(line[..<eq])] = n
        }
        return out
    }

    private static func number(_ variable: String) -> UInt64? {
        getenv(variable).flatMap { UInt64(String(cString: $0)) }
    }
}
