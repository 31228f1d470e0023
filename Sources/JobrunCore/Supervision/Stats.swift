import Atomics
import CJobrunShims
import Glibc

/// `--stats` and `--stats-json FILE`: what each process and each queue did
/// over the run, printed by the main process when the run ends, so a user
/// sees which stage is the bottleneck (the queue its consumers waited on
/// least and its producers most sits in front of it).
///
/// Every figure comes from the arena: processes count their own items, their
/// reaper stores what wait4 says of their CPU time and peak memory, queues
/// count under their own lock. Nothing is sampled.
public enum Stats {
    /// Most process rows in the text table.
    static let maxProcessRows = 40

    struct ProcessRow {
        let name: String, pid: Int32, parent: Int32
        let exit: Int32?
        /// Ended by the signal the end of the run sent it (a daemon worker).
        let stoppedAtEnd: Bool
        let wallNanos: Int64
        let userMicros: UInt64?, systemMicros: UInt64?, peakKiB: UInt64?
        let got: UInt64, put: UInt64
        /// It died of that signal: shown as "stopped at end of run".
        var killedAtEnd: Bool { stoppedAtEnd && exit.map { $0 < 0 && $0 != Int32.min } == true }
    }

    struct QueueRow {
        let name: String, kind: String, site: String, snapshot: SharedQueue.Snapshot
    }

    /// The run's figures now; the main process's own row from getrusage.
    /// `mainExit` nil: the main process's record already says (it was
    /// interrupted and wrote its own figures; the monitor collects).
    static func collect(mainExit: Int32?) -> (wall: Int64, processes: [ProcessRow], queues: [QueueRow]) {
        let now = monotonicNanos()
        if let mainExit, let me = ProcessRegistry.record {
            var u = rusage()
            if getrusage(RUSAGE_SELF.rawValue, &u) == 0 {
                ProcessRegistry.store(u, in: me)
                // Its own peak, not ru_maxrss: see jr_own_peak_rss_kib.
                me.pointee.max_rss_kib = jr_own_peak_rss_kib(me.pointee.max_rss_kib)
            }
            me.pointee.end_ns = now
            me.pointee.exit_code = mainExit
            me.atomic(\.has_exit_code).store(1, ordering: .releasing)
        }
        let all = ProcessRegistry.slots()
        let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
        var processes: [ProcessRow] = []
        for i in 0..<n where all[i].pid != 0 {
            let r = all + i
            let end = r.pointee.end_ns != 0 ? r.pointee.end_ns : now
            let usage = r.pointee.has_usage != 0
            processes.append(ProcessRow(
                name: ProcessRegistry.name(of: r), pid: r.pointee.pid, parent: r.pointee.parent_pid,
                exit: r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 ? r.pointee.exit_code : nil,
                stoppedAtEnd: r.atomic(\.signalled).load(ordering: .acquiring) == ProcessRegistry.stoppedAtEnd,
                wallNanos: max(0, end &- r.pointee.start_ns),
                userMicros: usage ? r.pointee.user_us : nil, systemMicros: usage ? r.pointee.system_us : nil,
                peakKiB: usage ? r.pointee.max_rss_kib : nil,
                got: r.pointee.items_got, put: r.pointee.items_put))
        }
        let queues = SharedQueue.all().map { q in
            QueueRow(name: q.snapshot.name, kind: q.isJoinable ? "JoinableQueue" : "Queue", site: q.site, snapshot: q.snapshot)
        } + ObjectTable.retired().map { QueueRow(name: $0.snapshot.name, kind: $0.kind, site: $0.site, snapshot: $0.snapshot) }
        return (now - Arena.header.pointee.run_start_ns, processes, queues)
    }

    /// Opens the --stats-json file before the run, so a path that cannot be
    /// written is reported before any work is done, not after it; nil and a
    /// message on stderr when it cannot be opened. A regular file (or a
    /// new one) is written as a temporary file beside it (`temp`), renamed
    /// over it once complete: however the run ends, the file is either the
    /// whole JSON or not there (never empty or cut short). Anything else (a
    /// FIFO, /dev/stdout) is written in place.
    public static func openJSON(_ path: String) -> (fd: Int32, temp: (path: String, target: String)?)? {
        func refuse(_ errno: Int32) -> (fd: Int32, temp: (path: String, target: String)?)? {
            writeAll(2, "jobrun: --stats-json: cannot write \(path): \(String(cString: strerror(errno)))\n")
            return nil
        }
        var st = stat()
        if stat(path, &st) == 0 {
            switch st.st_mode & S_IFMT {
            case S_IFDIR: return refuse(EISDIR)
            case S_IFREG: break
            default:
                let fd = open(path, O_WRONLY | O_CLOEXEC)
                return fd < 0 ? refuse(Glibc.errno) : (fd, nil)
            }
            if access(path, W_OK) != 0 { return refuse(Glibc.errno) }
        }
        // Beside the file itself (a symbolic link's target), so the rename
        // stays within one file system.
        var target = path
        if let real = realpath(path, nil) { target = String(cString: real); free(real) }
        let slash = target.lastIndex(of: "/")
        let dir = slash.map { String(target[..<$0]) } ?? "."
        let base = slash.map { String(target[target.index(after: $0)...]) } ?? target
        var template = Array(((dir.isEmpty ? "" : dir + "/") + "." + base + ".jobrun-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { return refuse(Glibc.errno) }
        _ = jr_set_cloexec(fd, 1)
        _ = fchmod(fd, 0o644 & ~currentUmask())
        return (fd, (String(cString: template), target))
    }

    private static func currentUmask() -> mode_t {
        let m = umask(0o022)
        umask(m)
        return m
    }

    /// Writes the JSON to the --stats-json file (`fd`, and its temporary
    /// name `temp`, see openJSON) and closes it; false with a message when
    /// it could not be written (the temporary file is then removed).
    static func finishJSON(_ text: String, fd: Int32, temp: (path: String, target: String)?, path: String) -> Bool {
        var ok = writeAll(fd, text)
        var e = Glibc.errno
        if close(fd) != 0 && ok { ok = false; e = Glibc.errno }
        if ok, let temp, rename(temp.path, temp.target) != 0 { ok = false; e = Glibc.errno }
        if !ok {
            if let temp { unlink(temp.path) }
            writeAll(2, "jobrun: --stats-json: cannot write \(path): \(String(cString: strerror(e)))\n")
        }
        return ok
    }

    /// Prints the tables on stderr and/or writes the JSON to `jsonFD`
    /// (closed after); false when the JSON could not be written.
    public static func report(mainExit: Int32?, text: Bool, jsonFD: Int32?, jsonPath: String) -> Bool {
        let figures = collect(mainExit: mainExit)
        if text { writeAll(2, table(figures)) }
        guard let fd = jsonFD else { return true }
        let ctx = ProcessContext.current
        let temp = ctx.output.statsTemp
        ctx.output.statsFD = nil
        ctx.output.statsTemp = nil
        return finishJSON(json(figures), fd: fd, temp: temp, path: jsonPath)
    }

    /// The monitor, for a main process that caught SIGINT or SIGTERM
    /// (Monitor.State.interrupted): the same report, from the arena.
    static func reportInterrupted() {
        let o = ProcessContext.current.output.mainOptions
        guard o.stats || o.statsJSON != nil else { return }
        _ = report(mainExit: nil, text: o.stats, jsonFD: ProcessContext.current.output.statsFD, jsonPath: o.statsJSON ?? "")
    }

    /// The monitor, once the main process has gone: a --stats-json file it
    /// did not finish is not left half-written (its temporary file goes).
    static func discardJSON() {
        if let temp = ProcessContext.current.output.statsTemp { unlink(temp.path) }
    }

    static func exitText(_ code: Int32?, killedAtEnd: Bool = false) -> String {
        if killedAtEnd { return "stopped at end of run" }
        guard let code else { return "running" }
        if code == Int32.min { return "?" }
        return code >= 0 ? "\(code)" : "signal \(-code)"
    }

    static func secs(_ micros: UInt64?) -> String {
        guard let micros else { return "-" }
        return fixed(Double(micros) / 1e6, 2)
    }

    /// `v` with `places` decimals, without Foundation.
    static func fixed(_ v: Double, _ places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let n = Progress.clampedInt64((v * scale).rounded())
        if places == 0 { return "\(n)" }
        let s = UInt64(scale)
        var frac = String(n.magnitude % s)
        while frac.count < places { frac = "0" + frac }
        return (n < 0 ? "-" : "") + "\(n.magnitude / s).\(frac)"
    }

    static func table(_ f: (wall: Int64, processes: [ProcessRow], queues: [QueueRow])) -> String {
        var out = "jobrun: run statistics (\(fixed(Double(f.wall) / 1e9, 2)) s)\n"
        var rows = [["process", "pid", "exit", "wall s", "cpu s", "peak MiB", "got", "put"]]
        // A run of thousands of short workers would bury the rest: the first
        // processes, then a count (the JSON has every one).
        let shown = f.processes.count > maxProcessRows ? f.processes.prefix(maxProcessRows - 1) : f.processes[...]
        for p in shown {
            let cpu: UInt64? = p.userMicros.map { $0 &+ (p.systemMicros ?? 0) }
            rows.append([p.name, "\(p.pid)", exitText(p.exit, killedAtEnd: p.killedAtEnd), fixed(Double(p.wallNanos) / 1e9, 2), secs(cpu),
                         p.peakKiB.map { fixed(Double($0) / 1024, 1) } ?? "-",
                         Progress.count(p.got), Progress.count(p.put)])
        }
        out += layout(rows, rightFrom: 1)
        let h = Arena.header
        if h.pointee.recycled > 0 {
            out += "... and \(h.pointee.recycled) earlier processes whose records were reused (cpu \(secs(h.pointee.recycled_cpu_us)) s, "
                + "got \(Progress.count(h.pointee.recycled_got)), put \(Progress.count(h.pointee.recycled_put)))\n"
        }
        if shown.count < f.processes.count {
            let rest = f.processes[shown.count...]
            let cpu = rest.reduce(0) { $0 &+ ($1.userMicros ?? 0) &+ ($1.systemMicros ?? 0) }
            let failed = rest.filter { $0.exit != nil && $0.exit != 0 }.count
            out += "... and \(rest.count) more processes (cpu \(secs(cpu)) s, got \(Progress.count(rest.reduce(0) { $0 &+ $1.got })), "
                + "put \(Progress.count(rest.reduce(0) { $0 &+ $1.put })), \(failed) ended with an error or a signal)\n"
        }
        if !f.queues.isEmpty {
            var q = [["queue", "made at", "items", "MiB", "peak depth", "put wait s", "get wait s"]]
            for r in f.queues {
                let s = r.snapshot
                q.append([s.name, r.site.isEmpty ? "-" : r.site, Progress.count(s.put), fixed(Double(s.bytes) / 1048576, 1),
                          Progress.count(s.peak), fixed(Double(s.putWaitNanos) / 1e9, 2), fixed(Double(s.getWaitNanos) / 1e9, 2)])
            }
            out += "\n" + layout(q, rightFrom: 2)
        }
        let counters = Progress.counters()
        if !counters.isEmpty {
            var c = [["counter", "done", "total"]]
            for k in counters { c.append([k.name, Progress.count(k.done), k.total > 0 ? Progress.count(k.total) : "-"]) }
            out += "\n" + layout(c, rightFrom: 1)
        }
        return out
    }

    /// Columns padded to their widest cell; columns from `rightFrom` on are
    /// right-aligned (numbers).
    static func layout(_ rows: [[String]], rightFrom: Int) -> String {
        var widths = [Int](repeating: 0, count: rows[0].count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var out = ""
        for r in rows {
            var line = ""
            for (i, c) in r.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - c.count)
                if i > 0 { line += "  " }
                line += i >= rightFrom ? pad + c : c + (i == r.count - 1 ? "" : pad)
            }
            out += line + "\n"
        }
        return out
    }

    static func json(_ f: (wall: Int64, processes: [ProcessRow], queues: [QueueRow])) -> String {
        func str(_ s: String) -> String {
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                default:
                    if u.value < 0x20 {
                        let hex = String(u.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    } else { out.unicodeScalars.append(u) }
                }
            }
            return out + "\""
        }
        func num(_ v: Double) -> String { fixed(v, 6) }
        func opt<T>(_ v: T?, _ f: (T) -> String) -> String { v.map(f) ?? "null" }
        var procs: [String] = []
        for p in f.processes {
            procs.append("{\"name\":\(str(p.name)),\"pid\":\(p.pid),\"parent_pid\":\(p.parent),"
                + "\"exit\":\(opt(p.exit) { $0 == Int32.min ? "null" : "\($0)" }),"
                + "\"stopped_at_end_of_run\":\(p.killedAtEnd),"
                + "\"wall_seconds\":\(num(Double(p.wallNanos) / 1e9)),"
                + "\"user_seconds\":\(opt(p.userMicros) { num(Double($0) / 1e6) }),"
                + "\"system_seconds\":\(opt(p.systemMicros) { num(Double($0) / 1e6) }),"
                + "\"peak_rss_kib\":\(opt(p.peakKiB) { "\($0)" }),"
                + "\"items_got\":\(p.got),\"items_put\":\(p.put)}")
        }
        var queues: [String] = []
        for r in f.queues {
            let s = r.snapshot
            queues.append("{\"name\":\(str(s.name)),\"kind\":\(str(r.kind)),\"site\":\(str(r.site)),"
                + "\"items\":\(s.put),\"got\":\(s.got),\"done\":\(s.done),\"queued\":\(s.depth),\"bytes\":\(s.bytes),"
                + "\"peak_depth\":\(s.peak),\"put_wait_seconds\":\(num(Double(s.putWaitNanos) / 1e9)),"
                + "\"get_wait_seconds\":\(num(Double(s.getWaitNanos) / 1e9))}")
        }
        let counters = Progress.counters().map {
            "{\"name\":\(str($0.name)),\"done\":\($0.done),\"total\":\($0.total > 0 ? "\($0.total)" : "null")}"
        }
        let h = Arena.header
        let earlier = "\"earlier_processes\":{\"count\":\(h.pointee.recycled),\"cpu_seconds\":\(num(Double(h.pointee.recycled_cpu_us) / 1e6)),"
            + "\"items_got\":\(h.pointee.recycled_got),\"items_put\":\(h.pointee.recycled_put)},\n"
        return "{\"wall_seconds\":\(num(Double(f.wall) / 1e9)),\n" + earlier + "\"processes\":[\n" + procs.joined(separator: ",\n")
            + "\n],\n\"queues\":[\n" + queues.joined(separator: ",\n") + "\n],\n\"counters\":["
            + counters.joined(separator: ",") + "]}\n"
    }
}
