"""Tokenizing speed on CPU: gpu-bytepiece vs bytepiece==0.6.3 vs SentencePiece.

Same model, same text, one run. For each corpus part (zh, en, code) it times,
from a Python list of ``str`` in to ids out:

- gpu-bytepiece CPU: ``tok.encode_to_numpy(docs, num_threads=1)`` (and with
  ``--threads`` threads), ``tok = gpu_bytepiece.Tokenizer(model, device="cpu")``;
  includes NFC normalization and UTF-8 packing; ids out as one flat uint32
  array plus offsets; Numba compilation is done in the warm-up, not timed;
- bytepiece==0.6.3 (the reference): ``[ref.encode(d) for d in docs]``, lists
  of ints, one core;
- SentencePiece: ``sp.encode(docs, num_threads=1)`` (and ``--threads``), lists
  of ints, on the same model converted (``_common.sentencepiece_from_bytepiece``),
  identity normalizer (no NFC), byte fallback.

Figures are input UTF-8 MB (10**6 bytes) per second: the median of
``--repeat`` timed runs after one untimed warm-up run. gpu-bytepiece and
SentencePiece take turns (one call of each, round after round), so a slow
spell of a shared machine hits both alike. The reference is slow
(~1.5-2 MB/s) and is timed on the first ``--ref-mb`` MB of each part (its
warm-up on the first 0.25 MB); the others on the whole part (or
``--limit-mb``). The same run checks that gpu-bytepiece's ids equal the
reference's on the reference's subset, and reports how often SentencePiece's
ids equal BytePiece's on a sample (they need not: SentencePiece's lattice
crosses newlines and it does not NFC-normalize).

    python benchmarks/bench_tokenize.py                  # full parts (a few minutes)
    python benchmarks/bench_tokenize.py --limit-mb 1     # quick check
    python benchmarks/bench_tokenize.py --model bytepiece_80k
    python benchmarks/bench_tokenize.py --models bytepiece.plus.40k bytepiece_80k my80k.model --no-reference
"""

from __future__ import annotations

import argparse
import sys

from _common import (MB, PARTS, load_docs, machine_line, model_path, prefix_mb, require_shared,
                     sentencepiece_from_bytepiece, time_interleaved, time_runs, utf8_len)

REF_WARMUP_MB = 0.25


def _fmt_rate(x):
    return "n/a" if x is None else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _fmt_ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bytepiece.plus.40k.model",
                    help="model file (a path, or a name in ../shared/models; '.model' optional)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="several models, one after the other, then a summary table (overrides --model)")
    ap.add_argument("--sample-alpha", type=float, default=0.1,
                    help="also time sampling (alpha, seeded), 1 thread, taking turns with the rest; "
                         "negative: skip; default 0.1")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="corpus parts")
    ap.add_argument("--limit-mb", type=float, default=None,
                    help="time every tool on at most the first X MB of each part")
    ap.add_argument("--ref-mb", type=float, default=4.0,
                    help="time the reference on the first X MB of each part (0: all); default 4")
    ap.add_argument("--threads", type=int, default=2, help="the multi-thread runs; default 2")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median); default 3")
    ap.add_argument("--check-docs", type=int, default=200,
                    help="documents per part for the SentencePiece-vs-BytePiece id comparison")
    ap.add_argument("--no-reference", action="store_true", help="skip bytepiece==0.6.3")
    ap.add_argument("--no-sentencepiece", action="store_true", help="skip SentencePiece")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)

    require_shared()
    import numba

    nt = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    if nt != args.threads:
        print(f"note: Numba allows {nt} threads here (NUMBA_NUM_THREADS), not {args.threads}")
    paths = [model_path(m) for m in (args.models or [args.model])]
    results, status = [], 0
    for path in paths:
        rate, code = bench_model(path, args, nt)
        results.append((path, rate))
        status |= code
        print()
    if len(paths) > 1 or args.sample_alpha >= 0:
        summary(results, args, nt)
    return status


def summary(results, args, nt):
    """One table over every model: the ratios the speed targets are about."""
    print(f"Summary, median of {args.repeat} (the spread is in each model's runs above): "
          f"gpu-bytepiece 1 thread / SentencePiece 1 thread; {nt} threads / 1 thread; "
          f"sampling (alpha={args.sample_alpha:g}) / best path, 1 thread\n")
    parts = args.parts
    print("| model | " + " | ".join(f"{p} vs SP | {p} {nt}t/1t | {p} sample/best" for p in parts) + " |")
    print("| --- |" + " ---: |" * (3 * len(parts)))
    def cell(rate, a, b, p):
        # the median ratio, and its range over the rounds (round i of a over round i of b)
        ra, rb = rate.get(("runs", a, p)), rate.get(("runs", b, p))
        if not ra or not rb:
            return "n/a"
        each = [x / y for x, y in zip(ra, rb)]
        return f"{_fmt_ratio(rate[a, p], rate[b, p])} ({min(each):.2f}-{max(each):.2f})"

    for path, rate in results:
        cells = []
        for p in parts:
            cells.append(cell(rate, "ours1", "sp1", p))
            cells.append(cell(rate, "oursN", "ours1", p))
            cells.append(cell(rate, "sample1", "ours1", p))
        print(f"| {path.name} | " + " | ".join(cells) + " |")


def bench_model(path, args, nt):
    """Time every tool on every part with one model; print its tables. Returns ``(rate, status)``."""
    import numba

    import gpu_bytepiece
    from gpu_bytepiece import Tokenizer

    tok = Tokenizer(path, device="cpu")

    ref = ref_name = None
    if not args.no_reference:
        try:
            import bytepiece
        except ImportError:
            print("note: bytepiece==0.6.3 is not installed (scripts/setup.sh): reference not timed")
        else:
            ref = bytepiece.Tokenizer(str(path))
            ref_name = f"bytepiece=={getattr(bytepiece, '__version__', None) or _dist_version('bytepiece')}"
    sp = sp_name = None
    if not args.no_sentencepiece:
        try:
            import sentencepiece as spm
        except ImportError:
            print("note: sentencepiece is not installed: not timed")
        else:
            sp, how, mapped = sentencepiece_from_bytepiece(path, tok.model.pieces, tok.model.scores()[3:])
            sp_name = f"SentencePiece {spm.__version__}"
            mapped_ids = {tok.piece_to_id(p) for p in mapped}

    print(f"machine: {machine_line()}")
    print(f"model: {path.name} ({tok.vocab_size:,} ids); gpu-bytepiece {gpu_bytepiece.__version__}, "
          f"numba {numba.__version__}")
    if sp is not None:
        print(f"{sp_name}: model converted by {how}; {sp.get_piece_size():,} pieces "
              f"(BytePiece's ids, then byte pieces for the printable ASCII bytes)")
    print(f"timed: list of str in -> ids out; MB = 10**6 UTF-8 bytes of input; "
          f"median of {args.repeat} after a warm-up")
    print()

    rate = {}      # (tool, part) -> MB/s
    details = []   # per-part lines
    for part in args.parts:
        docs = load_docs(part, limit_mb=args.limit_mb)
        size = utf8_len(docs)
        print(f"[{part}: {len(docs):,} documents, {size / MB:.2f} MB]", file=sys.stderr, flush=True)

        def report(tool, med, times, nbytes):
            rate[tool, part] = nbytes / MB / med
            rate["runs", tool, part] = [nbytes / MB / t for t in times]
            print(f"  {tool:<24} {rate[tool, part]:8.2f} MB/s   runs: "
                  + ", ".join(f"{t:.3f}" for t in times) + " s", file=sys.stderr, flush=True)

        def run(tool, fn, nbytes, warmup=None):
            med, times, out = time_runs(fn, repeat=args.repeat, warmup=warmup)
            report(tool, med, times, nbytes)
            return out

        # the fast tools take turns, round after round (see time_interleaved)
        fast = {"ours1": lambda: tok.encode_to_numpy(docs, num_threads=1),
                "oursN": lambda: tok.encode_to_numpy(docs, num_threads=nt)}
        if args.sample_alpha >= 0:
            fast["sample1"] = lambda: tok.encode_to_numpy(docs, num_threads=1, alpha=args.sample_alpha, seed=1)
        if sp is not None:
            fast["sp1"] = lambda: sp.encode(docs, num_threads=1)
            fast["spN"] = lambda: sp.encode(docs, num_threads=nt)
        for tool, (med, times) in time_interleaved(fast, repeat=args.repeat).items():
            report(tool, med, times, size)
        ids, _ = tok.encode_to_numpy(docs)
        line = {"part": part, "docs": len(docs), "mb": size / MB, "bpt": size / max(len(ids), 1)}
        del ids

        if ref is not None:
            ref_docs = prefix_mb(docs, args.ref_mb or None)
            warm = prefix_mb(ref_docs, REF_WARMUP_MB)
            ref_size = utf8_len(ref_docs)
            ref_ids = run("ref", lambda: [ref.encode(d) for d in ref_docs], ref_size,
                          warmup=lambda: [ref.encode(d) for d in warm])
            ours = tok.encode_batch(ref_docs)
            same = sum(a == b for a, b in zip(ours, ref_ids))
            line.update(ref_docs=len(ref_docs), ref_mb=ref_size / MB, ref_same=same)
            del ref_ids, ours

        if sp is not None:
            sample = docs[:args.check_docs]
            sp_ids = sp.encode(sample, num_threads=1)
            bp_ids = tok.encode_batch(sample)
            line.update(sp_docs=len(sample), sp_same=sum(a == b for a, b in zip(sp_ids, bp_ids)),
                        sp_tokens=sum(map(len, sp_ids)), bp_tokens=sum(map(len, bp_ids)),
                        sp_mapped=sum(1 for s in sp_ids for i in s if i in mapped_ids))
        details.append(line)

    # ------------------------------------------------------------------ report
    parts = args.parts
    print(f"Tokenizing speed, input UTF-8 MB/s (median of {args.repeat}), model {path.name}, "
          f"one core unless said:\n")
    print("| tool | " + " | ".join(parts) + " |")
    print("| --- |" + " ---: |" * len(parts))

    def row(label, tool):
        if all((tool, p) not in rate for p in parts):
            return
        print(f"| {label} | " + " | ".join(_fmt_rate(rate.get((tool, p))) for p in parts) + " |")

    row("gpu-bytepiece CPU, 1 thread", "ours1")
    row(f"gpu-bytepiece CPU, {nt} threads", "oursN")
    row(f"gpu-bytepiece CPU, 1 thread, sampling (alpha={args.sample_alpha:g})", "sample1")
    if ref is not None:
        subset = any(d["ref_docs"] < d["docs"] for d in details)
        row(f"{ref_name} (first {args.ref_mb:g} MB)" if subset else ref_name, "ref")
    if sp is not None:
        row(f"{sp_name}, 1 thread", "sp1")
        row(f"{sp_name}, {nt} threads", "spN")
    if sp is not None:
        print("| gpu-bytepiece / SentencePiece, 1 thread each | "
              + " | ".join(_fmt_ratio(rate.get(("ours1", p)), rate.get(("sp1", p))) for p in parts) + " |")
    if ref is not None:
        print("| gpu-bytepiece 1 thread / bytepiece | "
              + " | ".join(_fmt_ratio(rate.get(("ours1", p)), rate.get(("ref", p))) for p in parts) + " |")

    def scaling(tool_n, tool_1):
        # all parts together: total bytes / total time, N threads over 1 thread
        t_n = sum(d["mb"] / rate[tool_n, d["part"]] for d in details)
        t_1 = sum(d["mb"] / rate[tool_1, d["part"]] for d in details)
        each = ", ".join(f"{d['part']} {rate[tool_n, d['part']] / rate[tool_1, d['part']]:.2f}x" for d in details)
        return f"{t_1 / t_n:.2f}x one thread ({each})"

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none used"
    print(f"\ngpu-bytepiece CPU, {nt} threads: {scaling('oursN', 'ours1')}; Numba threading layer: {layer}")
    if sp is not None:
        print(f"{sp_name}, {nt} threads: {scaling('spN', 'sp1')}")

    print("\n| part | documents | MB timed | bytes/token | reference: MB timed | ids == reference "
          "| SentencePiece ids == BytePiece ids | SP tokens / BytePiece tokens |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in details:
        refc = (f"{d['ref_mb']:.2f}", f"{d['ref_same']:,} / {d['ref_docs']:,}") if "ref_docs" in d else ("-", "-")
        spc = (f"{100.0 * d['sp_same'] / max(d['sp_docs'], 1):.1f}% of {d['sp_docs']:,} docs",
               f"{d['sp_tokens'] / max(d['bp_tokens'], 1):.3f}") if "sp_docs" in d else ("-", "-")
        print(f"| {d['part']} | {d['docs']:,} | {d['mb']:.2f} | {d['bpt']:.2f} | {refc[0]} | {refc[1]} "
              f"| {spc[0]} | {spc[1]} |")
    if sp is not None and any(d.get("sp_mapped") for d in details):
        print("warning: SentencePiece produced placeholder ids", sum(d.get("sp_mapped", 0) for d in details))
    bad = [d["part"] for d in details if "ref_docs" in d and d["ref_same"] != d["ref_docs"]]
    if bad:
        print(f"\nERROR: gpu-bytepiece's ids differ from the reference's on {', '.join(bad)} "
              f"(run benchmarks/parity.py)")
        return rate, 1
    return rate, 0


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
