"""python3 py_map.py upper|cpu WORKERS CHUNKSIZE < lines: the Python twin of
`jobrun map` for the map rows of bench.py (issue 15): multiprocessing's
Pool.imap (fork start method) over stdin's lines with a chunksize, each
result printed on a line, in order. upper() and cpu() are the twins of
map_upper.lua and map_cpu.lua (cpu() gives the same hashes)."""
import multiprocessing as mp
import sys

ROUNDS = 40  # as map_cpu.lua


def upper(line):
    return line.upper()


def cpu(path):
    with open(path, "rb") as f:
        s = f.read()
    h = 2166136261
    for _ in range(ROUNDS):
        for b in s:
            h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"{path}\t{h:08x}"


def main():
    fn = {"upper": upper, "cpu": cpu}[sys.argv[1]]
    workers, chunksize = int(sys.argv[2]), int(sys.argv[3])
    lines = (l.rstrip("\n") for l in sys.stdin)
    out = sys.stdout
    with mp.get_context("fork").Pool(workers) as pool:
        for r in pool.imap(fn, lines, chunksize):
            out.write(r + "\n")


if __name__ == "__main__":
    main()
