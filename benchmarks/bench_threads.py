"""Two threads against one, on a shared machine: 1-thread and N-thread runs interleaved, medians.

``bench_tokenize.py`` times each tool a few times; on a machine whose cores
other work comes and goes on, an N-thread run that meets a busy spell looks
slow. This script only measures the scaling of
``tok.encode_to_numpy(docs, num_threads=N)`` over ``num_threads=1``: it runs
the two back to back, ``--rounds`` times (1t, Nt, 1t, Nt, ...), and reports
per model and corpus part the median of the per-round ratios (time 1t /
time Nt), their quartiles, and the MB/s of each median. It also reports how
much CPU other processes used while it ran (``/proc/stat`` minus this
process), so a noisy figure says so; ``--quiet`` waits for an idle machine
before each model and part.

    python benchmarks/bench_threads.py
    python benchmarks/bench_threads.py --models bytepiece.plus.40k /path/zh80k.model --parts zh --rounds 41
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

from _common import MB, PARTS, load_docs, machine_line, model_path, require_shared, utf8_len


def _cpu_ticks():
    """``(busy ticks of the whole machine, ticks of this process)`` so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    with open(f"/proc/{os.getpid()}/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v) - v[3] - v[4], int(own[11]) + int(own[12])


def others_cores(seconds, before, after):
    """Cores other processes kept busy on average between two ``_cpu_ticks``."""
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / hz / seconds)


def wait_quiet(limit_s=600.0, under=0.15):
    """Wait (up to ``limit_s``) until other processes use under ``under`` of a core over 1 s."""
    t_end = time.monotonic() + limit_s
    while True:
        a = _cpu_ticks()
        time.sleep(1.0)
        load = others_cores(1.0, a, _cpu_ticks())
        if load < under or time.monotonic() > t_end:
            return load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+",
                    default=["bytepiece.plus.40k", "bytepiece_80k"],
                    help="model files (paths, or names in ../shared/models)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--limit-mb", type=float, default=4.0, help="MB of each part; default 4")
    ap.add_argument("--threads", type=int, default=2, help="N; default 2")
    ap.add_argument("--rounds", type=int, default=21, help="1t/Nt pairs per cell; default 21")
    ap.add_argument("--quiet", action="store_true", help="wait for an idle machine before each cell")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    require_shared()

    import gpu_bytepiece
    from gpu_bytepiece import Tokenizer

    nt = args.threads
    print(f"machine: {machine_line()}; gpu-bytepiece {gpu_bytepiece.__version__} "
          f"({os.path.dirname(gpu_bytepiece.__file__)})")
    print(f"{args.rounds} rounds of (1 thread, {nt} threads) per cell; ratio = time 1t / time {nt}t per round\n")
    print(f"| model | part | MB | 1t MB/s | {nt}t MB/s | {nt}t/1t median | quartiles | min-max "
          f"| other processes, cores |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    docs_by_part = {p: load_docs(p, limit_mb=args.limit_mb) for p in args.parts}
    for name in args.models:
        path = model_path(name)
        tok = Tokenizer(path, device="cpu")
        for part in args.parts:
            docs = docs_by_part[part]
            size = utf8_len(docs)
            ids1, off1 = tok.encode_to_numpy(docs, num_threads=1)
            idsn, offn = tok.encode_to_numpy(docs, num_threads=nt)
            if not ((ids1 == idsn).all() and (off1 == offn).all()):
                print(f"ERROR: {nt} threads' ids differ from one thread's on {path.name} {part}")
                return 1
            if args.quiet:
                wait_quiet()
            t1, tn = [], []
            c0, w0 = _cpu_ticks(), time.perf_counter()
            for _ in range(args.rounds):
                for n, times in ((1, t1), (nt, tn)):
                    gc.collect()
                    t = time.perf_counter()
                    tok.encode_to_numpy(docs, num_threads=n)
                    times.append(time.perf_counter() - t)
            load = others_cores(time.perf_counter() - w0, c0, _cpu_ticks())
            ratios = sorted(a / b for a, b in zip(t1, tn))
            q = statistics.quantiles(ratios, n=4)
            print(f"| {path.name} | {part} | {size / MB:.2f} | {size / MB / statistics.median(t1):.1f} "
                  f"| {size / MB / statistics.median(tn):.1f} | {statistics.median(ratios):.3f} "
                  f"| {q[0]:.2f}-{q[2]:.2f} | {ratios[0]:.2f}-{ratios[-1]:.2f} | {load:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
