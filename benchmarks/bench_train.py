"""Training time and peak memory: gpu_bytepiece vs bytepiece 0.6.3, one run.

Both train on the same 20 MB mix of ``../shared/corpus`` (``train_parity.load_mix``:
zh, en and code in proportion to the files' sizes) with vocabulary 32,000 and
``min_count=8``, each in a fresh child process that loads the mix and then
trains and saves. The parent samples the memory of each child's whole process
tree (the reference's ``workers=2`` forks a pool) every 20 ms: the sum of RSS
(what ``ps`` shows; counts pages shared after ``fork`` once per process) and
the sum of PSS (shared pages split between the processes sharing them). It
prints the training time (``train`` + ``save``, timed in the child), both
peaks, the ratios, and whether the two model files are identical.

    python benchmarks/bench_train.py                      # the full comparison (~3-4 min)
    python benchmarks/bench_train.py --skip-reference     # ours only
    python benchmarks/bench_train.py --mb 2               # a smaller mix

Our child runs once untimed first so that Numba's on-disk cache is warm (as
after the package's first use); the compile-from-scratch time is printed
separately when the cache was cold.

Measured on the 2-core development VM (shared; load average 1.2 at the
start, 4.1 at the end), Python 3.11, numpy 2.4, numba 0.68:

| trainer | training time | peak RSS, process tree | peak PSS, process tree |
| --- | --- | --- | --- |
| bytepiece 0.6.3 (workers=2) | 205.01 s | 1382 MB | 1074 MB |
| gpu_bytepiece (cpu, 2 threads) | 3.34 s | 271 MB | 268 MB |
| ratio | 61.3x faster | 0.20x | 0.25x |

model files: IDENTICAL (28695 pieces: fewer than 32000 - 3 survive pruning,
so no size cut applies, as in the reference)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import proc_memory, tree_pids  # noqa: E402


# ---------------------------------------------------------------- child
def child(args) -> int:
    sys.path.insert(0, str(HERE))
    from train_parity import load_mix

    texts = load_mix(int(args.mb * 1e6))
    kw = dict(order=args.order, max_vocab_size=args.vocab_size, min_count=args.min_count)
    if args.child == "ours":
        from gpu_bytepiece.train.trainer import Trainer

        t = time.perf_counter()
        tr = Trainer(**kw)
        tr.train(texts, workers=args.workers, device=args.device, progress=False)
        tr.save(args.model)
        secs = time.perf_counter() - t
        extra = {k: v for k, v in tr.stats.items() if k.startswith("seconds") or k == "device"}
    else:
        import io
        from contextlib import redirect_stderr

        import bytepiece

        t = time.perf_counter()
        tr = bytepiece.Trainer(**kw)
        with redirect_stderr(io.StringIO()):
            tr.train(texts, workers=args.workers)
        tr.save(args.model)
        secs = time.perf_counter() - t
        extra = {}
    print("RESULT " + json.dumps(dict(seconds=secs, n_docs=len(texts), **extra)), flush=True)
    return 0


# ---------------------------------------------------------------- parent
def run_child(which: str, args, model: str) -> dict:
    cmd = [sys.executable, __file__, "--child", which, "--model", model, "--mb", str(args.mb),
           "--vocab-size", str(args.vocab_size), "--min-count", str(args.min_count), "--order", str(args.order),
           "--workers", str(args.workers), "--device", args.device]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        for p in tree_pids(proc.pid):
            r, s = proc_memory(p)
            rss += r
            pss += s
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.02)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{which} child failed ({proc.returncode}):\n{out}")
    res = json.loads(out.split("RESULT ", 1)[1])
    res.update(peak_rss=peak_rss, peak_pss=peak_pss, wall=time.perf_counter() - t0)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--min-count", type=int, default=8)
    ap.add_argument("--order", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="our device (default: cpu)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--child", choices=["ours", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    out = tempfile.mkdtemp(prefix="bench-train-")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"mix {args.mb:g} MB, vocab {args.vocab_size}, min_count {args.min_count}, order {args.order}, "
          f"workers {args.workers}; {os.cpu_count()} CPUs, load average {' '.join(load)}", flush=True)
    warm = run_child("ours", args, os.path.join(out, "warm.model"))
    print(f"warm-up (fills Numba's cache if cold): {warm['wall']:.1f} s wall", flush=True)
    ours = run_child("ours", args, os.path.join(out, "ours.model"))
    print(f"gpu_bytepiece: {ours['seconds']:.2f} s ({ours['device']}: n-grams {ours['seconds_ngrams']:.2f} s, "
          f"pieces {ours['seconds_pieces']:.2f} s, pruning {ours['seconds_prune']:.2f} s)", flush=True)
    rows = [("gpu_bytepiece", ours)]
    ref = None
    if not args.skip_reference:
        ref = run_child("ref", args, os.path.join(out, "ref.model"))
        rows.insert(0, (f"bytepiece 0.6.3 (workers={args.workers})", ref))
    mb = 1 << 20
    print()
    print("| trainer | training time | peak RSS, process tree | peak PSS, process tree |")
    print("| --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.2f} s | {r['peak_rss'] / mb:.0f} MB | {r['peak_pss'] / mb:.0f} MB |")
    if ref is not None:
        print(f"| ratio | {ref['seconds'] / ours['seconds']:.1f}x faster | "
              f"{ours['peak_rss'] / ref['peak_rss']:.2f}x | {ours['peak_pss'] / ref['peak_pss']:.2f}x |")
        with open(os.path.join(out, "ours.model"), "rb") as f:
            a = f.read()
        with open(os.path.join(out, "ref.model"), "rb") as f:
            b = f.read()
        print()
        print(f"model files: {'IDENTICAL' if a == b else 'DIFFERENT'} ({len(json.loads(a))} pieces)")
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
