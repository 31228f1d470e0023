import Atomics
import CJobrunShims
import Glibc

/// The live status line on stderr, as ninja and cargo draw theirs: one line,
/// redrawn in place at most ten times a second by the monitor, which reads
/// the queues' and processes' counters from the arena. Nothing on the data
/// path changes: the counters it shows are the ones --stats needs.
///
/// It never wraps: it is cut to the terminal's width minus one column
/// (display columns: a wide character counts two, control characters in a
/// name are shown as "?"), the width re-read when SIGWINCH says it changed,
/// and it is drawn as "\r" + line + "\e[J\r": the cursor is left at the
/// start of the line, so the "^C" a terminal echoes at Ctrl-C lands on the
/// line (and is wiped with it) instead of wrapping past the last column, and
/// "\e[J" also clears the tail a reflowing terminal wrapped on a resize.
///
/// Other output must not land in the middle of the line: every process's Lua
/// writes to a terminal start each new line by wiping it (see Host+Output),
/// and the monitor draws again at its next tick. The main process switches
/// the line off (under `progress_lock`, so a draw cannot slip in after) before
/// its last words and before it exits.
public enum Progress {
    public enum Mode: Sendable { case auto, on, off }

    /// Seconds of run before the line first appears: short runs show none.
    static let firstDrawAfter: Int64 = 300_000_000
    /// The fastest redraw.
    static let redrawEvery: Int64 = 100_000_000

    /// Main process, before the monitor starts: decides whether there is a line.
    static func setUp(_ mode: Mode) {
        let h = Arena.header
        _ = jr_mutex_init(&h.pointee.progress_lock)
        h.pointee.run_start_ns = monotonicNanos()
        let on: Bool
        switch mode {
        case .on: on = true
        case .off: on = false
        case .auto:
            let term = getenv("TERM").map { String(cString: $0) } ?? ""
            on = isatty(2) != 0 && term != "dumb"
        }
        h.pointee.progress_state = UInt32(on ? JR_PROGRESS_ON : JR_PROGRESS_DISABLED)
        if on { atexit { Progress.stop() } }
    }

    static var isOn: Bool { Arena.header.atomic(\.progress_state).load(ordering: .acquiring) == UInt32(JR_PROGRESS_ON) }

    /// What a process writes before a new line on `fd` so it does not run into
    /// the status line: "\r\e[K" while the line is on and `fd` is a terminal.
    static func lineStart(fd: Int32) -> String {
        guard Arena.isAttached, isOn, isTerminal(fd) else { return "" }
        return "\r\u{1B}[K"
    }

    private static func isTerminal(_ fd: Int32) -> Bool {
        let ctx = ProcessContext.current
        let t = ctx.supervision.terminal ?? (isatty(1) != 0, isatty(2) != 0)
        ctx.supervision.terminal = t
        return fd == 1 ? t.out : t.err
    }

    /// Takes progress_lock. A holder that died here left nothing to repair:
    /// it draws the line or switches it off (a line half drawn is redrawn),
    /// or claims a counter slot, published by `first_ns` stored last (a slot
    /// named but never published is skipped by the monitor).
    private static func lockProgress(_ h: UnsafeMutablePointer<jr_arena_header>) {
        RobustMutex.lock(&h.pointee.progress_lock, ownerDied: RobustMutex.nothingToRepair)
    }

    /// Switches the line off for good and wipes it (main process).
    public static func stop() {
        guard Arena.isAttached, ProcessContext.current.identity.isMain else { return }
        let h = Arena.header
        guard h.atomic(\.progress_state).load(ordering: .acquiring) == UInt32(JR_PROGRESS_ON) else { return }
        lockProgress(h)
        h.atomic(\.progress_state).store(UInt32(JR_PROGRESS_OFF), ordering: .releasing)
        if h.pointee.progress_drawn != 0 {
            writeAll(2, "\r\u{1B}[K")
            h.pointee.progress_drawn = 0
        }
        jr_mutex_unlock(&h.pointee.progress_lock)
    }

    // MARK: jobrun.progress(name, done [, total])


    /// Sets a script counter; the first report of a name claims a slot.
    static func report(name: String, done: UInt64, total: UInt64?) throws(JobrunError) {
        let h = Arena.header
        let counters = withUnsafeMutablePointer(to: &h.pointee.counters) {
            UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_progress_counter.self)
        }
        let ctx = ProcessContext.current
        var index = ctx.supervision.counterSlots[name]
        if index == nil {
            lockProgress(h)
            for i in 0..<Int(JR_MAX_COUNTERS) {
                let n = cString(&counters[i].name)
                if n == name { index = i; break }
                if n.isEmpty {
                    // Published by first_ns, written last: the monitor reads
                    // without the lock and skips a slot still being filled.
                    copyCString(name, into: &counters[i].name)
                    (counters + i).atomic(\.first_ns).store(monotonicNanos(), ordering: .releasing)
                    index = i
                    break
                }
            }
            jr_mutex_unlock(&h.pointee.progress_lock)
            guard let i = index else {
                throw JobrunError(.valueError, "jobrun.progress: too many counters (at most \(JR_MAX_COUNTERS) names per run)")
            }
            ctx.supervision.counterSlots[name] = i
        }
        let c = counters + index!
        if let total { c.atomic(\.total).store(total, ordering: .releasing) }
        c.atomic(\.done).store(done, ordering: .releasing)
    }

    struct Counter { let name: String; let done: UInt64; let total: UInt64; let firstNanos: Int64 }

    static func counters() -> [Counter] {
        let h = Arena.header
        return withUnsafeMutablePointer(to: &h.pointee.counters) {
            let c = UnsafeMutableRawPointer($0).assumingMemoryBound(to: jr_progress_counter.self)
            return (0..<Int(JR_MAX_COUNTERS)).compactMap { i in
                let counter = c + i
                let first = counter.atomic(\.first_ns).load(ordering: .acquiring)
                if first == 0 { return nil }
                return Counter(name: cString(&c[i].name), done: counter.atomic(\.done).load(ordering: .acquiring),
                               total: counter.atomic(\.total).load(ordering: .acquiring), firstNanos: first)
            }
        }
    }

    // MARK: drawing (monitor)

    /// The monitor's drawing state: the last sample of each counter, for rates.
    struct Painter {
        var lastDraw: Int64 = 0
        var samples: [UInt64: (at: Int64, count: UInt64, rate: Double)] = [:]

        mutating func tick() {
            let h = Arena.header
            guard h.atomic(\.progress_state).load(ordering: .acquiring) == UInt32(JR_PROGRESS_ON) else { return }
            let now = monotonicNanos()
            let resized = jr_winch_take() != 0
            if resized || width == nil { width = terminalWidth() }
            guard now - h.pointee.run_start_ns >= Progress.firstDrawAfter,
                  resized || now - lastDraw >= Progress.redrawEvery else { return }
            lastDraw = now
            let text = "\r" + line(now: now, width: width ?? 80) + "\u{1B}[J\r"
            // Only if free: a process stopped while it holds the lock (in
            // jobrun.progress) must not stop the monitor. The next tick draws.
            guard RobustMutex.tryLock(&h.pointee.progress_lock, ownerDied: RobustMutex.nothingToRepair) else { return }
            if h.atomic(\.progress_state).load(ordering: .acquiring) == UInt32(JR_PROGRESS_ON) {
                writeAll(2, text)
                h.pointee.progress_drawn = 1
            }
            jr_mutex_unlock(&h.pointee.progress_lock)
        }

        /// The terminal's columns, read at the first draw and after each SIGWINCH.
        var width: Int?

        /// The columns of the terminal on stderr; 80 when it is not one
        /// (`--progress` on a pipe) or does not say.
        func terminalWidth() -> Int {
            let columns = Int(jr_terminal_columns(2))
            return columns > 0 ? columns : 80
        }

        /// The main process ended or was interrupted with the line on the
        /// screen: the line goes (the monitor; nothing else draws after this).
        func wipe() {
            let h = Arena.header
            guard h.atomic(\.progress_state).load(ordering: .acquiring) == UInt32(JR_PROGRESS_ON) else { return }
            // Only if free: a process frozen while it holds the lock must not
            // stop the monitor (the state is one aligned word all the same).
            let locked = RobustMutex.tryLock(&h.pointee.progress_lock, ownerDied: RobustMutex.nothingToRepair)
            h.atomic(\.progress_state).store(UInt32(JR_PROGRESS_OFF), ordering: .releasing)
            if h.pointee.progress_drawn != 0 {
                writeAll(2, "\r\u{1B}[K")
                h.pointee.progress_drawn = 0
            }
            if locked { jr_mutex_unlock(&h.pointee.progress_lock) }
        }

        /// One line: elapsed time, each queue that has seen items, the script's
        /// counters, live processes; cut to the terminal's width.
        mutating func line(now: Int64, width: Int) -> String {
            let h = Arena.header
            var parts = ["jobrun " + seconds(now - h.pointee.run_start_ns) + ", \(liveProcesses()) processes"]
            for c in Progress.counters() {
                var text = "\(c.name) \(count(c.done))"
                if c.total > 0 {
                    let frac = min(1, Double(c.done) / Double(c.total))
                    let cells = 12
                    let full = Int((frac * Double(cells)).rounded(.down))
                    text += "/\(count(c.total)) [" + String(repeating: "#", count: full)
                        + String(repeating: "-", count: cells - full) + "] \(Int(frac * 100))%"
                    let elapsed = Double(now &- c.firstNanos) / 1e9
                    if c.done > 0 && c.done < c.total && elapsed > 0.5 {
                        // A script's counts may be anything up to 2^64: the
                        // estimate is clamped, never converted out of range.
                        let eta = elapsed * Double(c.total - c.done) / Double(c.done)
                        text += " ETA " + seconds(Progress.clampedInt64(eta * 1e9))
                    }
                }
                parts.append(text)
            }
            for q in SharedQueue.all() {
                let s = q.snapshot
                if s.put == 0 { continue }
                var text = "\(s.name) \(count(s.put)) put"
                if q.isJoinable {
                    text += ", \(count(s.done)) done"
                    if s.got > s.done { text += ", \(count(s.got - s.done)) in flight" }
                } else {
                    text += ", \(count(s.got)) got"
                }
                if s.depth > 0 { text += ", \(count(s.depth)) queued" }
                if let r = rate(key: q.offset, count: q.isJoinable ? s.done : s.got, now: now) {
                    text += ", " + Progress.rate(r)
                }
                parts.append(text)
            }
            return Progress.fit(parts.joined(separator: " | "), columns: width - 1)
        }

        /// Items per second, smoothed over the last draws (nil at the first).
        mutating func rate(key: UInt64, count: UInt64, now: Int64) -> Double? {
            guard let prev = samples[key] else {
                samples[key] = (now, count, -1)
                return nil
            }
            let dt = Double(now - prev.at) / 1e9
            // A count read without its queue's lock may step back a moment.
            let instant = dt > 0 ? Double(count > prev.count ? count - prev.count : 0) / dt : max(0, prev.rate)
            let smoothed = prev.rate < 0 ? instant : prev.rate * 0.7 + instant * 0.3
            samples[key] = (now, count, smoothed)
            return smoothed
        }

        func liveProcesses() -> Int {
            let all = ProcessRegistry.slots()
            let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
            return (0..<n).filter { (all + $0).atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) && all[$0].end_ns == 0 }.count
        }
    }

    /// `s` in at most `columns` display columns: control characters shown as
    /// "?", cut with "..." when it does not fit (just cut when even that
    /// does not fit).
    static func fit(_ s: String, columns: Int) -> String {
        guard columns > 0 else { return "" }
        let shown = s.unicodeScalars.map { u -> (Unicode.Scalar, Int) in
            let c: Unicode.Scalar = (u.value < 0x20 || (u.value >= 0x7F && u.value < 0xA0)) ? "?" : u
            return (c, displayWidth(c))
        }
        func prefix(_ room: Int) -> String {
            var out = String.UnicodeScalarView()
            var used = 0
            for (u, w) in shown {
                if used + w > room { break }
                out.append(u)
                used += w
            }
            return String(out)
        }
        if shown.reduce(0, { $0 + $1.1 }) <= columns { return prefix(columns) }
        return columns < 3 ? prefix(columns) : prefix(columns - 3) + "..."
    }

    /// Columns a terminal gives `u`: 0 for combining marks and zero-width
    /// characters, 2 for East Asian wide characters and emoji, else 1.
    static func displayWidth(_ u: Unicode.Scalar) -> Int {
        let v = u.value
        if v < 0x300 { return 1 }
        switch u.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return 0
        default: break
        }
        if u.properties.isEmojiPresentation { return 2 }
        switch v {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
             0xA000...0xA4CF, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60,
             0xFFE0...0xFFE6, 0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x20000...0x3FFFD:
            return 2
        default:
            return 1
        }
    }

    /// "12,345"; "1.2M" from ten million up.
    static func count(_ n: UInt64) -> String {
        if n >= 10_000_000 { return String(format1(Double(n) / 1e6)) + "M" }
        var digits = Array(String(n))
        var i = digits.count - 3
        while i > 0 { digits.insert(",", at: i); i -= 3 }
        return String(digits)
    }

    /// "850/s", "3.3k/s", "1.2M/s".
    static func rate(_ r: Double) -> String {
        if r >= 1e6 { return format1(r / 1e6) + "M/s" }
        if r >= 1e4 { return format1(r / 1e3) + "k/s" }
        return "\(clampedInt64(r.rounded()))/s"
    }

    /// `v` as an Int64, NaN as 0 and out-of-range values clamped: figures
    /// shown to a user never trap the monitor.
    static func clampedInt64(_ v: Double) -> Int64 {
        if v.isNaN { return 0 }
        if v >= 9.2e18 { return Int64.max }
        if v <= -9.2e18 { return Int64.min }
        return Int64(v)
    }

    /// "4.2s", "3m05s", "1h02m".
    static func seconds(_ ns: Int64) -> String {
        let s = Double(max(0, ns)) / 1e9
        if s < 60 { return format1(s) + "s" }
        let total = Int(clampedInt64(s))
        if total < 3600 { return "\(total / 60)m" + pad2(total % 60) + "s" }
        return "\(total / 3600)h" + pad2(total / 60 % 60) + "m"
    }

    static func format1(_ v: Double) -> String {
        let tenths = clampedInt64((v * 10).rounded())
        return (tenths < 0 ? "-" : "") + "\(tenths.magnitude / 10).\(tenths.magnitude % 10)"
    }

    static func pad2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
}

extension SharedQueue {
    /// The counters of a queue, read without its lock (a display may be a
    /// moment stale, never torn: each field is one aligned word).
    struct Snapshot {
        let name: String
        let put: UInt64, got: UInt64, done: UInt64, depth: UInt64
        let bytes: UInt64, peak: UInt64, putWaitNanos: UInt64, getWaitNanos: UInt64
    }

    var snapshot: Snapshot {
        let p = q
        let put = p.atomic(\.total_put).load(ordering: .acquiring)
        let got = p.atomic(\.total_got).load(ordering: .acquiring)
        let unfinished = p.atomic(\.unfinished).load(ordering: .acquiring)
        let done = isJoinable ? min(got, put &- min(put, unfinished)) : got
        let kind = isJoinable ? "JoinableQueue" : "Queue"
        let name = label.isEmpty ? "\(kind)#\(id)" : label
        return Snapshot(name: name, put: put, got: got, done: done,
                        depth: p.atomic(\.count).load(ordering: .acquiring),
                        bytes: p.atomic(\.total_bytes).load(ordering: .acquiring),
                        peak: p.atomic(\.peak_count).load(ordering: .acquiring),
                        putWaitNanos: p.atomic(\.put_wait_ns).load(ordering: .acquiring),
                        getWaitNanos: p.atomic(\.get_wait_ns).load(ordering: .acquiring))
    }
}
