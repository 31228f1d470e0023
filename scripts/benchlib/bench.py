#!/usr/bin/env python3
"""Runs the same workloads in jobrun and in Python's multiprocessing, side by
side in one run, and prints a table of the figures, their ratio and the design
target (design.md, "Performance targets").

    python3 scripts/benchlib/bench.py --jobrun .build/release/jobrun [--quick] [--full]
        [--json FILE] [--only NAME[,NAME]] [--timeout SECONDS]

`scripts/bench` builds jobrun and calls this. Each jobrun workload is a Lua
script beside this file; each Python workload is its twin in py_workloads.py.
Both run as separate processes (own process group, bounded by a timeout) and
print one JSON line with their own timing of the hot section. Throughput runs
grow their item count until one run lasts long enough to time, then the best
of a few runs is kept (the machine is shared; interference only slows a run
down). A workload that fails shows "failed" in the table, with its stderr
tail below, and the others still run.

The map table (issue 15) runs one function over stdin's lines with
`jobrun map`, a jobrun Pool script, `xargs -P`, GNU parallel and Python's
Pool.imap, side by side, and gives jobrun's rates as ratios of the others'
(`jobrun map` shows n/a where the binary has no map subcommand).

After that comes a scaling table (jobrun, with Python beside it):
throughput for 1, 2, 4 and 8 producer/consumer pairs, and for item sizes from
8 B to 4 MiB.
"""
import argparse
import json
import os
import re
import select
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
WORKLOADS = ["1x1", "2x2", "bounded", "tables", "1mib", "pingpong", "pool", "stream",
             "spawn", "script", "idle", "memory", "plugin", "map-lines", "map-cpu",
             "pairs", "sizes"]
ALIASES = {"scaling": ["pairs", "sizes"], "map": ["map-lines", "map-cpu"]}

QUICK = dict(min_seconds=0.2, reps=1, items_py=10_000, items_jr=20_000,
             big_py=50, big_jr=100, spawn_rounds=3, idle_seconds=1.0,
             memcpy_seconds=0.3, pp_rounds_jr=10_000, pp_rounds_py=2_000,
             pool_rounds=3, script_rounds=2, scale_min_seconds=0.1, scale_reps=1)
DEFAULT = dict(min_seconds=1.5, reps=3, items_py=50_000, items_jr=500_000,
               big_py=300, big_jr=1000, spawn_rounds=7, idle_seconds=10.0,
               memcpy_seconds=1.0, pp_rounds_jr=50_000, pp_rounds_py=10_000,
               pool_rounds=7, script_rounds=5, scale_min_seconds=0.5, scale_reps=2)
BIG_MAXSIZE = 8        # Queue(8) for 1 MiB items, on both sides
BOUNDED_MAXSIZE = 100  # JoinableQueue(100) for the bounded row, on both sides
SPAWN_WORKERS = 100
SCRIPT_WORKERS = 20
PP_WARMUP = 1000       # untimed round trips before the timed ones
POOL_ITEMS = 100_000
POOL_CHUNK = 1000
SCALE_PAIRS = [1, 2, 4, 8]
SCALE_SIZES = [8, 64, 1 << 10, 16 << 10, 256 << 10, MIB, 4 * MIB]


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

    @staticmethod
    def _group_alive(pgid):
        """Whether a process of group pgid is still alive. Zombies do not count:
        a process whose parent exited first (jobrun's monitor) is reparented
        to init, and some inits (in containers and VMs) reap only now and then."""
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False

    def _reap_group(self, pgid, cmd):
        # A run must not leave processes behind; give them a moment, then say so.
        deadline = time.monotonic() + 2.0
        while True:
            if not self._group_alive(pgid):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.leftovers.append(f"{os.path.basename(cmd[1])} {' '.join(cmd[2:])}: "
                              "processes still alive 2 s after exit (killed)")
        self._killpg(pgid)

    def hold(self, cmd, measure, ready_line=True, settle=0.3):
        """Starts cmd in its own process group with a pipe on stdin; once it is
        ready (its first stdout line, parsed as JSON, when ready_line; else
        `settle` seconds after it sleeps), calls measure(pid, first) while it
        waits on stdin, then sends it a line and lets it finish. Returns
        measure's result."""
        proc = subprocess.Popen(cmd, cwd=HERE, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        try:
            first = None
            if ready_line:
                buf, fd = b"", proc.stdout.fileno()
                while b"\n" not in buf:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise subprocess.TimeoutExpired(cmd, self.timeout)
                    if select.select([fd], [], [], left)[0]:
                        chunk = os.read(fd, 4096)
                        if not chunk:
                            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                            raise Failed(f"exit status {proc.returncode} before it was ready",
                                         proc.stderr.read())
                        buf += chunk
                try:
                    first = json.loads(buf.split(b"\n", 1)[0])
                except ValueError:
                    raise Failed("bad first line on stdout", buf.decode(errors="replace"))
            else:
                while proc_state(proc.pid) not in ("S", None):
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(cmd, self.timeout)
                    time.sleep(0.02)
                time.sleep(settle)
            result = measure(proc.pid, first)
            out, err = proc.communicate(input="\n",
                                        timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._killpg(proc.pid)
            out, err = proc.communicate()
            raise Failed(f"timed out after {self.timeout:g} s", err)
        except BaseException:
            self._killpg(proc.pid)
            proc.communicate()
            raise
        self._reap_group(proc.pid, cmd)
        if proc.returncode != 0:
            raise Failed(f"exit status {proc.returncode}", err)
        return result

    def lua(self, script, *args):
        return self.run([self.jobrun, os.path.join(HERE, script), *map(str, args)])

    def py(self, name, *args):
        return self.run([sys.executable, os.path.join(HERE, "py_workloads.py"),
                         name, *map(str, args)])


def paired_rates(jr_run, jr_n, py_run, py_n, key, cfg, min_seconds=None, reps=None):
    """Rates of jobrun and Python for one row: for each side, grows n until
    one run lasts min_seconds (default cfg.min_seconds), then keeps the best
    of reps (default cfg.reps). The measured runs are interleaved (jobrun,
    Python, jobrun, ...) so that a change in the machine's load during the
    row weighs on both sides alike. Returns (jr side, py side) as side()
    does; a side that fails does not stop the other."""
    min_seconds = min_seconds or cfg["min_seconds"]
    reps = reps or cfg["reps"]

    def calibrate(run, n):
        for _ in range(8):
            r = run(n)
            if r["seconds"] >= min_seconds:
                break
            grow = 1.3 * min_seconds / max(r["seconds"], 1e-3)
            n = max(n + 1, int(n * min(50.0, max(2.0, grow))))
        return n, r

    sides = {}
    for name, run, n in (("jr", jr_run, jr_n), ("py", py_run, py_n)):
        try:
            sides[name] = dict(run=run, n=calibrate(run, n), error=None)
        except Failed as e:
            sides[name] = dict(run=run, n=None, error=e)
    for s in sides.values():
        if s["error"] is None:
            s["runs"] = [s["n"][1]]
    for _ in range(reps - 1):
        for s in sides.values():
            if s["error"] is not None:
                continue
            try:
                s["runs"].append(s["run"](s["n"][0]))
            except Failed as e:
                s["error"] = e

    def result(s):
        if s["error"] is not None:
            return None, None, s["error"]
        rates = [x[key] / max(x["seconds"], 1e-9) for x in s["runs"]]
        return max(rates), s["runs"], None

    return result(sides["jr"]), result(sides["py"])


def side(fn):
    """Calls fn() and returns (value, raw, None), or (None, None, Failed)."""
    try:
        value, raw = fn()
        return value, raw, None
    except Failed as e:
        return None, None, e


# --- workloads -------------------------------------------------------------

def items_workload(r, cfg, producers, consumers, maxsize=0, kind="string",
                   row_id=None, target=20.0):
    args = (producers, consumers, maxsize, kind)

    jr, py = paired_rates(lambda n: r.lua("queue_items.lua", n, *args), cfg["items_jr"],
                          lambda n: r.py("queue_items", n, *args), cfg["items_py"], "items", cfg)
    what = {"string": "small strings",
            "table": "tables {id, name} (Python: dicts)"}[kind]
    queue = f"JoinableQueue({maxsize})" if maxsize > 0 else "JoinableQueue"
    return [dict(
        id=row_id or f"{producers}x{consumers}",
        title=f"{producers} producer{'s' if producers > 1 else ''} -> "
              f"{consumers} consumer{'s' if consumers > 1 else ''}, {what}, "
              f"{queue} + task_done",
        unit="items/s", higher_is_better=True, target=target,
        target_text=f">= {target:g}x", jr=jr, py=py)]


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
    def mb(s):
        rate, runs, error = s
        return (rate / 1e6 if rate is not None else None), runs, error

    jr_side, py_side = (mb(x) for x in paired_rates(
        lambda n: r.lua("big_strings.lua", n, MIB, BIG_MAXSIZE), cfg["big_jr"],
        lambda n: r.py("big_strings", n, MIB, BIG_MAXSIZE), cfg["big_py"], "bytes", cfg))
    rows = [dict(id="1mib", title=f"1 MiB strings, Queue({BIG_MAXSIZE}), 1 -> 1",
                 unit="MB/s", higher_is_better=True, target=2.0, target_text=">= 2x",
                 jr=jr_side, py=py_side)]
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


def pingpong_workload(r, cfg):
    # Best of cfg.reps runs, per figure (the median and the p99 may come from
    # different runs); every run's figures are in the JSON.
    def best(run):
        return [run() for _ in range(cfg["reps"])]

    jr_runs = side(lambda: (None, best(lambda: r.lua("pingpong.lua", cfg["pp_rounds_jr"],
                                                      PP_WARMUP))))
    py_runs = side(lambda: (None, best(lambda: r.py("pingpong", cfg["pp_rounds_py"],
                                                     PP_WARMUP))))

    def pick(runs, key):
        if runs[2] is not None:
            return runs
        return min(x[key] for x in runs[1]), runs[1], None

    rows = []
    for key, name in (("median_us", "median"), ("p99_us", "p99")):
        rows.append(dict(
            id=f"pingpong-{name}",
            title=f"ping-pong over two Queues, round trip, {name} "
                  f"({cfg['pp_rounds_jr']:,} / {cfg['pp_rounds_py']:,} trips)",
            unit="µs", higher_is_better=False, target=10.0,
            target_text=">= 10x lower", jr=pick(jr_runs, key), py=pick(py_runs, key)))
    return rows


def pool_workload(r, cfg):
    workers = os.cpu_count() or 2

    def pick(res):
        return res["items"] / min(res["seconds"]), res

    args = (POOL_ITEMS, workers, POOL_CHUNK, cfg["pool_rounds"])
    return [dict(id="pool", title=f"Pool map of {POOL_ITEMS:,} x * 2, chunksize {POOL_CHUNK}, "
                 f"{workers} workers (best of {cfg['pool_rounds']})",
                 unit="items/s", higher_is_better=True, target=10.0, target_text=">= 10x",
                 jr=side(lambda: pick(r.lua("pool_map.lua", *args))),
                 py=side(lambda: pick(r.py("pool_map", *args))))]


STREAM_LINES = 1_000_000   # about 46 MB of lines
STREAM_LINES_QUICK = 200_000
STREAM_FULL_BYTES = 1 << 30   # --full: a 1 GiB file (23.4M lines)
STREAM_FULL_ROUNDS = 2
STREAM_LINE = "line {:09d} of the input, some forty bytes\n"   # 46 bytes


def write_lines(f, n):
    """Writes n lines of STREAM_LINE's shape to f, in blocks."""
    for first in range(0, n, 100_000):
        f.write("".join(STREAM_LINE.format(i) for i in range(first, min(n, first + 100_000))))


def stream_workload(r, cfg, full=False):
    """Pool over a file's lines (issue 15): imap over io.lines, lazily,
    against map over the same lines read into a table first; the rate
    (target: within 10%) and the peak resident memory that --stats-json
    reports for the main process and the workers. --full: a 1 GiB file."""
    workers = os.cpu_count() or 2
    if full:
        n = -(-STREAM_FULL_BYTES // len(STREAM_LINE.format(0)))
        rounds = STREAM_FULL_ROUNDS
    else:
        n = STREAM_LINES_QUICK if cfg["reps"] == 1 else STREAM_LINES
        rounds = max(1, cfg["pool_rounds"])
    tmp = tempfile.mkdtemp(prefix="jobrun-bench-stream-")
    path = os.path.join(tmp, "lines.txt")
    stats = os.path.join(tmp, "stats.json")

    def run(mode):
        # Through sh, which forks jobrun (`; exit $?` keeps it from exec'ing
        # it): the peak RSS that wait4 reports for a process includes its
        # image before exec, here this Python's (tens of MiB), so jobrun
        # started straight from here would report at least that much.
        if os.path.exists(stats):
            os.unlink(stats)
        res = r.run(["sh", "-c", '"$@"; exit $?', "sh", r.jobrun, "--stats-json", stats,
                     os.path.join(HERE, "pool_stream.lua"), path, str(workers), mode])
        try:
            with open(stats) as f:
                procs = json.load(f)["processes"]
        except (OSError, ValueError, KeyError) as e:
            raise Failed(f"no --stats-json: {e}")
        main = [p for p in procs if p["name"] == "MainProcess"]
        pool = [p["peak_rss_kib"] or 0 for p in procs if p["name"].startswith("PoolWorker")]
        if not main or main[0]["peak_rss_kib"] is None:
            raise Failed("no MainProcess peak_rss_kib in --stats-json")
        res["stats_main_peak_kib"] = main[0]["peak_rss_kib"]
        res["stats_worker_peak_kib"] = max(pool, default=0)
        return 0, res

    runs = {"iter": [], "table": []}
    size = 0
    try:
        try:
            with open(path, "w") as f:
                write_lines(f, n)
            size = os.path.getsize(path)
        except OSError as e:   # no room for the file
            failed = (None, None, Failed(f"cannot write {n:,} lines to {tmp}: {e}"))
            runs = {"iter": [failed], "table": [failed]}
            rounds = 0
        for _ in range(rounds):   # interleaved
            for mode in ("iter", "table"):
                runs[mode].append(side(lambda m=mode: run(m)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def best(mode, pick):
        ok = [res for _, res, err in runs[mode] if err is None]
        if not ok:
            return runs[mode][0]
        return pick(ok), ok, None

    rate = lambda ok: max(x["items"] / x["seconds"] for x in ok)
    peak = lambda key: lambda ok: max(x[key] for x in ok) / 1024
    what = f"{n:,} lines ({size / 1e9:.2f} GB)" if full else f"{n:,} lines"
    return [dict(id="stream", title=f"Pool over {what} of a file, {workers} workers: imap(io.lines) "
                 "vs map over the lines in a table",
                 unit="items/s", higher_is_better=True, target=0.9, target_text=">= 0.9x",
                 other="map(table)", jr=best("iter", rate), py=best("table", rate)),
            dict(id="stream-mem", title="(info) same, main process's peak RSS (--stats-json)",
                 unit="MiB", higher_is_better=False, target=None, target_text="flat",
                 other="map(table)", jr=best("iter", peak("stats_main_peak_kib")),
                 py=best("table", peak("stats_main_peak_kib"))),
            dict(id="stream-wmem", title="(info) same, a worker's peak RSS (--stats-json)",
                 unit="MiB", higher_is_better=False, target=None, target_text="info",
                 other="map(table)", jr=best("iter", peak("stats_worker_peak_kib")),
                 py=best("table", peak("stats_worker_peak_kib")))]


# --- jobrun map against xargs, GNU parallel and Python (issue 15) ----------

MAP_LINES, MAP_LINES_QUICK = 100_000, 20_000
MAP_PARALLEL_LINES, MAP_PARALLEL_LINES_QUICK = 2_000, 200   # a process per line: a subset
MAP_FILES, MAP_FILES_QUICK = 1_000, 100
MAP_LINE = "line {:06d} of the input, short"
MAP_XARGS_BATCH = {"lines": 1000, "cpu": 10}    # xargs -n
MAP_PY_CHUNK = {"lines": 1000, "cpu": 4}        # Pool.imap chunksize
MAP_TOOLS = ["map", "pool", "xargs", "parallel", "python"]
MAP_TOOL_NAMES = {"map": "jobrun map", "pool": "jobrun Pool script", "xargs": "xargs -P",
                  "parallel": "GNU parallel", "python": "Python Pool.imap"}


class NotAvailable(Exception):
    """A tool of a map row that is not there (no `jobrun map` yet, no GNU
    parallel or lua5.4 on PATH): its cell says n/a, the row still runs."""


def map_probe(r):
    """None if `jobrun map` is there (a probe line through map_upper.lua), or
    why not: the binary has no map subcommand yet (`jobrun: cannot open map`,
    or a usage error). Raises Failed if it is there but fails the probe."""
    cmd = [r.jobrun, "map", "-j", "1", os.path.join(HERE, "map_upper.lua")]
    try:
        p = subprocess.run(cmd, input="probe\n", capture_output=True, text=True,
                           timeout=r.timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise Failed(f"`jobrun map` probe timed out after {r.timeout:g} s")
    if p.returncode == 0 and p.stdout == "PROBE\n":
        return None
    last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
    if p.returncode != 0 and re.search(r"cannot open map|usage|unknown", p.stderr, re.I):
        return f"`{os.path.basename(r.jobrun)} map -j 1 map_upper.lua`: {last}"
    raise Failed(f"`jobrun map` probe: exit status {p.returncode}, stdout {p.stdout[:40]!r}",
                 p.stderr)


def map_command(r, tool, kind, workers):
    """The command line of one tool for a map row: kind "lines" (map_upper.lua
    on each stdin line) or "cpu" (map_cpu.lua on each path)."""
    fn = os.path.join(HERE, "map_upper.lua" if kind == "lines" else "map_cpu.lua")
    each = os.path.join(HERE, "map_each.lua")
    lua = shutil.which("lua5.4")
    j = str(workers)
    if tool == "map":
        return [r.jobrun, "map", "-j", j, fn]
    if tool == "pool":
        return [r.jobrun, os.path.join(HERE, "map_pool.lua"), fn, j]
    if tool == "python":
        return [sys.executable, os.path.join(HERE, "py_map.py"),
                "upper" if kind == "lines" else "cpu", j, str(MAP_PY_CHUNK[kind])]
    if lua is None:
        raise NotAvailable("n/a (no lua5.4)")
    if tool == "xargs":
        return ["xargs", "-d", "\n", "-P", j, "-n", str(MAP_XARGS_BATCH[kind]), lua, each, fn]
    if tool == "parallel":
        exe = shutil.which("parallel")
        if exe is None:
            raise NotAvailable("n/a (no GNU parallel)")
        return [exe, "--will-cite", "-j", j, lua, each, fn, "{}"]
    raise ValueError(tool)


def map_timed(r, cmd, stdin_path, out_path):
    """Runs cmd with stdin from stdin_path and stdout to out_path, in its own
    process group, bounded by the timeout; returns its wall time (start and
    exit included: what its user waits) and the CPU time (user + system) of
    the processes of it that were reaped (all but orphans)."""
    with open(stdin_path) as fin, open(out_path, "w") as fout:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=os.path.dirname(stdin_path), stdin=fin, stdout=fout,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=r.timeout)
        except subprocess.TimeoutExpired:
            r._killpg(proc.pid)
            _, err = proc.communicate()
            raise Failed(f"timed out after {r.timeout:g} s", err)
        seconds = time.monotonic() - t0
    r._reap_group(proc.pid, cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise Failed(f"exit status {proc.returncode}", err)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def map_workload(r, cfg, kind):
    """One map row: the same function over the same input with each tool,
    -j = the CPUs, the runs interleaved (map, pool, xargs, parallel, python,
    map, ...), each tool's best rate kept; every output is checked (the
    results, in any order)."""
    workers = os.cpu_count() or 2
    quick = cfg["reps"] == 1
    reps = cfg["reps"] if kind == "lines" else min(2, cfg["reps"])
    tmp = tempfile.mkdtemp(prefix=f"jobrun-bench-map-{kind}-")
    inputs = {}
    try:
        if kind == "lines":
            n = MAP_LINES_QUICK if quick else MAP_LINES
            sub = MAP_PARALLEL_LINES_QUICK if quick else MAP_PARALLEL_LINES
            lines = [MAP_LINE.format(i) for i in range(n)]
            for name, count in (("all", n), ("subset", sub)):
                path = os.path.join(tmp, f"{name}.txt")
                with open(path, "w") as f:
                    f.write("\n".join(lines[:count]) + "\n")
                inputs[name] = (path, count, sorted(l.upper() for l in lines[:count]))
            title = (f"{n:,} stdin lines, upper-cased (GNU parallel: the first {sub:,}), "
                     f"-j {workers}")
        else:
            n = MAP_FILES_QUICK if quick else MAP_FILES
            files = os.path.join(tmp, "files")
            os.mkdir(files)
            paths = []
            for i in range(n):
                paths.append(os.path.join(files, f"f{i:04d}.txt"))
                with open(paths[-1], "w") as f:
                    f.write("".join(f"{i} line {k} of file, some text here to hash\n"
                                    for k in range(90)))
            path = os.path.join(tmp, "paths.txt")
            with open(path, "w") as f:
                f.write("\n".join(paths) + "\n")
            inputs["all"] = inputs["subset"] = (path, n, None)   # checked against each other
            title = f"{n:,} files, CPU-bound (FNV-1a x 40 over 3.7 KB each), -j {workers}"

        try:
            why_no_map, probe_failed = map_probe(r), None
        except Failed as e:
            why_no_map, probe_failed = None, e
        results = {t: [] for t in MAP_TOOLS}
        cells = {}
        for t in MAP_TOOLS:
            if t == "map" and why_no_map:
                cells[t] = NotAvailable("n/a (no jobrun map)")
                continue
            if t == "map" and probe_failed:
                cells[t] = probe_failed
                continue
            try:
                cells[t] = map_command(r, t, kind, workers)
            except NotAvailable as e:
                cells[t] = e
        reference = {}
        out = os.path.join(tmp, "out.txt")
        for _ in range(reps):   # interleaved
            for t in MAP_TOOLS:
                cmd = cells[t]
                if isinstance(cmd, (NotAvailable, Failed)):
                    continue
                stdin_path, count, expected = inputs["subset" if t == "parallel" else "all"]
                try:
                    seconds, cpu = map_timed(r, cmd, stdin_path, out)
                    with open(out) as f:
                        got = sorted(f.read().splitlines())
                    if expected is None:
                        expected = reference.setdefault(stdin_path, got)
                    if got != expected:
                        wrong = next((f"{g!r}, expected {e!r}" for g, e in zip(got, expected)
                                      if g != e), "none (lines missing or extra)")
                        raise Failed(f"wrong output: {len(got)} lines for {count}",
                                     f"first line that differs (sorted): {wrong}")
                    results[t].append(dict(items=count, seconds=seconds, rate=count / seconds,
                                           cpu_seconds=cpu))
                except Failed as e:
                    cells[t] = e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tools = {}
    for t in MAP_TOOLS:
        c = cells[t]
        if isinstance(c, NotAvailable):
            tools[t] = dict(rate=None, runs=None, error=None, note=str(c))
        elif isinstance(c, Failed):
            tools[t] = dict(rate=None, runs=results[t], error=c, note=None)
        else:
            tools[t] = dict(rate=max(x["rate"] for x in results[t]), runs=results[t],
                            error=None, note=None)
    row = dict(id=f"map-{kind}", kind=kind, title=title, items=n, reps=reps, tools=tools,
               commands={t: (c if isinstance(c, list) else None) for t, c in cells.items()},
               no_map=why_no_map)
    evaluate_map(row)
    return [row]


def evaluate_map(row):
    """Ratios of jobrun map's and the Pool script's rates to each other
    tool's, and whether the issue's targets are met (by jobrun map; the
    Pool script's are shown as information)."""
    tools = row["tools"]
    rate = {t: tools[t]["rate"] for t in MAP_TOOLS}
    others = [t for t in ("xargs", "parallel", "python") if rate[t]]
    best = max(others, key=lambda t: rate[t]) if others else None
    row["best_other"] = best
    row["ratios"], row["met"] = {}, {}
    for me in ("map", "pool"):
        if not rate[me]:
            row["ratios"][me] = None
            row["met"][me] = None
            continue
        ratios = {t: rate[me] / rate[t] for t in others}
        if best:
            ratios["best"] = rate[me] / rate[best]
        row["ratios"][me] = ratios
        if row["kind"] == "lines":
            checks = [ratios[t] >= target * (1 - 1e-9)
                      for t, target in (("parallel", 10.0), ("xargs", 1.0)) if t in ratios]
        else:
            checks = [ratios["best"] >= 0.95] if best else []
        row["met"][me] = all(checks) if checks else None
    row["target_text"] = (">= 10x parallel, >= 1x xargs" if row["kind"] == "lines"
                          else ">= 0.95x the best other")


def render_map(rows, failures):
    """Two tables: each tool's rate per row, then jobrun's ratios."""
    header = ["map row (items/s, best of runs)"] + [MAP_TOOL_NAMES[t] for t in MAP_TOOLS]
    table = []
    for row in rows:
        cells = [row["title"]]
        for t in MAP_TOOLS:
            s = row["tools"][t]
            if s["note"]:
                cells.append(s["note"])
            elif s["error"] is not None:
                cells.append(short(s["error"]))
                failures.append((f"{row['id']} ({MAP_TOOL_NAMES[t]}): {s['error'].reason}",
                                 s["error"].tail()))
            else:
                cells.append(f"{s['rate']:,.0f}")
        table.append(cells)
    ratio_header = ["jobrun's rate / the other's", "vs xargs -P", "vs GNU parallel",
                    "vs Python Pool", "vs the best of those", "target", "met"]
    ratio_table = []
    for row in rows:
        for me in ("map", "pool"):
            ratios = row["ratios"][me]
            name = f"{row['id']}: {MAP_TOOL_NAMES[me]}"
            if ratios is None:
                ratio_table.append([name] + ["-"] * 4 + [row["target_text"], "-"])
                continue
            ratio_table.append([name] + [f"{ratios[k]:.2f}x" if k in ratios else "-"
                                         for k in ("xargs", "parallel", "python", "best")]
                               + [row["target_text"] if me == "map" else "(info) as map's",
                                  {True: "yes", False: "NO", None: "-"}[row["met"][me]]])

    def draw(header, table):
        widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]

        def line(cells):
            return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                     for i, (c, w) in enumerate(zip(cells, widths))) + " |"

        return "\n".join([line(header), "|" + "|".join(("-" * (w + 2)) if i == 0 else
                                                      ("-" * (w + 1) + ":")
                                                      for i, w in enumerate(widths)) + "|"]
                         + [line(c) for c in table])

    return draw(header, table) + "\n\n" + draw(ratio_header, ratio_table)


def script_workload(r, cfg):
    def pick(res):
        return min(res["seconds"]), res

    rounds = cfg["script_rounds"]
    return [dict(id="script", title=f"start and join {SCRIPT_WORKERS} script workers "
                 f"(Python: 'spawn') (best of {rounds})",
                 unit="s", higher_is_better=False, target=5.0,
                 target_text=">= 5x faster",
                 jr=side(lambda: pick(r.lua("script_spawn.lua", SCRIPT_WORKERS, rounds))),
                 py=side(lambda: pick(r.py("script_spawn", SCRIPT_WORKERS, rounds))))]


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


def plugin_workload(r, cfg):
    """The plug-in host (issue 14): jobrun-plugin-bench, built beside jobrun
    (scripts/setup release builds every product), calls calc.add{a=1, b=2}
    through a PluginHost. Best of cfg.reps runs, per figure."""
    exe = os.path.join(os.path.dirname(os.path.abspath(r.jobrun)), "jobrun-plugin-bench")
    plugins = os.path.join(HERE, "plugins")
    naive = os.path.join(HERE, "plugin_naive.lua")
    quick = cfg["reps"] == 1
    cache = {}

    def runs():
        if "runs" not in cache:
            if not os.path.exists(exe):
                raise Failed(f"{exe} not built (scripts/setup release)")
            n = ["2000", "20000"] if quick else ["20000", "200000"]
            cache["runs"] = [r.run([exe, plugins, naive, *n, "64"]) for _ in range(cfg["reps"])]
        return cache["runs"]

    def best(key, lower=True):
        def fn():
            rs = runs()
            pick = min if lower else max
            return pick(x[key] for x in rs), rs
        return fn

    rows = [
        dict(id="plugin-rt", title="plug-in call round trip, median (small args, warm worker)",
             unit="µs", higher_is_better=False, target=10.0, target_text="<= 10 µs", absolute=True,
             other="in-process Lua call", jr=side(best("rt_median_us")), py=side(best("inproc_us"))),
        dict(id="plugin-naive", title="(info) plug-in call vs `lua5.4 plugin.lua` per call (naive host)",
             unit="µs", higher_is_better=False, target=None, target_text="info",
             other="lua5.4 per call", jr=side(best("rt_median_us")), py=side(best("naive_us"))),
        dict(id="plugin-rt2", title="(info) plug-in call round trip, median, 2 workers, 2 calls in flight",
             unit="µs", higher_is_better=False, target=None, target_text="info",
             other="in-process Lua call", jr=side(best("rt2_median_us")), py=side(best("inproc_us"))),
        dict(id="plugin-rate", title="plug-in calls/s, 2 workers, 64 calls in flight",
             unit="calls/s", higher_is_better=True, target=200_000, target_text=">= 200k/s", absolute=True,
             jr=side(best("calls_per_s", lower=False)), py=(None, None, None)),
        dict(id="plugin-start", title="plug-in host start with 4 warm workers",
             unit="s", higher_is_better=False, target=0.020, target_text="<= 20 ms", absolute=True,
             jr=side(best("start_s")), py=(None, None, None)),
    ]
    return rows


def proc_state(pid):
    """The state letter of /proc/<pid>/stat ("R", "S", ...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


SHARED_MAPPING = re.compile(r"(^/memfd:|^/dev/shm/|^/SYSV)")


def memory_of(pid):
    """PSS and its parts (kB) from /proc/<pid>/smaps_rollup, plus the resident
    pages of the process's shared-memory mappings (memfd, /dev/shm, SysV) from
    /proc/<pid>/smaps, counted in full (Rss) and proportionally (Pss)."""
    m = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for l in f:
                k, _, v = l.partition(":")
                if v.strip().endswith("kB"):
                    m[k.strip()] = int(v.split()[0])
        shm_rss = shm_pss = 0
        shared = False
        with open(f"/proc/{pid}/smaps") as f:
            for l in f:
                head = l.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
                    path = " ".join(head[5:]) if len(head) > 5 else ""
                    shared = bool(SHARED_MAPPING.search(path))
                elif shared and head[0] == "Rss:":
                    shm_rss += int(head[1])
                elif shared and head[0] == "Pss:":
                    shm_pss += int(head[1])
    except OSError as e:
        raise Failed(f"cannot read /proc/{pid}: {e}")
    if "Pss" not in m:
        raise Failed(f"no Pss in /proc/{pid}/smaps_rollup")
    return dict(pid=pid, pss_kb=m["Pss"], rss_kb=m.get("Rss"),
                pss_anon_kb=m.get("Pss_Anon"), pss_file_kb=m.get("Pss_File"),
                pss_shmem_kb=m.get("Pss_Shmem"), shared_rss_kb=shm_rss,
                shared_pss_kb=shm_pss)


def memory_workload(r, cfg):
    lua = shutil.which("lua5.4")

    def baseline():
        if lua is None:
            raise Failed("no lua5.4 on PATH (Debian package lua5.4)")
        m = r.hold([lua, "-e", "io.read()"], lambda pid, _: memory_of(pid),
                   ready_line=False)
        return m["pss_kb"], m

    def worker(mode):
        def measure(pid, first):
            w = memory_of(first["worker"])
            w["main"] = memory_of(first["main"])
            return w

        m = r.hold([r.jobrun, os.path.join(HERE, "memory.lua"), mode], measure)
        return m["pss_kb"], m

    base = side(baseline)
    rows = []
    for mode, title, target in (
            ("fork", "memory of one idle worker (PSS) vs idle lua5.4", 1.5),
            ("script", "(info) same, a script worker (fresh jobrun)", None)):
        jr = side(lambda: worker(mode))
        rows.append(dict(
            id=f"memory-{mode}", title=title, unit="KiB", higher_is_better=False,
            target=target, compare="at_most", other="lua5.4",
            credit=(jr[1] or {}).get("shared_rss_kb", 0),
            target_text="<= 1.5x + shared" if target else "info",
            jr=jr, py=base))
    return rows


def scaling_workload(r, cfg, group):
    """Rows of the scaling table: jobrun and Python throughput, shorter runs."""
    ms, reps = cfg["scale_min_seconds"], cfg["scale_reps"]
    rows = []
    if group == "pairs":
        for k in SCALE_PAIRS:
            args = (k, k, 0, "string")
            jr, py = paired_rates(lambda n: r.lua("queue_items.lua", n, *args), cfg["items_jr"] // 2,
                                  lambda n: r.py("queue_items", n, *args), cfg["items_py"] // 2,
                                  "items", cfg, ms, reps)
            rows.append(dict(id=f"pairs-{k}", group="pairs", pairs=k, size=None,
                             title=f"{k} -> {k}, small strings, JoinableQueue + task_done",
                             jr=jr, py=py))
    else:
        for size in SCALE_SIZES:
            maxsize = min(1000, max(8, (32 * MIB) // size))
            count = max(8, min(200_000, (256 * MIB) // size))
            args = (size, maxsize)
            jr, py = paired_rates(lambda n: r.lua("big_strings.lua", n, *args), count,
                                  lambda n: r.py("big_strings", n, *args), max(4, count // 20),
                                  "items", cfg, ms, reps)
            rows.append(dict(id=f"size-{size}", group="sizes", pairs=1, size=size,
                             title=f"1 -> 1, {human_size(size)} strings, Queue({maxsize})",
                             jr=jr, py=py))
    return rows


def human_size(n):
    for unit, scale in (("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# --- table -----------------------------------------------------------------

def fmt(value, unit):
    if value is None:
        return ""
    if unit == "s":
        return f"{value * 1000:,.1f} ms"
    if unit == "% CPU":
        return f"{value:.2f}% CPU"
    if unit == "µs":
        return f"{value:,.2f} µs"
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
            row["met"] = jr >= row["target"] if row["higher_is_better"] else jr < row["target"]
        if jr and py and row.get("other"):
            row["ratio"] = py / jr if not row["higher_is_better"] else jr / py
            row["fraction"] = True
        return
    if row.get("compare") == "at_most":
        # jobrun's figure less its credit, as a multiple of the baseline.
        if jr is not None and py:
            row["ratio"] = (jr - row.get("credit", 0)) / py
            if row["target"] is not None:
                row["met"] = row["ratio"] <= row["target"] * (1 + 1e-9)
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
                if key == "jr" and "credit" in row:
                    text += f" ({row['credit']:,} KiB shared)"
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


def render_scaling(rows, failures, seen):
    header = ["scaling (1 pair = 1 producer -> 1 consumer)", "jobrun items/s", "jobrun MB/s",
              "python items/s", "python MB/s", "ratio"]
    table = []
    for row in rows:
        cells = [row["title"]]
        for key in ("jr", "py"):
            value, _, err = row[key]
            if err is not None:
                cells += [short(err), ""]
                if id(err) not in seen:
                    seen.add(id(err))
                    name = "jobrun" if key == "jr" else "python"
                    failures.append((f"{row['id']} ({name}): {err.reason}", err.tail()))
            else:
                cells.append(f"{value:,.0f}")
                cells.append(f"{value * row['size'] / 1e6:,.0f}" if row["size"] else "-")
        jr, py = row["jr"][0], row["py"][0]
        row["ratio"] = jr / py if jr and py else None
        cells.append(f"{row['ratio']:.2f}x" if row["ratio"] else "-")
        table.append(cells)
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [line(header), "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":")
                                        for i, w in enumerate(widths)) + "|"]
    out += [line(c) for c in table]
    return "\n".join(out)


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
    ap.add_argument("--full", action="store_true",
                    help="the stream row over a 1 GiB file (1-2 min; the table form "
                         "holds about 3 GiB)")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help=f"run only these workloads (repeatable or comma-separated): "
                         f"{', '.join(WORKLOADS)}; 'scaling' = pairs,sizes")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed per process run (default 30 quick, 120 otherwise)")
    a = ap.parse_args()

    jobrun = os.path.abspath(a.jobrun)
    if not os.access(jobrun, os.X_OK):
        sys.exit(f"bench: no jobrun binary at {jobrun}")
    only = set(WORKLOADS)
    if a.only:
        only = {n.strip() for o in a.only for n in o.split(",") if n.strip()}
        for alias, names in ALIASES.items():
            if alias in only:
                only = (only - {alias}) | set(names)
        unknown = only - set(WORKLOADS)
        if unknown:
            sys.exit(f"bench: unknown workload {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(WORKLOADS + list(ALIASES))}")
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
    rows, scaling = [], []
    steps = [("1x1", lambda: items_workload(r, cfg, 1, 1)),
             ("2x2", lambda: items_workload(r, cfg, 2, 2)),
             ("bounded", lambda: items_workload(r, cfg, 1, 1, maxsize=BOUNDED_MAXSIZE,
                                                row_id="bounded")),
             ("tables", lambda: items_workload(r, cfg, 1, 1, kind="table",
                                               row_id="tables", target=15.0)),
             ("1mib", lambda: big_workload(r, cfg)),
             ("pingpong", lambda: pingpong_workload(r, cfg)),
             ("pool", lambda: pool_workload(r, cfg)),
             ("stream", lambda: stream_workload(r, cfg, full=a.full)),
             ("spawn", lambda: spawn_workload(r, cfg)),
             ("script", lambda: script_workload(r, cfg)),
             ("idle", lambda: idle_workload(r, cfg)),
             ("memory", lambda: memory_workload(r, cfg)),
             ("plugin", lambda: plugin_workload(r, cfg))]
    map_steps = [("map-lines", lambda: map_workload(r, cfg, "lines")),
                 ("map-cpu", lambda: map_workload(r, cfg, "cpu"))]
    scale_steps = [("pairs", lambda: scaling_workload(r, cfg, "pairs")),
                   ("sizes", lambda: scaling_workload(r, cfg, "sizes"))]
    maps = []
    for name, step in steps + map_steps + scale_steps:
        if name in only:
            print(f"bench: running {name} ...", end="", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            if name in dict(scale_steps):
                scaling += step()
            elif name in dict(map_steps):
                maps += step()
            else:
                rows += step()
            print(f" {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    for row in rows:
        evaluate(row)
    elapsed = time.monotonic() - started

    table, failures = render(rows)
    if rows:
        print()
        print(table)
        print()
        print("ratio: jobrun / Python for rates (times: Python / jobrun); best of "
              f"{cfg['reps']} runs of >= {cfg['min_seconds']:g} s each for rates, jobrun's and "
              "Python's interleaved. MB = 10^6 bytes.")
    if any(row["id"].startswith("pingpong") for row in rows):
        print("ping-pong: each round trip timed on its own after "
              f"{PP_WARMUP} untimed ones; median and p99 are each the best of "
              f"{cfg['reps']} runs.")
    if any(row["id"].startswith("memory") for row in rows):
        print("memory: PSS from /proc/<pid>/smaps_rollup (each resident page divided by the\n"
              "  number of processes mapping it) of a worker blocked in get, and of an idle\n"
              "  `lua5.4 -e 'io.read()'`. \"shared\" = the worker's resident pages in its\n"
              "  shared-memory mappings (the memfd arena), counted in full (their Rss in\n"
              "  /proc/<pid>/smaps): the shared pages it touched. ratio = (worker PSS - shared)\n"
              "  / lua5.4 PSS, so met means worker PSS <= 1.5 x lua5.4 PSS + shared.")
    if maps:
        print()
        print(render_map(maps, failures))
        print()
        print("map rows: items/s over each tool's whole run (start and exit included), the "
              "best of\n"
              f"  {', '.join(str(m['reps']) + ' (' + m['id'] + ')' for m in maps)} runs, "
              "the tools interleaved; each output checked. The function:\n"
              "  map_upper.lua / map_cpu.lua, run by `jobrun map`, by map_pool.lua (a Pool "
              "script: imap over\n"
              "  io.lines()), and by `lua5.4 map_each.lua FN ARGS...` under "
              f"`xargs -P N -n {MAP_XARGS_BATCH['lines']}` (lines) /\n"
              f"  `-n {MAP_XARGS_BATCH['cpu']}` (files) and `parallel -j N` (a process per "
              "item); Python: the same function in\n"
              f"  Python (py_map.py), Pool.imap, chunksize {MAP_PY_CHUNK['lines']} (lines) / "
              f"{MAP_PY_CHUNK['cpu']} (files).")
        for m in maps:
            if m["no_map"]:
                print(f"  {m['id']}: no jobrun map: {m['no_map']}")
    if scaling:
        print()
        print(render_scaling(scaling, failures, set()))
        print()
        print(f"scaling: best of {cfg['scale_reps']} runs of >= {cfg['scale_min_seconds']:g} s "
              "each; ratio: jobrun / Python items/s. Item sizes: 1 producer, 1 consumer, "
              "Queue(maxsize) as shown on both sides, the same string sent each time.")
    print()
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
            if "credit" in row:
                item["jobrun_shared_kb"] = row["credit"]
            for key, name in (("jr", "jobrun"), ("py", row.get("other", "python"))):
                value, raw, err = row[key]
                item[name] = value
                item[name + "_runs"] = raw
                if err is not None:
                    item[name + "_error"] = dict(reason=err.reason, tail=err.tail())
            doc["results"].append(item)
        doc["map"] = []
        for row in maps:
            item = {k: row[k] for k in ("id", "title", "items", "reps", "ratios", "met",
                                        "target_text", "best_other", "commands", "no_map")}
            item["tools"] = {t: dict(items_per_s=s["rate"], runs=s["runs"], note=s["note"],
                                     error=(dict(reason=s["error"].reason, tail=s["error"].tail())
                                            if s["error"] is not None else None))
                             for t, s in row["tools"].items()}
            doc["map"].append(item)
        doc["scaling"] = []
        for row in scaling:
            item = {k: row[k] for k in ("id", "group", "title", "pairs", "size", "ratio")}
            for key, name in (("jr", "jobrun"), ("py", "python")):
                value, raw, err = row[key]
                item[name + "_items_per_s"] = value
                item[name + "_mb_per_s"] = (value * row["size"] / 1e6
                                            if value is not None and row["size"] else None)
                item[name + "_runs"] = raw
                if err is not None:
                    item[name + "_error"] = dict(reason=err.reason, tail=err.tail())
            doc["scaling"].append(item)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
