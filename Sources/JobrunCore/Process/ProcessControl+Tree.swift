import Glibc
import SystemPackage

extension ProcessControl {
    /// SIGKILLs `root` and every process descended from it. A Pool kills a
    /// worker for a timeout or `halt = "now"` to stop the item's work, and
    /// that includes what the item started (`os.execute`, `io.popen`): left
    /// alive, such a child goes on with the work the item was stopped for,
    /// and holds the run's stdout open, so `jobrun map ... | cat` waits for
    /// it long after jobrun has ended (GNU parallel's --timeout kills the
    /// job's descendants too).
    ///
    /// Each process found is stopped (SIGSTOP) before its children are read
    /// from /proc, so once it has stopped it cannot fork one the walk
    /// misses; the walk is repeated until it finds no new process (at most
    /// a few rounds: a process in the middle of a fork may stop only after
    /// it). Then every one gets SIGKILL, which ends a stopped process too.
    static func killTree(_ root: pid_t) {
        guard root > 0 else { return }
        var found: [pid_t] = [root]
        var known: Set<pid_t> = [root]
        _ = kill(root, SIGSTOP)
        for _ in 0..<8 {
            waitStopped(found)
            var fresh = false
            var i = 0
            while i < found.count {
                for child in children(of: found[i]) where !known.contains(child) {
                    known.insert(child)
                    found.append(child)
                    _ = kill(child, SIGSTOP)
                    fresh = true
                }
                i += 1
            }
            if !fresh { break }
        }
        for pid in found { _ = kill(pid, SIGKILL) }
    }

    /// The processes descended from `root` now (not `root`), parents before
    /// their children, without stopping them: the monitor, stopping the run's
    /// workers, signals what they started too (`os.execute`, `io.popen`), as
    /// a terminal's Ctrl-C does through the process group. A worker that
    /// dies leaves its children to the main process (a subreaper), and not
    /// to its own end: they are found before it is signalled.
    static func descendants(of root: pid_t) -> [pid_t] {
        guard root > 0 else { return [] }
        var found: [pid_t] = []
        var known: Set<pid_t> = [root]
        var queue: [pid_t] = [root]
        var i = 0
        while i < queue.count && found.count < 4096 {
            for child in children(of: queue[i]) where !known.contains(child) {
                known.insert(child)
                found.append(child)
                queue.append(child)
            }
            i += 1
        }
        return found
    }

    /// The parent of `pid` (/proc/<pid>/stat), or nil when it is gone.
    static func parent(of pid: pid_t) -> pid_t? {
        guard let fields = statFields(pid), fields.count > 2 else { return nil }
        let ppid = fields.dropFirst(2).prefix { $0 != UInt8(ascii: " ") }   // "S PPID ..."
        return pid_t(String(decoding: ppid, as: UTF8.self))
    }

    /// /proc/<pid>/stat after "pid (comm) ": "S PPID ..." (the state first);
    /// nil when it is gone or cannot be read.
    private static func statFields(_ pid: pid_t) -> ArraySlice<UInt8>? {
        guard case .success(let bytes) = readProcStat(pid, limit: 512),
              let close = bytes.lastIndex(of: UInt8(ascii: ")")), close + 2 < bytes.count else { return nil }
        return bytes[(close + 2)...]
    }

    /// Waits (at most ~50 ms in all) until each process is stopped, a zombie
    /// or gone: one in an uninterruptible sleep (a vfork, a disk read) may
    /// take a while; SIGKILL ends it anyway.
    private static func waitStopped(_ pids: [pid_t]) {
        for _ in 0..<50 {
            let running = pids.contains { pid in
                guard let state = statFields(pid)?.first else { return false }
                return state != UInt8(ascii: "T") && state != UInt8(ascii: "t") && state != UInt8(ascii: "Z")
                    && state != UInt8(ascii: "X")
            }
            if !running { return }
            usleep(1000)
        }
    }

    /// The children of `pid`, from /proc/<pid>/task/<tid>/children of each
    /// of its threads (Linux 3.5+); none when it is gone.
    private static func children(of pid: pid_t) -> [pid_t] {
        guard let dir = opendir("/proc/\(pid)/task") else { return [] }
        defer { closedir(dir) }
        var out: [pid_t] = []
        while let entry = readdir(dir) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard Int32(tid) != nil, let text = readSmallFile("/proc/\(pid)/task/\(tid)/children") else { continue }
            out += text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { pid_t($0) }
        }
        return out
    }

    private static func readSmallFile(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
        defer { try? fd.close() }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            guard let n = try? chunk.withUnsafeMutableBytes({ try fd.read(into: $0) }), n > 0 else { break }
            bytes += chunk[0..<n]
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
