"""Execution backends: the CPU (Numba ``prange``) and CUDA (Numba CUDA) drivers.

Both take a packed batch (UTF-8 bytes + document offsets) and return flat ids
plus int64 document offsets. They share segmentation and the lattice; they
differ only in how they loop over segments.
"""

from __future__ import annotations

import logging
import os
import sys

import numba
import numpy as np

from . import config
from .trie import Trie

log = logging.getLogger("gpu_bytepiece")

__all__ = ["CPUBackend", "select_backend", "DeviceError"]


class DeviceError(RuntimeError):
    """The requested device cannot be used."""


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
        from .cpu_fallback import encode_segments, find_segments, scatter_tokens

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


def chunk_bounds(seg_len, n_threads):
    """Split segments into runs of about equal bytes (several per thread)."""
    n = len(seg_len)
    total = int(seg_len.sum())
    n_chunks = max(1, min(n, n_threads * config.CPU_CHUNKS_PER_THREAD, max(1, total // config.CPU_MIN_CHUNK_BYTES)))
    if n_chunks == 1:
        return np.array([0, n], dtype=np.int64)
    cum = np.cumsum(seg_len)
    targets = (np.arange(1, n_chunks, dtype=np.float64) * (total / n_chunks)).astype(np.int64)
    cuts = np.searchsorted(cum, targets, side="left") + 1
    bounds = np.unique(np.concatenate(([0], np.minimum(cuts, n), [n]))).astype(np.int64)
    return bounds


def cuda_usable() -> tuple[bool, str]:
    """Whether a real CUDA GPU can be used, and if not, why."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False, "NUMBA_ENABLE_CUDASIM=1 (the simulator is only used when device='cuda' is asked for)"
    if sys.platform.startswith("linux") and not any(
        os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg", "/proc/driver/nvidia")
    ):
        # no NVIDIA driver here: skip importing numba.cuda (~0.2 s)
        return False, "no NVIDIA driver (no /dev/nvidiactl)"
    try:
        from numba import cuda
    except Exception as e:  # numba-cuda missing or broken
        return False, f"numba-cuda is not importable ({e})"
    try:
        if not cuda.is_available():
            return False, "no CUDA driver or GPU found"
    except Exception as e:
        return False, f"CUDA is not usable ({e})"
    return True, "CUDA GPU found"


def resolve_device(device: str) -> tuple[bool, int, str]:
    """``(use_cuda, index, why)`` for ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    ``auto`` picks CUDA when it is usable (``why`` says why not otherwise);
    ``cuda`` without a usable GPU raises :class:`DeviceError` (under the CUDA
    simulator it is allowed, for tests).
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    dev = device.strip().lower()
    if dev == "cpu":
        return False, 0, "device='cpu'"
    if dev == "auto":
        ok, why = cuda_usable()
        return ok, 0, why
    if dev == "cuda" or dev.startswith("cuda:"):
        index = 0
        if dev.startswith("cuda:"):
            try:
                index = int(dev[5:])
            except ValueError:
                raise ValueError(f"bad device {device!r}: expected 'cuda:N'") from None
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            ok, why = cuda_usable()
            if not ok:
                raise DeviceError(f"device={device!r} was asked for but CUDA is not usable: {why}")
        return True, index, "asked for"
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


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
