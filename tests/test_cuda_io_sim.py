"""Device input and output under Numba's CUDA simulator: device == CPU, exactly.

``Tokenizer.encode_device`` (``backends.cuda_device``) takes UTF-8 bytes and
int64 document offsets that are already on the GPU and returns device
arrays; segmentation, prefix sums and the output layout run on the device
(``kernels.layout``, ``kernels.scan``). These tests feed it real NFC text
from ``../shared/corpus`` and compare with
``Tokenizer(..., device="cpu").encode_to_numpy``; the building blocks
(scans, compaction, segmentation) are also checked one by one against
numpy and ``cpu_fallback.find_segments``.

Runs only with ``NUMBA_ENABLE_CUDASIM=1`` (``./test.sh sim``). Blocks of 8
threads and at most 4 blocks per grid keep the simulated threads few.
"""

from __future__ import annotations

import os
import sys
import unicodedata

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("CUDA simulator tests: run with NUMBA_ENABLE_CUDASIM=1 (./test.sh sim)", allow_module_level=True)

from conftest import MODEL_NAMES, corpus_docs, cpu_tokenizer, shared_model  # noqa: E402
from numba import cuda  # noqa: E402

from gpu_bytepiece import Tokenizer, config  # noqa: E402
from gpu_bytepiece.device import DeviceError  # noqa: E402

pytestmark = [
    pytest.mark.sim,
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

_GPU: dict = {}


def gpu_tokenizer(path):
    key = str(path)
    if key not in _GPU:
        _GPU[key] = Tokenizer(path, device="cuda", seed=1234)
    return _GPU[key]


@pytest.fixture(autouse=True)
def small_grids(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 4)
    monkeypatch.setattr(config, "CUDA_LONG_THREADS", 8)


@pytest.fixture(autouse=True, scope="module")
def fast_barriers():
    """Simulated blocks wait at every ``syncthreads`` for GIL hand-offs: shorten them."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


def nfc_docs():
    """Real documents (NFC), empty ones, newline-only ones, CRLF, a line over 500 bytes."""
    en = corpus_docs("en", n=2, every=11, max_chars=160)
    zh = corpus_docs("zh", n=2, every=13, max_chars=60)
    code = corpus_docs("code", n=1, every=17, max_chars=200)
    long_line = " ".join(corpus_docs("en", n=3, every=7, max_chars=200)).replace("\n", " ")
    docs = ["", en[0], "\n\n", zh[0], "", "a", long_line, "x\n\ny\n", "\r\n tail \n\n", code[0],
            en[1] + "\n\n" + zh[1], "\n" + "é"]
    return [unicodedata.normalize("NFC", d) for d in docs]


def pack(docs, pad=0):
    """UTF-8 bytes and offsets; ``pad`` junk bytes before and after (offsets then start at ``pad``)."""
    raw = [d.encode() for d in docs]
    junk = b"\n\xff" * (pad // 2)
    data = np.frombuffer(junk + b"".join(raw) + junk, dtype=np.uint8)
    offsets = np.full(len(raw) + 1, len(junk), dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    offsets[1:] += len(junk)
    return data, offsets


def assert_device_same(gpu, cpu, docs, pad=0, **kw):
    data, offsets = pack(docs, pad)
    ids_d, off_d = gpu.encode_device(cuda.to_device(data), cuda.to_device(offsets), **kw)
    assert getattr(ids_d, "__cuda_ndarray__", False) and getattr(off_d, "__cuda_ndarray__", False)
    ids, off = ids_d.copy_to_host(), off_d.copy_to_host()
    want_ids, want_off = cpu.encode_to_numpy(docs, **kw)
    assert ids.dtype == np.uint32 and off.dtype == np.int64
    np.testing.assert_array_equal(off, want_off)
    np.testing.assert_array_equal(ids, want_ids)
    return ids, off


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_device_input_best_path(name):
    path = shared_model(name)
    assert_device_same(gpu_tokenizer(path), cpu_tokenizer(path), nfc_docs())


def test_device_input_sampling_and_specials(plus40k_path):
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    docs = nfc_docs()
    ids, _ = assert_device_same(gpu, cpu, docs, alpha=0.1, seed=7, add_bos=True, add_eos=True)
    best, _ = cpu.encode_to_numpy(docs, add_bos=True, add_eos=True)
    assert not np.array_equal(ids, best)  # the sampling branch ran
    assert_device_same(gpu, cpu, docs[:6], add_eos=True)


def test_device_input_unseeded_sequence(plus40k_path):
    """Calls without ``seed=`` advance the same sample sequence as the host path's."""
    docs = nfc_docs()[:5]
    data, offsets = pack(docs)
    dev = Tokenizer(plus40k_path, device="cuda", seed=99)
    host = Tokenizer(plus40k_path, device="cpu", seed=99)
    for _ in range(2):
        ids, off = dev.encode_device(cuda.to_device(data), cuda.to_device(offsets), alpha=0.2)
        want, want_off = host.encode_to_numpy(docs, alpha=0.2)
        np.testing.assert_array_equal(ids.copy_to_host(), want)
        np.testing.assert_array_equal(off.copy_to_host(), want_off)


def test_device_input_offsets_inside_a_larger_buffer(plus40k_path):
    """``offsets[0] > 0`` and bytes past ``offsets[-1]``: only the documents are read."""
    assert_device_same(gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path), nfc_docs()[:7], pad=6,
                       add_bos=True)


def test_device_input_edge_cases(plus40k_path):
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    ids, off = assert_device_same(gpu, cpu, ["", ""], add_bos=True, add_eos=True)
    assert list(ids) == [1, 2, 1, 2] and list(off) == [0, 2, 4]
    ids, off = assert_device_same(gpu, cpu, ["", ""])
    assert len(ids) == 0 and list(off) == [0, 0, 0]
    assert_device_same(gpu, cpu, ["\n", "\n\n\n", "z"])
    ids, off = gpu.encode_device(cuda.to_device(np.zeros(3, np.uint8)), cuda.to_device(np.zeros(1, np.int64)))
    assert len(ids.copy_to_host()) == 0 and list(off.copy_to_host()) == [0]


def test_device_input_chunked_and_long(plus40k_path, monkeypatch):
    """Scratch cut into chunks (device-side cuts), long segments on the block kernel."""
    monkeypatch.setattr(config, "MAX_DEVICE_BYTES", 6000)
    monkeypatch.setattr(config, "CUDA_LONG_SEGMENT_BYTES", 100)
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    backend = gpu._backend
    chunks = []
    run_chunk = backend._device_chunk

    def spy(*args):
        chunks.append(args[5:9])  # k0, k1, c0, c1
        return run_chunk(*args)

    monkeypatch.setattr(backend, "_device_chunk", spy)
    docs = nfc_docs()
    assert_device_same(gpu, cpu, docs, alpha=0.1, seed=3, add_eos=True)
    assert len(chunks) > 3
    assert [c[0] for c in chunks[1:]] == [c[1] for c in chunks[:-1]]  # whole segments, in order
    assert [c[2] for c in chunks[1:]] == [c[3] for c in chunks[:-1]]


def test_device_input_rejects_host_and_cpu(plus40k_path):
    data, offsets = pack(["abc"])
    with pytest.raises(TypeError, match="CUDA device array"):
        gpu_tokenizer(plus40k_path).encode_device(data, cuda.to_device(offsets))
    with pytest.raises(TypeError, match="int64"):
        gpu_tokenizer(plus40k_path).encode_device(cuda.to_device(data), cuda.to_device(offsets.astype(np.int32)))
    with pytest.raises(DeviceError, match="CUDA device"):
        cpu_tokenizer(plus40k_path).encode_device(cuda.to_device(data), cuda.to_device(offsets))


def test_device_buffers_reused(plus40k_path):
    tok = Tokenizer(plus40k_path, device="cuda")
    data, offsets = pack(nfc_docs())
    tok.encode_device(cuda.to_device(data), cuda.to_device(offsets))
    bufs = {k: id(v) for k, v in tok._backend._pool.buffers.items()}
    assert {"dv_flags", "dv_seg_end", "dv_out", "dv_cum"} <= set(bufs)
    data, offsets = pack(nfc_docs()[:5])
    tok.encode_device(cuda.to_device(data), cuda.to_device(offsets))
    assert {k: id(v) for k, v in tok._backend._pool.buffers.items()} == bufs


# ------------------------------------------------------------------ building blocks

def test_simulated_block_has_one_static_shared_array(monkeypatch):
    """Every thread of a block sees the same ``cuda.shared.array``, even when preempted while it is allocated.

    The simulator allocates a block's static shared array on first use, unlocked
    (``conftest._one_static_shared_array_per_block`` locks it): here ``np.empty``
    sleeps, so that the block's other threads reach the allocation meanwhile, as
    they did by chance once in CI (a block scan in ``kernels.scan`` read garbage).
    """
    import time

    from numba import int64

    @cuda.jit
    def block_sum(out):
        sh = cuda.shared.array(8, dtype=int64)
        tid = cuda.threadIdx.x
        sh[tid] = tid + 1
        cuda.syncthreads()
        s = 0
        for i in range(8):
            s += sh[i]
        out[tid] = s

    d_out = cuda.to_device(np.zeros(8, dtype=np.int64))
    empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.02)
        return empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    block_sum[1, 8](d_out)
    monkeypatch.undo()
    assert d_out.copy_to_host().tolist() == [36] * 8


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 700])
def test_scan_tiles(n, monkeypatch):
    """The device prefix sum == numpy's, for tile counts 1 .. many and grids smaller than them."""
    from gpu_bytepiece.kernels import scan_in_place, scan_tiles, tile_sums

    x = np.random.default_rng(n).integers(-5, 1000, n).astype(np.int64)
    want = np.concatenate(([0], np.cumsum(x))).astype(np.int64)
    for tile in (64, 128, 1024):
        n_tiles = -(-n // tile)
        sums = cuda.to_device(np.full(n_tiles + 1, -7, dtype=np.int64))
        dx = cuda.to_device(x)
        if n_tiles:
            tile_sums[2, 8](dx, tile, sums)
        scan_in_place[1, 8](sums, n_tiles)
        out = cuda.to_device(np.full(n + 1, -7, dtype=np.int64))
        scan_tiles[3, 8](dx, tile, sums, out)
        np.testing.assert_array_equal(out.copy_to_host(), want)


@pytest.mark.parametrize("tpb", [1, 3, 8])
def test_scans_with_tiny_tiles_and_odd_blocks(tpb):
    """Tiles smaller than a block's step (``tpb * ITEMS``), not multiples of ``ITEMS``, odd block sizes."""
    from gpu_bytepiece.kernels import compact_tiles, partition_tiles, scan_in_place, scan_tiles, tile_sums

    rng = np.random.default_rng(tpb)
    for n, tile in ((1, 1), (5, 1), (17, 3), (40, 5), (41, 24), (100, 9)):
        flags = (rng.random(n) < 0.4).astype(np.uint8)
        n_tiles = -(-n // tile)
        sums = cuda.to_device(np.full(n_tiles + 1, -7, dtype=np.int64))
        df = cuda.to_device(flags)
        tile_sums[2, tpb](df, tile, sums)
        scan_in_place[1, tpb](sums, n_tiles)
        want = np.concatenate(([0], np.cumsum(np.add.reduceat(flags.astype(np.int64), np.arange(0, n, tile)))))
        np.testing.assert_array_equal(sums.copy_to_host(), want)
        x = flags.astype(np.int64)
        out = cuda.to_device(np.full(n + 1, -7, dtype=np.int64))
        scan_tiles[3, tpb](cuda.to_device(x), tile, sums, out)
        np.testing.assert_array_equal(out.copy_to_host(), np.concatenate(([0], np.cumsum(x))))
        got = cuda.to_device(np.full(int(flags.sum()), -7, dtype=np.int64))
        compact_tiles[2, tpb](df, tile, sums, 1, got)
        np.testing.assert_array_equal(got.copy_to_host(), np.flatnonzero(flags) + 1)
        order = cuda.to_device(np.full(n, -7, dtype=np.int64))
        partition_tiles[3, tpb](df, tile, sums, order)
        np.testing.assert_array_equal(order.copy_to_host(), np.argsort(flags == 0, kind="stable"))


def test_compact_and_partition():
    from gpu_bytepiece.kernels import compact_tiles, partition_tiles, scan_in_place, tile_sums

    flags = (np.random.default_rng(1).random(333) < 0.3).astype(np.uint8)
    tile = 64
    n_tiles = -(-len(flags) // tile)
    sums = cuda.to_device(np.zeros(n_tiles + 1, dtype=np.int64))
    df = cuda.to_device(flags)
    tile_sums[2, 8](df, tile, sums)
    scan_in_place[1, 8](sums, n_tiles)
    set_idx = np.flatnonzero(flags)
    out = cuda.to_device(np.zeros(len(set_idx), dtype=np.int64))
    compact_tiles[2, 8](df, tile, sums, 5, out)
    np.testing.assert_array_equal(out.copy_to_host(), set_idx + 5)
    order = cuda.to_device(np.zeros(len(flags), dtype=np.int64))
    partition_tiles[3, 8](df, tile, sums, order)
    np.testing.assert_array_equal(order.copy_to_host(), np.argsort(flags == 0, kind="stable"))


def test_device_segmentation_matches_find_segments(plus40k_path):
    """Flags + compaction + segment table == ``cpu_fallback.find_segments`` (+ keys, positions)."""
    from gpu_bytepiece.cpu_fallback import find_segments
    from gpu_bytepiece.kernels import (compact_tiles, document_ends, document_keys, newline_ends, scan_in_place,
                                       segment_docs, segment_starts, tile_sums)
    from gpu_bytepiece.core.rng import document_keys as host_keys
    from gpu_bytepiece.core.rng import mix64

    data, offsets = pack(nfc_docs(), pad=4)
    a0 = int(offsets[0])
    seg_start, seg_end, seg_doc = find_segments(data, offsets)
    view = data[a0:offsets[-1]]
    flags = cuda.device_array(len(view), np.uint8)
    d_off = cuda.to_device(offsets)
    newline_ends[4, 8](cuda.to_device(view), flags)
    document_ends[2, 8](d_off, flags)
    tile = 256
    n_tiles = -(-len(view) // tile)
    sums = cuda.to_device(np.zeros(n_tiles + 1, dtype=np.int64))
    tile_sums[4, 8](flags, tile, sums)
    scan_in_place[1, 8](sums, n_tiles)
    n_seg = int(sums.copy_to_host()[-1])
    assert n_seg == len(seg_start)
    d_end = cuda.device_array(n_seg, np.int64)
    compact_tiles[4, 8](flags, tile, sums, 1, d_end)
    d_start = cuda.device_array(n_seg, np.int64)
    segment_starts[4, 8](d_end, 0, d_start)
    np.testing.assert_array_equal(d_end.copy_to_host() + a0, seg_end)
    np.testing.assert_array_equal(d_start.copy_to_host() + a0, seg_start)
    n_docs = len(offsets) - 1
    keys = cuda.device_array(n_docs, np.uint64)
    document_keys[2, 8](np.uint64(mix64(np.array([12345], dtype=np.uint64))[0]), 10, keys)
    want_keys = host_keys(12345, np.arange(10, 10 + n_docs))
    np.testing.assert_array_equal(keys.copy_to_host(), want_keys)
    doc, key, pos = (cuda.device_array(n_seg, np.int64), cuda.device_array(n_seg, np.uint64),
                     cuda.device_array(n_seg, np.int64))
    segment_docs[4, 8](d_start, d_off, keys, 1, doc, key, pos)
    np.testing.assert_array_equal(doc.copy_to_host(), seg_doc)
    np.testing.assert_array_equal(key.copy_to_host(), want_keys[seg_doc])
    np.testing.assert_array_equal(pos.copy_to_host(), seg_start - offsets[seg_doc])
