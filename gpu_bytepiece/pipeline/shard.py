"""Encoding one shard: read its documents, tokenize them, write its dataset.

The one loop every way of running a job goes through: worker processes,
Ray actors, the single-process path and ``--output -`` (standard output).
A shard's bytes depend only on its documents: sampling keys follow a
document's rank in the shard (:func:`_stream_key`), never batch sizes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..backends.layout import insert_specials
from .errors import PipelineError
from .readers import ShardStats, iter_shard
from .writers import shard_writer

__all__ = ["JobContext", "encode_shard", "shard_prefix", "TEST_SLEEP_ENV"]

#: TEST ONLY: seconds to sleep after each batch a shard writes, so that tests
#: can kill a job in the middle (documented in tests/test_pipeline_resume.py).
TEST_SLEEP_ENV = "GPU_BYTEPIECE_TEST_SLEEP_PER_BATCH"


@dataclass
class JobContext:
    """What a worker needs to encode any shard of a job (picklable)."""

    inputs: list
    params: dict
    on_error: str
    shard_dir: str
    fmt: str
    vocab_size: int
    schema: object = None
    text_key: str = "text"
    batch_bytes: int = 16 << 20
    extra: dict = field(default_factory=dict)

    @property
    def read_params(self) -> dict:
        return {"text_key": self.text_key, "split_lines": self.params["split_lines"],
                "batch_bytes": self.batch_bytes, "max_record_bytes": self.params.get("max_record_bytes")}


# ------------------------------------------------------------------ encoding
def _stream_key(seed: int, shard_index: int) -> int:
    h = hashlib.blake2b(f"gpu-bytepiece:{seed}:{shard_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


class _Encoder:
    """Tokenizes a shard's batches; sampling keys follow the piece's rank in the shard."""

    def __init__(self, tok, params: dict, shard_index: int):
        self.tok = tok
        self.alpha = float(params["alpha"])
        self.bos = bool(params["add_bos"])
        self.eos = bool(params["append_eos"])
        self.stream = None if self.alpha < 0 else _stream_key(int(params["seed"]), shard_index)
        #: special tokens matched in the text (``--special-token``); the rest of
        #: the declared ones, if any, are ordinary text
        self.allowed = frozenset(params.get("allowed_special", ()))
        self.count = 0

    def __call__(self, batch):
        from ..text import pack_texts

        whole = batch.starts is None
        data, doc_off = pack_texts(batch.texts)
        n = len(doc_off) - 1
        bos, eos = (self.bos, self.eos) if whole else (False, False)
        if self.allowed:  # best path only (the job refuses sampling with specials)
            ids, offsets = self.tok.encode_to_numpy(batch.texts, add_bos=bos, add_eos=eos,
                                                    allowed_special=self.allowed, disallowed_special=())
        else:
            ids, offsets = self.tok.encode_packed(data, doc_off, add_bos=bos, add_eos=eos, alpha=self.alpha,
                                                  sample_stream=self.stream, first_index=self.count)
        self.count += n
        table = batch.table
        if not whole:
            if self.bos or self.eos:
                ids, offsets = insert_specials(ids, offsets, batch.starts & self.bos, batch.ends & self.eos)
            ids, offsets, table = _join_pieces(batch, ids, offsets)
        return ids, offsets, table, len(data)


def _join_pieces(batch, ids, offsets):
    """Pieces of a batch -> documents (the first may continue, the last stay open)."""
    n = len(offsets) - 1
    keep = batch.starts.copy()
    keep[0] = True
    bounds = np.concatenate((np.flatnonzero(keep), [n]))
    table = batch.table
    if table is not None and len(bounds) - 1 != n:
        import pyarrow as pa

        name = table.column_names[0]
        texts = table.column(name).to_pylist()
        joined = ["".join(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        table = pa.table({name: pa.array(joined, table.schema.field(name).type)})
    return ids, offsets[bounds], table


def shard_prefix(shard_dir: str, index: int) -> str:
    return os.path.join(shard_dir, f"{index:06d}")


def encode_shard(ctx: JobContext, shard: dict, tok, progress=None, writer=None) -> dict:
    """Encode one shard into its own dataset under ``ctx.shard_dir``.

    ``progress(input_bytes, docs, tokens)`` is called after each batch.
    ``writer``: write into this open writer instead (``--output -``); the
    caller closes it, and the record names no files. Returns the manifest
    record of the shard. Raises :class:`DataError` for a bad record under
    ``on_error='fail'``.
    """
    stats = ShardStats()
    own = writer is None
    if own:
        writer = shard_writer(ctx.fmt, shard_prefix(ctx.shard_dir, shard["index"]), vocab_size=ctx.vocab_size,
                              schema=ctx.schema, text_key=ctx.text_key)
    enc = _Encoder(tok, ctx.params, shard["index"])
    sleep = float(os.environ.get(TEST_SLEEP_ENV, "0") or 0)
    text_bytes = input_bytes = 0
    docs_before, tokens_before = writer.docs, writer.tokens
    try:
        for batch in iter_shard(ctx.inputs, shard, ctx.read_params, ctx.on_error, stats,
                                want_table=ctx.fmt == "parquet"):
            if batch.abort_open:
                writer.abort_open()
            docs0, tokens0 = writer.docs, writer.tokens
            if len(batch):
                ids, offsets, table, nbytes = enc(batch)
                writer.write(ids, offsets, table=table, first_continues=batch.first_continues,
                             last_open=batch.last_open)
                text_bytes += nbytes
            # progress in the shard's planned input bytes (what the bar's total sums): a reader
            # reads a little around its range, and stdin has no size
            step = min(batch.input_bytes, shard["bytes"] - input_bytes)
            input_bytes += step
            if progress is not None:
                progress(step, writer.docs - docs0, writer.tokens - tokens0)
            if sleep:
                time.sleep(sleep)
        docs0, tokens0 = writer.docs, writer.tokens
        files = writer.close() if own else {}
        if progress is not None:  # the rest of the shard, and a last document the close ended
            progress(shard["bytes"] - input_bytes, writer.docs - docs0, writer.tokens - tokens0)
        input_bytes = shard["bytes"]
    except OSError as e:  # reading errors are PipelineErrors already: this is writing (disk full, ...)
        if own:
            writer.discard()
        where = e.filename or (shard_prefix(ctx.shard_dir, shard["index"]) + ".*" if own else "the output")
        raise PipelineError(f"{where}: cannot write shard {shard['index']} ({e.strerror or e}); free space "
                            "there, or choose another --output, then rerun (finished shards are kept)") from None
    except BaseException:
        if own:
            writer.discard()
        raise
    return {
        "files": files,
        "docs": writer.docs - docs_before,
        "tokens": writer.tokens - tokens_before,
        "text_bytes": text_bytes,
        "input_bytes": input_bytes,
        "blank_lines": stats.blank_lines,
        "skipped": dict(sorted(stats.skipped.items())),
        "samples": stats.samples,
        "reads": stats.reads,
    }
