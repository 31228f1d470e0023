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

    /// The monitor's pid and the write end of the pipe that tells it the run
    /// is over (main process only; 0 / -1 when unsupervised).
    private static var pid: pid_t = 0
    private static var doneFD: Int32 = -1

    /// Forks the monitor; returns in the main process only.
    static func start() {
        let main = getpid()
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            _ = jr_set_cloexec(fds[0], 1)
            _ = jr_set_cloexec(fds[1], 1)
        } else {
            fds = [-1, -1]
        }
        let pid = fork()
        if pid != 0 {            // parent (or fork failure: run unsupervised)
            if fds[0] >= 0 { close(fds[0]) }
            if pid > 0 { Monitor.pid = pid; doneFD = fds[1] } else if fds[1] >= 0 { close(fds[1]) }
            return
        }
        if fds[1] >= 0 { close(fds[1]) }
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        var m = State(main: main, doneFD: fds[0])
        m.run()
    }

    /// A pidfd for the process of record `r`, or nil when it has ended. The
    /// pid alone could name an unrelated process by now (pid_max may be as
    /// low as 32,768): the descriptor is trusted only if, once it is open,
    /// the record still says no one has begun to reap the process, since a
    /// reaper marks `end_ns` before the pid is freed.
    static func pidfd(_ r: UnsafeMutablePointer<jr_process_record>) -> Int32? {
        if ProcessRegistry.hasEnded(r) { return nil }
        let fd = jr_pidfd_open(r.pointee.pid)
        if fd < 0 { return nil }
        if ProcessRegistry.hasEnded(r) {
            close(fd)
            return nil
        }
        return fd
    }

    /// A forked worker has no use for the main process's end of the pipe.
    static func forgetInChild() {
        if doneFD >= 0 { close(doneFD) }
        doneFD = -1
        pid = 0
    }

    /// Main process, at its very end: tells the monitor the run is over and
    /// reaps it, so jobrun leaves nothing behind when it returns (no monitor
    /// still running, no zombie for init). Bounded: a monitor that does not
    /// answer within a second is left to notice the main process's death.
    static func stop() {
        guard pid > 0, doneFD >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(doneFD, &byte, 1)
        close(doneFD)
        doneFD = -1
        var status: Int32 = 0
        for _ in 0..<1000 {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && Glibc.errno != EINTR) { break }
            usleep(1000)
        }
        pid = 0
    }

    struct State {
        let main: pid_t
        let doneFD: Int32
        /// Record slot -> pidfd of its process.
        var pidfds: [Int: Int32] = [:]
        var gens: [Int: UInt64] = [:]
        var stable = 0
        var painter = Progress.Painter()

        init(main: pid_t, doneFD: Int32) { self.main = main; self.doneFD = doneFD }

        mutating func run() -> Never {
            let mainFD = jr_pidfd_open(main)
            while true {
                let all = ProcessRegistry.slots()
                let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
                // Watch processes that registered since the last tick.
                for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) {
                    if all[i].pid == main || pidfds[i] != nil { continue }
                    if let fd = Monitor.pidfd(all + i) { pidfds[i] = fd } else { ended(all + i) }
                }
                var fds = [pollfd(fd: mainFD, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: doneFD, events: Int16(POLLIN), revents: 0)]
                let order = Array(pidfds.keys)
                for i in order { fds.append(pollfd(fd: pidfds[i]!, events: Int16(POLLIN), revents: 0)) }
                _ = poll(&fds, nfds_t(fds.count), tickMillis)
                if mainFD < 0 || fds[0].revents != 0 || fds[1].revents != 0 { finish() }
                for (k, i) in order.enumerated() where fds[k + 2].revents != 0 {
                    close(pidfds.removeValue(forKey: i)!)
                    ended(all + i)
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
            // Through the pidfds: a process that ended and was reaped since the
            // last tick may have had its pid reused by an unrelated process.
            for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) && all[i].pid != main {
                if let fd = pidfds[i] {
                    _ = jr_pidfd_send_signal(fd, SIGKILL)
                } else if let fd = Monitor.pidfd(all + i) {
                    _ = jr_pidfd_send_signal(fd, SIGKILL)
                    close(fd)
                }
            }
            _exit(0)
        }

        /// A process has died: note how, and fail the tasks it held.
        func ended(_ r: UnsafeMutablePointer<jr_process_record>) {
            // /proc/<pid> is its own only while nobody has started to reap it
            // (a reaper marks end_ns first); after that the pid may be reused,
            // and the exit code comes from the reaper instead.
            let reaping = r.pointee.end_ns != 0
            if r.pointee.has_exit_code == 0, !reaping, let code = exitCodeFromProc(r.pointee.pid) {
                r.pointee.exit_code = code
                jr_store_u32(&r.pointee.has_exit_code, 1)
            }
            ProcessRegistry.markEnded(r)
            let name = ProcessRegistry.name(of: r)
            // Intents it left, each settled by the queue it names; then its
            // share of the items of every JoinableQueue.
            finishTaskDone(r)
            if jr_load_u32(&r.pointee.get_stage) != 0 { SharedQueue(offset: r.pointee.get_queue).settle() }
            if jr_load_u32(&r.pointee.grow_stage) != 0 { SharedQueue(offset: r.pointee.grow_queue).settle() }
            if jr_load_u32(&r.pointee.put_stage) != 0 || jr_load_u64(&r.pointee.put_block) != 0 {
                SharedQueue(offset: r.pointee.put_queue).abandonPut(r)
            }
            let block = jr_load_u64(&r.pointee.get_block)
            if block != 0 { Arena.free(block, clearingOffset: &r.pointee.get_block) }
            Arena.forgetWaiter(r)
            redeliver(r, name: name)
            jr_store_u32(&r.pointee.state, UInt32(JR_PROC_EXITED))
        }

        /// A process died inside task_done, under the queue's lock: taking
        /// the lock runs the repair that rolls it forward (SharedQueue).
        func finishTaskDone(_ r: UnsafeMutablePointer<jr_process_record>) {
            if jr_load_u32(&r.pointee.done_stage) != 0 { SharedQueue(offset: r.pointee.done_queue).settle() }
        }

        /// Puts the items a dead process kept from redeliver queues back at
        /// the front of their queues, and fails the other tasks it held.
        func redeliver(_ r: UnsafeMutablePointer<jr_process_record>, name: String) {
            for q in SharedQueue.joinables() { q.processDied(r, name: name) }
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
            let all = ProcessRegistry.slots()
            let n = Int(jr_load_u32(&Arena.header.pointee.process_slots))
            var live: [Int] = []
            for i in 0..<n where all[i].state == UInt32(JR_PROC_RUNNING) {
                let r = all + i
                let kind = Int(jr_load_u32(&r.pointee.wait_kind))
                if kind == JR_WAIT_NONE || r.pointee.wait_timed != 0 || hasVerdict(r) || !Waits.isStuck(r) {
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

        /// Whether `r` has a verdict it has not taken yet: it will raise it
        /// when it runs, so it is not stuck (a stopped process keeps it until
        /// it is continued). A verdict left over from an earlier sleep is
        /// dropped here, so a new verdict can be judged on its present one.
        func hasVerdict(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
            if jr_load_u32(&r.pointee.verdict) == 0 { return false }
            if r.pointee.verdict_token == jr_load_u64(&r.pointee.wait_token) { return true }
            jr_store_u32(&r.pointee.verdict, 0)
            return false
        }

        /// Writes the verdict into the record of every process it concerns
        /// and wakes them: each raises it once, in the wait it was judged on
        /// (ProcessRegistry.takeVerdict). Later waits are judged afresh.
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
                r.pointee.verdict_token = jr_load_u64(&r.pointee.wait_token)
                jr_store_u32(&r.pointee.verdict, kind)
            }
            for r in stuck {
                // A join of a process polls its pidfd and looks when it wakes;
                // its "word" is the joined process's record (its pid), not a
                // futex word to bump.
                if r.pointee.wait_kind == UInt32(JR_WAIT_PROCESS) { continue }
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
