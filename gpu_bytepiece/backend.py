"""Execution backends: the CPU (Numba ``prange``) and CUDA (Numba CUDA) drivers.

Both take a packed batch (UTF-8 bytes + document offsets) and return flat ids
plus int64 document offsets. They share segmentation and the lattice; they
differ only in how they loop over segments.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from . import config
from .device import resolve_device
from .trie import Trie

log = logging.getLogger("gpu_bytepiece")

__all__ = ["CPUBackend", "select_backend"]


def segment_layout(seg_doc, counts, n_docs, add_bos, add_eos):
    """Where each segment's ids go, and the document offsets of the result."""
    extra = int(add_bos) + int(add_eos)
    per_doc = np.bincount(seg_doc, weights=counts, minlength=n_docs).astype(np.int64) + extra
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    # dest[k] = tokens before segment k + the bos/eos of the documents before it
    dest = np.zeros(len(counts), dtype=np.int64)
    if len(counts):
        np.cumsum(counts[:-1], out=dest[1:])
        dest += seg_doc * extra + int(add_bos)
    return dest, offsets


def finish_specials(ids, offsets, add_bos, add_eos):
    if add_bos:
        ids[offsets[:-1]] = 1
    if add_eos:
        ids[offsets[1:] - 1] = 2


class CPUBackend:
    """Numba CPU: ``prange`` over chunks of segments."""

    name = "cpu"

    def __init__(self, trie: Trie, node_score: np.ndarray):
        self.trie = trie
        self.node_score = node_score

    def encode_packed(self, data, doc_offsets, doc_keys, alpha, add_bos=False, add_eos=False,
                      segments=None):
        """``segments``: ``find_segments(data, doc_offsets)`` if already computed."""
        from .cpu_fallback import chunk_bounds, encode_segments, find_segments, scatter_tokens

        n_docs = len(doc_offsets) - 1
        if segments is None:
            segments = find_segments(data, doc_offsets)
        seg_start, seg_end, seg_doc = segments
        n_seg = len(seg_start)
        out = np.empty(len(data), dtype=np.uint32)
        counts = np.zeros(n_seg, dtype=np.int64)
        if n_seg:
            seg_key = doc_keys[seg_doc]
            seg_pos = seg_start - doc_offsets[seg_doc]
            chunks = chunk_bounds(seg_end - seg_start, numba.get_num_threads())
            t = self.trie
            # chunks are handed to threads one at a time (not split up front),
            # so a thread slowed by other work on its core does not stall the rest
            with numba.parallel_chunksize(1):
                encode_segments(data, seg_start, seg_end, seg_key, seg_pos, chunks,
                                t.cells, t.node_id, t.node_len, self.node_score, t.max_len,
                                np.float64(alpha), out, counts)
        dest, offsets = segment_layout(seg_doc, counts, n_docs, add_bos, add_eos)
        if not n_seg:
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
        elif not (add_bos or add_eos):
            # chunks wrote their ids back to back: join the chunk runs
            first = seg_start[chunks[:-1]]
            cum = np.concatenate(([0], np.cumsum(counts)))
            totals = cum[chunks[1:]] - cum[chunks[:-1]]
            ids = np.concatenate([out[a:a + t] for a, t in zip(first.tolist(), totals.tolist())])
        else:
            cum = np.concatenate(([0], np.cumsum(counts)))
            chunk_of = np.repeat(np.arange(len(chunks) - 1), np.diff(chunks))
            src = seg_start[chunks[:-1]][chunk_of] + cum[:-1] - cum[chunks[:-1]][chunk_of]
            ids = np.empty(int(offsets[-1]), dtype=np.uint32)
            scatter_tokens(out, src, counts, dest, ids)
        finish_specials(ids, offsets, add_bos, add_eos)
        return ids, offsets


def select_backend(device: str, trie: Trie, scores: np.ndarray):
    """Pick the backend for ``device`` ('auto', 'cpu', 'cuda' or 'cuda:N')."""
    use_cuda, index, why = resolve_device(device)
    # The lattice reads per-cell scores (-inf where no piece ends).
    node_score = trie.node_scores(scores)
    if use_cuda:
        from .cuda_backend import CUDABackend

        return CUDABackend(trie, node_score, index)
    if device.strip().lower() == "auto":
        log.info("gpu_bytepiece: using the CPU: %s", why)
    return CPUBackend(trie, node_score)
