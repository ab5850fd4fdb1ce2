"""CPU twins of the GPU kernels: the shared lattice compiled with ``numba.njit``.

Installed as ``gpu_bytepiece.cpu_fallback``. Their ``cache=True`` code is
cached by ``gpu_bytepiece.jit_cache`` (content-keyed, one folder per user).
"""

from gpu_bytepiece import jit_cache

jit_cache.install()  # before the modules below define their functions

from .chunks import chunk_bounds  # noqa: E402
from .tokenize import encode_chunk, encode_segments, find_segments, scatter_tokens  # noqa: E402

__all__ = ["chunk_bounds", "encode_chunk", "encode_segments", "find_segments", "scatter_tokens"]
