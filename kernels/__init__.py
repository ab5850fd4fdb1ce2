"""Numba CUDA kernels: the shared lattice compiled with ``numba.cuda.jit``.

Installed as ``gpu_bytepiece.kernels``; each kernel names its CPU twin (in
``gpu_bytepiece.cpu_fallback``, or the host numpy code it replaces) under
"See Also". Importing needs numba-cuda but no GPU or driver (kernels compile
on first launch).

- ``tokenize``: ``encode_segments`` (one thread per segment) and
  ``scatter_tokens``;
- ``long_segments``: ``encode_long_segments`` (one block per long segment);
- ``layout``: segmentation, prefix sums and output layout on the device,
  for text that is already there (``CUDABackend.encode_device``).

``SIGNATURES`` maps every kernel to the argument types the CUDA backend
launches it with (a string, or a tuple of strings for a kernel launched
with several); ``tests/test_ptx.py`` compiles each of them to PTX.
"""

from . import layout, long_segments, tokenize
from .layout import (chunk_cuts, compact_tiles, document_ends, document_keys, document_tokens, long_flags,
                     newline_ends, partition_tiles, put_specials, rebase, scan_in_place, scan_tiles,
                     segment_dest, segment_docs, segment_starts, tile_sums)
from .long_segments import encode_long_segments
from .tokenize import encode_segments, scatter_tokens

SIGNATURES = {**tokenize.SIGNATURES, **long_segments.SIGNATURES, **layout.SIGNATURES}

__all__ = ["SIGNATURES", "encode_segments", "scatter_tokens", "encode_long_segments",
           "newline_ends", "document_ends", "tile_sums", "scan_in_place", "scan_tiles", "compact_tiles",
           "partition_tiles", "segment_starts", "segment_docs", "document_keys", "long_flags", "rebase",
           "chunk_cuts", "document_tokens", "segment_dest", "put_specials"]
