"""Where one thread's tokenizing time goes, stage by stage (gpu-bytepiece only).

For each corpus part, ms per MB of UTF-8 input (best of ``--repeat``, one
Numba thread):

- ``pack``: NFC + UTF-8 of the list of ``str`` (``text.pack_texts``);
- ``segments``: cutting documents into line segments (``find_segments``);
- ``lattice``: the lattice and backtrack of every segment, alone
  (``cpu_fallback.tokenize.encode_chunk`` over all segments at once);
- ``encode_packed``: the backend call (segments, lattice, id layout);
- ``total``: ``Tokenizer.encode_to_numpy(docs, num_threads=1)``.

For work on the lattice's inner loop: ``lattice`` is the figure to watch.
Remember to delete Numba's caches after editing ``gpu_bytepiece/core/lattice.py``
(CONTRIBUTING.md).

    python benchmarks/bench_stages.py
    python benchmarks/bench_stages.py --parts en --repeat 9
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from _common import MB, PARTS, load_docs, machine_line, model_path, utf8_len


def best_of(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bytepiece.plus.40k")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from gpu_bytepiece import Tokenizer
    from gpu_bytepiece.cpu_fallback import find_segments
    from gpu_bytepiece.cpu_fallback.tokenize import encode_chunk
    from gpu_bytepiece.text import pack_texts

    numba.set_num_threads(1)
    path = model_path(args.model)
    tok = Tokenizer(str(path), device="cpu")
    backend = tok._backend
    trie = backend.trie
    print(f"machine: {machine_line()}")
    print(f"model: {path.name}; ms per MB of input, best of {args.repeat}, one thread\n")
    print("| part | MB | pack | segments | lattice | encode_packed | total | MB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for part in args.parts:
        docs = load_docs(part)
        mb = utf8_len(docs) / MB
        data, doc_off = pack_texts(docs)
        segs = find_segments(data, doc_off)
        seg_start, seg_end, _ = segs
        n = len(seg_start)
        out = np.empty(len(data), np.uint32)
        counts = np.zeros(n, np.int64)
        keys = np.zeros(n, np.uint64)
        pos = np.zeros(n, np.int64)
        t = {
            "pack": best_of(lambda: pack_texts(docs), args.repeat),
            "segments": best_of(lambda: find_segments(data, doc_off), args.repeat),
            "lattice": best_of(lambda: encode_chunk(data, seg_start, seg_end, keys, pos, 0, n, trie.cells,
                                                    trie.node_id, backend.node_score,
                                                    trie.max_len, np.float64(-1), out, counts), args.repeat),
            "encode_packed": best_of(lambda: backend.encode_packed(data, doc_off, -1.0),
                                     args.repeat),
            "total": best_of(lambda: tok.encode_to_numpy(docs, num_threads=1), args.repeat),
        }
        ms = {k: 1e3 * v / mb for k, v in t.items()}
        print(f"| {part} | {mb:.1f} | {ms['pack']:.2f} | {ms['segments']:.2f} | {ms['lattice']:.2f} "
              f"| {ms['encode_packed']:.2f} | {ms['total']:.2f} | {mb / t['total']:.1f} |")


if __name__ == "__main__":
    main()
