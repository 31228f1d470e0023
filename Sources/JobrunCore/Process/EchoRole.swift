import Glibc

/// A worker role for checking the plumbing (the runtime's tests use it):
/// takes items from the JoinableQueue at arena offset JOBRUN_ECHO_IN, puts
/// each unchanged on the queue at JOBRUN_ECHO_OUT, then marks it done. An
/// empty item ends the worker (status 0); the item "hang" is taken and
/// never finished (the worker sleeps holding it, to be killed). Items are
/// the host's bytes, passed through untouched.
enum EchoRole {
    static let hangItem = Array("hang".utf8)

    static func run(_ start: WorkerStart) -> Int32 {
        guard let input = offset("JOBRUN_ECHO_IN"), let output = offset("JOBRUN_ECHO_OUT") else {
            writeAll(2, "jobrun: echo worker \(start.name): JOBRUN_ECHO_IN / JOBRUN_ECHO_OUT not set\n")
            return 2
        }
        let inQ = SharedQueue(offset: input), outQ = SharedQueue(offset: output)
        let hot = ProcessContext.processHot
        while true {
            var item: [UInt8] = []
            let got = inQ.get(block: true, deadline: Deadline(timeout: nil), scratch: &hot.pointee.scratch) { item = Array($0) }
            guard case .ok = got else { return 3 }
            if item.isEmpty { _ = inQ.taskDone(); return 0 }
            if item == hangItem { while true { pause() } }
            let put = item.withUnsafeBytes { outQ.put($0, block: true, deadline: Deadline(timeout: nil)) }
            guard case .ok = put else { return 4 }
            _ = inQ.taskDone()
        }
    }

    private static func offset(_ variable: String) -> UInt64? {
        getenv(variable).flatMap { UInt64(String(cString: $0)) }
    }
}
