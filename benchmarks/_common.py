"""Shared by the benchmark scripts: the real corpus and models in ../shared,
timing, and a BytePiece -> SentencePiece model converter.

``../shared`` (beside the repository; ``GPU_BYTEPIECE_SHARED`` overrides it)
holds ``models/*.model`` and ``corpus/{zh,en,code}.jsonl.gz``
(``{"text": ...}`` per line). When it is absent the scripts say so and exit 0:
there is nothing to measure.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPU_BYTEPIECE_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
CORPUS = SHARED / "corpus"
PARTS = ("zh", "en", "code")
MODEL_NAMES = ("bytepiece.plus.40k.model", "bytepiece_80k.model")
MB = 1e6  # figures are in MB = 10**6 bytes of UTF-8 input


def require_shared(*paths: Path) -> None:
    """Exit 0 with a clear message when ../shared (or one of ``paths``) is absent."""
    for p in (SHARED, *paths):
        if not p.exists():
            print(f"{p} is absent: the real models and corpus live in ../shared beside the "
                  f"repository (or set GPU_BYTEPIECE_SHARED); nothing to measure.")
            sys.exit(0)


def model_path(name: str) -> Path:
    """A model given as a path, a file name in ../shared/models, or that name without ``.model``."""
    for p in (Path(name), MODELS / name, MODELS / f"{name}.model"):
        if p.is_file():
            return p
    require_shared(MODELS)
    known = ", ".join(sorted(q.name for q in MODELS.glob("*.model")))
    raise SystemExit(f"no model {name!r} (a path, or one of ../shared/models: {known})")


def utf8_len(docs) -> int:
    return sum(len(d.encode("utf-8")) for d in docs)


def load_docs(part: str, *, limit_docs: int | None = None, limit_mb: float | None = None) -> list:
    """The documents of ``../shared/corpus/{part}.jsonl.gz``, in file order.

    ``limit_docs`` keeps the first N; ``limit_mb`` keeps the first documents
    until their UTF-8 size reaches that many MB (whole documents, so the last
    one may overshoot a little).
    """
    path = CORPUS / f"{part}.jsonl.gz"
    require_shared(CORPUS, path)
    docs, size = [], 0
    limit_bytes = None if limit_mb is None else limit_mb * MB
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if limit_docs is not None and len(docs) >= limit_docs:
                break
            if limit_bytes is not None and size >= limit_bytes:
                break
            text = json.loads(line)["text"]
            docs.append(text)
            size += len(text.encode("utf-8"))
    return docs


def prefix_mb(docs: list, mb: float | None) -> list:
    """The first documents of ``docs`` reaching ``mb`` MB of UTF-8 (all of them when ``mb`` is None)."""
    if mb is None:
        return docs
    out, size = [], 0
    for d in docs:
        if size >= mb * MB:
            break
        out.append(d)
        size += len(d.encode("utf-8"))
    return out


def time_runs(fn, *, repeat: int = 3, warmup=None) -> tuple[float, list, object]:
    """Median wall time of ``repeat`` calls of ``fn()`` after one untimed warm-up.

    The warm-up is ``warmup()`` when given (e.g. the same call on less data),
    else ``fn()``. A full collection runs before each timed call; the garbage
    collector stays enabled during it, as in real use. Returns the median,
    all the times, and the last call's result.
    """
    (warmup or fn)()
    times, out = [], None
    for _ in range(repeat):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def time_interleaved(fns: dict, *, repeat: int = 3) -> dict:
    """Like :func:`time_runs` for several tools at once, their runs interleaved.

    ``fns`` maps a name to a call. Each is warmed up once, then the timed
    rounds run every call in turn (``repeat`` rounds), so a slow spell of a
    shared machine (a busy neighbour, a frequency change) falls on all tools
    alike instead of on whichever ran then. Returns ``{name: (median, times)}``.
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


# ---------------------------------------------------------------------------
# BytePiece -> SentencePiece
#
# bytepiece's ``Tokenizer.convert_to_sentencepiece`` writes a SentencePiece
# Unigram model (byte fallback, identity normalizer) whose ids equal
# BytePiece's: id 0-2 <unk>, <s>, </s>; id i >= 3 the piece of BytePiece id i
# (a printable-ASCII single byte as itself, any other single byte as
# <0xNN>, a longer piece as its UTF-8 text with ' ' -> U+2581); then, after
# the last BytePiece id, <0xNN> byte pieces (score -100) for the printable
# ASCII bytes so that all 256 exist. It calls ``piece.decode()`` and so fails
# on models with non-UTF-8 pieces (ensure_unicode=False, or the published
# models, which have a few hundred: partial characters). ``sentencepiece_model``
# below is the same logic with one change: such a piece (or a piece whose
# text collides with an earlier one) becomes a placeholder, a private-use
# character of plane 16 that text never holds, with the piece's own score
# and type NORMAL, so that every later id stays aligned and SentencePiece's
# min/max piece scores (its unknown-character penalty) are what they would
# be with the piece present. It serializes the ModelProto directly (a few
# fields of proto2 wire format, in field-number order as protobuf does), so
# it needs no protobuf package; for a model without mapped pieces the bytes
# equal those of bytepiece's converter.
# ---------------------------------------------------------------------------

_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_PLACEHOLDER_BASE = 0x100000  # Supplementary Private Use Area-B


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(int(value))


def _field_bytes(num: int, value: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _field_float(num: int, value: float) -> bytes:
    return _varint(num << 3 | 5) + struct.pack("<f", float(value))


def _sp_piece(piece: str, score: float, type_: int | None = None) -> bytes:
    body = _field_bytes(1, piece.encode("utf-8")) + _field_float(2, score)
    if type_ is not None:
        body += _field_varint(3, type_)
    return _field_bytes(1, body)


def sentencepiece_model(pieces, scores) -> tuple[bytes, list]:
    """Serialized SentencePiece ModelProto for a BytePiece vocabulary.

    Parameters
    ----------
    pieces : list of bytes
        ``pieces[i]`` is the piece with BytePiece id ``i + 3``.
    scores : sequence of float
        Unigram score of each piece (same indexing as ``pieces``).

    Returns
    -------
    model : bytes
        For ``sentencepiece.SentencePieceProcessor(model_proto=model)``.
    mapped : list of bytes
        The pieces written as placeholders (never produced by SentencePiece).
    """
    out, others, mapped = [], [], []
    # SentencePiece rejects a model with a piece string twice: reserve the
    # specials and byte pieces, map a later piece that would repeat one.
    seen = {"<unk>", "<s>", "</s>"} | {"<0x{:02X}>".format(b) for b in range(256)}
    out.append(_sp_piece("<unk>", 0, _UNKNOWN))
    out.append(_sp_piece("<s>", 0, _CONTROL))
    out.append(_sp_piece("</s>", 0, _CONTROL))
    for p, s in zip(pieces, scores):
        if len(p) > 1 or len(str(p)) == 4:  # the reference's test: printable ASCII single byte
            if len(p) == 1:
                others.append(_sp_piece("<0x{:02X}>".format(p[0]), -100, _BYTE))
            try:
                text = p.decode("utf-8").replace(" ", "\u2581")
            except UnicodeDecodeError:
                text = None
            if text is None or text in seen:
                text = chr(_PLACEHOLDER_BASE + len(mapped))
                mapped.append(p)
            seen.add(text)
            out.append(_sp_piece(text, s))
        else:
            out.append(_sp_piece("<0x{:02X}>".format(p[0]), s, _BYTE))
    n = len(out) + len(others)
    trainer = (_field_varint(3, 1)          # model_type: UNIGRAM
               + _field_varint(4, n)        # vocab_size
               + _field_varint(21, 0)       # split_by_unicode_script: false
               + _field_varint(35, 1))      # byte_fallback: true
    normalizer = (_field_bytes(1, b"identity")  # name
                  + _field_bytes(2, b"")        # precompiled_charsmap: empty
                  + _field_varint(3, 0)         # add_dummy_prefix: false
                  + _field_varint(4, 0))        # remove_extra_whitespaces: false
    model = b"".join(out) + b"".join(others) + _field_bytes(2, trainer) + _field_bytes(3, normalizer)
    return model, mapped


def _is_utf8(p: bytes) -> bool:
    try:
        p.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sentencepiece_from_bytepiece(path, pieces, scores):
    """A ``SentencePieceProcessor`` with BytePiece's ids, and how it was made.

    Uses bytepiece's own ``convert_to_sentencepiece`` when every piece is
    UTF-8 (and bytepiece with protobuf is importable), else
    :func:`sentencepiece_model`. Returns ``(processor, how, mapped)``.
    """
    import sentencepiece as spm

    model, mapped = sentencepiece_model(pieces, scores)
    if not mapped:
        try:
            import tempfile

            import bytepiece
            import google.protobuf  # noqa: F401  (bytepiece's converter needs it)
        except ImportError:
            pass
        else:
            with tempfile.TemporaryDirectory() as d:
                out = os.path.join(d, "sp.model")
                bytepiece.Tokenizer(str(path)).convert_to_sentencepiece(out)
                with open(out, "rb") as f:
                    model = f.read()
            return spm.SentencePieceProcessor(model_proto=model), "bytepiece's convert_to_sentencepiece", mapped
    if mapped:
        bad = sum(1 for p in mapped if not _is_utf8(p))
        how = (f"benchmarks/_common.py, bytepiece's conversion with {len(mapped)} pieces mapped to "
               f"unused placeholders ({bad} non-UTF-8, {len(mapped) - bad} colliding), ids aligned")
    else:
        how = "benchmarks/_common.py, bytepiece's conversion (no pieces mapped)"
    return spm.SentencePieceProcessor(model_proto=model), how, mapped


# ---------------------------------------------------------------- process-tree memory
def tree_pids(root: int) -> list:
    """``root`` and every process below it (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    st = f.read()
                parent[int(d)] = int(st[st.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def proc_rss(pid: int) -> int:
    """RSS in bytes of one process (0 if gone), from ``/proc/PID/statm``: cheap
    to read, unlike ``smaps_rollup``, whose read walks the page tables (on a
    process of 10 GB it took a quarter of a core at 20 reads a second)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def proc_memory(pid: int) -> tuple:
    """(RSS, PSS) in bytes of one process (0, 0 if gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss
