import CJobrunShims
import Glibc

/// The run's supervisor, in the manner of CPython's resource_tracker: a
/// small process, forked from the main process before any Lua code runs, that
/// outlives the others. Python needs one because a process killed with
/// SIGKILL cannot clean up after itself; so do we, and for more than leaked
/// names: a dead process may hold unfinished tasks, and the processes that
/// remain may be waiting for it forever.
///
/// It watches every process of the run through a pidfd. When one dies it
/// records how (exit code or signal) and fails the tasks it had taken from
/// JoinableQueues, waking their joiners. When every live process is blocked
/// on a jobrun object with no deadline, and no condition it waits for can
/// come true, it declares the run deadlocked: waiters raise `Deadlock` (or
/// `WorkerDied` when a process died on the way there) naming each process and
/// what it waits on. When the main process ends, however it ends, it kills
/// what is left of the run and exits. It ignores SIGINT and SIGTERM so that
/// it is still there to clean up after them.
enum Monitor {
    /// How often the monitor looks at the records.
    static let tickMillis: Int32 = 50
    /// Consecutive ticks every live process must stay stuck in the same wait.
    static let stableTicks = 4

    /// Forks the monitor; returns in the main process only.
    static func start() {
        let main = getpid()
        let pid = fork()
        if pid != 0 { return }   // parent (or fork failure: run unsupervised)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        var m = State(main: main)
        m.run()
    }

    struct State {
        let main: pid_t
        var pidfds: [pid_t: Int32] = [:]
        var gens: [Int: UInt64] = [:]
        var stable = 0
        var painter = Progress.Painter()

        init(main: pid_t) { self.main = main }

        mutating func run() -> Never {
            let mainFD = jr_pidfd_open(main)
            while true {
                let all = ProcessRegistry.slots()
                let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
                // Watch processes that registered since the last tick.
                for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) {
                    let pid = all[i].pid
                    if pid == main || pidfds[pid] != nil { continue }
                    let fd = jr_pidfd_open(pid)
                    if fd < 0 { ended(all + i) } else { pidfds[pid] = fd }
                }
                var fds = [pollfd(fd: mainFD, events: Int16(POLLIN), revents: 0)]
                let order = Array(pidfds.keys)
                for pid in order { fds.append(pollfd(fd: pidfds[pid]!, events: Int16(POLLIN), revents: 0)) }
                _ = poll(&fds, nfds_t(fds.count), tickMillis)
                if mainFD < 0 || fds[0].revents != 0 { finish() }
                for (k, pid) in order.enumerated() where fds[k + 1].revents != 0 {
                    close(pidfds.removeValue(forKey: pid)!)
                    if let r = ProcessRegistry.find(pid) { ended(r) }
                }
                checkDeadlock()
                painter.tick()
            }
        }

        /// The main process has ended: stop whatever is left, then go.
        func finish() -> Never {
            // The main process was killed with its status line on the screen.
            let h = Arena.header
            if jr_load_u32(&h.pointee.progress_state) == UInt32(JR_PROGRESS_ON) && h.pointee.progress_drawn != 0 {
                writeAll(2, "\r\u{1B}[K")
            }
            let all = ProcessRegistry.slots()
            let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
            for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) && all[i].pid != main {
                kill(all[i].pid, SIGKILL)
            }
            _exit(0)
        }

        /// A process has died: note how, and fail the tasks it held.
        func ended(_ r: UnsafeMutablePointer<jr_process_record>) {
            if r.pointee.has_exit_code == 0, let code = exitCodeFromProc(r.pointee.pid) {
                r.pointee.exit_code = code
                jr_store_u32(&r.pointee.has_exit_code, 1)
            }
            ProcessRegistry.markEnded(r)
            let name = ProcessRegistry.name(of: r)
            redeliver(r)
            withUnsafeMutablePointer(to: &r.pointee.taken) {
                $0.withMemoryRebound(to: jr_taken.self, capacity: Int(JR_MAX_TAKEN)) { t in
                    for i in 0..<Int(JR_MAX_TAKEN) where t[i].queue != 0 && t[i].count > 0 {
                        SharedQueue(offset: t[i].queue).failTasks(t[i].count, pid: r.pointee.pid,
                                                                  code: r.pointee.has_exit_code != 0 ? r.pointee.exit_code : Int32.min,
                                                                  name: name)
                        t[i].count = 0
                    }
                }
            }
            jr_store_u32(&r.pointee.state, UInt32(JR_PROC_EXITED))
        }

        /// Puts the items a dead process held from redeliver queues back at
        /// the front of their queues; their tasks are then no longer its.
        func redeliver(_ r: UnsafeMutablePointer<jr_process_record>) {
            var byQueue: [UInt64: [UnsafeRawBufferPointer]] = [:]
            var order: [UInt64] = []
            var nodes: [UInt64] = []
            var cur = r.pointee.held_head
            while cur != 0 {
                let h = Arena.pointer(cur).assumingMemoryBound(to: jr_held.self)
                if byQueue[h.pointee.queue] == nil { order.append(h.pointee.queue) }
                byQueue[h.pointee.queue, default: []].append(UnsafeRawBufferPointer(start: UnsafeRawPointer(h + 1), count: Int(h.pointee.length)))
                nodes.append(cur)
                cur = h.pointee.next
            }
            for queue in order {
                let items = byQueue[queue]!
                if SharedQueue(offset: queue).requeueFront(items) {
                    withUnsafeMutablePointer(to: &r.pointee.taken) {
                        $0.withMemoryRebound(to: jr_taken.self, capacity: Int(JR_MAX_TAKEN)) { t in
                            for i in 0..<Int(JR_MAX_TAKEN) where t[i].queue == queue {
                                t[i].count -= min(t[i].count, UInt64(items.count))
                            }
                        }
                    }
                }
            }
            for node in nodes { Arena.free(node) }
            r.pointee.held_head = 0
            r.pointee.held_tail = 0
        }

        /// The exit status a zombie still shows in /proc/<pid>/stat (field 52).
        func exitCodeFromProc(_ pid: pid_t) -> Int32? {
            let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
            if fd < 0 { return nil }
            defer { close(fd) }
            var buf = [UInt8](repeating: 0, count: 2048)
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
            let fields = buf[(close + 2)..<n].split(separator: UInt8(ascii: " "))
            guard fields.count >= 50, let status = Int32(String(decoding: fields[49], as: UTF8.self).trimmingSpaces) else { return nil }
            return ProcessControl.exitCode(status)
        }

        mutating func checkDeadlock() {
            if jr_load_u32(&Arena.header.pointee.failed) != 0 { return }
            let all = ProcessRegistry.slots()
            let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
            var live: [Int] = []
            for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) {
                let r = all + i
                let kind = Int(jr_load_u32(&r.pointee.wait_kind))
                if kind == JR_WAIT_NONE || r.pointee.wait_timed != 0 || !Waits.isStuck(r) {
                    stable = 0; gens.removeAll(); return
                }
                live.append(i)
            }
            if live.isEmpty { stable = 0; return }
            var same = gens.count == live.count
            for i in live where gens[i] != all[i].wait_gen { same = false }
            if !same {
                gens = Dictionary(uniqueKeysWithValues: live.map { ($0, all[$0].wait_gen) })
                stable = 0
                return
            }
            stable += 1
            if stable < stableTicks { return }
            declare(live.map { all + $0 })
        }

        /// Writes the verdict and wakes every waiter so each raises it.
        func declare(_ stuck: [UnsafeMutablePointer<jr_process_record>]) {
            var lines = ["every process of the run is waiting and none can wake the others:"]
            for r in stuck { lines.append("  \(ProcessRegistry.name(of: r)) (pid \(r.pointee.pid)) waits in \(Waits.describe(r))") }
            let dead = deadProcesses()
            var kind: UInt32 = 1
            if !dead.isEmpty {
                kind = 2
                lines.append("processes that ended before they could help:")
                lines.append(contentsOf: dead.map { "  \($0)" })
            }
            let text = lines.joined(separator: "\n")
            let h = Arena.header
            _ = jr_mutex_lock(&h.pointee.proc_lock)
            withUnsafeMutableBytes(of: &h.pointee.failure) { buf in
                let bytes = Array(text.utf8.prefix(buf.count - 1))
                buf.copyBytes(from: bytes)
                buf[bytes.count] = 0
            }
            jr_store_u32(&h.pointee.failed, kind)
            jr_mutex_unlock(&h.pointee.proc_lock)
            for r in stuck {
                let word = Arena.pointer(r.pointee.wait_word).assumingMemoryBound(to: UInt32.self)
                jr_add_u32(word, 1)
                _ = jr_futex_wake(word, Int32.max)
            }
        }

        /// Processes of the run that ended abnormally, described.
        func deadProcesses() -> [String] {
            let all = ProcessRegistry.slots()
            let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
            var out: [String] = []
            for i in 0..<n where all[i].state == UInt32(JR_PROC_EXITED) && all[i].has_exit_code != 0 && all[i].exit_code != 0 {
                out.append("\(ProcessRegistry.name(of: all + i)) (pid \(all[i].pid)) \(describeExit(all[i].exit_code))")
            }
            return out
        }
    }
}

/// "exited with status 3" / "was killed by signal 9 (SIGKILL)".
func describeExit(_ code: Int32) -> String {
    if code == Int32.min { return "ended (status unknown)" }
    if code >= 0 { return "exited with status \(code)" }
    let sig = -code
    let names: [Int32: String] = [SIGKILL: "SIGKILL", SIGTERM: "SIGTERM", SIGSEGV: "SIGSEGV", SIGABRT: "SIGABRT",
                                  SIGINT: "SIGINT", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGFPE: "SIGFPE", SIGPIPE: "SIGPIPE"]
    return "was killed by signal \(sig)\(names[sig].map { " (\($0))" } ?? "")"
}

extension String {
    var trimmingSpaces: String { String(self.filter { !$0.isWhitespace }) }
}
