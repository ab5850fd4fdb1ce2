"""Training at scale: time per MB and peak memory from 100 MB to 1 GB of generated text.

The text is :mod:`make_corpus`'s (``--seed 0``; ``genN.txt`` in ``--data``,
made when missing; the same file for every tool). Every trainer runs in a
fresh child process, vocabulary 32,000; the parent samples the RSS of the
child's whole process tree (``/proc/PID/statm``) every 50 ms at first, then
less often (once a second from about two minutes on), and kills a tree that
passes ``--mem-limit`` (20 GiB) or ``--timeout``; the peak is the largest
sample, or the child's own ``ru_maxrss`` when larger. A tool that failed at
a size is not run at the larger ones.

- ``ours``: ``Trainer(max_vocab_size=32000, min_count=8)`` on
  ``InputTexts([file])`` (as ``gpu-bytepiece train FILE``), ``--workers``
  threads, ``--memory-budget``, with a work folder (checkpoints on, as the
  command line's default). Prints the per-stage seconds (pass 1 + n-gram
  pruning, pass 2, piece pruning).
- ``spm-unigram`` / ``spm-bpe``: SentencePiece, every sentence
  (``input_sentence_size=0``), ``num_threads=--workers``,
  ``max_sentence_length=65536`` (lines longer are skipped by SentencePiece).
- ``hf-unigram`` / ``hf-bpe``: HF ``tokenizers`` trainers on the file
  (Metaspace / ByteLevel pre-tokenizer, ``RAYON_NUM_THREADS=--workers``).

    python benchmarks/bench_train_scale.py --sizes 100 300 1000
    python benchmarks/bench_train_scale.py --sizes 100 --tools ours

Then the extrapolation to 100 GB from our measured per-stage costs at the
largest size (see :func:`extrapolate`). Figures on a shared machine are noisy:
say what else ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_line, proc_rss, tree_pids  # noqa: E402

TOOLS = ("ours", "spm-unigram", "spm-bpe", "hf-unigram", "hf-bpe")
GiB = 1 << 30


# ---------------------------------------------------------------- children
def child(args) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    res = {}
    if args.child == "ours":
        from gpu_bytepiece.pipeline import InputTexts
        from gpu_bytepiece.train.trainer import Trainer

        tr = Trainer(max_vocab_size=args.vocab_size, min_count=args.min_count)
        tr.train(InputTexts([args.input]), workers=args.workers, progress=False,
                 memory_budget=args.memory_budget, work_dir=str(out / "work"), overwrite=True)
        tr.save(out / "ours.model")
        st = tr.stats
        res = {k: st[k] for k in ("seconds_ngrams", "seconds_pieces", "seconds_prune", "seconds_prune_splits",
                                  "n_bytes",
                                  "n_ngram_spills", "n_piece_spills", "n_long_piece_spills", "n_pieces_counted",
                                  "pieces_kept_by_min_count", "ngrams_kept")}
        res["vocab"] = tr.models[0].vocab_size
    elif args.child.startswith("spm-"):
        import sentencepiece as spm

        spm.SentencePieceTrainer.train(
            input=args.input, model_prefix=str(out / args.child), vocab_size=args.vocab_size,
            model_type=args.child[4:], input_sentence_size=0, num_threads=args.workers,
            max_sentence_length=65536, train_extremely_large_corpus=True, minloglevel=2)
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        if args.child == "hf-bpe":
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        else:
            tok = Tokenizer(models.Unigram())
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            trainer = trainers.UnigramTrainer(vocab_size=args.vocab_size, show_progress=False)
        tok.train([args.input], trainer)
        tok.save(str(out / f"{args.child}.json"))
    res["seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def run_child(tool, path, args, limit) -> dict:
    if args.tmp:
        os.makedirs(args.tmp, exist_ok=True)
    out = tempfile.mkdtemp(prefix=f"scale-{tool}-", dir=args.tmp)
    cmd = [sys.executable, __file__, "--child", tool, "--input", str(path), "--out", out,
           "--vocab-size", str(args.vocab_size), "--min-count", str(args.min_count),
           "--workers", str(args.workers), "--memory-budget", args.memory_budget]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.workers))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    peak, why = 0, None
    while True:
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        rss = sum(proc_rss(p) for p in tree_pids(proc.pid))
        peak = max(peak, rss)
        elapsed = time.perf_counter() - t0
        if rss > limit:
            why = f"over {limit / GiB:.0f} GiB"
        elif elapsed > args.timeout:
            why = f"over {args.timeout:.0f} s"
        if why:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        # 20 polls a second at first, then fewer (one a second from ~2 min on): a
        # poll scans /proc, which a long run need not pay for 20 times a second
        time.sleep(min(1.0, 0.05 + elapsed / 128))
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    # the child's own peak (ru_maxrss, KiB), which the polls may have missed
    peak = max(peak, usage.ru_maxrss * 1024)
    text = proc.stdout.read()
    subprocess.run(["rm", "-rf", out])
    if why is None and proc.returncode != 0:
        why = f"failed (exit {proc.returncode})"
    res = json.loads(text.split("RESULT ", 1)[1]) if why is None else {}
    res.update(tool=tool, peak_rss=peak, wall=wall, failed=why)
    return res


# ---------------------------------------------------------------- extrapolation
def extrapolate(rows, cores=2):
    """100 GB estimates from our rows (per-stage seconds per MB at the largest size, fits across sizes)."""
    ours = sorted((r for r in rows if r["tool"] == "ours" and not r["failed"]), key=lambda r: r["mb"])
    if not ours:
        return []
    big = ours[-1]
    mb = big["mb"]
    s_pass = (big["seconds_ngrams"] + big["seconds_pieces"]) / mb  # both corpus passes, per MB, `cores` cores
    # pruning grows with the distinct pieces counted: a power law in the corpus size from the two largest
    if len(ours) >= 2:
        a, b = ours[-2], ours[-1]
        k = math.log(b["n_pieces_counted"] / a["n_pieces_counted"]) / math.log(b["mb"] / a["mb"])
    else:
        k = 1.0
    target = 100_000.0  # MB
    grow = (target / mb) ** k
    # the pruning's splits (re-tokenizing pieces) run on every core, and on the actors with --ray;
    # the rest of it (sorting, the cuts) stays on one thread of the driver
    splits = big.get("seconds_prune_splits", 0.0) * grow
    rest = big["seconds_prune"] * grow - splits
    pieces = big["n_pieces_counted"] * grow
    out = []
    for name, n_cores, nodes in (("one 2-core machine", 2, 1), ("one 64-core machine", 64, 1),
                                 ("16-node Ray cluster, 64 cores each", 64, 16)):
        passes = s_pass * target * cores / (n_cores * nodes)
        out.append((name, passes, rest + splits * cores / (n_cores * nodes), pieces))
    return out, k, s_pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", choices=TOOLS)
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="MB of generated text")
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "gpu-bytepiece-scale"),
                    help="where genN.txt are (made with make_corpus.py when missing)")
    ap.add_argument("--tmp", default=None, help="where the children write models and work folders")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--min-count", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-budget", default="512M")
    ap.add_argument("--mem-limit", type=float, default=20.0, help="GiB of process-tree RSS before a kill")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before a kill")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    print(machine_line(), flush=True)
    os.makedirs(args.data, exist_ok=True)
    rows, failed = [], set()
    print("| MB | tool | time (s) | s per MB | peak RSS, tree (MB) | note |\n| --- | --- | --- | --- | --- | --- |",
          flush=True)
    for mb in args.sizes:
        path = Path(args.data) / f"gen{mb}.txt"
        if not path.exists():
            subprocess.run([sys.executable, str(HERE / "make_corpus.py"), "--mb", str(mb), "-o", str(path)],
                           check=True)
        for tool in args.tools:
            if tool in failed:
                continue
            r = run_child(tool, path, args, args.mem_limit * GiB)
            r["mb"] = mb
            rows.append(r)
            if r["failed"]:
                failed.add(tool)
            note = r["failed"] or ""
            if tool == "ours" and not r["failed"]:
                note = (f"pass 1 + n-gram pruning {r['seconds_ngrams']:.1f} s, pass 2 {r['seconds_pieces']:.1f} s, "
                        f"piece pruning {r['seconds_prune']:.1f} s (splits {r['seconds_prune_splits']:.1f} s); "
                        f"{r['vocab']} ids; spills "
                        f"{r['n_ngram_spills']}/{r['n_piece_spills']}/{r['n_long_piece_spills']} (n-grams/short/long "
                        f"pieces); {r['n_pieces_counted']:,} pieces counted, {r['pieces_kept_by_min_count']:,} "
                        "kept in memory")
            print(f"| {mb} | {tool} | {r['wall']:.1f} | {r['wall'] / mb:.3f} | {r['peak_rss'] / 1e6:.0f} | {note} |",
                  flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    est = extrapolate(rows, args.workers)
    if est:
        est, k, s_pass = est
        print(f"\n100 GB estimate from ours at {max(r['mb'] for r in rows if r['tool'] == 'ours')} MB: corpus passes "
              f"{s_pass * 1000:.1f} ms/MB on {args.workers} cores, scaled by cores (they are parallel over "
              f"batches); piece pruning ~ distinct pieces ~ size^{k:.2f}, its splits scaled by cores (threads, "
              "and Ray actors), the rest on the driver as measured")
        print("| where | corpus passes | piece pruning | distinct pieces |\n| --- | --- | --- | --- |")
        for name, passes, prune, pieces in est:
            print(f"| {name} | {passes / 3600:.1f} h | {prune / 3600:.2f} h | {pieces / 1e6:.0f} M |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
