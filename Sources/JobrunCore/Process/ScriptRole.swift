import CJobrunShims
import Glibc

/// The worker role "script" (WorkerRoles): a Lua script file run as a
/// `Process{script = ...}` worker runs it, started by a Swift host
/// (`ScriptWorker.start` in Jobrun). Parameters in the environment:
/// JOBRUN_SCRIPT (the file; relative to the host's working directory) and
/// JOBRUN_SCRIPT_ARGS (`OFFSET:LENGTH` of the encoded arguments in the
/// arena, with the references of the objects among them held for the
/// worker: Runtime.IPC.storeArguments). The script sees them as `...` and
/// `arg[1..n]`, as a Process's script does.
enum ScriptRole {
    static func run(_ start: WorkerStart) -> Int32 {
        guard let script = getenv("JOBRUN_SCRIPT").map({ String(cString: $0) }), !script.isEmpty else {
            writeAll(2, "jobrun: script worker \(start.name): JOBRUN_SCRIPT not set\n")
            return 2
        }
        var offset: UInt64 = 0, length = 0
        if let text = getenv("JOBRUN_SCRIPT_ARGS").map({ String(cString: $0) }) {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let o = UInt64(parts[0]), let n = Int(parts[1]) else {
                writeAll(2, "jobrun: script worker \(start.name): bad JOBRUN_SCRIPT_ARGS '\(text)'\n")
                return 2
            }
            offset = o; length = n
        }
        jr_stdout_linebuffered()
        let directory = script.contains("/") ? String(script[..<script.lastIndex(of: "/")!]) : "."
        return Host.runAttachedWorker(argsOffset: offset, argsLength: length, name: start.name, daemon: false,
                                      scriptDirectory: directory.isEmpty ? "/" : directory, script: script,
                                      prefix: false, packagePath: "", packageCPath: "")
    }
}
