"""Numba CUDA kernels: the shared lattice compiled with ``numba.cuda.jit``.

Installed as ``gpu_bytepiece.kernels``; each kernel names its CPU twin (in
``gpu_bytepiece.cpu_fallback``, or the host numpy code it replaces) under
"See Also". Importing needs numba-cuda but no GPU or driver (kernels compile
on first launch).

- ``tokenize``: ``encode_segments`` (one thread per segment) and
  ``scatter_tokens``;
- ``long_segments``: ``encode_long_segments`` (one block per long segment);
- ``scan``: prefix sums and stream compaction (two-level block scans);
- ``layout``: segmentation, sampling keys and output layout on the device,
  for text that is already there (``backends.cuda_device``).

Only the kernels live here; the host code that plans and launches them is
``gpu_bytepiece.backends``.

``SIGNATURES`` maps every kernel to the argument types the CUDA backend
launches it with (a string, or a tuple of strings for a kernel launched
with several); ``tests/test_ptx.py`` compiles each of them to PTX.
"""

from . import layout, long_segments, scan, tokenize
from .layout import (chunk_cuts, document_ends, document_keys, document_tokens, long_flags, newline_ends,
                     put_specials, rebase, segment_dest, segment_docs, segment_starts)
from .long_segments import encode_long_segments
from .scan import compact_tiles, partition_tiles, scan_in_place, scan_tiles, tile_sums
from .tokenize import encode_segments, scatter_tokens

SIGNATURES = {**tokenize.SIGNATURES, **long_segments.SIGNATURES, **scan.SIGNATURES, **layout.SIGNATURES}

__all__ = ["SIGNATURES", "encode_segments", "scatter_tokens", "encode_long_segments",
           "newline_ends", "document_ends", "tile_sums", "scan_in_place", "scan_tiles", "compact_tiles",
           "partition_tiles", "segment_starts", "segment_docs", "document_keys", "long_flags", "rebase",
           "chunk_cuts", "document_tokens", "segment_dest", "put_specials"]
