"""CUDA path under Numba's CUDA simulator: GPU == CPU, exactly.

Runs only in a process started with ``NUMBA_ENABLE_CUDASIM=1`` (``./test.sh
sim``). The simulator runs every CUDA thread as a Python thread, so inputs
stay small (a few KB per test) and ``THREADS_PER_BLOCK`` is patched to 8 so
they still span several blocks.
"""

from __future__ import annotations

import os
import sys
import unicodedata

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("CUDA simulator tests: run with NUMBA_ENABLE_CUDASIM=1 (./test.sh sim)", allow_module_level=True)

from conftest import MODEL_NAMES, PARTS, corpus_docs, cpu_tokenizer, shared_model  # noqa: E402

from gpu_bytepiece import Tokenizer, config  # noqa: E402
from gpu_bytepiece.device import DeviceError  # noqa: E402

pytestmark = [
    pytest.mark.sim,
    # the shared lattice's uint64 hash wraps on purpose; NumPy scalars warn about it in Python
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

# characters per document: zh is ~3 UTF-8 bytes a character
MAX_CHARS = {"zh": 120, "en": 300, "code": 300}

_GPU: dict = {}


def gpu_tokenizer(path):
    key = str(path)
    if key not in _GPU:
        _GPU[key] = Tokenizer(path, device="cuda", seed=1234)
    return _GPU[key]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)


@pytest.fixture(autouse=True, scope="module")
def fast_barriers():
    """The simulator runs a block's threads as Python threads; a ``syncthreads`` waits for
    GIL hand-offs, so a short switch interval makes barrier-heavy kernels several times faster."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


def assert_same(gpu, cpu, texts, **kw):
    ig, og = gpu.encode_to_numpy(texts, **kw)
    ic, oc = cpu.encode_to_numpy(texts, **kw)
    assert ig.dtype == np.uint32 and og.dtype == np.int64
    np.testing.assert_array_equal(og, oc)
    np.testing.assert_array_equal(ig, ic)
    return ig, og


def ragged_docs():
    """Empty docs, only newlines, CRLF, a line much longer than the others, 13 docs."""
    en = corpus_docs("en", n=3, every=11, max_chars=200)
    zh = corpus_docs("zh", n=2, every=13, max_chars=60)
    long_line = " ".join(corpus_docs("en", n=4, every=7, max_chars=250)).replace("\n", " ")
    return ["", "\n", "\n\n\n", en[0], "a", long_line, "", "x\n\ny\n", zh[0],
            "\r\n tail \n\n", en[1] + "\n\n" + zh[1], "\n" + en[2], "é"]


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_best_path_matches_cpu(name, part):
    path = shared_model(name)
    docs = corpus_docs(part, n=8, every=29, max_chars=MAX_CHARS[part])
    gpu = gpu_tokenizer(path)
    assert gpu.device == "cuda:0"
    assert_same(gpu, cpu_tokenizer(path), docs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_seeded_sampling_matches_cpu(name):
    path = shared_model(name)
    docs = corpus_docs("en", n=5, every=31, max_chars=200) + corpus_docs("zh", n=4, every=31, max_chars=80)
    gpu, cpu = gpu_tokenizer(path), cpu_tokenizer(path)
    ids, _ = assert_same(gpu, cpu, docs, alpha=0.1, seed=7)
    best, _ = gpu.encode_to_numpy(docs)
    assert not np.array_equal(ids, best)  # the sampling branch ran
    again, _ = gpu.encode_to_numpy(docs, alpha=0.1, seed=7)
    np.testing.assert_array_equal(again, ids)
    assert_same(gpu, cpu, docs[:3], alpha=0.0, seed=7, add_bos=True)


@pytest.mark.parametrize("alpha", [0.0, 1e-300, 0.5, 100.0, 1e308])
def test_any_finite_alpha_matches_cpu(plus40k_path, alpha):
    """Extreme alphas: the GPU draws the CPU's sample, a segmentation of this very text."""
    docs = ["hello world", "你好，世界！12345"] + corpus_docs("en", n=2, every=29, max_chars=120)
    ids, off = assert_same(gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path), docs, alpha=alpha, seed=1)
    cpu = cpu_tokenizer(plus40k_path)
    for i, d in enumerate(docs):
        assert cpu.decode(ids[off[i]:off[i + 1]].tolist()) == unicodedata.normalize("NFC", d)


def test_unseeded_sampling_sequence_matches_cpu(plus40k_path):
    """Calls without ``seed=`` draw fresh samples, the same sequence on both devices."""
    docs = corpus_docs("en", n=4, every=17, max_chars=150)
    gpu = Tokenizer(plus40k_path, device="cuda", seed=99)
    cpu = Tokenizer(plus40k_path, device="cpu", seed=99)
    first, _ = assert_same(gpu, cpu, docs, alpha=0.2)
    second, _ = assert_same(gpu, cpu, docs, alpha=0.2)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("add_bos,add_eos", [(False, False), (True, False), (False, True), (True, True)])
def test_ragged_batch_specials(plus40k_path, add_bos, add_eos):
    docs = ragged_docs()
    assert len(docs) % config.THREADS_PER_BLOCK != 0
    ids, offsets = assert_same(gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path), docs,
                               add_bos=add_bos, add_eos=add_eos)
    extra = int(add_bos) + int(add_eos)
    assert offsets[1] - offsets[0] == extra  # the empty first document
    if add_bos:
        assert (ids[offsets[:-1]] == 1).all()
    if add_eos:
        assert (ids[offsets[1:] - 1] == 2).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ragged_batch_sampling(name):
    path = shared_model(name)
    assert_same(gpu_tokenizer(path), cpu_tokenizer(path), ragged_docs(), alpha=0.1, seed=7, add_eos=True)


def test_empty_documents_only(plus40k_path):
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    ids, offsets = assert_same(gpu, cpu, ["", ""])
    assert len(ids) == 0 and list(offsets) == [0, 0, 0]
    ids, offsets = assert_same(gpu, cpu, ["", "", ""], add_bos=True, add_eos=True)
    assert list(ids) == [1, 2, 1, 2, 1, 2]


def test_several_packed_batches(plus40k_path):
    docs = corpus_docs("code", n=6, every=23, max_chars=250) + [""] + corpus_docs("zh", n=3, every=5, max_chars=60)
    assert_same(gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path), docs,
                batch_bytes=400, add_bos=True, alpha=0.1, seed=7)


@pytest.mark.parametrize("budget", [2_000, 12_000])
def test_chunked_batch_matches_whole(plus40k_path, monkeypatch, budget):
    """A batch bigger than ``MAX_DEVICE_BYTES`` runs in chunks (one segment alone beyond it)."""
    from gpu_bytepiece.backends.cuda import BYTES_PER_BYTE, plan_chunks

    docs = ragged_docs()
    assert len(max(docs, key=len)) * BYTES_PER_BYTE > 2_000  # the long line is a chunk of its own
    monkeypatch.setattr(config, "MAX_DEVICE_BYTES", budget)
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    seg_len = np.array([len(d.encode()) for d in docs if d], dtype=np.int64)
    assert len(plan_chunks(seg_len, budget)) > 3
    assert_same(gpu, cpu, docs, add_bos=True, add_eos=True)
    assert_same(gpu, cpu, docs, alpha=0.1, seed=7)


def test_plan_chunks():
    from gpu_bytepiece.backends.cuda import BYTES_PER_BYTE, BYTES_PER_SEGMENT, plan_chunks

    seg_len = np.array([10, 10, 500, 10, 10, 10], dtype=np.int64)
    cost = seg_len * BYTES_PER_BYTE + BYTES_PER_SEGMENT
    budget = int(cost[0] + cost[1])
    b = plan_chunks(seg_len, budget)
    assert b[0] == 0 and b[-1] == len(seg_len) and (np.diff(b) > 0).all()
    assert list(b[:3]) == [0, 2, 3]  # the 500-byte segment alone
    for k0, k1 in zip(b[:-1], b[1:]):
        assert k1 - k0 == 1 or cost[k0:k1].sum() <= budget
    assert list(plan_chunks(seg_len, 10**9)) == [0, 6]
    assert list(plan_chunks(seg_len[:0], 10)) == [0]


def test_unsorted_segments_same_ids(plus40k_path, monkeypatch):
    monkeypatch.setattr(config, "CUDA_SORT_SEGMENTS", False)
    assert_same(gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path), ragged_docs(), alpha=0.1, seed=7)


def test_segment_order_longest_first():
    from gpu_bytepiece.backends.cuda import segment_order

    seg_len = np.array([3, 70000, 5, 3, 80000, 5], dtype=np.int64)
    assert list(segment_order(seg_len)) == [1, 4, 2, 5, 0, 3]  # capped at 65535, then stable


def test_device_buffers_are_reused(plus40k_path):
    tok = Tokenizer(plus40k_path, device="cuda")
    backend = tok._backend
    docs = ragged_docs()
    tok.encode_to_numpy(docs)
    held = backend.pool_bytes()
    bufs = {k: id(v) for k, v in backend._pool.buffers.items()}
    pinned = {k: id(v) for k, v in backend._pinned.buffers.items()}
    assert held > 0 and {"data0", "best0", "out0", "ids0"} <= set(bufs)
    assert backend.pinned_bytes() > 0 and {"data0", "meta0", "key0", "counts0", "dest0", "ids0"} <= set(pinned)
    ids, _ = tok.encode_to_numpy(docs[:5], alpha=0.1, seed=7)
    assert {k: id(v) for k, v in backend._pool.buffers.items()} == bufs  # no new allocation
    assert {k: id(v) for k, v in backend._pinned.buffers.items()} == pinned
    assert backend.pool_bytes() == held
    np.testing.assert_array_equal(ids, cpu_tokenizer(plus40k_path).encode_to_numpy(docs[:5], alpha=0.1, seed=7)[0])
    backend.release()
    assert backend.pool_bytes() == 0 and backend.pinned_bytes() == 0
    assert_same(tok, cpu_tokenizer(plus40k_path), docs[5:])


def test_profile_records_phases(plus40k_path):
    tok = gpu_tokenizer(plus40k_path)
    backend = tok._backend
    backend.profile = True
    try:
        assert_same(tok, cpu_tokenizer(plus40k_path), ragged_docs()[:6])
    finally:
        backend.profile = False
    t = backend.last_timings
    assert set(t) == {"host", "h2d", "lattice", "scatter", "d2h", "total"} and t["total"] > 0


def test_trie_and_scores_resident(plus40k_path):
    backend = gpu_tokenizer(plus40k_path)._backend
    t = backend.trie
    np.testing.assert_array_equal(backend._cells.copy_to_host(), t.cells)
    np.testing.assert_array_equal(backend._node_id.copy_to_host(), t.node_id)
    np.testing.assert_array_equal(backend._scores.copy_to_host(), backend.scores)


def test_kernels_match_cpu_twins(plus40k_path):
    """The kernels on raw arrays, any segment order, equal their CPU twins."""
    from numba import cuda

    from gpu_bytepiece import kernels
    from gpu_bytepiece.cpu_fallback import encode_segments, find_segments, scatter_tokens

    gpu = gpu_tokenizer(plus40k_path)
    raw = [d.encode() for d in ragged_docs()]
    data = np.frombuffer(b"".join(raw), dtype=np.uint8)
    doc_off = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=doc_off[1:])
    seg_start, seg_end, seg_doc = find_segments(data, doc_off)
    n_seg = len(seg_start)
    seg_key = (np.arange(n_seg, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(7)
    seg_pos = seg_start - doc_off[seg_doc]
    t, scores = gpu._trie, gpu._backend.scores  # the score array the backends hand the lattice
    for alpha in (-1.0, 0.3):
        out_c = np.zeros(len(data), dtype=np.uint32)
        counts_c = np.zeros(n_seg, dtype=np.int64)
        encode_segments(data, seg_start, seg_end, seg_key, seg_pos, np.array([0, n_seg], dtype=np.int64),
                        t.cells, t.node_id, scores, t.max_len, np.float64(alpha), out_c, counts_c)
        order = np.random.default_rng(3).permutation(n_seg).astype(np.int64)
        n_scr = len(data) + n_seg
        out_g = cuda.to_device(np.zeros(len(data), dtype=np.uint32))
        counts_g = cuda.to_device(np.zeros(n_seg, dtype=np.int64))
        kernels.encode_segments[2, 8](
            cuda.to_device(data), cuda.to_device(seg_start), cuda.to_device(seg_end),
            cuda.to_device(seg_key), cuda.to_device(seg_pos), cuda.to_device(order),
            cuda.to_device(t.cells), cuda.to_device(t.node_id),
            cuda.to_device(scores), t.max_len, np.float64(alpha),
            cuda.device_array(n_scr, np.float64), cuda.device_array(n_scr, np.int64), out_g, counts_g)
        np.testing.assert_array_equal(counts_g.copy_to_host(), counts_c)
        # one CPU chunk writes its ids back to back; the kernel writes segment k's at seg_start[k]
        src_c = np.zeros(n_seg, dtype=np.int64)
        np.cumsum(counts_c[:-1], out=src_c[1:])
        got = out_g.copy_to_host()
        for k in range(n_seg):
            np.testing.assert_array_equal(got[seg_start[k]:seg_start[k] + counts_c[k]],
                                          out_c[src_c[k]:src_c[k] + counts_c[k]])

        dest = src_c + np.arange(n_seg) * 2  # gaps, as the specials leave
        size = int(dest[-1] + counts_c[-1])
        ids_c = np.zeros(size, dtype=np.uint32)
        scatter_tokens(out_c, src_c, counts_c, dest, ids_c)
        for blocks in (3, 5):  # 24 threads (fewer than a warp's lanes), 40 (one idle partial group)
            ids_g = cuda.to_device(np.zeros(size, dtype=np.uint32))
            kernels.scatter_tokens[blocks, 8](out_g, cuda.to_device(seg_start), counts_g, cuda.to_device(dest), ids_g)
            np.testing.assert_array_equal(ids_g.copy_to_host(), ids_c)


# ------------------------------------------------------------------ long segments

def _tiled_lattice():
    """``lattice.lattice`` rebuilt from the long-segment kernel's plain functions (njit):
    walk ``rows`` ends, relax them, next tile; ``best`` lives in a ring."""
    import numba

    from gpu_bytepiece.core.lattice import initial_best
    from gpu_bytepiece.core.long import relax_rows, walk_matches

    walk = numba.njit(walk_matches)
    relax = numba.njit(relax_rows)

    @numba.njit
    def tiled(data, a, b, cells, node_score, max_len, alpha, key, pos0, rows, back):
        n = b - a
        stride = max_len
        ring = 1
        while ring <= stride:
            ring *= 2
        row_score = np.empty(rows * stride)
        row_cell = np.empty(rows * stride, np.int32)
        row_len = np.empty(rows * stride, np.uint8)
        cnt = np.empty(rows, np.int32)
        first, rest = initial_best(alpha)  # as kernels.encode_long_segments fills its ring
        best = np.full(ring, rest)
        best[0] = first
        for e0 in range(1, n + 1, rows):
            r = min(rows, n + 1 - e0)
            for w in range(r):
                cnt[w] = walk(data, a, e0 + w, min(e0 + w, max_len), cells, node_score,
                              row_score, row_cell, row_len, w * stride)
            relax(e0, r, row_score, row_cell, row_len, cnt, 0, 0, stride, best, ring - 1, alpha, key, pos0,
                  back, 0)

    return tiled


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_long_segment_tiles_match_lattice(name):
    """Walking then relaxing tile by tile gives ``lattice.lattice``'s back pointers exactly (CPU)."""
    from gpu_bytepiece.backends.layout import sampling_scores
    from gpu_bytepiece.core.lattice import LINEAR
    from gpu_bytepiece.cpu_fallback.tokenize import backtrack, lattice

    tok = cpu_tokenizer(shared_model(name))
    t, scores = tok._trie, tok._backend.node_score
    docs = corpus_docs("zh", n=3, every=7) + corpus_docs("en", n=3, every=7) + corpus_docs("code", n=3, every=7)
    data = np.frombuffer("\n".join(docs).encode(), dtype=np.uint8)
    tiled = _tiled_lattice()
    # raw scores with a temperature (log form), and the backends' weights (linear form:
    # the whole text is long enough for the rescaling to happen, at the same starts)
    runs = [(scores, alpha) for alpha in (-1.0, 0.0, 0.3, 1e308)]
    runs += [sampling_scores(scores, alpha) for alpha in (0.1, 2.0)]
    assert [r[1] for r in runs[4:]] == [LINEAR, LINEAR]
    for run_scores, alpha in runs:
        for rows in (1, 7, 32):
            for a, b in ((0, len(data)), (5, 3005), (100, 101)):
                want = np.zeros(b - a + 1, np.int64)
                lattice(data, a, b, t.cells, run_scores, t.max_len, alpha, np.uint64(77), 3,
                        np.empty(b - a + 1), want, 0)
                got = np.zeros(b - a + 1, np.int64)
                tiled(data, a, b, t.cells, run_scores, t.max_len, alpha, np.uint64(77), 3, rows, got)
                np.testing.assert_array_equal(got[1:], want[1:])  # the same trie cell at every end
                ids_want = np.zeros(b - a, np.uint32)
                ids_got = np.zeros(b - a, np.uint32)
                n_want = backtrack(b - a, want, t.node_id, 0, ids_want, 0)
                assert backtrack(b - a, got, t.node_id, 0, ids_got, 0) == n_want
                np.testing.assert_array_equal(ids_got[:n_want], ids_want[:n_want])


def test_long_layout():
    from gpu_bytepiece.kernels.long_segments import long_layout

    rows, stride, ring, win, nbytes = long_layout(36, 64, 48 << 10)
    assert (rows, stride, ring) == (32, 36, 64) and 0 < nbytes <= 48 << 10 and win > 1000
    assert long_layout(36, 8, 48 << 10)[0] == 7  # walkers: all threads but thread 0
    assert long_layout(36, 1, 48 << 10)[0] == 0  # nobody to walk
    assert long_layout(300, 64, 48 << 10)[0] == 0  # lengths are stored as uint8
    assert long_layout(36, 64, 2000)[0] == 1  # shared memory bounds the rows


@pytest.fixture
def long_path(monkeypatch):
    """Segments over 64 bytes go to the cooperative kernel, in blocks of 8 threads (7 walkers)."""
    monkeypatch.setattr(config, "CUDA_LONG_SEGMENT_BYTES", 64)
    monkeypatch.setattr(config, "CUDA_LONG_THREADS", 8)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_long_segments_match_cpu(name, long_path):
    path = shared_model(name)
    docs = ragged_docs()
    seg_len = [len(s) for d in docs for s in d.encode().splitlines(keepends=True)]
    assert sum(n > 64 for n in seg_len) >= 4 and max(seg_len) > 900
    gpu, cpu = gpu_tokenizer(path), cpu_tokenizer(path)
    assert gpu._backend._long_plan() is not None
    assert_same(gpu, cpu, docs)
    assert_same(gpu, cpu, docs, alpha=0.1, seed=7, add_eos=True)


def test_long_segments_small_tiles(plus40k_path, monkeypatch):
    """Two walkers, one-row tiles, backtrack windows of ~180 positions, fewer blocks than long segments."""
    monkeypatch.setattr(config, "CUDA_LONG_SEGMENT_BYTES", 16)
    monkeypatch.setattr(config, "CUDA_LONG_THREADS", 3)
    monkeypatch.setattr(config, "CUDA_LONG_SHARED_BYTES", 2000)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)
    gpu, cpu = gpu_tokenizer(plus40k_path), cpu_tokenizer(plus40k_path)
    rows, _, _, win, _ = gpu._backend._long_plan()[2]
    assert rows == 1 and win < 200
    docs = ragged_docs()[3:9]
    assert_same(gpu, cpu, docs, add_bos=True)
    assert_same(gpu, cpu, docs, alpha=0.2, seed=3)


def test_long_kernel_matches_cpu_twin(plus40k_path):
    """``encode_long_segments`` on raw arrays (every segment, even 1-byte ones; 2 blocks) == the CPU twin."""
    from numba import cuda

    from gpu_bytepiece import kernels
    from gpu_bytepiece.cpu_fallback import encode_segments, find_segments
    from gpu_bytepiece.kernels.long_segments import long_layout

    gpu = gpu_tokenizer(plus40k_path)
    raw = [d.encode() for d in ragged_docs()[:9]]
    data = np.frombuffer(b"".join(raw), dtype=np.uint8)
    doc_off = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=doc_off[1:])
    seg_start, seg_end, seg_doc = find_segments(data, doc_off)
    n_seg = len(seg_start)
    seg_key = (np.arange(n_seg, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(7)
    seg_pos = seg_start - doc_off[seg_doc]
    t, scores = gpu._trie, gpu._backend.scores
    rows, stride, ring, win, nbytes = long_layout(t.max_len, 4, 48 << 10)
    long_idx = np.random.default_rng(5).permutation(n_seg).astype(np.int64)
    for alpha in (-1.0, 0.3):
        out_c = np.zeros(len(data), dtype=np.uint32)
        counts_c = np.zeros(n_seg, dtype=np.int64)
        encode_segments(data, seg_start, seg_end, seg_key, seg_pos, np.array([0, n_seg], dtype=np.int64),
                        t.cells, t.node_id, scores, t.max_len, np.float64(alpha), out_c, counts_c)
        n_scr = len(data) + n_seg
        out_g = cuda.to_device(np.zeros(len(data), dtype=np.uint32))
        counts_g = cuda.to_device(np.zeros(n_seg, dtype=np.int64))
        kernels.encode_long_segments[2, 4, 0, nbytes](
            cuda.to_device(data), cuda.to_device(seg_start), cuda.to_device(seg_end),
            cuda.to_device(seg_key), cuda.to_device(seg_pos), cuda.to_device(long_idx),
            cuda.to_device(t.cells), cuda.to_device(t.node_id),
            cuda.to_device(scores), t.max_len, np.float64(alpha), rows, stride, ring, win,
            cuda.device_array(n_scr, np.int64), out_g, counts_g)
        np.testing.assert_array_equal(counts_g.copy_to_host(), counts_c)
        src_c = np.zeros(n_seg, dtype=np.int64)
        np.cumsum(counts_c[:-1], out=src_c[1:])
        got = out_g.copy_to_host()
        for k in range(n_seg):
            np.testing.assert_array_equal(got[seg_start[k]:seg_start[k] + counts_c[k]],
                                          out_c[src_c[k]:src_c[k] + counts_c[k]])


# ----------------------------------------------------------------- pipelining

def test_pipelined_chunks_match_cpu(plus40k_path, monkeypatch):
    """Batches cut into chunks of ~400 bytes alternate between two streams and their buffers."""
    from gpu_bytepiece.backends.cuda import plan_chunks

    monkeypatch.setattr(config, "CUDA_PIPELINE_BYTES", 400)
    docs = ragged_docs()
    seg_len = np.array([len(s) for d in docs for s in d.encode().splitlines(keepends=True)], dtype=np.int64)
    assert len(plan_chunks(seg_len, 10**9, 400)) > 4
    tok = Tokenizer(plus40k_path, device="cuda", seed=5)
    backend = tok._backend
    cpu = cpu_tokenizer(plus40k_path)
    assert_same(tok, cpu, docs, add_bos=True, add_eos=True)
    assert {"data1", "ids1"} <= set(backend._pinned.buffers)  # the second slot was used
    pinned = {k: id(v) for k, v in backend._pinned.buffers.items()}
    assert_same(tok, cpu, docs, alpha=0.1, seed=7)
    assert {k: id(v) for k, v in backend._pinned.buffers.items()} == pinned  # reused across calls


def test_plan_chunks_max_bytes():
    from gpu_bytepiece.backends.cuda import plan_chunks

    seg_len = np.array([100, 100, 100, 500, 100, 50, 50], dtype=np.int64)
    b = plan_chunks(seg_len, 10**9, 250)
    assert list(b) == [0, 2, 3, 4, 7]  # the 500-byte segment alone
    assert list(plan_chunks(seg_len, 10**9, 10**6)) == [0, 7]


def test_bad_device_index(plus40k_path):
    with pytest.raises(DeviceError, match="cuda:3"):
        Tokenizer(plus40k_path, device="cuda:3")


def test_utf8_model_on_bytes_that_are_no_utf8_matches_cpu():
    """A model whose pieces of two or more bytes are all valid UTF-8 (as ``ensure_unicode`` trains
    them), on text and on bytes that are no valid UTF-8: GPU == CPU."""
    from gpu_bytepiece.model import Model, load_model

    def utf8(p):
        try:
            p.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    m = load_model(shared_model("bytepiece.plus.40k.model"))
    keep = [i for i, p in enumerate(m.pieces) if len(p) == 1 or utf8(p)]
    assert len(keep) < len(m.pieces)
    model = Model(pieces=[m.pieces[i] for i in keep], counts=np.asarray(m.counts)[keep])
    gpu, cpu = Tokenizer(model, device="cuda", seed=5), Tokenizer(model, device="cpu", seed=5)
    docs = ragged_docs() + ["中国".encode() + b"\xe4\xb8" + "人民".encode() + b"\xb7\xc1\xa1\xed\xa0\x80"
                            + "文·".encode(), "的".encode()[:2]]
    assert_same(gpu, cpu, docs)
    assert_same(gpu, cpu, docs, alpha=0.1, seed=7)
