"""Generate realistic text of any size from ``../shared/corpus``, seeded.

Repeating ``../shared/corpus`` does not grow the number of distinct n-grams,
so a trainer measured on repeats of it sees a fixed model whatever the size.
This script writes text with the statistics of the real corpus that keeps
growing like real text: per part (zh, en, code) a character-level Markov
model of order ``K`` (the empirical one: the next character is the character
after a random occurrence, in the real part, of the last ``K`` characters),
which with probability ``--backoff`` uses only the last character instead
(this makes new ``K + 1``-character n-grams at a steady rate, as new text
does). Documents end where a real document ends; each document's part is
drawn in proportion to the parts' sizes (zh 23 %, en 30 %, code 47 %).

The output is a ``.txt`` file (documents separated by one newline; what
``gpu-bytepiece train FILE.txt``, SentencePiece and HF ``tokenizers`` read)
or ``.jsonl`` (``{"text": ...}`` per line). Same ``--seed``, same size, same
parts: the same bytes (the generator has its own splitmix64 RNG, so the
output does not depend on numpy's or Numba's).

    python benchmarks/make_corpus.py --mb 100 -o /tmp/gen100.txt
    python benchmarks/make_corpus.py --compare          # distinct n-grams: generated vs real

``--compare`` fits each part's generator on every other document of the
real part (half of it, every source), generates as much text as the whole real part, and prints the number
of distinct byte n-grams (n = 2, 4, 6, 8) of prefixes of the real part and
of the generated text, with the growth exponent between the half size and
the full size (distinct(S) ~ S^b: b near 1 grows like a random string, b = 0
does not grow at all, as repeated text). Measured on the 2-core development
VM (``K`` = 5 zh, 7 en and code, backoff 0.02, seed 0):

| part | n | real at 1/2 | real at full | b real | generated at 1/2 | generated at full | b generated |
| --- | --- | --- | --- | --- | --- | --- | --- |
| zh (13.9 MB) | 2 | 11,667 | 15,277 | 0.39 | 12,303 | 13,069 | 0.09 |
| zh (13.9 MB) | 4 | 384,238 | 589,054 | 0.62 | 376,893 | 448,623 | 0.25 |
| zh (13.9 MB) | 6 | 1,659,991 | 2,512,169 | 0.60 | 1,323,288 | 1,703,093 | 0.36 |
| zh (13.9 MB) | 8 | 3,177,108 | 4,929,767 | 0.63 | 2,400,828 | 3,320,786 | 0.47 |
| en (18.0 MB) | 2 | 6,781 | 8,913 | 0.39 | 7,446 | 7,855 | 0.08 |
| en (18.0 MB) | 4 | 238,599 | 381,043 | 0.68 | 284,757 | 352,458 | 0.31 |
| en (18.0 MB) | 6 | 929,191 | 1,600,685 | 0.78 | 1,144,450 | 1,584,911 | 0.47 |
| en (18.0 MB) | 8 | 1,992,823 | 3,527,879 | 0.82 | 2,261,550 | 3,301,196 | 0.55 |
| code (28.2 MB) | 2 | 8,028 | 9,608 | 0.26 | 8,235 | 8,522 | 0.05 |
| code (28.2 MB) | 4 | 350,551 | 536,944 | 0.62 | 395,724 | 491,020 | 0.31 |

So at the same size the generated text has about as many distinct n-grams
as the real text (within 25 % at n >= 4, at half and full size), and keeps
growing with size, unlike repeated text (b = 0), but more slowly than real
text (b about 0.3-0.55 against 0.6-0.8 for n = 4..8): new real text brings
new words and topics, the generator only recombines the real part's
contexts. A trainer measured on it therefore sees more distinct n-grams and
pieces as the size grows (as on real text), if fewer; its growth of distinct
pieces is printed by ``bench_train_scale.py``. Generation runs at 2-3 MB/s
on one core after a 30 s fit.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CORPUS, PARTS, require_shared  # noqa: E402

SEP = 0x110000  # document end, outside Unicode
ORDERS = {"zh": 5, "en": 7, "code": 7}
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _context_hashes(src, k):
    """Hash of the ``k`` code points before each position (fewer at the start)."""
    n = src.shape[0]
    out = np.empty(n + 1, np.uint64)
    for p in range(n + 1):
        h = np.uint64(k)
        for j in range(max(0, p - k), p):
            h = _mix(h ^ np.uint64(src[j]) * np.uint64(0x9E3779B97F4A7C15))
        out[p] = h
    return out


def _groups(h):
    """``(members, lo, cnt)``: positions sorted by context; each position's run in that order."""
    order = np.argsort(h, kind="stable").astype(np.int32)
    hs = h[order]
    starts = np.flatnonzero(np.concatenate(([True], hs[1:] != hs[:-1])))
    sizes = np.diff(np.concatenate((starts, [hs.shape[0]])))
    lo = np.empty(h.shape[0], np.int32)
    cnt = np.empty(h.shape[0], np.int32)
    run = np.repeat(np.arange(starts.shape[0]), sizes)
    lo[order] = starts[run]
    cnt[order] = sizes[run]
    return order, lo, cnt


@numba.njit(cache=True)
def _generate_doc(src, doc_starts, mem_k, lo_k, cnt_k, mem_1, lo_1, cnt_1, backoff_q, state, out):
    """One document's code points into ``out`` (returns their number); ``state[0]``: the RNG."""
    s = state[0]
    s += np.uint64(0x9E3779B97F4A7C15)
    r = _mix(s)
    p = doc_starts[r % np.uint64(doc_starts.shape[0])]
    n = 0
    while n < out.shape[0]:
        s += np.uint64(0x9E3779B97F4A7C15)
        r = _mix(s)
        if (r >> np.uint64(40)) < backoff_q:
            q = mem_1[lo_1[p] + (r & np.uint64(0xFFFFFF)) % np.uint64(cnt_1[p])]
        else:
            q = mem_k[lo_k[p] + (r & np.uint64(0xFFFFFF)) % np.uint64(cnt_k[p])]
        c = src[q]
        if c == SEP:
            break
        out[n] = c
        n += 1
        p = q + 1
    state[0] = s
    return n


@numba.njit(cache=True)
def _uniform(state):
    """A float in [0, 1) from the RNG ``state[0]``."""
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    return float(_mix(state[0]) >> np.uint64(11)) / 9007199254740992.0


class PartModel:
    """The Markov model of one part: its code points and context groups of order ``k`` and 1."""

    def __init__(self, docs, k):
        text = "\x00".join(docs) + "\x00"
        src = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int32)
        src = src.copy()
        src[(src >= 0xD800) & (src < 0xE000)] = 0xFFFD
        src[src == 0] = SEP  # "\x00" joined the documents (a real NUL is kept as U+FFFD-free text below)
        self.src = src
        self.bytes = sum(len(d.encode("utf-8", "surrogatepass")) for d in docs)
        self.doc_starts = np.concatenate(([0], np.flatnonzero(src == SEP)[:-1] + 1)).astype(np.int64)
        self.mem_k, self.lo_k, self.cnt_k = _groups(_context_hashes(src, k)[:-1])
        self.mem_1, self.lo_1, self.cnt_1 = _groups(_context_hashes(src, 1)[:-1])
        # a group ending on the last position would point past the end: positions come from src[:-1]
        self.buf = np.empty(1 << 22, np.int32)

    def doc(self, backoff_q, state):
        n = _generate_doc(self.src, self.doc_starts, self.mem_k, self.lo_k, self.cnt_k,
                          self.mem_1, self.lo_1, self.cnt_1, backoff_q, state, self.buf)
        return self.buf[:n].astype("<u4").tobytes().decode("utf-32-le")


def _part_docs(part, every=1):
    path = CORPUS / f"{part}.jsonl.gz"
    require_shared(CORPUS, path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"].replace("\x00", "\ufffd") for line in f]
    return docs[::every]


def build_models(parts, orders, every=1):
    """``{part: PartModel}`` fitted on every ``every``-th document of each part."""
    return {part: PartModel(_part_docs(part, every), orders[part]) for part in parts}


def generate(models, total_bytes, seed=0, backoff=0.02):
    """Yield generated documents (str) until ``total_bytes`` UTF-8 bytes (whole documents)."""
    parts = list(models)
    weights = np.array([models[p].bytes for p in parts], np.float64)
    cum = np.cumsum(weights / weights.sum())
    state = np.array([(seed * 0x2545F4914F6CDD1D + 1) % (1 << 64)], np.uint64)
    backoff_q = np.uint64(int(backoff * (1 << 24)))
    done = 0
    while done < total_bytes:
        u = _uniform(state)
        part = parts[min(int(np.searchsorted(cum, u, side="right")), len(parts) - 1)]
        doc = models[part].doc(backoff_q, state)
        if not doc:
            continue
        done += len(doc.encode("utf-8")) + 1
        yield doc


def write(path, docs):
    """Write documents to ``path``: ``.jsonl`` one ``{"text": ...}`` per line, else one newline between."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        jsonl = str(path).endswith((".jsonl", ".ndjson"))
        for doc in docs:
            f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n" if jsonl else doc + "\n")
            n += 1
    return n


# ---------------------------------------------------------------- --compare
def distinct_ngrams(data: np.ndarray, n: int) -> int:
    """Distinct byte n-grams of ``data`` (uint8)."""
    if data.shape[0] < n:
        return 0
    m = data.shape[0] - n + 1
    keys = np.zeros(m, np.uint64)
    for j in range(n):
        keys = (keys << np.uint64(8)) | data[j:j + m].astype(np.uint64)
    return int(np.unique(keys).shape[0])


def _utf8(docs):
    return np.frombuffer("\n".join(docs).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def compare(parts, orders, backoff, seed, ns=(2, 4, 6, 8)):
    print("| part | n | real at 1/2 | real at full | b real | generated at 1/2 | generated at full | b generated |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for part in parts:
        real = _utf8(_part_docs(part))
        model = build_models([part], orders, every=2)
        gen = _utf8(list(generate(model, real.shape[0], seed=seed, backoff=backoff)))[: real.shape[0]]
        half = real.shape[0] // 2
        for n in ns:
            r1, r2 = distinct_ngrams(real[:half], n), distinct_ngrams(real, n)
            g1, g2 = distinct_ngrams(gen[:half], n), distinct_ngrams(gen, n)
            print(f"| {part} ({real.shape[0] / 1e6:.1f} MB) | {n} | {r1:,} | {r2:,} | "
                  f"{math.log(r2 / r1, 2):.2f} | {g1:,} | {g2:,} | {math.log(g2 / g1, 2):.2f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", help="output file (.txt or .jsonl)")
    ap.add_argument("--mb", type=float, default=100.0, help="UTF-8 MB (10^6 bytes) to write (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--backoff", type=float, default=0.02,
                    help="probability of continuing from the last character only (default 0.02)")
    ap.add_argument("--order", type=int, default=None, help="context characters for every part "
                    f"(default per part: {ORDERS})")
    ap.add_argument("--compare", action="store_true", help="print distinct n-gram growth, generated vs real")
    args = ap.parse_args(argv)
    orders = {p: args.order or ORDERS[p] for p in PARTS}
    if args.compare:
        compare(args.parts, orders, args.backoff, args.seed)
        return 0
    if not args.output:
        ap.error("-o/--output is required (or --compare)")
    t0 = time.perf_counter()
    models = build_models(args.parts, orders)
    t1 = time.perf_counter()
    tmp = f"{args.output}.tmp-{os.getpid()}"
    n = write(tmp, generate(models, int(args.mb * 1e6), seed=args.seed, backoff=args.backoff))
    os.replace(tmp, args.output)
    t2 = time.perf_counter()
    size = os.path.getsize(args.output)
    print(f"{args.output}: {n:,} documents, {size / 1e6:.1f} MB (fit {t1 - t0:.1f} s, "
          f"generate {t2 - t1:.1f} s, {size / 1e6 / max(t2 - t1, 1e-9):.1f} MB/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
