"""BytePiece model files: load, validate, save.

A BytePiece model is one JSON object. Each key is the base64 of a piece's raw
bytes; each value is ``[id, printable text, count]``. Ids 0, 1, 2 are reserved
for ``<pad>``, ``<bos>``, ``<eos>``; pieces take ids ``3 .. n + 2``. All 256
single bytes are pieces, so every input can be tokenized. A piece's Unigram
score is ``log(count) - log(sum of all counts)`` in float64.

Files may be plain (``.model``), gzip-compressed (``.gz``) or a ``.zip``
archive holding exactly one model file.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Union

import numpy as np

from . import config, jit_cache
from .files import write_atomic

__all__ = ["ModelError", "Model", "load_model", "save_model", "DEFAULT_MODEL_NAME"]

SPECIAL_PIECES = ("<pad>", "<bos>", "<eos>")
DEFAULT_MODEL_NAME = "bytepiece.plus.40k.model.gz"

PathLike = Union[str, "os.PathLike[str]"]
_state: dict = {}
_STORED = {"pieces", "counts", "ends", "n_bytes"}  # a parsed model's arrays in the cache


class ModelError(ValueError):
    """A BytePiece model file (or pieces mapping) is unreadable or invalid.

    The message names the source (file path or ``<pieces>``) and the problem.
    """


@dataclass(frozen=True)
class Model:
    """A validated vocabulary.

    Attributes
    ----------
    pieces : list of bytes
        ``pieces[i]`` is the piece with id ``i + 3``.
    counts : numpy.ndarray of int64
        ``counts[i]`` is the count of ``pieces[i]``.
    source : str
        Where the model came from (for messages).
    """

    pieces: list
    counts: np.ndarray
    source: str = "<pieces>"

    @property
    def vocab_size(self) -> int:
        return len(self.pieces) + 3

    def scores(self) -> np.ndarray:
        """Unigram scores indexed by id (ids 0..2 get ``-inf``), float64.

        Computed as the reference does: ``log(count) - log(sum(counts))``.
        """
        c = self.counts
        if len(c) and int(c.max()) <= (2**63 - 1) // len(c):
            total = int(c.sum(dtype=np.int64))  # exact: the sum cannot overflow int64
        else:
            total = int(sum(int(x) for x in c))
        log_total = np.log(np.float64(total))
        out = np.full(self.vocab_size, -np.inf, dtype=np.float64)
        out[3:] = np.log(self.counts.astype(np.float64)) - log_total
        return out


def _fail(source: str, problem: str) -> ModelError:
    return ModelError(f"{source}: {problem}")


def max_model_bytes() -> int:
    """``config.MAX_MODEL_BYTES``, or ``GPU_BYTEPIECE_MAX_MODEL_BYTES`` when set."""
    env = os.environ.get("GPU_BYTEPIECE_MAX_MODEL_BYTES")
    return int(env) if env else int(config.MAX_MODEL_BYTES)


def _capped(path: str, f, cap: int) -> bytes:
    data = f.read(cap + 1)
    if len(data) > cap:
        raise _fail(path, f"more than {cap:,} bytes once decompressed: not a model (a larger one needs "
                          "GPU_BYTEPIECE_MAX_MODEL_BYTES)")
    return data


def _read_file(path: str) -> bytes:
    """The model file's bytes as stored: a regular file only (a FIFO or a
    device would block or never end), at most :func:`max_model_bytes`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "cannot read: not a regular file (a model is a .model, .gz or .zip file)")
    with open(path, "rb") as f:
        return _capped(path, f, max_model_bytes())


def _decompress(path: str, raw: bytes) -> bytes:
    """A model file's bytes decompressed (gzip, zip), at most :func:`max_model_bytes`."""
    cap = max_model_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                return _capped(path, g, cap)
        except (OSError, EOFError, zlib.error) as e:
            raise _fail(path, f"corrupt gzip data ({e})") from None
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise _fail(path, f"a .zip model must hold exactly one file, found {len(names)}")
                with z.open(names[0]) as member:
                    return _capped(path, member, cap)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise _fail(path, f"corrupt zip archive ({e})") from None
    return raw


def _reject_duplicate_keys(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def parse_pieces(obj, source: str = "<pieces>") -> Model:
    """Validate a decoded model mapping ``{base64: [id, text, count]}``.

    Also accepts ``{bytes: [id, text, count]}`` (already decoded keys).
    """
    if not isinstance(obj, dict):
        raise _fail(source, f"expected a JSON object of pieces, got {type(obj).__name__}")
    if not obj:
        raise _fail(source, "the model has no pieces")
    n = len(obj)
    pieces = [None] * n
    counts = [0] * n
    seen = {}
    a2b = binascii.a2b_base64
    for key, value in obj.items():
        if type(key) is str:
            try:
                piece = a2b(key, strict_mode=True)
            except (binascii.Error, ValueError):
                raise _fail(source, f"key {key!r} is not valid base64") from None
        elif isinstance(key, bytes):
            piece = bytes(key)
        else:
            raise _fail(source, f"key {key!r} is neither base64 text nor bytes")
        if (
            type(value) not in (list, tuple)
            or len(value) != 3
            or type(value[0]) is not int
            or type(value[2]) is not int
        ):
            raise _fail(source, f"piece {piece!r}: value must be [id:int, text, count:int], got {value!r}")
        pid = value[0]
        count = value[2]
        if not piece:
            raise _fail(source, f"key {key!r} decodes to an empty piece")
        if count <= 0:
            raise _fail(source, f"piece {piece!r}: count must be > 0, got {count}")
        if not 3 <= pid < n + 3:
            raise _fail(source, f"piece {piece!r}: id {pid} outside 3..{n + 2} (ids 0-2 are reserved, ids must be 3..n+2)")
        other = pieces[pid - 3]
        if other is not None:
            raise _fail(source, f"duplicate id {pid} (pieces {other!r} and {piece!r})")
        if piece in seen:
            raise _fail(source, f"duplicate piece {piece!r} (ids {seen[piece]} and {pid})")
        seen[piece] = pid
        pieces[pid - 3] = piece
        counts[pid - 3] = count
    if sum(counts) >= 2**63:
        raise _fail(source, "total count overflows int64")
    counts = np.array(counts, dtype=np.int64)
    missing = [b for b in range(256) if bytes([b]) not in seen]
    if missing:
        shown = ", ".join(f"0x{b:02X}" for b in missing[:8])
        more = "" if len(missing) <= 8 else f" and {len(missing) - 8} more"
        raise _fail(source, f"missing single-byte pieces {shown}{more}: every byte must be a piece")
    return Model(pieces=pieces, counts=counts, source=source)


def load_model(path: PathLike | None = None, *, cache: bool = False) -> Model:
    """Load and validate a BytePiece model file (``.model``, ``.gz`` or ``.zip``).

    ``None`` loads the bundled default, ``bytepiece.plus.40k``. ``cache``:
    keep the parsed pieces in the compiled-code cache folder
    (``jit_cache.store_arrays``, keyed on the file's bytes and this module's
    source), so that a later process skips the JSON (the ``Tokenizer`` does).

    Raises
    ------
    ModelError
        If the file is missing, not JSON, or not a valid BytePiece model.
    """
    if path is None:
        ref = resources.files("gpu_bytepiece.data").joinpath(DEFAULT_MODEL_NAME)
        with resources.as_file(ref) as p:
            return load_model(str(p), cache=cache)
    path = os.fspath(path)
    try:
        stored = _read_file(path)
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    key = _cache_key(stored) if cache else None
    got = jit_cache.load_arrays("models", key) if cache else None
    if got is not None and set(got) == _STORED and int(got["n_bytes"]) <= max_model_bytes():
        data, ends = got["pieces"].tobytes(), got["ends"].tolist()
        return Model(pieces=[data[a:b] for a, b in zip([0] + ends[:-1], ends)], counts=got["counts"], source=path)
    raw = _decompress(path, stored)
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError as e:
        raise _fail(path, f"not UTF-8 JSON ({e})") from None
    except ValueError as e:
        raise _fail(path, f"not valid JSON ({e})") from None
    except RecursionError:
        raise _fail(path, "not a model: JSON nested deeper than the reader's limit (a model is "
                          "one object of [id, text, count] lists)") from None
    model = parse_pieces(obj, source=path)
    if cache:
        jit_cache.store_arrays("models", key, {
            "pieces": np.frombuffer(b"".join(model.pieces), dtype=np.uint8), "counts": model.counts,
            "ends": np.cumsum([len(p) for p in model.pieces], dtype=np.int64), "n_bytes": len(raw)})
    return model


def _cache_key(stored: bytes) -> str:
    """What a parsed model file is kept under (``jit_cache.store_arrays``): its
    bytes and this file's source (the rules it was read and checked with)."""
    h = _state.get("source")
    if h is None:
        with open(__file__, "rb") as f:
            h = _state["source"] = hashlib.sha256(f.read())
    h = h.copy()
    h.update(stored)
    return h.hexdigest()


def model_to_json_obj(pieces, counts) -> dict:
    """The reference's on-disk mapping, ordered by id."""
    return {
        base64.b64encode(p).decode(): [i + 3, p.decode(errors="ignore"), int(c)]
        for i, (p, c) in enumerate(zip(pieces, counts))
    }


def save_model(model: Model, path: PathLike) -> None:
    """Save in BytePiece's format (JSON, ``indent=4``, ``ensure_ascii=False``).

    A path ending in ``.gz`` is gzip-compressed. Written atomically
    (:func:`gpu_bytepiece.files.write_atomic`): a file at ``path`` is always whole.
    """
    path = os.fspath(path)
    text = json.dumps(model_to_json_obj(model.pieces, model.counts), indent=4, ensure_ascii=False)
    data = text.encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_atomic(path, data)
