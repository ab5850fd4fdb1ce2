"""Compile every CPU path ahead of use: for a wheel (``setup.py``) or a fresh machine.

:func:`warm` runs each path the package compiles on the CPU, on tiny inputs:
the tokenizer (best path, sampling, bos/eos, several threads) on the bundled
model, and a tiny training. Each compiled function lands in the
content-keyed cache (:mod:`gpu_bytepiece.jit_cache`), so later processes
load it instead of compiling.

``python -m gpu_bytepiece.precompile`` fills the user's cache (a container
image or a cluster node can run it once at build time).
``--ship DIR`` compiles into a fresh cache and copies it to
``DIR/<content key>/`` with the machine it was compiled for: what
``setup.py`` puts in a wheel as ``gpu_bytepiece/_jit``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["warm", "ship", "main"]


def warm() -> None:
    """Run every CPU path once on tiny inputs (compiles or loads each function)."""
    from .tokenizer import Tokenizer
    from .train.trainer import Trainer
    from .trie import build_trie

    tok = Tokenizer(device="cpu", seed=0)
    texts = ["x", "hello world\n\nsecond line 你好，世界 123", "", "tabs\tand  spaces\n"]
    big = "the quick brown fox 你好，世界 123\n" * 3000  # over config.CPU_MIN_CHUNK_BYTES: the prange driver
    ids = tok.encode("x")  # one short text: the one-chunk driver, no threads
    assert tok.decode(ids) == "x", ids
    for alpha in (-1, 0.1):
        for bos in (False, True):
            tok.encode_to_numpy(texts, alpha=alpha, add_bos=bos, add_eos=bos)
            tok.encode_to_numpy(texts + [big], alpha=alpha, add_bos=bos, add_eos=bos, num_threads=1)
    tok.encode_to_numpy(texts * 64 + [big], num_threads=2)
    build_trie([bytes([b]) for b in range(256)] + ["你好".encode(), "世界".encode()])
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog; 你好，世界 {i * 7}" for i in range(200)]
    Trainer(order=4, max_vocab_size=300, min_count=2).train(lines, workers=1, device="cpu", progress=False)


def ship(out: Path) -> Path:
    """Compile into a fresh cache folder; copy it to ``out/<tag>/`` with its machine.

    Must run in a process that has not cached anything yet (``setup.py``
    starts one): the cache folder is chosen on first use.
    """
    from . import jit_cache

    with tempfile.TemporaryDirectory(prefix="gbp-precompile-") as tmp:
        os.environ["GPU_BYTEPIECE_CACHE_DIR"] = tmp
        if "dir" in jit_cache._state:
            raise RuntimeError("ship() must run before anything is compiled in this process")
        warm()
        src = jit_cache.cache_dir()
        dest = Path(out) / src.name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".probe-*", "*.tmp-*"))
    (dest / jit_cache.MACHINE_FILE).write_text(jit_cache.machine() + "\n")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_bytepiece.precompile",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--ship", metavar="DIR", help="compile into DIR/<content key>/ (a wheel's gpu_bytepiece/_jit)")
    args = ap.parse_args(argv)
    if args.ship:
        dest = ship(Path(args.ship))
        n = sum(1 for _ in dest.rglob("*.nbi"))
        print(f"gpu-bytepiece: {n} compiled functions in {dest}", file=sys.stderr)
    else:
        warm()
    return 0


if __name__ == "__main__":
    sys.exit(main())
