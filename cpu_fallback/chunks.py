"""How a CPU driver's ``prange`` splits its work: runs of segments of about
equal bytes, several per thread (host-side numpy)."""

from __future__ import annotations

import numpy as np

from gpu_bytepiece import config


def chunk_bounds(seg_len, n_threads, min_bytes=None):
    """Split segments into runs of about equal bytes (several per thread),
    none under ``min_bytes`` (default ``config.CPU_MIN_CHUNK_BYTES``) unless
    there is only one."""
    n = len(seg_len)
    total = int(seg_len.sum())
    min_bytes = min_bytes or config.CPU_MIN_CHUNK_BYTES
    n_chunks = max(1, min(n, n_threads * config.CPU_CHUNKS_PER_THREAD, max(1, total // min_bytes)))
    if n_chunks == 1:
        return np.array([0, n], dtype=np.int64)
    cum = np.cumsum(seg_len)
    targets = (np.arange(1, n_chunks, dtype=np.float64) * (total / n_chunks)).astype(np.int64)
    cuts = np.searchsorted(cum, targets, side="left") + 1
    bounds = np.unique(np.concatenate(([0], np.minimum(cuts, n), [n]))).astype(np.int64)
    return bounds
