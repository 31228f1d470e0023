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
        let wallNanos: Int64
        let userMicros: UInt64?, systemMicros: UInt64?, peakKiB: UInt64?
        let got: UInt64, put: UInt64
    }

    struct QueueRow {
        let name: String, kind: String, site: String, snapshot: SharedQueue.Snapshot
    }

    /// The run's figures now; the main process's own row from getrusage.
    static func collect(mainExit: Int32) -> (wall: Int64, processes: [ProcessRow], queues: [QueueRow]) {
        let now = monotonicNanos()
        if let me = ProcessRegistry.record {
            var u = rusage()
            if getrusage(RUSAGE_SELF.rawValue, &u) == 0 { ProcessRegistry.store(u, in: me) }
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
    /// message on stderr when it cannot be opened.
    public static func openJSON(_ path: String) -> Int32? {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            writeAll(2, "jobrun: --stats-json: cannot write \(path): \(String(cString: strerror(Glibc.errno)))\n")
            return nil
        }
        return fd
    }

    /// Prints the tables on stderr and/or writes the JSON to `jsonFD`
    /// (closed after); false when the JSON could not be written.
    public static func report(mainExit: Int32, text: Bool, jsonFD: Int32?, jsonPath: String) -> Bool {
        let figures = collect(mainExit: mainExit)
        if text { writeAll(2, table(figures)) }
        guard let fd = jsonFD else { return true }
        defer { close(fd) }
        if !writeAll(fd, json(figures)) {
            writeAll(2, "jobrun: --stats-json: cannot write \(jsonPath): \(String(cString: strerror(Glibc.errno)))\n")
            return false
        }
        return true
    }

    static func exitText(_ code: Int32?) -> String {
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
            rows.append([p.name, "\(p.pid)", exitText(p.exit), fixed(Double(p.wallNanos) / 1e9, 2), secs(cpu),
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
