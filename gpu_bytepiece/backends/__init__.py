"""Execution backends: the CPU (Numba ``prange``) and CUDA (Numba CUDA) drivers.

A backend holds a model's trie and scores and encodes packed batches; the
``Tokenizer`` makes one call into it per batch and never reaches past it.
The contract (``cpu.CPUBackend.encode_packed``, ``cuda.CUDABackend.encode_packed``)::

    encode_packed(data: uint8[:], doc_offsets: int64[n + 1], alpha: float,
                  add_bos=False, add_eos=False, *, stream_key=None, first_doc=0)
        -> (ids: uint32[:], offsets: int64[n + 1])

``data`` is NFC UTF-8 of all documents joined. The backend finds its own
segments and sampling keys (``layout.segment_table``): for sampling,
``stream_key`` (the seed and call number) and ``first_doc`` (the index of
document 0 in the call) give each document its key. A CUDA backend also has
``encode_device`` (text already on the GPU, ids left there;
``cuda_device``).

Layers, imports going down: ``layout`` (segments, output layout and the
bos/eos step, host twins of ``kernels.layout``) <- ``cpu``, ``cuda_device``
<- ``cuda`` <- ``select_backend`` here.
"""

from __future__ import annotations

import logging

import numpy as np

from ..device import resolve_device
from ..trie import Trie
from .cpu import CPUBackend

log = logging.getLogger("gpu_bytepiece")

__all__ = ["CPUBackend", "select_backend"]


def select_backend(device: str, trie: Trie, scores: np.ndarray):
    """Pick the backend for ``device`` ('auto', 'cpu', 'cuda' or 'cuda:N')."""
    use_cuda, index, why = resolve_device(device)
    # The lattice reads per-cell scores (-inf where no piece ends).
    node_score = trie.node_scores(scores)
    if use_cuda:
        from .cuda import CUDABackend

        return CUDABackend(trie, node_score, index)
    if device.strip().lower() == "auto":
        log.info("gpu_bytepiece: using the CPU: %s", why)
    return CPUBackend(trie, node_score)
