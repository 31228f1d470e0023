import Atomics
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
    /// is over, the last look and the deaths: ProcessContext.supervision
    /// (main process only; 0 / -1 when unsupervised).
    private static var ctx: ProcessContext { ProcessContext.current }
    static var pid: pid_t { ctx.supervision.monitorPid }

    /// Forks the monitor; returns in the main process only, with nil, or the
    /// reason there is no monitor (the run must not go on without one).
    static func start() -> String? {
        let main = getpid()
        // fds: main -> monitor (the end of the run, or an interrupt: see
        // interrupted()); answers: monitor -> main ("the interrupt is handled").
        var fds: [Int32] = [-1, -1]
        var answers: [Int32] = [-1, -1]
        if jr_pipe_cloexec(&fds) != 0 { return "cannot start the run's monitor: pipe: \(String(cString: strerror(Glibc.errno)))" }
        if jr_pipe_cloexec(&answers) != 0 {
            let e = Glibc.errno
            close(fds[0]); close(fds[1])
            return "cannot start the run's monitor: pipe: \(String(cString: strerror(e)))"
        }
        let pid = fork()
        if pid < 0 {
            let e = Glibc.errno
            for fd in fds + answers { close(fd) }
            return "cannot start the run's monitor: fork: \(String(cString: strerror(e)))"
        }
        if pid > 0 {
            close(fds[0])
            close(answers[1])
            ctx.supervision.monitorPid = pid
            ctx.supervision.monitorDoneFD = fds[1]
            ctx.supervision.monitorAnswerFD = answers[0]
            jr_interrupt_update(fds[1], answers[0])
            Arena.header.pointee.monitor_pid = pid
            ctx.supervision.lastMonitorCheck = monotonicNanos()
            return nil
        }
        close(fds[1])
        close(answers[0])
        supervise(main: main, doneFD: fds[0], answerFD: answers[1])
    }

    /// The main process stops listening to the monitor (it ended or is replaced).
    private static func closePipes() {
        jr_interrupt_update(-1, -1)
        if ctx.supervision.monitorDoneFD >= 0 { close(ctx.supervision.monitorDoneFD); ctx.supervision.monitorDoneFD = -1 }
        if ctx.supervision.monitorAnswerFD >= 0 { close(ctx.supervision.monitorAnswerFD); ctx.supervision.monitorAnswerFD = -1 }
    }

    /// The monitor's life, in a process of its own: forked by the command
    /// line's main process (`start`), or started with posix_spawn by a Swift
    /// host's Runtime (re-entered as role "monitor", attached to the arena).
    /// Watches the run until `main` ends or `doneFD` is written or closed.
    static func supervise(main: pid_t, doneFD: Int32, answerFD: Int32 = -1) -> Never {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        // A SIGTERM sent to the monitor alone (it looked like the run in
        // `ps`) is passed on to the main process, unless that one got its
        // own (the process group's) meanwhile: the run stops as it would
        // have, instead of carrying on as if nothing was asked. Only for a
        // main process that is a jobrun run (it answers interrupts), not a
        // Swift host's application.
        var termFD: Int32 = -1
        if answerFD >= 0 { termFD = jr_term_signalfd() }
        jr_winch_install()
        _ = jr_set_process_name("jobrun-monitor")
        _ = jr_set_process_title("jobrun: monitor of pid \(main)")
        let limit = jr_raise_nofile_limit()
        var m = State(main: main, doneFD: doneFD)
        m.answerFD = answerFD
        m.termFD = termFD
        // Descriptors kept free for /proc reads and the like: past this many
        // pidfds, processes are watched by polling.
        if limit > 0 { m.maxPidfds = max(0, limit - 24) }
        m.run()
    }

    /// The process of a pidfd has not ended (so its pid is still its own).
    static func running(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 0
    }

    // MARK: the main process watches the monitor

    static let watchEvery: Int64 = 50_000_000

    /// Main process, about to sleep in a wait (every wait sleeps in bounded
    /// slices, so this runs again while it waits): a monitor that died is
    /// replaced, or the run ends with a message saying why. Without it no
    /// deadlock or death would ever be reported.
    @inline(__always)
    static func watch() {
        if pid > 0 && monotonicNanos() &- ctx.supervision.lastMonitorCheck >= watchEvery { checkAlive() }
    }

    private static func checkAlive() {
        ctx.supervision.lastMonitorCheck = monotonicNanos()
        var info = siginfo_t()
        let r = valueOrErrno("waitid") { waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) }
        if case .success = r, info._sifields._sigchld.si_pid == 0 { return }   // running
        if case .failure(let e) = r, e != .noChildProcess { return }            // next time
        var how = "ended"
        if case .success = r {
            var status: Int32 = 0
            _ = valueOrErrno("waitpid") { waitpid(pid, &status, 0) }
            how = describeExit(ProcessControl.exitCode(status))
        }
        lost(how)
    }

    /// The reaper of strays reaped the monitor: the main process says so.
    static func reaped(status: Int32) {
        lost(describeExit(ProcessControl.exitCode(status)))
    }

    /// The most monitors replaced: one that dies again and again (a bug of
    /// its own) ends the run, not a loop.
    static let maxReplacements = 3

    /// The monitor (pid `pid`) is dead: start another, or end the run.
    private static func lost(_ how: String) {
        let old = pid
        ctx.supervision.monitorPid = 0
        Arena.header.pointee.monitor_pid = 0
        closePipes()
        ctx.supervision.monitorDeaths += 1
        let deaths = ctx.supervision.monitorDeaths
        let err = deaths > maxReplacements ? "\(deaths) monitors died in this run" : start()
        if let err {
            Progress.stop()
            writeAll(2, "jobrun: the run's monitor (pid \(old)) \(how), and \(err): the run cannot go on unsupervised\n")
            ProcessControl.killChildren()
            jr_flush_and_exit(1)
        }
        writeAll(2, Progress.lineStart(fd: 2) + "jobrun: the run's monitor (pid \(old)) \(how); a new one (pid \(pid)) supervises the run\n")
    }

    /// How the monitor watches one process: through a pidfd, or when none
    /// can be had (no descriptor left, a kernel or sandbox without
    /// pidfd_open) by polling every tick.
    enum Watch { case pidfd(Int32), poll, ended }

    /// How to watch the process of record `r`. The pid alone could name an
    /// unrelated process by now (pid_max may be as low as 32,768): a pidfd is
    /// trusted only if, once it is open, the record still says no one has
    /// begun to reap the process, since a reaper marks `end_ns` before the
    /// pid is freed. A failed pidfd_open is never taken for a death unless
    /// the kernel says there is no such process.
    static func watch(_ r: UnsafeMutablePointer<jr_process_record>, pidfdAllowed: Bool = true) -> Watch {
        if ProcessRegistry.hasEnded(r) { return .ended }
        if !pidfdAllowed { return isAlive(r) ? .poll : .ended }
        let fd = jr_pidfd_open(r.pointee.pid)
        if fd < 0 {
            if jr_errno() == ESRCH { return .ended }
            return isAlive(r) ? .poll : .ended
        }
        if ProcessRegistry.hasEnded(r) {
            close(fd)
            return .ended
        }
        return .pidfd(fd)
    }

    /// The polled liveness check: the record says it has not ended (so the
    /// pid is still its own), and the pid runs.
    static func isAlive(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
        !ProcessRegistry.hasEnded(r) && ProcessIdentity.isAlive(r.pointee.pid)
    }

    /// Main process, at its very end: tells the monitor the run is over and
    /// reaps it, so jobrun leaves nothing behind when it returns (no monitor
    /// still running, no zombie for init). Bounded: a monitor that does not
    /// answer within a second is left to notice the main process's death.
    static func stop() {
        let doneFD = ctx.supervision.monitorDoneFD
        guard pid > 0, doneFD >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(doneFD, &byte, 1)
        closePipes()
        var status: Int32 = 0
        for _ in 0..<1000 {
            guard case .success(0) = valueOrErrno("waitpid", { waitpid(pid, &status, WNOHANG) }) else { break }
            usleep(1000)
        }
        ctx.supervision.monitorPid = 0
    }

    struct State {
        let main: pid_t
        let doneFD: Int32
        /// The write end of the monitor's answer to an interrupt (-1: none).
        var answerFD: Int32 = -1
        /// A signalfd for the SIGTERMs sent to the monitor (-1: ignored).
        var termFD: Int32 = -1
        /// When a SIGTERM came that is not passed on yet (0: none).
        var termAt: Int64 = 0
        /// How long the main process may take to report its own SIGTERM (a
        /// signal to the process group reaches both) before the monitor's
        /// is passed on: two would kill it at once, without --stats.
        static let termGraceNanos: Int64 = 1_000_000_000
        /// Record slot -> pidfd of its process.
        var pidfds: [Int: Int32] = [:]
        /// Record slots whose processes are watched by polling, with their pids.
        var polled: [Int: pid_t] = [:]
        /// Most pidfds to hold (the descriptor limit, less a reserve).
        var maxPidfds = Int.max
        /// Record slots whose dead process is being repaired by a repair
        /// thread, with the record's start_ns (a recycled slot is a new process).
        var repairing: [Int: Int64] = [:]
        /// Dead processes waiting for a repair thread (at most
        /// `maxRepairThreads` run at once), oldest first.
        var deferred: [(slot: Int, start: Int64)] = []
        static let maxRepairThreads = 32
        var gens: [Int: UInt64] = [:]
        var stable = 0
        var painter = Progress.Painter()

        init(main: pid_t, doneFD: Int32) { self.main = main; self.doneFD = doneFD }

        mutating func run() -> Never {
            // Without a pidfd for the main process, its death shows as our
            // re-parenting (and as the end of the pipe).
            let mainFD = jr_pidfd_open(main)
            while true {
                let all = ProcessRegistry.slots()
                let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
                // Watch processes that registered since the last tick,
                // those still starting included (once their pid is known).
                var starting = false
                for i in 0..<n {
                    let r = all + i
                    let state = r.atomic(\.state).load(ordering: .acquiring)
                    if state == UInt32(JR_PROC_STARTING) {
                        starting = true
                        if r.pointee.pid == 0 { abandonIfOrphaned(r); continue }
                    } else if state != UInt32(JR_PROC_RUNNING) {
                        continue
                    }
                    if r.pointee.pid == main || pidfds[i] != nil || polled[i] != nil { continue }
                    if let since = repairing[i], since == r.pointee.start_ns { continue }
                    if deferred.contains(where: { $0.slot == i && $0.start == r.pointee.start_ns }) { continue }
                    switch Monitor.watch(r, pidfdAllowed: pidfds.count < maxPidfds) {
                    case .pidfd(let fd): pidfds[i] = fd
                    case .poll: polled[i] = r.pointee.pid
                    case .ended: end(i, r)
                    }
                }
                var fds = [pollfd(fd: mainFD, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: doneFD, events: Int16(POLLIN), revents: 0)]
                let order = Array(pidfds.keys)
                for i in order { fds.append(pollfd(fd: pidfds[i]!, events: Int16(POLLIN), revents: 0)) }
                if termFD >= 0 { fds.append(pollfd(fd: termFD, events: Int16(POLLIN), revents: 0)) }
                _ = poll(&fds, nfds_t(fds.count), tickMillis)
                if termFD >= 0 && fds[fds.count - 1].revents != 0 {
                    _ = jr_term_signalfd_drain(termFD)
                    if termAt == 0 { termAt = monotonicNanos() }
                }
                if fds[1].revents != 0, let byte = readByte(doneFD), byte & UInt8(JR_INTERRUPT_BYTE) != 0 {
                    termAt = 0                   // the main process has its own
                    interrupted(signal: Int32(byte & 0x3f))
                    continue
                }
                if termAt != 0 && monotonicNanos() &- termAt >= State.termGraceNanos {
                    termAt = 0
                    _ = kill(main, SIGTERM)
                }
                if (mainFD >= 0 && fds[0].revents != 0) || fds[1].revents != 0 || getppid() != main { finish() }
                for (k, i) in order.enumerated() where fds[k + 2].revents != 0 {
                    close(pidfds.removeValue(forKey: i)!)
                    end(i, all + i)
                }
                for (i, pid) in polled where all[i].pid != pid || !Monitor.isAlive(all + i) {
                    polled.removeValue(forKey: i)
                    if all[i].pid == pid { end(i, all + i) }
                }
                for (i, since) in repairing
                where all[i].start_ns != since || (all + i).atomic(\.state).load(ordering: .acquiring) != UInt32(JR_PROC_RUNNING) {
                    repairing.removeValue(forKey: i)
                }
                while !deferred.isEmpty && repairing.count < State.maxRepairThreads {
                    let d = deferred.removeFirst()
                    repair(d.slot, all + d.slot)
                }
                // No verdict while a process is starting (it will act) or a
                // dead one's repair is under way (it may wake a waiter).
                if starting || !repairing.isEmpty || !deferred.isEmpty { stable = 0; gens.removeAll() } else { checkDeadlock() }
                PipeHolders.sweep()
                painter.tick()
            }
        }

        /// A record reserved by a parent that died before it could fork: no
        /// process will ever take it over.
        func abandonIfOrphaned(_ r: UnsafeMutablePointer<jr_process_record>) {
            let parent = r.pointee.parent_pid
            if let p = ProcessRegistry.find(parent), p.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING),
               processIsAlive(parent, start: ProcessIdentity.start(of: p)) { return }
            // No lock (the monitor takes none): nothing else writes a
            // STARTING record whose parent is gone.
            if r.pointee.pid == 0 { r.atomic(\.state).store(UInt32(JR_PROC_FREE), ordering: .releasing) }
        }

        /// The process of slot `i` has ended. What it held (items, intents,
        /// a wait for memory) is settled under the queues' and the
        /// allocator's locks, which a stopped process may hold: that is done
        /// by a thread of its own, so the monitor itself never waits on a
        /// lock and goes on supervising the rest. (Threads are safe here:
        /// the monitor never forks; a new monitor is forked by the main
        /// process.)
        mutating func end(_ i: Int, _ r: UnsafeMutablePointer<jr_process_record>) {
            if repairing.count >= State.maxRepairThreads {
                deferred.append((i, r.pointee.start_ns))
                return
            }
            repair(i, r)
        }

        mutating func repair(_ i: Int, _ r: UnsafeMutablePointer<jr_process_record>) {
            // Not marked ended here: ended() reads the exit status from
            // /proc only while no one has (the mark says a reaper may have
            // freed the pid). `repairing` keeps the slot from being watched.
            repairing[i] = r.pointee.start_ns
            do throws(JobrunError) {
                try Threads.start(detached: true, stackSize: 1 << 20) { Monitor.State(main: 0, doneFD: -1).ended(r) }
            } catch {
                repairing.removeValue(forKey: i)
                ended(r)
            }
        }

        /// One byte from the main process; nil at its end (EOF or an error).
        func readByte(_ fd: Int32) -> UInt8? {
            var byte: UInt8 = 0
            guard case .success(1) = valueOrErrno("read", { read(fd, &byte, 1) }) else { return nil }
            return byte
        }

        /// The main process caught SIGINT or SIGTERM (interrupt.c) and waits,
        /// frozen in its handler, until this answers: the status line goes,
        /// the workers are stopped with the same signal (SIGKILL a second
        /// later), their ends are recorded, --stats and --stats-json are
        /// written from the arena; then the main process dies of its signal.
        mutating func interrupted(signal sig: Int32) {
            painter.wipe()
            stopWorkers(sig)
            Stats.reportInterrupted()
            if answerFD >= 0 {
                var byte: UInt8 = 1
                _ = write(answerFD, &byte, 1)
                close(answerFD)
                answerFD = -1
            }
        }

        /// Signals every process of the run but the main one, waits up to a
        /// second for them to end, SIGKILLs the rest (another second), and
        /// records how each ended: they are zombies of their frozen parent,
        /// whose /proc entry still says.
        mutating func stopWorkers(_ sig: Int32) {
            let all = ProcessRegistry.slots()
            let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
            var watched: [(slot: Int, fd: Int32)] = []
            for i in 0..<n where all[i].pid != main && all[i].pid > 0 {
                let state = (all + i).atomic(\.state).load(ordering: .acquiring)
                guard state == UInt32(JR_PROC_RUNNING) || state == UInt32(JR_PROC_STARTING) else { continue }
                if let fd = pidfds[i] {
                    watched.append((i, fd))
                } else if case .pidfd(let fd) = Monitor.watch(all + i) {
                    pidfds[i] = fd
                    watched.append((i, fd))
                } else {
                    continue
                }
            }
            // What the workers started (os.execute, io.popen) gets the signal
            // too, as from a terminal's Ctrl-C (the process group); a SIGTERM
            // sent to the main process alone (`kill`, a service manager)
            // otherwise left it running, holding the run's stdout open.
            var started: [pid_t] = []
            for w in watched { started += ProcessControl.descendants(of: all[w.slot].pid) }
            let workerPids = Set(watched.map { all[$0.slot].pid })
            started = started.filter { !workerPids.contains($0) }
            for w in watched { _ = jr_pidfd_send_signal(w.fd, sig) }
            for pid in started { _ = kill(pid, sig) }
            func waitForAll(_ ms: Int64) -> [(slot: Int, fd: Int32)] {
                var left = watched
                let deadline = monotonicNanos() + ms * 1_000_000
                while !left.isEmpty {
                    let now = monotonicNanos()
                    if now >= deadline { break }
                    var fds = left.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
                    _ = poll(&fds, nfds_t(fds.count), Int32(min(100, (deadline - now) / 1_000_000 + 1)))
                    left = zip(left, fds).filter { $0.1.revents == 0 }.map { $0.0 }
                }
                return left
            }
            let stubborn = waitForAll(1000)
            for w in stubborn { _ = jr_pidfd_send_signal(w.fd, SIGKILL) }
            if !stubborn.isEmpty { _ = waitForAll(1000) }
            // Those still alive now: SIGKILL, with what they started since.
            // (One whose worker died is the main process's now, a subreaper
            // frozen in its handler; one whose parent is another process
            // is no longer the run's: its pid was reused.)
            let family = Set(started).union(workerPids).union([main])
            for pid in started {
                if let p = ProcessControl.parent(of: pid), family.contains(p) { ProcessControl.killTree(pid) }
            }
            for w in watched {
                let r = all + w.slot
                if r.atomic(\.has_exit_code).load(ordering: .acquiring) == 0, let code = exitCodeFromProc(r.pointee.pid) {
                    r.pointee.exit_code = code
                    r.atomic(\.has_exit_code).store(1, ordering: .releasing)
                }
                ProcessRegistry.markEnded(r)
            }
        }

        /// The main process has ended: stop whatever is left, then go.
        func finish() -> Never {
            // A --stats-json file the main process did not get to finish
            // stays unwritten: its temporary copy goes.
            Stats.discardJSON()
            // The main process was killed with its status line on the screen.
            painter.wipe()
            let all = ProcessRegistry.slots()
            let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
            // Through the pidfds: a process that ended and was reaped since the
            // last tick may have had its pid reused by an unrelated process.
            for i in 0..<n where all[i].pid != main && all[i].pid > 0 {
                let state = (all + i).atomic(\.state).load(ordering: .acquiring)
                guard state == UInt32(JR_PROC_RUNNING) || state == UInt32(JR_PROC_STARTING) else { continue }
                // With what it started (os.execute, io.popen): left running,
                // that would hold the run's stdout open after its end.
                if let fd = pidfds[i] {
                    if Monitor.running(fd) { ProcessControl.killTree(all[i].pid) }
                    _ = jr_pidfd_send_signal(fd, SIGKILL)
                    continue
                }
                switch Monitor.watch(all + i) {
                case .pidfd(let fd):
                    if Monitor.running(fd) { ProcessControl.killTree(all[i].pid) }
                    _ = jr_pidfd_send_signal(fd, SIGKILL)
                    close(fd)
                case .poll:
                    _ = kill(all[i].pid, SIGKILL)
                case .ended:
                    break
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
            if r.atomic(\.has_exit_code).load(ordering: .acquiring) == 0, !reaping, let code = exitCodeFromProc(r.pointee.pid) {
                r.pointee.exit_code = code
                r.atomic(\.has_exit_code).store(1, ordering: .releasing)
            }
            // A reaper between marking and recording: how it ended decides
            // what becomes of the items it held (SharedQueue.processDied),
            // so wait for the code a moment (bounded: the reaper may be stopped).
            var waited = 0
            while reaping && r.atomic(\.has_exit_code).load(ordering: .acquiring) == 0 && waited < 200 {
                usleep(1000)
                waited += 1
            }
            ProcessRegistry.markEnded(r)
            let name = ProcessRegistry.name(of: r)
            // Intents it left, each settled by the queue it names; then its
            // share of the items of every JoinableQueue.
            finishTaskDone(r)   // model: M1
            if r.atomic(\.get_stage).load(ordering: .acquiring) != 0 { SharedQueue(offset: r.pointee.get_queue).settle() }   // model: M1
            if r.atomic(\.grow_stage).load(ordering: .acquiring) != 0 { SharedQueue(offset: r.pointee.grow_queue).settle() }
            if r.atomic(\.put_stage).load(ordering: .acquiring) != 0 || r.atomic(\.put_block).load(ordering: .acquiring) != 0 {
                SharedQueue(offset: r.pointee.put_queue).abandonPut(r)
            }
            let block = r.atomic(\.get_block).load(ordering: .acquiring)
            if block != 0 { Arena.free(block, clearingOffset: &r.pointee.get_block) }
            Arena.forgetWaiter(r)
            redeliver(r, name: name)   // model: M2-M4
            PipeHolders.ended(r)   // the ends it held may have no holder left: EOF
            ObjectTable.dropHoldings(of: r)   // what a killed process held is freed if no one else holds it
            r.atomic(\.state).store(UInt32(JR_PROC_EXITED), ordering: .releasing)   // model: M5
        }

        /// A process died inside task_done, under the queue's lock: taking
        /// the lock runs the repair that rolls it forward (SharedQueue).
        func finishTaskDone(_ r: UnsafeMutablePointer<jr_process_record>) {
            if r.atomic(\.done_stage).load(ordering: .acquiring) != 0 { SharedQueue(offset: r.pointee.done_queue).settle() }
        }

        /// Puts the items a dead process kept from redeliver queues back at
        /// the front of their queues, and fails the other tasks it held.
        func redeliver(_ r: UnsafeMutablePointer<jr_process_record>, name: String) {
            SharedQueue.withJoinables { $0.processDied(r, name: name) }
        }

        /// The exit status a zombie still shows in /proc/<pid>/stat (field 52).
        func exitCodeFromProc(_ pid: pid_t) -> Int32? {
            guard case .success(let buf) = readProcStat(pid, limit: 2048) else { return nil }
            let n = buf.count
            guard n > 0, let close = buf[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
            let fields = buf[(close + 2)..<n].split(separator: UInt8(ascii: " "))
            guard fields.count >= 50, let status = Int32(String(decoding: fields[49], as: UTF8.self).trimmingSpaces) else { return nil }
            return ProcessControl.exitCode(status)
        }

        mutating func checkDeadlock() {
            let all = ProcessRegistry.slots()
            let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
            var live: [Int] = []
            var kinds: [Int] = []
            for i in 0..<n where (all + i).atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_RUNNING) {
                let r = all + i
                let kind = Int(r.atomic(\.wait_kind).load(ordering: .acquiring))
                if kind == JR_WAIT_NONE || r.pointee.wait_timed != 0 || hasVerdict(r) || !Waits.isStuck(r) {
                    stable = 0; gens.removeAll(); return
                }
                live.append(i)
                kinds.append(kind)
            }
            if live.isEmpty { stable = 0; return }
            var same = gens.count == live.count
            for i in live where gens[i] != (all + i).atomic(\.wait_gen).load(ordering: .acquiring) { same = false }
            if !same {
                gens = Dictionary(uniqueKeysWithValues: live.map { ($0, (all + $0).atomic(\.wait_gen).load(ordering: .acquiring)) })
                stable = 0
                return
            }
            stable += 1
            if stable < stableTicks { return }
            declare(live.map { all + $0 }, kinds: kinds)
        }

        /// Whether `r` has a verdict it has not taken yet: it will raise it
        /// when it runs, so it is not stuck (a stopped process keeps it until
        /// it is continued). A verdict left over from an earlier sleep is
        /// dropped here, so a new verdict can be judged on its present one.
        func hasVerdict(_ r: UnsafeMutablePointer<jr_process_record>) -> Bool {
            if r.atomic(\.verdict).load(ordering: .acquiring) == 0 { return false }
            if r.pointee.verdict_token == r.atomic(\.wait_token).load(ordering: .acquiring) { return true }
            r.atomic(\.verdict).store(0, ordering: .releasing)
            return false
        }

        /// Writes the verdict into the record of every process it concerns
        /// and wakes them: each raises it once, in the wait it was judged on
        /// (ProcessRegistry.takeVerdict). Later waits are judged afresh.
        func declare(_ stuck: [UnsafeMutablePointer<jr_process_record>], kinds: [Int]) {
            var lines = ["every process of the run is waiting and none can wake the others:"]
            for (r, kind) in zip(stuck, kinds) {
                lines.append("  \(ProcessRegistry.name(of: r)) (pid \(r.pointee.pid)) waits in \(Waits.describe(r, kind: kind))")
            }
            let dead = deadProcesses()
            var kind: UInt32 = 1
            if !dead.isEmpty {
                kind = 2
                lines.append("processes that ended before they could help:")
                lines.append(contentsOf: dead.map { "  \($0)" })
            }
            let text = lines.joined(separator: "\n")
            let h = Arena.header
            // The monitor is the only writer: the text, then the flag that
            // publishes it (no lock, which a stopped process might hold).
            withUnsafeMutableBytes(of: &h.pointee.failure) { buf in
                let bytes = Array(text.utf8.prefix(buf.count - 1))
                buf.copyBytes(from: bytes)
                buf[bytes.count] = 0
            }
            h.atomic(\.failed).store(kind, ordering: .releasing)
            for r in stuck {
                r.pointee.verdict_token = r.atomic(\.wait_token).load(ordering: .acquiring)
                r.atomic(\.verdict).store(kind, ordering: .releasing)
            }
            for (r, kind) in zip(stuck, kinds) {
                // A join of a process polls its pidfd and looks when it wakes;
                // its "word" is the joined process's record (its pid), not a
                // futex word to bump.
                if kind == JR_WAIT_PROCESS { continue }
                let word = Arena.pointer(r.pointee.wait_word).assumingMemoryBound(to: UInt32.self)
                word.atomic.wrappingIncrement(ordering: .acquiringAndReleasing)
                _ = jr_futex_wake(word, Int32.max)
            }
        }

        /// Processes of the run that ended abnormally, described.
        func deadProcesses() -> [String] {
            let all = ProcessRegistry.slots()
            let n = Int(Arena.header.atomic(\.process_slots).load(ordering: .acquiring))
            var out: [String] = []
            for i in 0..<n {
                let r = all + i
                guard r.atomic(\.state).load(ordering: .acquiring) == UInt32(JR_PROC_EXITED),
                      r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0, r.pointee.exit_code != 0 else { continue }
                out.append("\(ProcessRegistry.name(of: r)) (pid \(r.pointee.pid)) \(describeExit(r.pointee.exit_code))")
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
    let name = jr_signal_abbrev(sig).map { " (SIG\(String(cString: $0)))" } ?? ""
    return "was killed by signal \(sig)\(name)"
}

extension String {
    var trimmingSpaces: String { String(self.filter { !$0.isWhitespace }) }
}
