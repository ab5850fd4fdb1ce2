"""Fork safety: a process that has tokenized can fork, and its children tokenize.

The real thing: ``multiprocessing.get_context("fork").Pool(2)`` (what
``datasets.map(num_proc=N)`` and PyTorch DataLoader workers do on Linux)
after the parent ran the tokenizer on 1 and 2 threads. With GNU OpenMP as
Numba's threading layer the children died and the pool never returned; a
timeout turns such a hang into a failure here.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys

import numba
import pytest

from conftest import corpus_sample, cpu_tokenizer

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork on this platform")

_TOK = None


def _encode_in_child(args):
    docs, threads = args
    return _TOK.encode_batch(docs, num_threads=threads)


def _docs():
    return corpus_sample("zh", n=12, every=97, max_chars=3000) + corpus_sample("code", n=6, every=151, max_chars=6000)


def test_tbb_layer_chosen_when_installed():
    """Numba's layer in a fresh process that imports gpu_bytepiece and tokenizes is TBB when
    the tbb wheel is installed (scripts/setup.sh installs it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("tbb")
    except PackageNotFoundError:
        pytest.skip("the tbb wheel is not installed (it is a dependency on Linux x86-64)")
    code = ("import numba, gpu_bytepiece as g; g.Tokenizer(device='cpu').encode_batch(['a b'] * 4, num_threads=2);"
            "print(numba.threading_layer())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tbb"


@pytest.mark.parametrize("parent_threads", [1, 2])
def test_fork_pool_after_tokenizing(plus40k_path, parent_threads):
    global _TOK
    tok = cpu_tokenizer(plus40k_path)
    docs = _docs()
    expected = tok.encode_batch(docs, num_threads=parent_threads)
    assert numba.threading_layer() in ("tbb", "workqueue"), "a fork-unsafe layer was chosen"
    _TOK = tok
    jobs = [(docs[i::3], t) for i in range(3) for t in (1, 2)]
    pool = mp.get_context("fork").Pool(2)
    try:
        got = pool.map_async(_encode_in_child, jobs).get(timeout=240)
    finally:
        pool.terminate()
        pool.join()
    for (part, _), ids in zip(jobs, got):
        assert ids == [expected[docs.index(d)] for d in part]


def test_datasets_map_num_proc(plus40k_path):
    datasets = pytest.importorskip("datasets", reason="datasets is not installed (pip install datasets)")
    tok = cpu_tokenizer(plus40k_path)
    docs = _docs()
    expected = tok.encode_batch(docs, num_threads=2)
    ds = datasets.Dataset.from_dict({"text": docs})
    out = ds.map(lambda b: {"ids": tok.encode_batch(b["text"])}, batched=True, batch_size=4, num_proc=2,
                 keep_in_memory=True, remove_columns=["text"])
    assert out["ids"] == expected
