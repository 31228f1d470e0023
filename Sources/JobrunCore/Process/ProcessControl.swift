import Atomics
import CJobrunShims
import Glibc

/// Starting, waiting for and signalling worker processes, after CPython's
/// popen_fork.py: a worker's end is a value (exited n / killed by signal n,
/// reported as -n), never a thrown error. A child being waited for gets a
/// pidfd so `join(timeout)` can sleep in poll(2) instead of polling waitpid.
/// The pidfd is opened when a wait first has to sleep, not at start: a child
/// that is still unreaped cannot have its pid reused, and a fork then has no
/// descriptors of its siblings to close (100 starts would otherwise close
/// ~5,000 inherited pidfds).
enum ProcessControl {
    /// This process's children are kept in ProcessContext.children.
    private static var ctx: ProcessContext { ProcessContext.current }

    /// The main process is a child subreaper: a worker's children whose parent
    /// died are re-parented to it instead of to init, and reaped here, so a run
    /// leaves no zombie behind even where init does not reap.
    static func becomeSubreaper() { ctx.children.isSubreaper = jr_set_child_subreaper() == 0 }

    /// Reaps, without blocking, the ended processes this one answers for: its
    /// own workers (their statuses kept for `poll`) and, in the main process,
    /// the run's orphans it adopted as subreaper (just reaped). Any other
    /// child (io.popen's, os.execute's) is left to its owner's wait: a pid
    /// jobrun does not know is never reaped here.
    static func reapStrays() {
        // The common case: every ended child is ours, taken in turn from
        // the first one waitid reports.
        while let pid = endedChild(P_ALL, 0) {
            guard isOurs(pid) else { reapKnown(); return }
            guard let (status, _) = reap(pid) else { return }
            if ctx.children.live.contains(pid) { ctx.children.reaped[pid] = status }
            if pid == Monitor.pid { Monitor.reaped(status: status) }
        }
    }

    /// A foreign child has ended and hides the others from waitid(P_ALL):
    /// asks about each process we know, one by one.
    private static func reapKnown() {
        for pid in ctx.children.live where ctx.children.reaped[pid] == nil && endedChild(P_PID, id_t(pid)) != nil {
            if let (status, _) = reap(pid) { ctx.children.reaped[pid] = status }
        }
        guard ctx.children.isSubreaper else { return }
        let all = ProcessRegistry.slots()
        let count = Int(ProcessRegistry.header.atomic(\.process_slots).load(ordering: .acquiring))
        for i in 0..<count {
            let pid = all[i].pid
            if isAdopted(pid) && endedChild(P_PID, id_t(pid)) != nil { _ = reap(pid) }
        }
    }

    private static func isOurs(_ pid: pid_t) -> Bool {
        ctx.children.live.contains(pid) || (ctx.children.isSubreaper && isAdopted(pid))
    }

    /// A process of the run that someone else started and no one has
    /// reaped (a reaper stores its usage; the monitor may have written its
    /// exit code already): ended as our child, it is an orphan we adopted.
    /// Its record is the newest with that pid, so a record left by an
    /// earlier, reaped process whose pid was reused does not count. A child
    /// whose parent died before the child wrote its record is not known
    /// here and stays a zombie until the run ends (when init takes it).
    private static func isAdopted(_ pid: pid_t) -> Bool {
        guard pid > 0, pid != getpid(), !ctx.children.live.contains(pid), let r = ProcessRegistry.find(pid) else { return false }
        return r.pointee.parent_pid != getpid() && r.pointee.has_usage == 0
    }

    /// A child that has ended and is not reaped yet (waitid WNOWAIT), or nil.
    private static func endedChild(_ idtype: idtype_t, _ id: id_t) -> pid_t? {
        var info = siginfo_t()
        guard case .success = valueOrErrno("waitid", { waitid(idtype, id, &info, WEXITED | WNOHANG | WNOWAIT) }) else { return nil }
        let pid = info._sifields._sigchld.si_pid
        return pid > 0 ? pid : nil
    }

    /// Reaps an ended child, its record marked first (so no one trusts its pid
    /// once it can be reused), then its exit code and usage stored.
    static func reap(_ pid: pid_t) -> (Int32, rusage)? {
        ProcessRegistry.willReap(pid)
        var status: Int32 = 0
        var usage = rusage()
        // A zombie: returns at once.
        guard case .success(pid) = valueOrErrno("wait4", { wait4(pid, &status, 0, &usage) }) else { return nil }
        ProcessRegistry.recordExit(pid, code: exitCode(status), usage: usage)
        return (status, usage)
    }

    enum Started { case parent(pid_t), child }

    /// fork(2) with the bookkeeping a worker needs. Output buffered in stdio is
    /// flushed first so the child does not print it a second time.
    static func fork() throws -> Started {
        fflush(nil)
        let parent = getpid()
        let pid = Glibc.fork()
        if pid < 0 { throw JobrunError(call: "fork", errno: Glibc.errno) }
        if pid == 0 {
            ctx.afterFork()
            dieWithParent(parent)
            return .child
        }
        track(pid)
        return .parent(pid)
    }

    /// Asks the kernel to SIGKILL this process when its parent dies, and
    /// covers the race where the parent died before the request by dying
    /// the same way: the run's summary knows a SIGKILL after the parent's
    /// end as dying with it (ProcessRegistry.diedWithParent), where an exit
    /// status of 1 would be a failure of this process's own, never seen.
    static func dieWithParent(_ parent: pid_t) {
        _ = jr_set_pdeathsig(SIGKILL)
        if getppid() != parent {
            kill(getpid(), SIGKILL)
            while true { pause() }
        }
    }

    static func track(_ pid: pid_t) { ctx.children.live.insert(pid) }

    /// `pid` is reaped: forget it.
    private static func forget(_ pid: pid_t) {
        ctx.children.live.remove(pid)
        if let fd = ctx.children.pidfds.removeValue(forKey: pid) { close(fd) }
    }

    /// The pidfd of a child being waited for, opened on first use.
    private static func pidfd(_ pid: pid_t) -> Int32? {
        if let fd = ctx.children.pidfds[pid] { return fd }
        guard ctx.children.live.contains(pid) else { return nil }
        let fd = jr_pidfd_open(pid)
        if fd < 0 { return nil }
        ctx.children.pidfds[pid] = fd
        return fd
    }

    /// Starts a fresh `jobrun` (this executable) with `arguments`, passing
    /// the arena descriptor as descriptor 3 and no other beyond stdio.
    /// In a Swift host's re-entered worker, this executable is the host's:
    /// the worker re-enters it as role "script" (Reentry), never its `main`;
    /// in lua5.4 with the module, it is lua5.4, which re-enters through the
    /// module (Reentry.foreignPrefix).
    static func spawnSelf(arguments: [String]) throws -> pid_t {
        var environment: [String]? = nil
        if Reentry.isReentered || Reentry.foreignPrefix != nil {
            var env: [String] = []
            var p = environ
            while let s = p.pointee { env.append(String(cString: s)); p += 1 }
            environment = env.filter { !$0.hasPrefix(Reentry.roleVariable + "=") && !$0.hasPrefix(Reentry.argsVariable + "=") }
                + Reentry.environment(role: "script", args: [:])
        }
        let pid = try spawnExecutable(arguments: (Reentry.foreignPrefix ?? ["jobrun"]) + arguments,
                                      passing: [Arena.fd], environment: environment)
        track(pid)
        return pid
    }

    /// posix_spawn of this executable (/proc/self/exe) with `arguments`
    /// (argv[0] first), the descriptors `passing` as 3, 4, ... and no other
    /// beyond stdio: not the files a script opened (Lua's io.open is not
    /// close-on-exec), not jobrun's own descriptors, not a host's.
    /// `environment` nil: this process's. `resetSignals`: the child starts
    /// with no signal blocked and every action at its default (a host's
    /// threads may block signals; posix_spawn, unlike fork, runs no fork
    /// handlers and is safe in a multi-threaded process). Not tracked as a
    /// child of this process's context: the caller owns the pid.
    static func spawnExecutable(arguments: [String], passing: [Int32], environment: [String]? = nil,
                                resetSignals: Bool = false) throws(JobrunError) -> pid_t {
        fflush(nil)
        // A descriptor numbered where another is to land (3, 4...) would be
        // overwritten by an earlier dup2: copies above them go instead.
        var sources: [Int32] = []
        var copies: [Int32] = []
        defer { for fd in copies { close(fd) } }
        for fd in passing {
            if fd >= 3 && fd < 3 + Int32(passing.count) || fd < 3 {
                let copy = jr_dup_cloexec(fd, 10 + Int32(passing.count))
                if copy < 0 { throw JobrunError(call: "fcntl(F_DUPFD_CLOEXEC)", errno: Glibc.errno) }
                copies.append(copy)
                sources.append(copy)
            } else {
                sources.append(fd)
            }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (i, fd) in sources.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(i)) }
        let closed = jr_spawn_addclosefrom(&actions, 3 + Int32(sources.count))
        if closed != 0 { throw JobrunError(call: "posix_spawn_file_actions_addclosefrom_np", errno: closed) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        if resetSignals {
            var none = sigset_t()
            sigemptyset(&none)
            var all = sigset_t()
            sigfillset(&all)
            sigdelset(&all, SIGKILL)
            sigdelset(&all, SIGSTOP)
            posix_spawnattr_setsigmask(&attr, &none)
            posix_spawnattr_setsigdefault(&attr, &all)
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        }
        let exe = "/proc/self/exe"
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let r: Int32
        if let environment {
            let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
            defer { for p in envp { free(p) } }
            r = posix_spawn(&pid, exe, &actions, &attr, argv, envp)
        } else {
            r = posix_spawn(&pid, exe, &actions, &attr, argv, environ)
        }
        if r != 0 { throw JobrunError(call: "posix_spawn", errno: r) }
        return pid
    }

    /// Exit code as lua-api.md reports it: n for exit(n), -N for signal N.
    static func exitCode(_ status: Int32) -> Int32 {
        let sig = status & 0x7f
        if sig == 0 { return (status >> 8) & 0xff }
        return -sig
    }

    /// Reaps `pid` if it has ended; nil while it runs.
    static func poll(_ pid: pid_t) -> Int32? {
        if let status = ctx.children.reaped.removeValue(forKey: pid) {
            forget(pid)
            return exitCode(status)
        }
        var info = siginfo_t()       // si_pid stays 0 when the child still runs
        if case .success = valueOrErrno("waitid", { waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) }) {
            if info._sifields._sigchld.si_pid != pid { return nil }
            if let (status, _) = reap(pid) {
                forget(pid)
                return exitCode(status)
            }
        }
        // ECHILD: reaped elsewhere (e.g. os.execute's wait, or through
        // another Process object for the same child, one sent back to its
        // parent) or not our child: the run's record may have its exit code;
        // else its status is lost, so report the generic failure code.
        forget(pid)
        if let r = ProcessRegistry.find(pid), r.atomic(\.has_exit_code).load(ordering: .acquiring) != 0 { return r.pointee.exit_code }
        return 255
    }

    enum WaitOutcome { case exited(Int32), timedOut, failed(JobrunError) }

    /// Waits up to `timeout` seconds (nil: forever) for `pid` to end, telling
    /// the monitor what it waits for so a run stuck here is reported.
    static func wait(_ pid: pid_t, timeout: Double?) -> WaitOutcome {
        let deadline = Deadline(timeout: timeout)
        var target = ProcessRegistry.find(pid)
        defer { ProcessRegistry.didWait() }   // the join itself ends: progress
        while true {
            if let code = poll(pid) { return .exited(code) }
            if target == nil { target = ProcessRegistry.find(pid) }   // it may not have registered yet
            if let t = target { ProcessRegistry.willWait(JR_WAIT_PROCESS, object: t, word: t, timed: timeout != nil) }
            guard let fd = pidfd(pid) else {
                // No pidfd: fall back to a short sleep between polls.
                if deadline.expired { return .timedOut }
                usleep(2000)
                if let f = ProcessRegistry.takeVerdict() { return .failed(f) }
                continue
            }
            let remaining = deadline.remaining
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms: Int32 = remaining < 0 ? 200 : Int32(min(200, (remaining + 999_999) / 1_000_000))
            _ = Glibc.poll(&pfd, 1, ms)
            if target != nil, let r = ProcessRegistry.record { r.atomic(\.wait_kind).store(UInt32(JR_WAIT_NONE), ordering: .releasing) }
            // The monitor's verdict on this join comes first, even when the
            // process joined has just ended by raising the same verdict.
            if let f = ProcessRegistry.takeVerdict() { return .failed(f) }
            if let code = poll(pid) { return .exited(code) }
            reapStrays()
            if deadline.expired { return .timedOut }
        }
    }

    /// SIGKILLs every child not yet reaped (a run that must end at once).
    static func killChildren() {
        for pid in ctx.children.live { _ = kill(pid, SIGKILL) }
    }

    static func signal(_ pid: pid_t, _ sig: Int32) {
        guard pid > 0 else { return }   // kill(0 or -n) would signal a whole process group
        _ = kill(pid, sig)
    }
}
