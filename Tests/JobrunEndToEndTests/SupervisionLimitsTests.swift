import Foundation
import Testing

/// Writes `main.lua` and `files` to a fresh folder and runs jobrun on it
/// through `bash -c "<shell>; exec jobrun ... main.lua"` (to set limits such
/// as `ulimit -n`), as `nobody` when `asNobody` and we are root (root is not
/// bound by `ulimit -u`).
func runScriptUnderShell(_ shell: String, _ code: String, files: [String: String] = [:], options: [String] = [],
                         asNobody: Bool = false, timeout: Double = 60)
    -> (status: Int32, stdout: String, stderr: String, timedOut: Bool)
{
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("jobrun-test-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true,
                                             attributes: [.posixPermissions: 0o755])
    defer { try? FileManager.default.removeItem(at: dir) }
    let script = dir.appendingPathComponent("main.lua")
    try? code.write(to: script, atomically: true, encoding: .utf8)
    for (name, text) in files { try? text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
    var argv = ["/bin/bash", "-c", shell + "; exec \"$@\"", "bash", jobrunBinary] + options + [script.path]
    if asNobody && getuid() == 0 {
        argv = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv
    }
    return runCommand(argv, timeout: timeout)
}

/// The monitor must go on supervising whatever happens to the run.
@Suite("Supervision that cannot be lost")
struct SupervisionLimitsTests {
    /// A lock's holder is (pid, start time): a later process of the run that
    /// got the pid of a holder that died is told "owner died", never handed
    /// the dead holder's RLock as its own. The pid is made to come round
    /// again through /proc/sys/kernel/ns_last_pid (root only; else skipped).
    @Test func aReusedPidDoesNotInheritALock() {
        guard access("/proc/sys/kernel/ns_last_pid", W_OK) == 0 else { return }
        let r = runScript("""
            local l = jobrun.RLock()
            local a = jobrun.Process{name = "holder", target = function() l:acquire() end}   -- ends holding it
            a:start(); a:join()
            local pid = a.pid
            local q = jobrun.Queue()
            for try = 1, 50 do
              local f = assert(io.open("/proc/sys/kernel/ns_last_pid", "w"))
              f:write(tostring(pid - 1)); f:close()
              local b = jobrun.Process{name = "reuser", target = function()
                local got, note = l:acquire(false)
                q:put(tostring(got) .. " " .. tostring(note))
                if got then l:release() end
              end}
              b:start()
              local result = q:get(); b:join()
              if b.pid == pid then print(result); return end
            end
            print("the pid did not come round again")
            """, timeout: 60)
        #expect(!r.timedOut)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "true owner died\n" || r.stdout == "the pid did not come round again\n", "\(r.stdout)")
    }
}
