"""Parity of gpu-bytepiece (CPU) with the reference bytepiece==0.6.3 on real text.

Encodes every document of ../shared/corpus/{zh,en,code}.jsonl.gz with each
model in ../shared/models, once with
``gpu_bytepiece.Tokenizer(path, device="cpu").encode_batch(docs)`` and once
with the reference ``bytepiece.Tokenizer(path).encode(doc)`` per document,
and counts the documents whose ids differ. Prints a table per (model, part),
the first mismatch of each in detail, and exits 1 on any mismatch.
Modelled on huggingface/tokenizers' ``spm_parity_check.py``, but stricter:
the two must agree exactly, so there is no "imperfect but acceptable" class.

The reference is slow (~1.5-2 MB/s per core): it runs in a pool of
``--workers`` processes, on chunks of documents, while this process encodes
the same chunks with gpu-bytepiece and compares.

    python benchmarks/parity.py                      # everything (a few minutes)
    python benchmarks/parity.py --limit-docs 200 --parts zh --models bytepiece_80k
    python benchmarks/parity.py --per-doc             # each document alone (the one-thread path)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time

from _common import MB, MODEL_NAMES, PARTS, load_docs, model_path, require_shared, utf8_len

CHUNK_BYTES = 1 << 19  # reference work unit: ~0.5 MB of documents

# ----------------------------------------------------------- worker processes
_REF: dict = {}


def _ref_encode(task):
    """Worker: reference ids of one chunk (``(model path, first index, docs)``)."""
    path, first, docs = task
    tok = _REF.get(path)
    if tok is None:
        import bytepiece

        tok = _REF[path] = bytepiece.Tokenizer(path)
    return first, [tok.encode(d) for d in docs]


def _chunks(path: str, docs: list):
    first, size = 0, 0
    for i, d in enumerate(docs):
        size += len(d.encode("utf-8"))
        if size >= CHUNK_BYTES:
            yield path, first, docs[first:i + 1]
            first, size = i + 1, 0
    if first < len(docs):
        yield path, first, docs[first:]


# ------------------------------------------------------------------ reporting
def _piece_text(p) -> str:
    """A piece for display: its text in quotes when it is UTF-8, else its bytes."""
    if isinstance(p, str):
        return p
    try:
        return repr(p.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(p)


def show_mismatch(tok, scores, model: str, part: str, index: int, doc: str, ours: list, ref: list,
                  context: int = 4, max_rows: int = 24) -> None:
    """Print one mismatching document: where the ids first differ, the pieces around.

    The differing span runs from the first differing token to the last one
    (the ids after it agree, counted from the end); both sides' pieces in it
    are listed side by side, with ``context`` agreeing tokens before and after.
    """
    n = min(len(ours), len(ref))
    first = next((i for i in range(n) if ours[i] != ref[i]), n)
    tail = 0
    while tail < n - first and ours[-1 - tail] == ref[-1 - tail]:
        tail += 1
    o_end, r_end = len(ours) - tail, len(ref) - tail
    offset = sum(len(p) for p in tok.ids_to_pieces(ours[:first]) if isinstance(p, bytes))
    span_bytes = sum(len(p) for p in tok.ids_to_pieces(ref[first:r_end]) if isinstance(p, bytes))
    data = tok.decode_bytes(ref)  # the NFC UTF-8 text the tokenizers saw
    print(f"\nfirst mismatch, {model} / {part}: document {index} (line {index + 1} of {part}.jsonl.gz), "
          f"{len(doc.encode('utf-8')):,} UTF-8 bytes, {len(doc):,} characters")
    print(f"  ids: gpu-bytepiece {len(ours):,}, reference {len(ref):,}; first difference at token {first}, "
          f"byte {offset:,} of the NFC text; differing span: gpu-bytepiece [{first}:{o_end}], "
          f"reference [{first}:{r_end}] ({span_bytes:,} bytes)")
    so = float(sum(scores[i] for i in ours[first:o_end]))
    sr = float(sum(scores[i] for i in ref[first:r_end]))
    print(f"  score of the differing span: gpu-bytepiece {so!r}, reference {sr!r}"
          + ("  (a tie)" if so == sr else ""))
    lo = max(0, offset - 40)
    while 0 < lo < len(data) and 0x80 <= data[lo] < 0xC0:  # start on a character
        lo += 1
    hi = min(len(data), offset + min(span_bytes, 200) + 40)
    while lo < hi < len(data) and 0x80 <= data[hi] < 0xC0:  # end on a character
        hi -= 1
    print(f"  text from byte {lo:,}: {data[lo:hi].decode('utf-8', 'replace')!r}")

    def cell(ids, k):
        return "" if k is None else f"{k:>7} {ids[k]:>6} {_piece_text(tok.id_to_piece(ids[k]))}"

    print(f"  {'token':>8} {'id':>6} {'gpu-bytepiece':<30}  {'token':>7} {'id':>6} reference")
    for k in range(max(0, first - context), first):
        print(f"   {cell(ours, k):<46}  {cell(ref, k)}")
    n_o, n_r = o_end - first, r_end - first
    rows = max(n_o, n_r)
    for j in range(min(rows, max_rows)):
        a = first + j if j < n_o else None
        b = first + j if j < n_r else None
        print(f"  *{cell(ours, a):<46}  {cell(ref, b)}")
    if rows > max_rows:
        print(f"  * ... {rows - max_rows} more rows of the differing span")
    for j in range(min(context, tail)):
        print(f"   {cell(ours, o_end + j):<46}  {cell(ref, r_end + j)}")


# ----------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODEL_NAMES),
                    help="model files (paths, or names in ../shared/models; '.model' optional)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="corpus parts")
    ap.add_argument("--limit-docs", type=int, default=None, help="only the first N documents of each part")
    ap.add_argument("--workers", type=int, default=2,
                    help="processes running the reference (<= 1: in this process); default 2")
    ap.add_argument("--per-doc", action="store_true",
                    help="encode each document alone with Tokenizer.encode (a short one runs the "
                         "one-thread path: the ahead-of-time drivers when installed) instead of encode_batch")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep the report and the progress lines in order

    require_shared()
    try:
        import bytepiece  # noqa: F401
    except ImportError:
        print("the reference bytepiece==0.6.3 is not installed: run scripts/setup.sh", file=sys.stderr)
        return 2
    from gpu_bytepiece import Tokenizer

    paths = [str(model_path(m)) for m in args.models]
    docs = {part: load_docs(part, limit_docs=args.limit_docs) for part in args.parts}
    pool = mp.get_context("spawn").Pool(args.workers) if args.workers > 1 else None
    rows, failed = [], False
    try:
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            tok = Tokenizer(path, device="cpu")
            if args.per_doc:
                print(f"[{path}: one-thread path {'ahead of time' if tok._backend.ahead_of_time else 'JIT'}]",
                      file=sys.stderr)
            scores = tok.model.scores()
            for part in args.parts:
                part_docs = docs[part]
                t0 = time.perf_counter()
                tasks = list(_chunks(path, part_docs))
                results = pool.imap(_ref_encode, tasks) if pool else map(_ref_encode, tasks)
                bad, shown, n_ids = 0, False, 0
                for (_, first, chunk), (first_r, ref_ids) in zip(tasks, results):
                    assert first == first_r
                    ours = [tok.encode(d) for d in chunk] if args.per_doc else tok.encode_batch(chunk)
                    for j, (a, b) in enumerate(zip(ours, ref_ids)):
                        n_ids += len(b)
                        if a != b:
                            bad += 1
                            if not shown:
                                show_mismatch(tok, scores, name, part, first + j, chunk[j], a, b)
                                shown = True
                n, size = len(part_docs), utf8_len(part_docs)
                rows.append((name, part, n, bad, size, n_ids, time.perf_counter() - t0))
                failed |= bad > 0
                print(f"[{name} / {part}: {n:,} documents, {bad} mismatching, "
                      f"{time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
    finally:
        if pool:
            pool.terminate()

    print()
    print("| model | part | documents | mismatches | identical | MB | tokens (reference) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, part, n, bad, size, n_ids, _ in rows:
        pct = 100.0 * (n - bad) / n if n else 100.0
        print(f"| {name} | {part} | {n:,} | {bad:,} | {pct:.2f}% | {size / MB:.2f} | {n_ids:,} |")
    total = sum(r[2] for r in rows)
    total_bad = sum(r[3] for r in rows)
    print(f"\n{'FAIL' if failed else 'OK'}: {total_bad:,} of {total:,} documents differ "
          f"(gpu-bytepiece CPU vs bytepiece==0.6.3, {len(paths)} model(s) x {len(args.parts)} part(s))")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
