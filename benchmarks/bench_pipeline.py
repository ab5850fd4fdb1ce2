"""End-to-end ``gpu-bytepiece encode`` (JSONL -> Megatron) against raw ``encode_to_numpy``.

Measured in the same run, on the same real text (../shared/corpus):

1. raw: ``Tokenizer.encode_to_numpy(texts)`` on the texts already in memory
   (all Numba threads; median of ``--repeats``, after a warm-up call);
2. pipeline: the real command (``python -m gpu_bytepiece.cli encode``) on the
   same texts written as a plain JSONL file, ``--workers N``, output Megatron:
   wall time of the whole process, startup included; the startup alone
   (interpreter, imports, workers loading the model, joining) is measured on
   a job of one tiny shard per worker and reported too, next to the floor of
   any process that tokenizes (start Python, import gpu_bytepiece, load the
   model, encode one text, exit);
3. memory: peak RSS of the pipeline's whole process tree (the job and its
   workers, summed, polled from /proc) on 1x and ``--rss-factor`` x the
   ``--rss-mb`` input: bounded memory means about the same peak.

Prints a table, and JSON with ``--json``. Figures are UTF-8 text MB/s (the
same numerator for both). Overhead = pipeline time / raw time - 1.

Examples::

    python benchmarks/bench_pipeline.py                 # full corpus (~60 MB), 2 workers
    python benchmarks/bench_pipeline.py --times 4        # 240 MB: startup amortized
    python benchmarks/bench_pipeline.py --mb 4 --rss-mb 2 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("GPU_BYTEPIECE_SHARED", ROOT.parent / "shared")) / "corpus"


def load_texts(parts, mb):
    """Documents of each part, at most ``mb`` MB of UTF-8 per part (None: all)."""
    texts = []
    for part in parts:
        path = CORPUS / f"{part}.jsonl.gz"
        if not path.exists():
            sys.exit(f"{path} is absent: the corpus lives in ../shared/corpus")
        size = 0
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                t = json.loads(line)["text"]
                texts.append(t)
                size += len(t.encode())
                if mb is not None and size >= mb * 1e6:
                    break
    return texts


def write_jsonl(path, texts, times=1):
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(times):
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False))
                f.write("\n")


def tree_rss(pid):
    """Summed RSS (bytes) of ``pid`` and all its descendants, from /proc."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                frontier.append(c)
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


FLOOR_SCRIPT = ("import sys; from gpu_bytepiece import Tokenizer; "
                "Tokenizer(sys.argv[1] or None, device=sys.argv[2]).encode_to_numpy(['x'])")


def process_floor(model, device, repeats=3):
    """Wall seconds (median) of the smallest program that tokenizes anything:
    interpreter start, imports, model load, one call, exit. Context for the
    pipeline's startup: any process that uses the tokenizer pays this."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", FLOOR_SCRIPT, model or "", device], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_job(args_list, poll=0.05):
    """Run the CLI; returns (wall seconds, peak tree RSS bytes, summary dict)."""
    with tempfile.TemporaryDirectory() as d:
        summary = os.path.join(d, "summary.json")
        cmd = [sys.executable, "-m", "gpu_bytepiece.cli", "encode", *args_list, "--no-progress",
               "--summary-json", summary]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = [0]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(poll)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        _, err = proc.communicate()
        secs = time.perf_counter() - t0
        done.set()
        th.join()
        if proc.returncode:
            sys.exit(f"encode failed ({proc.returncode}):\n{err.decode()}")
        with open(summary, encoding="utf-8") as f:
            return secs, peak[0], json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="zh,en,code")
    ap.add_argument("--mb", type=float, default=None, help="MB of text in all (default: the whole corpus)")
    ap.add_argument("--times", type=int, default=1,
                    help="repeat the texts this many times (raw and pipeline alike), to amortize startup")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-bytes", default=None, help="passed to encode (default: its own)")
    ap.add_argument("--batch-bytes", default=None, help="passed to encode (default: its own)")
    ap.add_argument("--rss-mb", type=float, default=8.0, help="base input for the memory check, MB of text")
    ap.add_argument("--rss-factor", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from gpu_bytepiece import Tokenizer

    parts = args.parts.split(",")
    texts = load_texts(parts, args.mb / len(parts) if args.mb else None) * args.times
    nbytes = sum(len(t.encode()) for t in texts)
    tok = Tokenizer(args.model, device=args.device)
    tok.encode_to_numpy(texts[:20])
    raw = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ids, _ = tok.encode_to_numpy(texts, num_threads=-1)
        raw.append(time.perf_counter() - t)
    raw_s = statistics.median(raw)

    extra = ["--workers", str(args.workers), "--device", args.device, "--format", "megatron"]
    if args.model:
        extra += ["--model", args.model]
    if args.shard_bytes:
        extra += ["--shard-bytes", args.shard_bytes]
    if args.batch_bytes:
        extra += ["--batch-bytes", args.batch_bytes]
    res = {"text_mb": nbytes / 1e6, "docs": len(texts), "tokens": int(len(ids)), "workers": args.workers,
           "device": args.device, "raw_s": raw_s, "raw_mb_s": nbytes / 1e6 / raw_s}
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "corpus.jsonl")
        write_jsonl(src, texts)
        # startup: one tiny text file per worker, one shard each, so the same workers start
        tiny = []
        for w in range(args.workers):
            tiny.append(os.path.join(d, f"tiny{w}.txt"))
            with open(tiny[-1], "w", encoding="utf-8") as f:
                f.write(texts[w % len(texts)][:200])
        startup, _, _ = run_job([*tiny, "-o", os.path.join(d, "tiny"), *extra, "--shard-bytes", "1"])
        floor = process_floor(args.model, args.device)
        pipe = []
        for k in range(args.repeats):
            secs, _, summ = run_job([src, "-o", os.path.join(d, f"out{k}"), *extra])
            pipe.append(secs)
            assert summ["tokens"] == len(ids), "the pipeline must give the same tokens"
        pipe_s = statistics.median(pipe)
        res.update(pipeline_s=pipe_s, pipeline_mb_s=nbytes / 1e6 / pipe_s, startup_s=startup, floor_s=floor,
                   overhead_pct=100 * (pipe_s / raw_s - 1),
                   overhead_after_startup_pct=100 * ((pipe_s - startup) / raw_s - 1),
                   overhead_vs_floor_pct=100 * (pipe_s / (raw_s + floor) - 1),
                   shards=summ["shards"])

        base = load_texts(parts, args.rss_mb / len(parts))
        rss = {}
        # the same shard size for both, small enough that even 1x keeps every worker busy
        shard = str(max(1 << 16, sum(len(t.encode()) for t in base) // (2 * args.workers)))
        rss_extra = [a for a in extra]
        if "--shard-bytes" in rss_extra:
            rss_extra[rss_extra.index("--shard-bytes") + 1] = shard
        else:
            rss_extra += ["--shard-bytes", shard]
        for factor in (1, args.rss_factor):
            f = os.path.join(d, f"rss{factor}.jsonl")
            write_jsonl(f, base, factor)
            secs, peak, summ = run_job([f, "-o", os.path.join(d, f"rss{factor}"), *rss_extra])
            rss[factor] = {"input_mb": os.path.getsize(f) / 1e6, "peak_rss_mb": peak / 1e6, "seconds": secs}
            os.unlink(f)
        res["rss"] = rss

    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"text: {res['text_mb']:.1f} MB, {res['docs']:,} documents ({'+'.join(parts)}), "
          f"{res['tokens']:,} tokens; device {args.device}")
    print(f"raw encode_to_numpy, all threads : {res['raw_s']:7.2f} s  {res['raw_mb_s']:7.2f} MB/s")
    print(f"encode JSONL -> megatron, {args.workers} workers: {res['pipeline_s']:7.2f} s  "
          f"{res['pipeline_mb_s']:7.2f} MB/s  ({res['shards']} shards)")
    print(f"  startup (a tiny shard per worker): {res['startup_s']:6.2f} s; the smallest program that tokenizes "
          f"(start Python, import, load the model, encode one text): {res['floor_s']:.2f} s")
    print(f"  overhead vs raw: {res['overhead_pct']:+.1f}% end to end, "
          f"{res['overhead_after_startup_pct']:+.1f}% after startup (target <= 15%)")
    print(f"  vs a program that only tokenizes the texts in memory (floor + raw): "
          f"{res['overhead_vs_floor_pct']:+.1f}%")
    for factor, r in res["rss"].items():
        print(f"peak RSS, {factor:>2}x input ({r['input_mb']:6.1f} MB JSONL): {r['peak_rss_mb']:7.1f} MB "
              f"(job + workers, {r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
