"""Numba CUDA kernels: the shared lattice compiled with ``numba.cuda.jit``.

Installed as ``gpu_bytepiece.kernels``; each kernel has a CPU twin of the
same name and arguments in ``gpu_bytepiece.cpu_fallback``. Importing needs
numba-cuda but no GPU or driver (kernels compile on first launch).
"""

from .tokenize import SIGNATURES, encode_segments, scatter_tokens

__all__ = ["SIGNATURES", "encode_segments", "scatter_tokens"]
