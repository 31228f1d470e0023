#!/usr/bin/env python3
"""Runs the same workloads in jobrun and in Python's multiprocessing, side by
side in one run, and prints a table of the figures, their ratio and the design
target (design.md, "Performance targets").

    python3 scripts/benchlib/bench.py --jobrun .build/release/jobrun [--quick]
        [--json FILE] [--only NAME[,NAME]] [--timeout SECONDS]

`scripts/bench` builds jobrun and calls this. Each jobrun workload is a Lua
script beside this file; each Python workload is its twin in py_workloads.py.
Both run as separate processes (own process group, bounded by a timeout) and
print one JSON line with their own timing of the hot section. Throughput runs
grow their item count until one run lasts long enough to time, then the best
of a few runs is kept (the machine is shared; interference only slows a run
down). A workload that fails shows "failed" in the table, with its stderr
tail below, and the others still run.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
WORKLOADS = ["1x1", "2x2", "1mib", "spawn", "idle"]

QUICK = dict(min_seconds=0.2, reps=1, items_py=10_000, items_jr=20_000,
             big_py=50, big_jr=100, spawn_rounds=3, idle_seconds=1.0,
             memcpy_seconds=0.3)
DEFAULT = dict(min_seconds=1.5, reps=3, items_py=50_000, items_jr=500_000,
               big_py=300, big_jr=1000, spawn_rounds=7, idle_seconds=3.0,
               memcpy_seconds=1.0)
BIG_MAXSIZE = 8        # Queue(8) for 1 MiB items, on both sides
SPAWN_WORKERS = 100


class Failed(Exception):
    def __init__(self, reason, output=""):
        super().__init__(reason)
        self.reason = reason
        self.output = output

    def tail(self, lines=15):
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


class Runner:
    def __init__(self, jobrun, timeout):
        self.jobrun = jobrun
        self.timeout = timeout
        self.leftovers = []   # notes about process groups a run left behind

    def run(self, cmd):
        """Runs cmd in its own process group; returns its last stdout line as JSON."""
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._killpg(proc.pid)
            out, err = proc.communicate()
            raise Failed(f"timed out after {self.timeout:g} s", err)
        self._reap_group(proc.pid, cmd)
        if proc.returncode != 0:
            raise Failed(f"exit status {proc.returncode}", err)
        lines = [l for l in out.splitlines() if l.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise Failed("no JSON result line on stdout", out + err)

    @staticmethod
    def _killpg(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap_group(self, pgid, cmd):
        # A run must not leave processes behind; give them a moment, then say so.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.leftovers.append(f"{os.path.basename(cmd[1])} {' '.join(cmd[2:])}: "
                              "processes still alive 2 s after exit (killed)")
        self._killpg(pgid)

    def lua(self, script, *args):
        return self.run([self.jobrun, os.path.join(HERE, script), *map(str, args)])

    def py(self, name, *args):
        return self.run([sys.executable, os.path.join(HERE, "py_workloads.py"),
                         name, *map(str, args)])


def best_rate(run, n, key, cfg):
    """Grows n until one run lasts cfg.min_seconds, then keeps the best of cfg.reps."""
    for _ in range(8):
        r = run(n)
        if r["seconds"] >= cfg["min_seconds"]:
            break
        grow = 1.3 * cfg["min_seconds"] / max(r["seconds"], 1e-3)
        n = max(n + 1, int(n * min(50.0, max(2.0, grow))))
    runs = [r] + [run(n) for _ in range(cfg["reps"] - 1)]
    rates = [x[key] / max(x["seconds"], 1e-9) for x in runs]
    return max(rates), runs


def side(fn):
    """Calls fn() and returns (value, raw, None), or (None, None, Failed)."""
    try:
        value, raw = fn()
        return value, raw, None
    except Failed as e:
        return None, None, e


# --- workloads -------------------------------------------------------------

def items_workload(r, cfg, producers, consumers):
    def jr():
        return best_rate(lambda n: r.lua("queue_items.lua", n, producers, consumers),
                         cfg["items_jr"], "items", cfg)

    def py():
        return best_rate(lambda n: r.py("queue_items", n, producers, consumers),
                         cfg["items_py"], "items", cfg)

    return [dict(
        id=f"{producers}x{consumers}",
        title=f"{producers} producer{'s' if producers > 1 else ''} -> "
              f"{consumers} consumer{'s' if consumers > 1 else ''}, small strings, "
              "JoinableQueue + task_done",
        unit="items/s", higher_is_better=True, target=20.0,
        target_text=">= 20x", jr=side(jr), py=side(py))]


def memcpy_baseline(cfg, span):
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise Failed("no C compiler (cc, gcc or clang) on PATH")
    with tempfile.TemporaryDirectory(prefix="jobrun-bench-") as tmp:
        exe = os.path.join(tmp, "memcpy")
        c = subprocess.run([cc, "-O2", "-o", exe, os.path.join(HERE, "memcpy.c")],
                           capture_output=True, text=True, timeout=120)
        if c.returncode != 0:
            raise Failed(f"{cc} failed", c.stdout + c.stderr)
        runs = []
        for _ in range(cfg["reps"]):
            p = subprocess.run([exe, str(MIB), str(span), str(cfg["memcpy_seconds"])],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                raise Failed(f"memcpy exit status {p.returncode}", p.stderr)
            runs.append(json.loads(p.stdout))
        return max(x["bytes"] / x["seconds"] / 1e6 for x in runs), runs


def big_workload(r, cfg):
    def jr():
        rate, runs = best_rate(lambda n: r.lua("big_strings.lua", n, MIB, BIG_MAXSIZE),
                               cfg["big_jr"], "bytes", cfg)
        return rate / 1e6, runs

    def py():
        rate, runs = best_rate(lambda n: r.py("big_strings", n, MIB, BIG_MAXSIZE),
                               cfg["big_py"], "bytes", cfg)
        return rate / 1e6, runs

    jr_side = side(jr)
    rows = [dict(id="1mib", title=f"1 MiB strings, Queue({BIG_MAXSIZE}), 1 -> 1",
                 unit="MB/s", higher_is_better=True, target=2.0, target_text=">= 2x",
                 jr=jr_side, py=side(py))]
    rows.append(dict(
        id="1mib-memcpy", title="1 MiB strings vs memcpy of one 1 MiB block, repeated",
        unit="MB/s", higher_is_better=True, target=1 / 3, target_text=">= 1/3 of memcpy",
        other="memcpy", fraction=True, jr=jr_side,
        py=side(lambda: memcpy_baseline(cfg, MIB))))
    rows.append(dict(
        id="1mib-memcpy-ram",
        title="(info) same vs memcpy of 1 MiB blocks over 64 MiB (RAM)",
        unit="MB/s", higher_is_better=True, target=None, target_text="info",
        other="memcpy", fraction=True, jr=jr_side,
        py=side(lambda: memcpy_baseline(cfg, 64 * MIB))))
    return rows


def spawn_workload(r, cfg):
    def pick(res):
        return min(res["seconds"]), res

    return [dict(id="spawn", title=f"start and join {SPAWN_WORKERS} forked workers "
                 f"(best of {cfg['spawn_rounds']})",
                 unit="s", higher_is_better=False, target=5.0,
                 target_text=">= 5x faster",
                 jr=side(lambda: pick(r.lua("spawn.lua", SPAWN_WORKERS, cfg["spawn_rounds"]))),
                 py=side(lambda: pick(r.py("spawn", SPAWN_WORKERS, cfg["spawn_rounds"]))))]


def idle_workload(r, cfg):
    secs = cfg["idle_seconds"]
    hz = os.sysconf("SC_CLK_TCK")

    def whole(run):
        # CPU of every process of the run that was reaped (utime + stime), over
        # the run's wall time: catches a monitor or helper that spins.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        res = run()
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return res, 100.0 * cpu / wall, wall

    runs = {}

    def jr_run():
        runs["jr"] = whole(lambda: r.lua("idle.lua", secs, hz))
        return runs["jr"]

    def py_run():
        runs["py"] = whole(lambda: r.py("idle", secs))
        return runs["py"]

    jr = side(lambda: (100.0 * jr_run()[0]["cpu_seconds"] / runs["jr"][0]["seconds"],
                       runs["jr"][0]))
    py = side(lambda: (100.0 * py_run()[0]["cpu_seconds"] / runs["py"][0]["seconds"],
                       runs["py"][0]))

    def whole_side(key, s):
        if s[2] is not None:
            return s
        res, pct, wall = runs[key]
        return pct, dict(cpu_percent=pct, wall_seconds=wall), None

    return [
        dict(id="idle", title=f"idle consumer blocked in get for {secs:g} s, its CPU",
             unit="% CPU", higher_is_better=False, target=1.0,
             target_text="~0% (< 1%)", absolute=True, jr=jr, py=py),
        dict(id="idle-run", title="(info) same, whole run incl. startup, every process",
             unit="% CPU", higher_is_better=False, target=None, target_text="info",
             absolute=True, jr=whole_side("jr", jr), py=whole_side("py", py)),
    ]


# --- table -----------------------------------------------------------------

def fmt(value, unit):
    if value is None:
        return ""
    if unit == "s":
        return f"{value * 1000:,.1f} ms"
    if unit == "% CPU":
        return f"{value:.2f}% CPU"
    return f"{value:,.0f} {unit}"


def short(e):
    last = e.tail(1).strip()
    text = f"failed: {e.reason}" + (f": {last}" if last else "")
    return text if len(text) <= 70 else text[:67] + "..."


def evaluate(row):
    jr, py = row["jr"][0], row["py"][0]
    row["ratio"] = None
    row["met"] = None
    if row.get("absolute"):
        if jr is not None and row["target"] is not None:
            row["met"] = jr < row["target"]
        return
    if jr is None or py is None or not jr or not py:
        return
    row["ratio"] = jr / py if row["higher_is_better"] else py / jr
    if row["target"] is not None:
        row["met"] = row["ratio"] >= row["target"] * (1 - 1e-9)


def render(rows):
    header = ["workload", "jobrun", "python / baseline", "ratio", "target", "met"]
    table, failures, seen = [], [], set()
    for row in rows:
        cells = [row["title"]]
        for key in ("jr", "py"):
            value, _, err = row[key]
            if err is not None:
                cells.append(short(err))
                if id(err) not in seen:  # rows may share one side's run
                    seen.add(id(err))
                    name = "jobrun" if key == "jr" else row.get("other", "python")
                    failures.append((f"{row['id']} ({name}): {err.reason}", err.tail()))
            else:
                text = fmt(value, row["unit"])
                if key == "py" and row.get("other"):
                    text = f"{row['other']} {text}"
                cells.append(text)
        if row["ratio"] is None:
            cells.append("-")
        elif row.get("fraction"):
            cells.append(f"{row['ratio']:.3f} of it")
        else:
            cells.append(f"{row['ratio']:.2f}x")
        cells.append(row["target_text"])
        cells.append({True: "yes", False: "NO", None: "-"}[row["met"]]
                     if not (row["jr"][2] or row["py"][2]) else "failed")
        table.append(cells)
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
    right = {1, 2, 3}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [line(header), "|" + "|".join(("-" * (w + 1) + ":") if i in right
                                        else ("-" * (w + 2))
                                        for i, w in enumerate(widths)) + "|"]
    out += [line(c) for c in table]
    return "\n".join(out), failures


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobrun", required=True, help="path of the jobrun binary")
    ap.add_argument("--quick", action="store_true", help="small counts, a few seconds")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help=f"run only these workloads (repeatable or comma-separated): "
                         f"{', '.join(WORKLOADS)}")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed per process run (default 30 quick, 120 otherwise)")
    a = ap.parse_args()

    jobrun = os.path.abspath(a.jobrun)
    if not os.access(jobrun, os.X_OK):
        sys.exit(f"bench: no jobrun binary at {jobrun}")
    only = set(WORKLOADS)
    if a.only:
        only = {n.strip() for o in a.only for n in o.split(",") if n.strip()}
        unknown = only - set(WORKLOADS)
        if unknown:
            sys.exit(f"bench: unknown workload {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(WORKLOADS)}")
    cfg = QUICK if a.quick else DEFAULT
    timeout = a.timeout or (30.0 if a.quick else 120.0)
    r = Runner(jobrun, timeout)

    load0 = os.getloadavg()
    print(f"bench: {'quick' if a.quick else 'default'} run; {os.cpu_count()} CPUs "
          f"({cpu_model()}); load average {load0[0]:.2f}; Python {platform.python_version()}; "
          f"jobrun {jobrun}", flush=True)
    if load0[0] > 0.5 * (os.cpu_count() or 1):
        print("bench: warning: the machine is busy; figures will be noisy", flush=True)
    started = time.monotonic()
    rows = []
    steps = [("1x1", lambda: items_workload(r, cfg, 1, 1)),
             ("2x2", lambda: items_workload(r, cfg, 2, 2)),
             ("1mib", lambda: big_workload(r, cfg)),
             ("spawn", lambda: spawn_workload(r, cfg)),
             ("idle", lambda: idle_workload(r, cfg))]
    for name, step in steps:
        if name in only:
            print(f"bench: running {name} ...", file=sys.stderr, flush=True)
            rows += step()
    for row in rows:
        evaluate(row)
    elapsed = time.monotonic() - started

    table, failures = render(rows)
    print()
    print(table)
    print()
    print("ratio: jobrun / Python for rates (times: Python / jobrun); best of "
          f"{cfg['reps']} runs of >= {cfg['min_seconds']:g} s each for rates. "
          "MB = 10^6 bytes.")
    print(f"bench: finished in {elapsed:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    for note, tail in failures:
        print(f"\nfailed: {note}")
        if tail:
            print("  " + tail.replace("\n", "\n  "))
    for note in r.leftovers:
        print(f"\nwarning: {note}")

    if a.json:
        doc = dict(mode="quick" if a.quick else "default", jobrun=jobrun,
                   python=platform.python_version(), cpus=os.cpu_count(),
                   cpu=cpu_model(), load_average_start=load0[0],
                   seconds=elapsed, leftovers=r.leftovers, results=[])
        for row in rows:
            item = {k: row[k] for k in ("id", "title", "unit", "ratio", "target",
                                        "target_text", "met")}
            for key, name in (("jr", "jobrun"), ("py", row.get("other", "python"))):
                value, raw, err = row[key]
                item[name] = value
                item[name + "_runs"] = raw
                if err is not None:
                    item[name + "_error"] = dict(reason=err.reason, tail=err.tail())
            doc["results"].append(item)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
