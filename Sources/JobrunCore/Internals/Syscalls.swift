import CJobrunShims
import Glibc
import SystemPackage

extension JobrunError {
    /// `call` failed with the errno value `errno`.
    init(call: String, errno: Int32) { self.init(call: call, errno: Errno(rawValue: errno)) }
}

/// The one place a system call's -1/errno becomes a value, in the manner of
/// swift-system's `valueOrErrno` with `retryOnInterrupt`: the call is made
/// again while a signal interrupts it (EINTR); EBADF and EFAULT are jobrun
/// bugs (a descriptor or a pointer it got wrong), so they trap; any other
/// errno is the caller's to decide on. `body` returns the call's result,
/// -1 meaning failure with `errno` set.
@inline(__always)
func valueOrErrno<I: FixedWidthInteger>(_ call: StaticString, _ body: () -> I) -> Result<I, Errno> {
    while true {
        let r = body()
        if r != -1 { return .success(r) }
        let e = Errno(rawValue: Glibc.errno)
        if e == .interrupted { continue }
        precondition(e != .badFileDescriptor && e != .badAddress, "\(call): \(e) (a jobrun bug)")
        return .failure(e)
    }
}

/// `valueOrErrno`, throwing the failure as a JobrunError naming the call.
@inline(__always)
@discardableResult
func retryingEINTR<I: FixedWidthInteger>(_ call: StaticString, _ body: () -> I) throws(JobrunError) -> I {
    switch valueOrErrno(call, body) {
    case .success(let r): return r
    case .failure(let e): throw JobrunError(call: "\(call)", errno: e)
    }
}

/// Monotonic clock in nanoseconds.
@inline(__always)
func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Whole nanoseconds in `seconds`, saturated to 0...Int64.max: NaN and
/// negative values are 0, anything past ~292 years is Int64.max. Never traps.
func saturatingNanos(_ seconds: Double) -> Int64 {
    let ns = seconds * 1e9
    guard ns > 0 else { return 0 }                       // also NaN
    guard ns < 9.2e18 else { return Int64.max }          // Double(Int64.max) rounds up to 2^63
    return Int64(ns)
}

/// A deadline for a blocking call: nil means wait forever.
struct Deadline {
    let at: Int64?
    /// Longest timeout a binding keeps as a deadline (~126 years): a longer
    /// one (1e300, math.huge) is read as none (Lua.optTimeout), so its wait
    /// is untimed like any other, and seen by the deadlock check.
    static let longest: Double = 4e9
    /// `seconds` of any size: one past what the clock can count (~292 years
    /// from boot) waits until the end of the clock, that is forever; NaN and
    /// negative values have passed already (the bindings refuse them first).
    init(timeout seconds: Double?) {
        guard let s = seconds else { at = nil; return }
        let now = monotonicNanos()
        let ns = saturatingNanos(s)
        at = ns > Int64.max - now ? Int64.max : now + ns
    }
    /// Nanoseconds left (>= 0), or -1 for "no deadline".
    var remaining: Int64 {
        guard let at else { return -1 }
        return max(0, at - monotonicNanos())
    }
    var expired: Bool { at != nil && monotonicNanos() >= at! }
}

/// Writes all of `text` to a descriptor; false on an error. Diagnostics
/// ignore the result. (swift-system's writeAll retries EINTR; a closed
/// stderr, EBADF, is the user's choice here, not a bug.)
@discardableResult
func writeAll(_ fd: Int32, _ text: String) -> Bool {
    (try? FileDescriptor(rawValue: fd).writeAll(text.utf8)) != nil
}

/// The start of /proc/<pid>/stat (at most `limit` bytes), or the errno
/// that opening or reading it failed with (ENOENT, ESRCH: no such process).
func readProcStat(_ pid: pid_t, limit: Int) -> Result<[UInt8], Errno> {
    do {
        let fd = try FileDescriptor.open(FilePath("/proc/\(pid)/stat"), .readOnly, options: .closeOnExec)
        defer { try? fd.close() }
        let bytes = try [UInt8](unsafeUninitializedCapacity: limit) { buf, count in
            count = try fd.read(into: UnsafeMutableRawBufferPointer(buf))
        }
        return .success(bytes)
    } catch let e as Errno {
        return .failure(e)
    } catch {
        return .failure(.ioError)
    }
}

/// Stores `text` in a fixed C char array of a shared struct (imported as a
/// tuple), cut to fit and NUL-terminated.
func copyCString<T>(_ text: String, into field: inout T) {
    withUnsafeMutableBytes(of: &field) { buf in
        let bytes = Array(text.utf8.prefix(buf.count - 1))
        buf.copyBytes(from: bytes)
        buf[bytes.count] = 0
    }
}

/// The NUL-terminated text in a fixed C char array of a shared struct.
func cString<T>(_ field: inout T) -> String {
    withUnsafeBytes(of: &field) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
}

/// How an object's label shows its `name`: ` "results"`, or nothing.
func quotedName(_ name: String) -> String { name.isEmpty ? "" : " \"\(name)\"" }
