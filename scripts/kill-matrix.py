#!/usr/bin/env python3
"""The kill matrix: runs scripts/kill-matrix-trial.lua many times, each time sending
SIGKILL, or SIGSTOP and later SIGCONT, to one random process of the run at a
random moment: a consumer or a producer (the trial script signals them), the
main process or the monitor (signalled from here). The cases rotate over
target x signal x redeliver, so N trials cover each case about N/16 times.

What each trial must show (kill-matrix-trial.lua checks the items):
  - no hang: the run ends within --timeout seconds;
  - never a Deadlock verdict (every process is alive or was killed on purpose);
  - consumer, producer, or any SIGSTOP: the trial's verdict is PASS (no item
    lost or processed twice beyond what the death explains, exact counts);
  - the monitor SIGKILLed: the main process starts another, and every item
    is processed exactly once;
  - the main process SIGKILLed: the run ends: within a few seconds no process
    of the run is left (the monitor kills the workers; each worker also dies
    with its parent), and none is left as a zombie of the run;
  - in every case, nothing of the run outlives it: this driver is the child
    subreaper of the run, so any process of the run still alive after it
    ended is found here.

Usage: kill-matrix.py --bin JOBRUN [--trials N] [--items N] [--seed S]
                      [--only TARGET:SIGNAL:REDELIVER,...] [--minutes M] [--timeout S] [--verbose]
Prints one line per failure, with the command that reproduces it, then a
table; exits 1 if any trial failed.
"""
import argparse
import ctypes
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIAL = os.path.join(ROOT, "scripts", "kill-matrix-trial.lua")
CASES = [(t, s, r) for t in ("consumer", "producer", "main", "monitor")
         for s in ("KILL", "STOP") for r in (1, 0)]
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("kill-matrix: prctl(PR_SET_CHILD_SUBREAPER) failed")


def children(pid):
    """Pids of `pid`'s children, oldest first (/proc/PID/task/*/children)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def reap_orphans():
    """Reaps processes of ended runs that were handed to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def signal_later(pid_of, sig, delay, rng):
    """Waits `delay`, then sends `sig` to the process `pid_of()` names; for
    SIGSTOP, SIGCONT follows after 0.05-0.5 s. The delay counts from the
    moment the run's six processes (monitor, 2 producers, 3 consumers) exist.
    Returns what it did."""
    while pid_of() is not None and len(children(pid_of.main)) < 6:
        time.sleep(0.002)
    time.sleep(delay)
    pid = pid_of()
    if pid is None:
        return "the run had ended before the signal"
    try:
        os.kill(pid, signal.SIGKILL if sig == "KILL" else signal.SIGSTOP)
    except ProcessLookupError:
        return "the run had ended before the signal"
    if sig == "STOP":
        pause = 0.05 + rng.random() * 0.45
        time.sleep(pause)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        return f"SIGSTOP of pid {pid} at {delay:.3f} s, SIGCONT {pause:.3f} s later"
    return f"SIGKILL of pid {pid} at {delay:.3f} s"


def trial(args, case, seed):
    """Runs one trial; returns (ok, description)."""
    target, sig, redeliver = case
    rng = random.Random(seed)
    cmd = [args.bin, TRIAL, str(redeliver), str(seed), str(args.items), target, sig]
    repro = (f"scripts/killtest --only {target}:{sig}:{redeliver} --seed {seed} --trials 1"
             if target in ("main", "monitor") else
             f"{os.path.basename(args.bin)} scripts/kill-matrix-trial.lua {' '.join(cmd[2:])}")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    note = ""
    if target == "main":
        def main_pid():
            return proc.pid if proc.poll() is None else None
        main_pid.main = proc.pid
        note = signal_later(main_pid, sig, rng.random() * args.window, rng)
    elif target == "monitor":
        def monitor():
            if proc.poll() is not None:
                return None
            kids = children(proc.pid)    # the monitor is forked first
            return kids[0] if kids else None
        monitor.main = proc.pid
        note = signal_later(monitor, sig, rng.random() * args.window, rng)
    try:
        out, err = proc.communicate(timeout=args.timeout)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    # Whatever is left of the run is now ours (subreaper): it must end soon.
    deadline = time.monotonic() + args.grace
    left = []
    while True:
        reap_orphans()
        left = [p for p in children(os.getpid()) if state(p) not in (None, "Z")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        try:
            os.kill(p, signal.SIGCONT)
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reap_orphans()

    lines = out.strip().splitlines()
    verdict = lines[-1] if lines else ""
    tail = " | ".join(err.strip().splitlines()[-3:])
    what = f"{target} {sig} redeliver={redeliver} seed={seed}" + (f" ({note})" if note else "")
    if hung:
        return False, f"HANG after {args.timeout} s: {what}; repro: {repro}"
    if "Deadlock" in err or "Deadlock" in out:
        return False, f"false Deadlock: {what}: {tail}; repro: {repro}"
    if left:
        return False, f"left behind (pids {left}): {what}; repro: {repro}"
    if target == "main" and sig == "KILL" and proc.returncode == -signal.SIGKILL:
        return True, what     # ended, nothing left: checked above
    if verdict.startswith("PASS"):
        return True, what
    if verdict.startswith("FAIL"):
        return False, f"{verdict} [{what}]; repro: {repro}"
    return False, f"no verdict (exit {proc.returncode}): {what}: {tail}; repro: {repro}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--grace", type=float, default=5)
    ap.add_argument("--window", type=float, default=0.3,
                    help="main/monitor: signal within this many seconds of the start")
    ap.add_argument("--verbose", action="store_true", help="a line for every trial")
    args = ap.parse_args()
    become_subreaper()
    cases = CASES
    if args.only:
        want = [tuple(c.split(":")) for c in args.only.split(",")]
        cases = [c for c in CASES if (c[0], c[1], str(c[2])) in want]
        if not cases:
            sys.exit(f"kill-matrix: no case matches --only {args.only}")
    base = args.seed if args.seed is not None else random.randrange(1, 1 << 30)
    stats = {c: [0, 0] for c in cases}     # case -> [trials, failures]
    failures = 0
    start = time.monotonic()
    for i in range(args.trials):
        if args.minutes and time.monotonic() - start > args.minutes * 60:
            break
        case = cases[i % len(cases)]
        seed = base + i
        ok, text = trial(args, case, seed)
        stats[case][0] += 1
        if not ok:
            stats[case][1] += 1
            failures += 1
            print(text, flush=True)
        elif args.verbose:
            print("ok: " + text, flush=True)
    total = sum(s[0] for s in stats.values())
    print(f"{total} trials in {time.monotonic() - start:.0f} s (first seed {base}), {failures} failed")
    for (t, s, r), (n, f) in stats.items():
        if n:
            print(f"  {t:8} SIG{s:4} redeliver={r}: {n:4} trials, {f} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
