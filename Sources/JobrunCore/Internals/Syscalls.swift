import CJobrunShims
import Glibc

/// The one place that turns -1/errno into an error and retries EINTR, in the
/// manner of swift-system's `valueOrErrno`.
struct SystemError: Error, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ call: String, _ body: () -> T) throws -> T {
    while true {
        let r = body()
        if r == -1 {
            let e = Glibc.errno
            if e == EINTR { continue }
            precondition(e != EBADF && e != EFAULT, "\(call): \(String(cString: strerror(e))) (a jobrun bug)")
            throw SystemError(call: call, errno: e)
        }
        return r
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

/// Writes all of `text` to a descriptor; false on an error (errno says
/// which). Diagnostics ignore the result.
@discardableResult
func writeAll(_ fd: Int32, _ text: String) -> Bool {
    var bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if n < 0 { if Glibc.errno == EINTR { continue }; return false }
        off += n
    }
    return true
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
