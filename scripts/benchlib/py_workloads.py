"""Python multiprocessing twins of the jobrun workloads in scripts/benchlib/*.lua.

Run by bench.py as a separate process (so it gets a timeout and its own clean
parent), one workload per run:
    python3 py_workloads.py NAME ARGS...
Each prints one JSON line on stdout, shaped like the Lua twin's. Every process
uses the 'fork' start method, and every workload has the same shape and the
same stopping protocol (None sentinels) as its Lua twin, except
script_spawn(), which uses the 'spawn' start method (a fresh interpreter per
worker, like jobrun's `Process{script = ...}`).
"""
import json
import math
import multiprocessing as mp
import os
import sys
import time

ctx = mp.get_context("fork")
now = time.monotonic


def producer(q, first, last):
    for i in range(first, last + 1):
        q.put(f"item-{i}")


def dict_producer(q, first, last):
    for i in range(first, last + 1):
        q.put({"id": i, "name": f"item-{i}"})


def consumer(q):
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            break


def queue_items(n, producers, consumers, maxsize=0, kind="string"):
    """producers -> JoinableQueue(maxsize) -> consumers, task_done per item;
    kind "string" sends "item-<i>", "table" sends {"id": i, "name": "item-<i>"}."""
    n, producers, consumers, maxsize = int(n), int(producers), int(consumers), int(maxsize)
    target = {"string": producer, "table": dict_producer}[kind]
    q = ctx.JoinableQueue(maxsize)
    cs = [ctx.Process(target=consumer, args=(q,)) for _ in range(consumers)]
    for c in cs:
        c.start()
    t0 = now()
    ps, first = [], 1
    for k in range(producers):
        last = first + n // producers - 1 + (1 if k < n % producers else 0)
        ps.append(ctx.Process(target=target, args=(q, first, last)))
        first = last + 1
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    for _ in cs:
        q.put(None)
    q.join()
    t1 = now()
    for c in cs:
        c.join()
    return {"items": n, "seconds": t1 - t0}


def big_producer(q, count, size):
    s = b"x" * size
    for _ in range(count):
        q.put(s)
    q.put(None)


def big_consumer(q, size, out):
    got = 0
    while True:
        s = q.get()
        if s is None:
            break
        if len(s) != size:
            raise SystemExit(f"bad item length {len(s)}")
        got += 1
    out.put(got)


def big_strings(count, size, maxsize):
    """1 producer -> Queue(maxsize) -> 1 consumer, `count` strings of `size` bytes."""
    count, size, maxsize = int(count), int(size), int(maxsize)
    q = ctx.Queue(maxsize)
    out = ctx.Queue()
    c = ctx.Process(target=big_consumer, args=(q, size, out))
    c.start()
    t0 = now()
    p = ctx.Process(target=big_producer, args=(q, count, size))
    p.start()
    got = out.get()
    t1 = now()
    p.join()
    c.join()
    if got != count:
        raise SystemExit(f"consumer got {got} items, expected {count}")
    return {"bytes": count * size, "items": count, "seconds": t1 - t0}


def noop():
    pass


def _start_join(make, workers, rounds):
    """Time `rounds` rounds of starting `workers` processes made by make(i), then joining them."""
    workers, rounds = int(workers), int(rounds)
    times = []
    for _ in range(rounds):
        t0 = now()
        ps = [make(i) for i in range(workers)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        times.append(now() - t0)
        if any(p.exitcode != 0 for p in ps):
            raise SystemExit("a worker failed")
    return {"workers": workers, "seconds": times}


def spawn(workers, rounds):
    """Start `workers` forked processes that do nothing, then join them all."""
    return _start_join(lambda i: ctx.Process(target=noop), workers, rounds)


def script_spawn(workers, rounds):
    """Start `workers` processes with the 'spawn' start method, then join them all."""
    sctx = mp.get_context("spawn")
    return _start_join(lambda i: sctx.Process(target=noop_arg, args=(i,)), workers, rounds)


def noop_arg(i):
    pass


def echo(ping, pong):
    while True:
        x = ping.get()
        pong.put(x)
        if x is None:
            break


def pingpong(rounds, warmup):
    """Round trips main -> Queue -> echo worker -> Queue -> main, each timed."""
    rounds, warmup = int(rounds), int(warmup)
    ping, pong = ctx.Queue(), ctx.Queue()
    w = ctx.Process(target=echo, args=(ping, pong))
    w.start()
    for i in range(warmup):
        ping.put(i)
        assert pong.get() == i
    clock = time.perf_counter
    lat = []
    for i in range(rounds):
        t0 = clock()
        ping.put(i)
        x = pong.get()
        lat.append(clock() - t0)
        if x != i:
            raise SystemExit(f"echoed {x!r}, expected {i}")
    ping.put(None)
    pong.get()
    w.join()
    lat.sort()

    def pct(p):
        return lat[max(1, math.ceil(p * len(lat))) - 1] * 1e6

    return {"rounds": rounds, "median_us": pct(0.5), "p99_us": pct(0.99),
            "mean_us": sum(lat) / len(lat) * 1e6, "max_us": lat[-1] * 1e6}


def double(x):
    return x * 2


def pool_map(n, workers, chunksize, rounds):
    """Pool.map of n trivial tasks in chunks, `rounds` times on the same pool."""
    n, workers, chunksize, rounds = int(n), int(workers), int(chunksize), int(rounds)
    items = list(range(1, n + 1))
    t0 = now()
    pool = ctx.Pool(workers)
    start = now() - t0
    times = []
    for _ in range(rounds):
        t = now()
        out = pool.map(double, items, chunksize)
        times.append(now() - t)
        if len(out) != n or out[0] != 2 or out[-1] != 2 * n:
            raise SystemExit("bad result")
    pool.close()
    pool.join()
    return {"items": n, "seconds": times, "start_seconds": start}


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def idle_consumer(q):
    q.get()


def idle(seconds):
    """A consumer blocked in get for `seconds`: its CPU time over that window."""
    seconds = float(seconds)
    q = ctx.Queue()
    c = ctx.Process(target=idle_consumer, args=(q,))
    c.start()
    time.sleep(0.2)  # let it reach get
    a, t0 = cpu_ticks(c.pid), now()
    time.sleep(seconds)
    b, t1 = cpu_ticks(c.pid), now()
    q.put(None)
    c.join()
    hz = os.sysconf("SC_CLK_TCK")
    return {"cpu_seconds": (b - a) / hz, "seconds": t1 - t0}


WORKLOADS = {"queue_items": queue_items, "big_strings": big_strings,
             "spawn": spawn, "script_spawn": script_spawn, "pingpong": pingpong,
             "pool_map": pool_map, "idle": idle}

if __name__ == "__main__":
    result = WORKLOADS[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result), flush=True)
