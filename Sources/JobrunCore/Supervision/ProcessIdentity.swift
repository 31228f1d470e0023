import CJobrunShims
import Glibc

/// A process of the run is (pid, start time), never its pid alone: pid_max
/// may be as low as 32,768, and a pid freed by a process that died can name
/// a later process of the same run, which must not inherit the dead one's
/// lock or be taken for it by a joiner or the monitor. The start time is
/// field 22 of /proc/<pid>/stat (clock ticks since boot), fixed for a
/// process's life.
enum ProcessIdentity {
    /// This process's start time (0: unknown), read when it takes its
    /// record (ProcessRegistry), so a forked child has its own.
    private(set) static var mine: UInt64 = 0

    static func learnMine() { mine = startTicks(getpid()) ?? 0 }

    enum Probe: Equatable {
        /// No such process (or, for a child, not yet reaped: a zombie).
        case gone
        /// Running (or stopped): its state letter and start time.
        case running(start: UInt64)
        /// /proc could not be read (no descriptor left, no /proc): unknown.
        case unknown
    }

    /// What /proc/<pid>/stat says of `pid` now.
    static func probe(_ pid: pid_t) -> Probe {
        guard pid > 0 else { return .gone }
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = Glibc.errno
            return e == ENOENT || e == ESRCH ? .gone : .unknown
        }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1024)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return Glibc.errno == ESRCH ? .gone : .unknown }
        // "pid (comm) S ...": the fields after the last ')' start at field 3.
        guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return .unknown }
        let state = buf[close + 2]
        if state == UInt8(ascii: "Z") || state == UInt8(ascii: "X") { return .gone }
        let fields = buf[(close + 2)..<n].split(separator: UInt8(ascii: " "), maxSplits: 21)
        guard fields.count > 19, let ticks = UInt64(String(decoding: fields[19], as: UTF8.self)) else { return .unknown }
        return .running(start: ticks)
    }

    /// The start time of `pid`, or nil when it cannot be read.
    static func startTicks(_ pid: pid_t) -> UInt64? {
        if case .running(let t) = probe(pid) { return t }
        return nil
    }

    /// Whether the process (pid, start) still runs. `start` 0 means unknown:
    /// then any process with that pid counts. When /proc cannot be read,
    /// kill(pid, 0) decides, erring on the side of alive.
    static func isAlive(_ pid: pid_t, start: UInt64) -> Bool {
        switch probe(pid) {
        case .gone: return false
        case .running(let t): return start == 0 || t == start
        case .unknown: return !(kill(pid, 0) != 0 && Glibc.errno == ESRCH)
        }
    }
}
