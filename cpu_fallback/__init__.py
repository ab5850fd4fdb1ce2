"""CPU twins of the GPU kernels: the shared lattice compiled with ``numba.njit``.

Installed as ``gpu_bytepiece.cpu_fallback``.
"""

from .chunks import chunk_bounds
from .tokenize import encode_segments, find_segments, scatter_tokens

__all__ = ["chunk_bounds", "encode_segments", "find_segments", "scatter_tokens"]
