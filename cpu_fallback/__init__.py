"""CPU twins of the GPU kernels: the shared lattice compiled with ``numba.njit``.

Installed as ``gpu_bytepiece.cpu_fallback``.
"""

from .tokenize import encode_segments, find_segments, scatter_tokens

__all__ = ["encode_segments", "find_segments", "scatter_tokens"]
