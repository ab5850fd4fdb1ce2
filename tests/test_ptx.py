"""Every CUDA kernel compiles to PTX for compute capability 9.0 (H100), without a GPU.

Uses numba-cuda's NVVM from PyPI (``numba.cuda.compile_ptx`` needs no driver),
then assembles the PTX to an sm_90 cubin with nvJitLink (also driverless).
Runs in the normal test process; under the simulator there is no compiler,
so it skips itself there.
"""

from __future__ import annotations

import os
import re
import sys
from types import SimpleNamespace

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("PTX compilation needs the real numba-cuda compiler, not the simulator "
                "(NUMBA_ENABLE_CUDASIM=1 is set)", allow_module_level=True)

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'gpu-bytepiece[ptx]')")

CC = (9, 0)


def kernel_signatures():
    """``(name, signature)`` of every kernel, as the CUDA backend and the trainer's CUDA engine launch it."""
    from gpu_bytepiece.kernels import SIGNATURES
    from gpu_bytepiece.kernels import train

    out = []
    for name, sigs in {**SIGNATURES, **train.SIGNATURES}.items():
        for sig in ((sigs,) if isinstance(sigs, str) else sigs):
            out.append((name, sig))
    return out


KERNEL_SIGS = kernel_signatures()
KERNELS = tuple(dict.fromkeys(name for name, _ in KERNEL_SIGS))
_PTX: dict = {}


@pytest.fixture
def no_driver(monkeypatch):
    """Device functions called from a kernel ask the current device for its
    compute capability while compiling; with no driver, answer 9.0."""
    d = sys.modules["numba.cuda.dispatcher"]
    monkeypatch.setattr(d, "get_current_device", lambda: SimpleNamespace(compute_capability=CC))


def compile_kernel(name, sig=None):
    from gpu_bytepiece import kernels
    from gpu_bytepiece.kernels import train

    if sig is None:
        sig = next(s for n, s in KERNEL_SIGS if n == name)
    if (name, sig) not in _PTX:
        kernel = getattr(kernels, name, None) or getattr(train, name)
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=CC)
        except Exception as e:  # NVVM missing: say so instead of failing obscurely
            if "NVVM" in str(e) or "libnvvm" in str(e).lower():
                pytest.skip(f"NVVM is not available to compile PTX: {e}")
            raise
        _PTX[name, sig] = ptx
    return _PTX[name, sig]


def entries(ptx):
    return re.findall(r"^\.visible \.entry (\S+?)\(", ptx, flags=re.M)


def test_every_kernel_has_a_signature():
    from gpu_bytepiece import kernels
    from gpu_bytepiece.kernels import layout, long_segments, scan, tokenize, train

    exported = set(kernels.__all__) - {"SIGNATURES"}
    train_exported = set(train.__all__) - {"SIGNATURES"}  # the trainer's, not re-exported by kernels
    assert set(kernels.SIGNATURES) == exported and set(train.SIGNATURES) == train_exported
    assert set(KERNELS) == exported | train_exported
    for mod in (tokenize, layout, long_segments, scan, train):
        if mod is train:
            exported = train_exported
        defined = {k for k, v in vars(mod).items()
                   if hasattr(v, "py_func") and not getattr(v, "targetoptions", {}).get("device", True)}
        assert defined <= exported, f"{mod.__name__}: kernels without a signature: {defined - exported}"


@pytest.mark.parametrize("name,sig", KERNEL_SIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(KERNEL_SIGS)])
def test_kernel_compiles_for_sm90(no_driver, name, sig):
    ptx = compile_kernel(name, sig)
    assert re.search(r"^\.target sm_90\b", ptx, flags=re.M)
    names = entries(ptx)
    assert len(names) == 1 and name in names[0]
    # float64 throughout, no approximate (fastmath) division or transcendental
    assert not re.search(r"\b(div|rcp|sqrt)\.approx\.f64|\b(ex2|lg2)\.approx", ptx)
    assert "\tcall" not in ptx  # device functions inlined, no Python objects or helpers left


def test_lattice_is_inlined_real_code(no_driver):
    """The shared lattice lands in the kernel as float64 device code (no calls out)."""
    ptx = compile_kernel("encode_segments")
    assert "ld.global.f64" in ptx and "st.global.f64" in ptx  # best[] scratch in global memory
    assert "ld.global.nc.u8" in ptx or "ld.global.u8" in ptx  # the text bytes
    assert "\tcall" not in ptx  # no Python objects, no helper calls left


def test_long_kernel_tiles_in_shared_memory(no_driver):
    """The cooperative kernel stages its tiles in dynamic shared memory and syncs the block."""
    ptx = compile_kernel("encode_long_segments")
    assert re.search(r"\.extern \.shared", ptx)  # cuda.shared.array(0, ...)
    assert "st.shared.f64" in ptx and "ld.shared.f64" in ptx  # the ring and the scores
    assert "bar.sync" in ptx or "barrier.sync" in ptx
    assert "ld.global.f64" in ptx  # node scores read by the walkers


def test_device_functions_compile(no_driver):
    from gpu_bytepiece.core import lattice as lat
    from gpu_bytepiece.core import long as ls

    sig = ("void(uint8[::1], int64, int64, int64[::1], float64[::1], int64, "
           "float64, uint64, int64, float64[::1], int64[::1], int64)")
    ptx, _ = cuda.compile_ptx(lat.lattice, sig, device=True, cc=CC)
    assert re.search(r"^\.target sm_90\b", ptx, flags=re.M) and ".func" in ptx
    ptx, _ = cuda.compile_ptx(lat.backtrack, "int64(int64, int64[::1], int32[::1], int64, uint32[::1], int64)",
                              device=True, cc=CC)
    assert ".func" in ptx
    ptx, _ = cuda.compile_ptx(ls.walk_matches, "int64(uint8[::1], int64, int64, int64, int64[::1], "
                              "float64[::1], float64[::1], int32[::1], uint8[::1], int64)",
                              device=True, cc=CC)
    assert ".func" in ptx
    ptx, _ = cuda.compile_ptx(ls.relax_rows, "void(int64, int64, float64[::1], int32[::1], uint8[::1], int32[::1], "
                              "int64, int64, int64, float64[::1], int64, float64, uint64, int64, int64[::1], "
                              "int64)", device=True, cc=CC)
    assert ".func" in ptx and "f64" in ptx


@pytest.mark.parametrize("name,sig", KERNEL_SIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(KERNEL_SIGS)])
def test_kernel_assembles_to_sm90_cubin(no_driver, name, sig):
    """ptxas (inside nvJitLink, no driver) turns the PTX into sm_90 machine code."""
    nvjitlink = pytest.importorskip("cuda.bindings.nvjitlink", reason="cuda-bindings with nvJitLink is not installed")
    ptx = compile_kernel(name, sig).encode()
    try:
        h = nvjitlink.create(3, ["-arch=sm_90", "-O3", "-verbose"])
    except Exception as e:  # libnvJitLink missing
        pytest.skip(f"nvJitLink is not usable: {e}")
    try:
        nvjitlink.add_data(h, nvjitlink.InputType.PTX, ptx, len(ptx), name)
        nvjitlink.complete(h)
        log = bytearray(nvjitlink.get_info_log_size(h))
        nvjitlink.get_info_log(h, log)
        size = nvjitlink.get_linked_cubin_size(h)
    finally:
        nvjitlink.destroy(h)
    log = log.decode(errors="replace")
    assert size > 0
    regs = re.search(r"Used (\d+) registers", log)
    assert regs, log
    print(f"{name}: {regs.group(1)} registers; " + (re.search(r"\d+ bytes spill stores", log) or [""])[0])
