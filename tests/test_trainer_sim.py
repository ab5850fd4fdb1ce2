"""Trainer kernels under Numba's CUDA simulator == the CPU drivers, exactly.

Run in its own process with ``NUMBA_ENABLE_CUDASIM=1`` (``./test.sh sim``):
n-gram key counting (hash table with atomics), the n-gram Viterbi, piece
counting and the pruning's splits on tiny real inputs, ``THREADS_PER_BLOCK``
patched to 8 so they span several blocks.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.sim
# the simulator runs the kernels on numpy scalars: uint64 hashing wraps on purpose
pytestmark = [pytestmark, pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("simulator tests run with NUMBA_ENABLE_CUDASIM=1 (./test.sh sim)", allow_module_level=True)

from conftest import corpus_docs  # noqa: E402

from gpu_bytepiece import config  # noqa: E402
from gpu_bytepiece.train.corpus import Corpus  # noqa: E402
from gpu_bytepiece.train.engines import CPUEngine  # noqa: E402
from gpu_bytepiece.train.ngrams import count_ngrams  # noqa: E402
from gpu_bytepiece.train.trainer import Trainer  # noqa: E402


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 4)


def _texts():
    # a little of each corpus, plus digits, long runs and non-BMP text
    out = [d[:120] for d in corpus_docs("zh", 2, every=11)]
    out += [d[:160] for d in corpus_docs("en", 1, every=7)]
    out += [d[:160] for d in corpus_docs("code", 1, every=5)]
    out += ["x = 12345\n\n\n\ty = 'é' + '😀'\n", "    \n\n" * 3 + "end"]
    return out


def _packed(texts, trainer):
    corpus = Corpus(texts, 1 << 20, None)
    eng = CPUEngine(trainer)
    batches = list(corpus.first_pass())
    assert len(batches) == 1
    data, offsets = batches[0]
    seg_start, seg_end = eng.segments(data, offsets)
    return eng, corpus, data, seg_start, seg_end


@pytest.mark.parametrize("order", [6, 3])
def test_count_keys_gpu_equals_cpu(order):
    from gpu_bytepiece.train import cuda_engine as ce

    tr = Trainer(order=order, max_vocab_size=300)
    eng, _, data, seg_start, seg_end = _packed(_texts(), tr)
    assert data.shape[0] > 300
    runs = eng.count_keys(data, seg_start, seg_end)
    assert len(runs) == 1
    (ck, cc), = runs
    gk, gc = ce.gpu_count_keys(data, seg_start, seg_end, order)
    np.testing.assert_array_equal(gk, ck)
    np.testing.assert_array_equal(gc, cc)
    assert int(gc.sum()) == data.shape[0]


@pytest.mark.parametrize("kw", [dict(), dict(ensure_unicode=False, order=4), dict(isolate_digits=True, min_count=1)])
def test_ngram_viterbi_gpu_equals_cpu(kw):
    from gpu_bytepiece.train import cuda_engine as ce

    tr = Trainer(max_vocab_size=300, **kw)
    texts = _texts()
    eng, corpus, data, seg_start, seg_end = _packed(texts, tr)
    ng = count_ngrams(tr, Corpus(texts, 1 << 20, None), eng, 1 << 30, None, False)
    cpu = eng.viterbi(ng)(data, seg_start, seg_end)
    gpu = ce.gpu_ngram_viterbi(data, seg_start, seg_end, ce.GPUNgramModel(ng), tr.ensure_unicode)
    np.testing.assert_array_equal(gpu, cpu)
    assert cpu[seg_start].all()  # every segment starts a piece


def test_train_on_cuda_sim_equals_cpu():
    texts = _texts()[:4]
    cpu = Trainer(max_vocab_size=300, min_count=1).train(texts, device="cpu", progress=False)
    gpu = Trainer(max_vocab_size=300, min_count=1).train(texts, device="cuda", progress=False)
    assert gpu.stats["device"] == "cuda:0"
    assert cpu.pieces == gpu.pieces


def test_split_pieces_gpu_equals_cpu():
    """The pruning's splits (the kept pieces' tokenizer on the dropped pieces) on the GPU: the same counts."""
    from gpu_bytepiece.train import cuda_engine as ce
    from gpu_bytepiece.train.pieces import count_pieces

    tr = Trainer(max_vocab_size=300, min_count=2)
    texts = _texts()[2:5]
    corpus = Corpus(texts, 1 << 20, None)
    eng = CPUEngine(tr)
    ng = count_ngrams(tr, corpus, eng, 1 << 30, None, False)
    pieces = count_pieces(tr, corpus, eng, ng, 1 << 30, None, False)
    K, cK = pieces.rank, pieces.cnt
    assert pieces.dropped.n > 20 and K.shape[0] > 256
    cpu = eng.split(pieces, K, cK, pieces.dropped.batches(256))
    gpu = ce.CUDAEngine(eng).split(pieces, K, cK, pieces.dropped.batches(256))
    np.testing.assert_array_equal(gpu, cpu)
    assert cpu.sum() > pieces.dropped.n
    # the kept pieces split by their own tokenizer (the pruning's rounds), in two batches
    m = (pieces.ln == 1) | (K % 2 == 0)  # the bytes and every other piece
    cpu = eng.split(pieces, K[m], cK[m], pieces.batches(K, cK, 1000))
    gpu = ce.CUDAEngine(eng).split(pieces, K[m], cK[m], pieces.batches(K, cK, 1000))
    np.testing.assert_array_equal(gpu, cpu)


def _long_table(table):
    """The long pieces of a piece table, in insertion order: ``(bytes, count)`` pairs."""
    _, h, o, ln, c, pool, sizes = table
    n = int(sizes[0])
    return [(pool[o[i]:o[i] + ln[i]].tobytes(), int(c[i])) for i in range(n)], h[:n].tolist()


@pytest.mark.parametrize("every", [1, 2])
def test_count_pieces_gpu_equals_cpu(every, monkeypatch):
    """Piece extraction and counting on the GPU (short keys hashed, long pieces listed): the CPU's counts.

    Flags from the n-gram Viterbi, then random ones (pieces of every length);
    ``every=2`` leaves every other segment out (its bytes flagged but not
    counted); sub-batches of 256 bytes, two batches into one long-piece table.
    """
    from gpu_bytepiece.train import cuda_engine as ce

    monkeypatch.setattr(config, "CUDA_BATCH_BYTES", 256)
    tr = Trainer(max_vocab_size=300)
    texts = _texts()
    eng, corpus, data, seg_start, seg_end = _packed(texts, tr)
    ng = count_ngrams(tr, Corpus(texts, 1 << 20, None), eng, 1 << 30, None, False)
    gpu_eng = ce.CUDAEngine(eng)
    flags = gpu_eng.viterbi(ng)(data, seg_start, seg_end)
    rng = np.random.default_rng(every)
    random_flags = (rng.random(data.shape[0]) < 0.12).astype(np.uint8)
    random_flags[seg_start] = 1
    seg_start, seg_end = seg_start[::every], seg_end[::every]
    assert len(eng._sub_batches(seg_start, seg_end, 256)) > 2
    cpu_table, gpu_table = eng.new_piece_table(), eng.new_piece_table()
    n_long = []
    for f in (flags, random_flags):
        ck, cc, cpu_table = eng.count_pieces(data, f, seg_start, seg_end, cpu_table)
        gk, gc, gpu_table = gpu_eng.count_pieces(data, f, seg_start, seg_end, gpu_table)
        np.testing.assert_array_equal(gk, ck)
        np.testing.assert_array_equal(gc, cc)
        assert gk.dtype == np.uint64 and gc.dtype == np.int64
        _, long_start, long_len = eng.extract_pieces(data, f, seg_start, seg_end)
        *_, g_start, g_len = gpu_eng.piece_runs(data, f, seg_start, seg_end)  # the Ray actors' step
        np.testing.assert_array_equal(g_start, long_start)
        np.testing.assert_array_equal(g_len, long_len)
        assert int(cc.sum()) + long_len.shape[0] == int(sum(f[a:b].sum() for a, b in zip(seg_start, seg_end)))
        n_long.append(long_len.shape[0])
        assert _long_table(gpu_table) == _long_table(cpu_table)
    assert min(n_long) > 0 and n_long[1] > 5  # both kinds of piece were counted


def test_count_pieces_gpu_empty_batch():
    from gpu_bytepiece.train import cuda_engine as ce

    tr = Trainer(max_vocab_size=300)
    eng = CPUEngine(tr)
    none = np.zeros(0, dtype=np.int64)
    data = np.frombuffer(b"abc", dtype=np.uint8)
    table = eng.new_piece_table()
    keys, counts, table = ce.CUDAEngine(eng).count_pieces(data, np.ones(3, np.uint8), none, none, table)
    assert keys.dtype == np.uint64 and counts.dtype == np.int64 and keys.shape == counts.shape == (0,)
    assert int(table[-1][0]) == 0


def test_train_on_cuda_sim_saves_the_cpu_model(tmp_path, monkeypatch):
    """Tens of documents, pass 2 in several GPU sub-batches: the same pieces and counts, the same model file."""
    monkeypatch.setattr(config, "CUDA_BATCH_BYTES", 512)
    texts = [d[:60] for d in corpus_docs("zh", 12, every=29)] + [d[:80] for d in corpus_docs("en", 12, every=31)]
    texts += [d[:80] for d in corpus_docs("code", 6, every=23)]
    kw = dict(max_vocab_size=400, min_count=2)
    cpu = Trainer(**kw).train(texts, device="cpu", progress=False)
    gpu = Trainer(**kw).train(texts, device="cuda", progress=False)
    assert gpu.stats["device"] == "cuda:0"
    assert gpu.stats["n_pieces_counted"] == cpu.stats["n_pieces_counted"] > 400
    assert gpu.pieces == cpu.pieces
    cpu_path, = cpu.save(tmp_path / "cpu.model")
    gpu_path, = gpu.save(tmp_path / "gpu.model")
    assert open(gpu_path, "rb").read() == open(cpu_path, "rb").read()
