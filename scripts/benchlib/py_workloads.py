"""Python multiprocessing twins of the jobrun workloads in scripts/benchlib/*.lua.

Run by bench.py as a separate process (so it gets a timeout and its own clean
parent), one workload per run:
    python3 py_workloads.py NAME ARGS...
Each prints one JSON line on stdout, shaped like the Lua twin's. Every process
uses the 'fork' start method, and every workload has the same shape and the
same stopping protocol (None sentinels) as its Lua twin.
"""
import json
import multiprocessing as mp
import os
import sys
import time

ctx = mp.get_context("fork")
now = time.monotonic


def producer(q, first, last):
    for i in range(first, last + 1):
        q.put(f"item-{i}")


def consumer(q):
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            break


def queue_items(n, producers, consumers):
    """producers -> JoinableQueue -> consumers, small strings, task_done per item."""
    n, producers, consumers = int(n), int(producers), int(consumers)
    q = ctx.JoinableQueue()
    cs = [ctx.Process(target=consumer, args=(q,)) for _ in range(consumers)]
    for c in cs:
        c.start()
    t0 = now()
    ps, first = [], 1
    for k in range(producers):
        last = first + n // producers - 1 + (1 if k < n % producers else 0)
        ps.append(ctx.Process(target=producer, args=(q, first, last)))
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


def spawn(workers, rounds):
    """Start `workers` forked processes that do nothing, then join them all."""
    workers, rounds = int(workers), int(rounds)
    times = []
    for _ in range(rounds):
        t0 = now()
        ps = [ctx.Process(target=noop) for _ in range(workers)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        times.append(now() - t0)
        if any(p.exitcode != 0 for p in ps):
            raise SystemExit("a worker failed")
    return {"workers": workers, "seconds": times}


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
             "spawn": spawn, "idle": idle}

if __name__ == "__main__":
    result = WORKLOADS[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result), flush=True)
