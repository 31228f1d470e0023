import Foundation
import Testing

/// The monitor must go on supervising whatever happens to the run: too few
/// descriptors, a pid the kernel gives again, a worker slow to start, its own
/// death, absurd figures, a stopped process holding a lock.
@Suite("Supervision that cannot be lost")
struct SupervisionLimitsTests {
    /// With too few descriptors for a pidfd per worker, the monitor watches
    /// the rest by polling: no live worker is taken for dead, so no lock is
    /// taken over from a live holder and the count is exact.
    @Test func tooFewDescriptorsNeverMakeALiveWorkerDead() {
        let r = runScript("""
            local lock, v, took, go = jobrun.Lock(), jobrun.Value(0), jobrun.Value(0), jobrun.Event()
            local up = jobrun.Semaphore(0)
            local ps = {}
            for i = 1, 60 do
              ps[i] = jobrun.Process{target = function()
                up:release()
                go:wait()
                for k = 1, 100 do
                  local _, note = lock:acquire()
                  if note then took:set(took:get() + 1) end
                  local x = v:get()
                  jobrun.sleep(0)   -- yields: widens the read-modify-write the lock must guard
                  v:set(x + 1)
                  lock:release()
                end
              end}
              ps[i]:start()
            end
            for i = 1, 60 do assert(up:acquire(true, 20)) end   -- all run at once: the monitor watches every one
            go:set()
            for i = 1, 60 do ps[i]:join() end
            local bad = 0
            for i = 1, 60 do if ps[i].exitcode ~= 0 then bad = bad + 1 end end
            print(v:get(), took:get(), bad)
            """, shell: "ulimit -n 64", timeout: 60)
        expectStatus(r)
        expectFields(r, [
            "60 workers x 100 increments under the lock, none lost": "6000",
            "no live holder's lock was taken over": "0", "every worker ended with 0": "0",
        ])
        #expect(!r.stderr.contains("WorkerDied"))
    }

    /// A lock's holder is (pid, start): a later process of the run that
    /// got the pid of a holder that died is told "owner died", never handed
    /// the dead holder's RLock as its own. The pid is made to come round
    /// again through /proc/sys/kernel/ns_last_pid (root only; else skipped).
    ///
    /// A try whose process missed the pid (another process or thread of the
    /// machine took it first: under load, the monitor's repair thread for
    /// the holder's death) must leave the lock alone: taking it over and
    /// releasing it would hand the next try a free lock ("true nil"). The
    /// first try is made to miss, so that a try that touches the lock fails
    /// the test every time, not only under load.
    @Test func aReusedPidDoesNotInheritALock() {
        guard access("/proc/sys/kernel/ns_last_pid", W_OK) == 0 else { return }
        let r = runScript("""
            local l = jobrun.RLock()
            local a = jobrun.Process{name = "holder", target = function() l:acquire() end}   -- ends holding it
            a:start(); a:join()
            local pid = a.pid
            local q = jobrun.Queue()
            for try = 1, 50 do
              local f = assert(io.open("/proc/sys/kernel/ns_last_pid", "w"))
              f:write(tostring(try == 1 and pid or pid - 1)); f:close()   -- the first try gets pid + 1 (or later)
              local b = jobrun.Process{name = "reuser", target = function()
                if jobrun.current_process().pid ~= pid then q:put("missed"); return end
                local got, note = l:acquire(false)
                q:put(tostring(got) .. " " .. tostring(note))
                if got then l:release() end
              end}
              b:start()
              local result = q:get(); b:join()
              if b.pid == pid then print(result); return end
            end
            print("the pid did not come round again")
            """, timeout: 60)
        expectStatus(r)
        #expect(r.stdout == "true owner died\n" || r.stdout == "the pid did not come round again\n", "\(r.stdout)")
    }

    /// The parent writes a STARTING record before it starts a worker: a
    /// `script` worker not yet running its first line (here stopped before it
    /// took its record, resumed a second later by an outside process) is
    /// counted, so the main process waiting for it is not a deadlock. One
    /// that waits for what never comes is, once it waits.
    @Test func aSlowStartingScriptWorkerIsNeverTakenForADeadlock() {
        let r = runScript("""
            local q = jobrun.Queue()
            local p = jobrun.Process{script = "stage.lua", args = {q}}
            p:start()
            print(q:get())
            p:join()
            local caught = false
            for try = 1, 20 do
              local w = jobrun.Process{script = "stage.lua", args = {q}}
              w:start()
              os.execute("kill -STOP " .. w.pid)
              local f = io.open("/proc/" .. w.pid .. "/maps")
              local maps = f and f:read("a") or ""
              if f then f:close() end
              if not maps:find("jobrun%-arena") then   -- stopped before it attached the arena
                caught = true
                os.execute("(sleep 1; kill -CONT " .. w.pid .. ") &")
                print(q:get())
                w:join()
                break
              end
              os.execute("kill -CONT " .. w.pid)
              q:get(); w:join()
            end
            print("caught", caught)
            local never = jobrun.Queue()
            local n = jobrun.Process{name = "waits-forever", script = "never.lua", args = {never}}
            n:start()
            local ok, e = pcall(q.get, q)
            print(ok, e.kind, e.message:find("waits-forever (pid", 1, true) ~= nil)
            """, files: [
                "stage.lua": "local q = ...\nlocal t = os.clock()\nwhile os.clock() - t < 1 do end\nq:put(\"late\")\n",
                "never.lua": "local never = ...\nnever:get()\n",
            ], timeout: 60)
        #expect(!r.timedOut)
        expectLines(r, [
            "a script worker that computes a second is waited for": "late",
            "one stopped before it took its record too": "late",
            "the stop before it attached the arena was caught": "caught\ttrue",
            "one that waits for what never comes is a Deadlock that names it": "false\tDeadlock\ttrue",
        ])
    }

    /// The monitor, SIGKILLed mid-run (found by its name, "jobrun-monitor"),
    /// is replaced: a worker's death and then a deadlock are still reported.
    @Test func aKilledMonitorIsReplaced() {
        let r = runScript("""
            local me = jobrun.current_process().pid
            local f = io.popen("pgrep -P " .. me .. " -x jobrun-monitor")
            local mon = tonumber(f:read("l") or "")
            f:close()
            print("found", mon ~= nil)
            if not mon then   -- the oldest child: it starts before any worker
              f = io.popen("pgrep -o -P " .. me); mon = tonumber(f:read("l")); f:close()
            end
            os.execute("kill -9 " .. mon)
            local jq = jobrun.JoinableQueue()
            local k = jobrun.Process{name = "dies", target = function() jq:get(); os.exit(3) end}
            k:start(); jq:put(1)
            local ok, e = pcall(jq.join, jq)
            print(ok, e.kind)
            local q = jobrun.Queue()
            q:get()
            """, timeout: 30)
        #expect(!r.timedOut, "a dead monitor left the run unsupervised")
        #expect(r.status == 1)
        expectLines(r, [
            "the monitor was found": "found\ttrue",
            "after its death a worker's death is still told: join raises WorkerDied": "false\tWorkerDied",
        ])
        #expect(r.stderr.contains("was killed by signal 9 (SIGKILL); a new one (pid "), "\(r.stderr)")
        #expect(r.stderr.contains(": Queue#2.get: every process of the run is waiting"), "\(r.stderr)")
    }

    /// A monitor that dies again and again is replaced three times, then the
    /// run ends saying so, rather than looping.
    @Test func aMonitorThatKeepsDyingEndsTheRun() {
        let r = runScript("""
            local q = jobrun.Queue()
            local me = jobrun.current_process().pid
            local last
            local function monitor()   -- a live one other than the last killed
              for i = 1, 100 do
                local f = io.popen("pgrep -P " .. me .. " -x -r R,S,D jobrun-monitor")
                for line in f:lines() do
                  local m = tonumber(line)
                  if m and m ~= last then f:close(); return m end
                end
                f:close()
                pcall(q.get, q, true, 0.05)   -- a wait: the main process looks at its monitor
              end
            end
            for i = 1, 4 do
              last = monitor()
              print("killing monitor", i, last ~= nil)
              os.execute("kill -9 " .. last)
            end
            for i = 1, 100 do pcall(q.get, q, true, 0.05) end   -- waits: the main process looks at its monitor
            print("still running")
            """, timeout: 30)
        #expect(!r.timedOut)
        #expect(r.status == 1)
        #expect(r.stdout.hasSuffix("killing monitor\t4\ttrue\n"), "\(r.stdout)")
        #expect(r.stderr.hasSuffix("was killed by signal 9 (SIGKILL), and 4 monitors died in this run: the run cannot go on unsupervised\n"),
                "\(r.stderr)")
    }

    /// Workers stopped (SIGSTOP) while they may hold the status line's lock
    /// or a queue's lock do not stop the monitor: a death elsewhere is still
    /// reported, and the repair that needs the held queue lock waits alone.
    @Test func stoppedProcessesHoldingLocksDoNotStopTheMonitor() {
        let r = runScript("""
            local ready, gate = jobrun.Queue(), jobrun.Queue()
            local q1 = jobrun.JoinableQueue()
            -- dies holding a task of q1: its repair needs q1's lock
            q1:put("x")
            local d1 = jobrun.Process{name = "dies-1", target = function() q1:get(); ready:put(0); gate:get(); os.exit(3) end}
            d1:start(); ready:get()
            local spinners, pids = {}, {}
            for i = 1, 6 do
              spinners[i] = jobrun.Process{name = "spinner-" .. i, target = function()
                local n = 0
                while true do
                  n = n + 1
                  if i % 2 == 0 then
                    pcall(jobrun.progress, "c" .. i .. "-" .. n, 1)   -- under the status line's lock
                  else
                    q1:put(n); q1:get(); q1:task_done()                -- under q1's lock
                  end
                  if n == 100 then ready:put(i) end
                end
              end}
              spinners[i]:start()
              pids[i] = spinners[i].pid
            end
            for i = 1, 6 do ready:get() end
            os.execute("kill -STOP " .. table.concat(pids, " "))
            gate:put(1); d1:join()
            local jq = jobrun.JoinableQueue()
            local k = jobrun.Process{name = "dies-2", target = function() jq:get(); os.exit(3) end}
            k:start(); jq:put(1)
            local ok, e = pcall(jq.join, jq)
            print(ok, e.kind)
            for i = 1, 6 do spinners[i]:kill(); spinners[i]:join() end
            """, options: ["--progress"], timeout: 30)
        #expect(!r.timedOut, "the monitor stopped supervising")
        #expect(r.stdout == "false\tWorkerDied\n", "\(r.stdout)\n\(r.stderr)")
    }
}

@Suite("Process limits")
struct ProcessLimitTests {
    /// Past 4,096 live processes a start is refused with a clear
    /// ProcessError (never run unsupervised); those started all end.
    @Test func fiveThousandLiveProcessesEndOrAreRefusedClearly() {
        let r = runScript("""
            local go, never = jobrun.Event(), jobrun.Queue()
            local ps, err = {}, nil
            for i = 1, 5000 do
              -- the last one waits for what never comes: it must be supervised
              local p = jobrun.Process{target = function() go:wait(); if i == 5000 then never:get() end end}
              local ok, e = pcall(p.start, p)
              if not ok then err = e; break end
              ps[#ps + 1] = p
            end
            go:set()
            local bad = 0
            for _, p in ipairs(ps) do
              local ok = pcall(p.join, p)
              if not ok or p.exitcode ~= 0 then bad = bad + 1 end
            end
            print(#ps, bad, err and err.kind)
            if err then print(err.message) end
            """, timeout: 240)
        #expect(!r.timedOut, "a process past the limit ran unsupervised")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "4095\t0\tProcessError" || lines.first == "5000\t1\tnil", "\(r.stdout)\n\(r.stderr)")
        if lines.first?.hasSuffix("ProcessError") == true {
            #expect(lines.count == 2 && lines[1].contains("too many processes: 4096 processes of the run are alive"), "\(r.stdout)")
        }
    }

    /// A Pool whose workers cannot all start fails at the first refused
    /// start and ends the workers it had started: none is left running.
    @Test func poolThatCannotStartItsWorkersEndsThoseItStarted() {
        let r = runScript("""
            local ok, e = pcall(jobrun.Pool, {workers = 100})
            print(ok, e.kind, e.message:match("fork: .*$"), #jobrun.active_children())
            """, shell: "ulimit -u $(( $(ps -u $(id -u) -o pid= | wc -l) + 20 ))", asNobody: true, timeout: 60)
        #expect(!r.timedOut)
        expectFields(r, [
            "a Pool whose workers cannot all start fails": "false", "with a ProcessError": "ProcessError",
            "that gives fork's reason": "fork: Resource temporarily unavailable", "and no worker it started is left": "0",
        ])
        expectStatus(r)
    }

    /// Under `ulimit -u` a start that cannot fork is a ProcessError, and the
    /// run stays supervised (its deadlock is found); with no process to spare
    /// for the monitor, the run does not start at all.
    @Test func failedForksUnderUlimitAreClearErrors() {
        let r = runScript("""
            local go = jobrun.Event()
            local ps, err = {}, nil
            for i = 1, 100 do
              local p = jobrun.Process{target = function() go:wait() end}
              local ok, e = pcall(p.start, p)
              if not ok then err = e; break end
              ps[#ps + 1] = p
            end
            print(#ps < 100, err.kind, err.message:match("fork: .*$"))
            go:set()
            for _, p in ipairs(ps) do p:join() end
            local q = jobrun.Queue()
            local ok, e = pcall(q.get, q)
            print(ok, e.kind)
            """, shell: "ulimit -u $(( $(ps -u $(id -u) -o pid= | wc -l) + 20 ))", asNobody: true, timeout: 60)
        #expect(!r.timedOut)
        expectLines(r, [
            "a fork refused by ulimit -u is a ProcessError with fork's message": "true\tProcessError\tfork: Resource temporarily unavailable",
            "the run is still supervised: a get no one feeds is a Deadlock": "false\tDeadlock",
        ])
        let none = runScript("print('ran')", shell: "ulimit -u 1", asNobody: true, timeout: 30)
        #expect(!none.timedOut)
        #expect(none.status == 1)
        #expect(none.stdout == "")
        #expect(none.stderr == "jobrun: cannot start the run's monitor: fork: Resource temporarily unavailable: the run cannot go on unsupervised\n",
                "\(none.stderr)")
    }
}
