"""The ahead-of-time CPU drivers (``gpu_bytepiece.aot``): the JIT's ids, without Numba.

The module is built once per session into a temporary folder (Numba's
``pycc`` and the C compiler, ~10 s) and loaded from there through
``GPU_BYTEPIECE_AOT``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gpu_bytepiece import Tokenizer, aot
from gpu_bytepiece.cpu_fallback import tokenize as jit
from gpu_bytepiece.text import pack_texts

from conftest import corpus_docs, cpu_tokenizer, shared_model

EXTRA_MODELS = ("/work/models/zh80k_digits.model", "/work/models/mix160k.model", "/work/models/code24k.model")


@pytest.fixture(scope="session")
def aot_file(tmp_path_factory):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the ahead-of-time module cannot be built here")
    out = tmp_path_factory.mktemp("aot")
    subprocess.run([sys.executable, "-m", "gpu_bytepiece.aot", str(out)], check=True)
    (path,) = out.glob(aot.MODULE + ".*")
    return path


@pytest.fixture
def with_aot(aot_file, monkeypatch):
    """This process's loader pointed at the session's module."""
    monkeypatch.setenv("GPU_BYTEPIECE_AOT", str(aot_file))
    monkeypatch.delitem(aot._state, "mod", raising=False)
    drivers = aot.load()
    assert drivers is not None
    yield drivers
    aot._state.pop("mod", None)


def _docs():
    docs = []
    for part in ("zh", "en", "code"):
        docs += corpus_docs(part, n=40, every=7, max_chars=3000)
    return docs + ["", "x", "\n\n\n", "a\nb\n\nc", "tabs\tand  spaces\n", "数字 12345 and 🙂 emoji\n"]


def _models():
    paths = [shared_model("bytepiece.plus.40k.model"), shared_model("bytepiece_80k.model")]
    return paths + [p for p in EXTRA_MODELS if os.path.exists(p)]


@pytest.mark.parametrize("alpha", [-1.0, 0.1, 1e6])
def test_same_ids_as_the_jit(with_aot, alpha):
    # best path, both forms of sampling (linear weights; log-sum-exp for a huge alpha), bos/eos
    # (the scatter), on real text and every real model, batch by batch through the backend
    docs = _docs()
    for path in _models():
        # a Tokenizer of its own: the session's shared ones may predate GPU_BYTEPIECE_AOT
        # (the backend looks the module up when it is made)
        backend = Tokenizer(path, device="cpu")._backend
        assert backend.ahead_of_time
        for lo in range(0, len(docs), 9):
            data, off = pack_texts(docs[lo:lo + 9])
            assert len(data) < 1 << 16  # one chunk: the path the module serves
            for bos in (False, True):
                args = (data, off, alpha, bos, bos, None if alpha < 0 else 12345, lo)
                a_ids, a_off = backend._encode(*args, use_aot=True)
                j_ids, j_off = backend._encode(*args, use_aot=False)
                np.testing.assert_array_equal(a_ids, j_ids)
                np.testing.assert_array_equal(a_off, j_off)


def test_long_segments_same_as_the_jit(with_aot):
    # the drivers called directly on ~0.5 MB (segments far longer than a piece), 80k model
    t = cpu_tokenizer(shared_model("bytepiece_80k.model"))._backend
    from gpu_bytepiece.backends.layout import segment_table

    data, off = pack_texts(["".join(corpus_docs(part, n=60)) for part in ("zh", "en", "code")])
    seg = segment_table(data, off)
    np.testing.assert_array_equal(np.stack(with_aot.find_segments(data, off)), np.stack(jit.find_segments(data, off)))
    n = len(seg.start)
    got = []
    for run in (with_aot.encode_chunk, jit.encode_chunk):
        out, counts = np.zeros(len(data), np.uint32), np.zeros(n, np.int64)
        run(data, seg.start, seg.end, seg.key, seg.pos, 0, n, t.trie.cells, t.trie.node_id,
            t.node_score, t.trie.max_len, np.float64(-1), out, counts)
        got.append((out, counts))
    np.testing.assert_array_equal(got[0][1], got[1][1])
    np.testing.assert_array_equal(got[0][0], got[1][0])


def test_wrong_arrays_are_refused(with_aot):
    # pycc's own wrappers do not check dtypes: ours do
    data = np.frombuffer(b"hello", np.uint8)
    with pytest.raises(TypeError, match="int64"):
        with_aot.encode_chunk(data, np.zeros(1, np.int32), np.ones(1, np.int64), np.zeros(1, np.uint64),
                         np.zeros(1, np.int64), 0, 1, np.zeros(300, np.int64), np.zeros(300, np.int32),
                              np.zeros(300), 1, -1.0, np.zeros(5, np.uint32), np.zeros(1, np.int64))
    with pytest.raises(TypeError, match="uint32"):
        with_aot.scatter_tokens(np.zeros(5, np.uint32), np.zeros(1, np.int64), np.zeros(1, np.int64),
                                np.zeros(1, np.int64), np.zeros(5, np.int64))


def test_a_stale_module_is_ignored(aot_file, monkeypatch):
    monkeypatch.setenv("GPU_BYTEPIECE_AOT", str(aot_file))
    monkeypatch.delitem(aot._state, "mod", raising=False)
    monkeypatch.setitem(aot._state, "key", aot.source_key() ^ 1)  # as after an edit of lattice.py
    assert aot.load() is None
    aot._state.pop("mod", None)


_CHILD = r"""
import json, sys
from gpu_bytepiece import Tokenizer
tok = Tokenizer(sys.argv[1], device="cpu")
ids = [tok.encode(t) for t in json.loads(sys.argv[2])]
bos = tok.encode("hello", add_bos=True, add_eos=True)
print(json.dumps({"ids": ids, "bos": bos, "aot": tok._backend.ahead_of_time, "numba": "numba" in sys.modules}))
"""


@pytest.mark.parametrize("mode", ["aot", "absent", "off"])
def test_encode_without_numba_and_the_fallback(aot_file, tmp_path, mode):
    path = shared_model("bytepiece_80k.model")
    texts = ["hello world", "你好，世界\n\n第二行 123", corpus_docs("code", n=1, max_chars=2000)[0]]
    tok = cpu_tokenizer(path)  # (its trie is cached: the child loads it)
    env = dict(os.environ, GPU_BYTEPIECE_AOT={"aot": str(aot_file), "absent": str(tmp_path / "none.so"),
                                              "off": "0"}[mode])
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(texts)], env=env,
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    assert got["ids"] == [tok.encode(t) for t in texts]
    assert got["bos"] == tok.encode("hello", add_bos=True, add_eos=True)
    assert got["aot"] == (mode == "aot")
    assert got["numba"] == (mode != "aot")
