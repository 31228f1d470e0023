import Glibc

/// The plug-in worker's role (WorkerRoles "plugin"): a PluginWorker serving
/// the requests of one JoinableQueue and answering on another, as the
/// PluginHost will run it. Parameters in the environment:
/// JOBRUN_PLUGIN_DIR (the folder), JOBRUN_PLUGIN_REQUESTS and
/// JOBRUN_PLUGIN_RESPONSES (arena offsets of the two queues),
/// JOBRUN_PLUGIN_MEMORY (bytes of Lua memory; unset: no limit),
/// JOBRUN_PLUGIN_RESTRICTED ("1": restricted mode), JOBRUN_PLUGIN_ALLOWED
/// (restricted mode's allowed folders, one a line). An empty request ends
/// the worker (status 0).
enum PluginRole {
    static func run(_ start: WorkerStart) -> Int32 {
        guard let dir = getenv("JOBRUN_PLUGIN_DIR").map({ String(cString: $0) }),
              let requests = number("JOBRUN_PLUGIN_REQUESTS"), let responses = number("JOBRUN_PLUGIN_RESPONSES") else {
            writeAll(2, "jobrun: plug-in worker \(start.name): JOBRUN_PLUGIN_DIR, _REQUESTS or _RESPONSES not set\n")
            return 2
        }
        let options = PluginWorker.Options(memoryLimit: number("JOBRUN_PLUGIN_MEMORY").map { Int($0) },
                                           restricted: getenv("JOBRUN_PLUGIN_RESTRICTED").map { String(cString: $0) == "1" } ?? false,
                                                 allowedFolders: getenv("JOBRUN_PLUGIN_ALLOWED").map {
                                                     String(cString: $0).split(separator: "\n").map(String.init)
                                                 } ?? [])
        let worker: PluginWorker
        do { worker = try PluginWorker(directory: dir, options: options) } catch {
            writeAll(2, "jobrun: plug-in worker \(start.name): \(error)\n")
            return 2
        }
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

    private static func number(_ variable: String) -> UInt64? {
        getenv(variable).flatMap { UInt64(String(cString: $0)) }
    }
}
