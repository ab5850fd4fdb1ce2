"""Trainer parity on the 20 MB mix: our model file == bytepiece 0.6.3's, byte for byte.

The mix (:func:`load_mix`): from each of ``../shared/corpus/{zh,en,code}.jsonl.gz``
the first documents, in file order, up to that file's share of 20,000,000
UTF-8 bytes (shares in proportion to the files' sizes; the document that
crosses the share is cut at a character boundary), interleaved round-robin
(zh, en, code, zh, ...). ``benchmarks/bench_train.py`` times the same mix.

    python benchmarks/train_parity.py                 # vocab 32000, min_count 8
    python benchmarks/train_parity.py --mb 2 --vocab-size 8000 --min-count 2

Trains both (the reference with ``workers=2``: several minutes), saves both
models, compares the files, and prints a summary of any difference.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPU_BYTEPIECE_SHARED", ROOT.parent / "shared"))
PARTS = ("zh", "en", "code")


def _docs(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def load_mix(total_bytes: int = 20_000_000, corpus_dir=None) -> list:
    """The benchmark mix: a list of str, ``total_bytes`` UTF-8 bytes at most.

    Streams the files (twice: sizes, then documents) and keeps only the mix.
    """
    corpus_dir = Path(corpus_dir or SHARED / "corpus")
    paths = {part: corpus_dir / f"{part}.jsonl.gz" for part in PARTS}
    for path in paths.values():
        if not path.exists():
            raise FileNotFoundError(f"{path} is absent: the corpus lives in ../shared/corpus")
    sizes = {part: sum(len(t.encode("utf-8")) for t in _docs(path)) for part, path in paths.items()}
    grand = sum(sizes.values())
    chosen = {}
    for part in PARTS:
        quota = round(total_bytes * sizes[part] / grand)
        out, used = [], 0
        for t in _docs(paths[part]):
            n = len(t.encode("utf-8"))
            if used + n > quota:
                cut = t.encode("utf-8")[: quota - used].decode("utf-8", "ignore")
                if cut:
                    out.append(cut)
                break
            out.append(t)
            used += n
        chosen[part] = out
    mix = []
    for i in range(max(len(v) for v in chosen.values())):
        for part in PARTS:
            if i < len(chosen[part]):
                mix.append(chosen[part][i])
    return mix


def compare_files(a: str, b: str) -> str:
    """'' when equal, else a short description of the differences."""
    with open(a, "rb") as f:
        ra = f.read()
    with open(b, "rb") as f:
        rb = f.read()
    if ra == rb:
        return ""
    ja, jb = json.loads(ra), json.loads(rb)
    only_a = set(ja) - set(jb)
    only_b = set(jb) - set(ja)
    diff = [k for k in set(ja) & set(jb) if ja[k] != jb[k]]
    return (f"{len(ja)} vs {len(jb)} pieces; {len(only_a)} only in the first, {len(only_b)} only in the "
            f"second, {len(diff)} with different id or count (e.g. {[(k, ja[k], jb[k]) for k in diff[:3]]})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0, help="size of the mix in MB (1e6 bytes)")
    ap.add_argument("--vocab-size", type=int, nargs="+", default=[32000])
    ap.add_argument("--min-count", type=int, default=8)
    ap.add_argument("--order", type=int, default=6)
    ap.add_argument("--isolate-digits", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep the two model files in this folder")
    args = ap.parse_args(argv)

    import bytepiece

    from gpu_bytepiece.train.trainer import Trainer

    texts = load_mix(int(args.mb * 1e6))
    size = args.vocab_size if len(args.vocab_size) > 1 else args.vocab_size[0]
    kw = dict(order=args.order, max_vocab_size=size, min_count=args.min_count,
              isolate_digits=args.isolate_digits)
    out = args.out or tempfile.mkdtemp(prefix="train-parity-")
    os.makedirs(out, exist_ok=True)
    print(f"mix: {len(texts)} documents, {sum(len(t.encode()) for t in texts):,} bytes; {kw}", flush=True)

    t = time.perf_counter()
    ours = Trainer(**kw)
    ours.train(texts, workers=args.workers, device="cpu", progress=False)
    ours_paths = ours.save(os.path.join(out, "ours.model"))
    t_ours = time.perf_counter() - t
    print(f"gpu_bytepiece: {t_ours:.1f} s", flush=True)

    t = time.perf_counter()
    ref = bytepiece.Trainer(**kw)
    with redirect_stderr(io.StringIO()):
        ref.train(texts, workers=args.workers)
    ref_path = os.path.join(out, "ref.model")
    ref.save(ref_path)
    t_ref = time.perf_counter() - t
    print(f"bytepiece 0.6.3: {t_ref:.1f} s", flush=True)

    ref_paths = [ref_path] if len(ref.pieces) == 1 else [f"{ref_path}.{s}" for s in ref.max_vocab_size]
    bad = 0
    for a, b in zip(ours_paths, ref_paths):
        d = compare_files(a, b)
        n = len(json.load(open(a, encoding="utf-8")))
        print(f"{os.path.basename(a)} vs {os.path.basename(b)}: {n} pieces, "
              + ("IDENTICAL files" if not d else "DIFFERENT: " + d))
        bad += bool(d)
    print("PARITY OK" if not bad else f"PARITY FAILED ({bad} models differ)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
