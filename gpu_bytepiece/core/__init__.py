"""Plain algorithm bodies, compiled twice: ``numba.njit`` in ``cpu_fallback/``
and ``numba.cuda.jit(device=True)`` in ``kernels/``.

Everything here imports only numpy, numba and math: no allocation inside the
bodies, no exceptions, no Python objects, so both targets run the same
arithmetic in the same order (float64, no fastmath).
"""
