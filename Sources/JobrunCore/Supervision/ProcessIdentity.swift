import CJobrunShims
import Glibc

/// A process of the run is (pid, start), never its pid alone: pid_max may be
/// as low as 32,768, and a pid freed by a process that died can name a later
/// process of the same run, which must not inherit the dead one's lock or be
/// taken for it by a joiner or the monitor. `start` is the `start_ns` of the
/// process's record, stamped under proc_lock when the record is claimed (by
/// the parent, before the fork): unique within the run and known without a
/// system call. (Its start time in /proc/<pid>/stat would do too, but one
/// read of that file costs ~35 µs here, on every process's start.)
///
/// A record is marked ended before its process is reaped and its pid freed,
/// and is reused only after that: so (pid, start) names a live process
/// exactly when a record with both is found, not marked ended, and the pid
/// still runs (not a zombie).
enum ProcessIdentity {
    /// This process's `start` (0: no record), set when it takes its record
    /// (ProcessContext.identity).
    static var mine: UInt64 { ProcessContext.current.identity.start }

    static func start(of r: UnsafeMutablePointer<jr_process_record>) -> UInt64 { UInt64(bitPattern: r.pointee.start_ns) }

    enum Probe: Equatable {
        /// No such process, or a zombie (dead, not yet reaped).
        case gone
        /// Running (or stopped).
        case running
        /// /proc could not be read (no descriptor left, no /proc): unknown.
        case unknown
    }

    /// What /proc/<pid>/stat says of `pid` now.
    static func probe(_ pid: pid_t) -> Probe {
        guard pid > 0 else { return .gone }
        let buf: [UInt8]
        switch readProcStat(pid, limit: 512) {
        case .success(let b): buf = b
        case .failure(let e): return e == .noSuchFileOrDirectory || e == .noSuchProcess ? .gone : .unknown
        }
        let n = buf.count
        // "pid (comm) S ...": the state follows the last ')'.
        guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return .unknown }
        let state = buf[close + 2]
        return state == UInt8(ascii: "Z") || state == UInt8(ascii: "X") ? .gone : .running
    }

    /// Whether `pid` runs. When /proc cannot be read, kill(pid, 0) decides,
    /// erring on the side of alive.
    static func isAlive(_ pid: pid_t) -> Bool {
        switch probe(pid) {
        case .gone: return false
        case .running: return true
        case .unknown: return !(kill(pid, 0) != 0 && Glibc.errno == ESRCH)
        }
    }
}
