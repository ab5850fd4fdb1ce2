"""The double-array trie: every piece found with its id, nothing else, and the
forward walk finds exactly the matches of the naive dictionary scan."""

from __future__ import annotations

import random

import numpy as np
import pytest

import naive
from conftest import PARTS, corpus_sample, shared_model
from gpu_bytepiece.model import load_model
from gpu_bytepiece.trie import Trie, build_trie, whole_chars

_TRIES: dict = {}


def real_trie(path):
    """(pieces, trie, naive vocab) of a real model, built once per session."""
    key = str(path)
    if key not in _TRIES:
        m = load_model(path)
        _TRIES[key] = (m.pieces, build_trie(m.pieces), naive.load_vocab(key))
    return _TRIES[key]


def walk(trie: Trie, data: bytes) -> int:
    """Python walk of the arrays (lists are faster than numpy scalars here)."""
    base, check, node_id = trie.base, trie.check, trie.node_id
    s = 0
    for c in data:
        t = int(base[s]) + c
        if int(check[t]) != s:
            return -1
        s = t
    return int(node_id[s])


def forward_matches(trie_lists, max_len: int, seg: bytes) -> list:
    """``out[e]`` = ``[(s, id), ...]``: walk forward from every ``s`` in increasing order."""
    base, check, node_id = trie_lists
    out = [[] for _ in range(len(seg) + 1)]
    for s0 in range(len(seg)):
        s = 0
        for j in range(min(max_len, len(seg) - s0)):
            t = base[s] + seg[s0 + j]
            if check[t] != s:
                break
            s = t
            if node_id[s] >= 0:
                out[s0 + j + 1].append((s0, node_id[s]))
    return out


def assert_layout(trie: Trie, pieces: list, ids):
    for a in (trie.base, trie.check, trie.node_id):
        assert a.dtype == np.int32
        assert a.shape == (trie.n_cells,)
    assert trie.max_len == max(map(len, pieces))
    # Each piece ends at its own node; no other node carries an id.
    got = np.sort(trie.node_id[trie.node_id >= 0])
    np.testing.assert_array_equal(got, np.sort(np.asarray(ids, dtype=np.int32)))
    # The spare cells: base[s] + c stays inside the arrays for every node and byte.
    nodes = np.flatnonzero(trie.check >= 0)
    assert 0 in nodes
    assert int(trie.base[nodes].max()) + 255 < trie.n_cells
    # A child's parent is a node; the root is cell 0 and nobody's child.
    assert set(trie.check[nodes].tolist()) <= set(nodes.tolist())
    # The lattice's packed words hold exactly base and check.
    assert trie.cells.dtype == np.int64 and trie.cells.shape == (trie.n_cells,)
    np.testing.assert_array_equal(trie.cells & 0xFFFFFFFF, trie.base)
    np.testing.assert_array_equal(trie.cells[1:] >> 32, trie.check[1:])
    # ... but the root's check half, which no walk compares, holds the lattice's hint
    from gpu_bytepiece.core.lattice import WHOLE_CHARS
    assert trie.cells[0] >> 32 == (WHOLE_CHARS if whole_chars(pieces) else trie.check[0])
    # node_len is each node's depth: a child is one deeper than its parent.
    kids = nodes[nodes != 0]
    np.testing.assert_array_equal(trie.node_len[kids], trie.node_len[trie.check[kids]] + 1)
    assert trie.node_len[0] == 0


def test_real_model_every_piece_found(model_path):
    pieces, trie, _ = real_trie(model_path)
    assert_layout(trie, pieces, range(3, len(pieces) + 3))
    for i, p in enumerate(pieces):
        assert trie.lookup(p) == i + 3, p
    # the cell of each piece has its length as depth
    ends = np.flatnonzero(trie.node_id >= 0)
    lens = np.array([len(pieces[i - 3]) for i in trie.node_id[ends]])
    np.testing.assert_array_equal(trie.node_len[ends], lens)


def test_node_scores(model_path):
    pieces, trie, vocab = real_trie(model_path)
    scores = load_model(model_path).scores()
    node_score = trie.node_scores(scores)
    assert node_score.dtype == np.float64 and node_score.shape == (trie.n_cells,)
    ends = trie.node_id >= 0
    np.testing.assert_array_equal(node_score[ends], scores[trie.node_id[ends]])
    assert np.all(np.isneginf(node_score[~ends]))
    assert np.isfinite(node_score[ends]).all()
    # Spot check by walking to the cell of a few pieces.
    base = trie.base
    for p in pieces[::997]:
        s = 0
        for c in p:
            s = int(base[s]) + c
        assert node_score[s] == vocab.score[p]


def test_real_model_prefixes_and_extensions(model_path):
    pieces, trie, vocab = real_trie(model_path)
    t = Trie(trie.base.tolist(), trie.check.tolist(), trie.node_id.tolist(), trie.node_len, trie.cells, trie.max_len)
    n_prefix_non_pieces = 0
    for p in pieces:
        for k in range(1, len(p)):
            expected = vocab.id.get(p[:k], -1)
            n_prefix_non_pieces += expected == -1
            assert walk(t, p[:k]) == expected, p[:k]
    # Both models have prefixes that are not pieces (e.g. half a UTF-8 character).
    assert n_prefix_non_pieces > 1000
    rng = random.Random(0)
    for p in rng.sample(pieces, 3000):
        for c in (0, 10, 32, 0x61, 0x80, 0xE4, 0xFF, rng.randrange(256)):
            q = p + bytes([c])
            assert walk(t, q) == vocab.id.get(q, -1), q
            q = bytes([c]) + p
            assert walk(t, q) == vocab.id.get(q, -1), q


def test_real_model_random_non_pieces(model_path):
    pieces, trie, vocab = real_trie(model_path)
    t = Trie(trie.base.tolist(), trie.check.tolist(), trie.node_id.tolist(), trie.node_len, trie.cells, trie.max_len)
    rng = random.Random(1)
    misses = 0
    for _ in range(5000):
        q = bytes(rng.randrange(256) for _ in range(rng.randrange(2, 8)))
        expected = vocab.id.get(q, -1)
        misses += expected == -1
        assert walk(t, q) == expected, q
    assert misses > 4000
    # Longer than any piece: never found.
    assert walk(t, max(pieces, key=len) + b"x") == -1
    assert trie.lookup(b"") == -1  # the root is not a piece


@pytest.mark.parametrize("part", PARTS)
def test_forward_walk_equals_naive_matches(model_path, part):
    pieces, trie, vocab = real_trie(model_path)
    lists = (trie.base.tolist(), trie.check.tolist(), trie.node_id.tolist())
    docs = corpus_sample(part, n=12, every=97, max_chars=3000)
    n_matches = 0
    for doc in docs:
        for seg in naive.segments(naive.normalize(doc)):
            expected = naive.matches(seg, vocab)
            assert forward_matches(lists, trie.max_len, seg) == expected
            n_matches += sum(map(len, expected))
    assert n_matches > 2000


def test_small_trie_shapes():
    pieces = [b"a", b"ab", b"abc", b"abd", b"b", b"\x00", b"\x00\x00", b"\xff", b"\xff\x00\xff", b"zzzz"]
    ids = [10, 3, 7, 4, 5, 6, 9, 8, 12, 11]
    trie = build_trie(pieces, np.array(ids))
    assert_layout(trie, pieces, ids)
    for p, i in zip(pieces, ids):
        assert trie.lookup(p) == i
    for q in [b"abcd", b"ac", b"z", b"zz", b"zzz", b"zzzzz", b"\xff\x00", b"\x00\x00\x00", b"ba", b"c", b"\x01"]:
        assert trie.lookup(q) == -1, q
    # Default ids are 3.. in the given order.
    trie = build_trie(pieces)
    for i, p in enumerate(pieces):
        assert trie.lookup(p) == i + 3


def test_single_bytes_trie():
    pieces = [bytes([b]) for b in range(255, -1, -1)]
    trie = build_trie(pieces)
    assert_layout(trie, pieces, range(3, 259))
    for i, p in enumerate(pieces):
        assert trie.lookup(p) == i + 3
        assert trie.lookup(p + p) == -1


def test_deep_chain():
    # One long piece and all its prefixes: a chain of nodes each with one child.
    long = bytes(range(1, 200))
    pieces = [long[:k] for k in range(1, 200, 3)] + [bytes([b]) for b in range(256) if b not in (1,)]
    trie = build_trie(pieces)
    assert_layout(trie, pieces, range(3, len(pieces) + 3))
    for i, p in enumerate(pieces):
        assert trie.lookup(p) == i + 3
    assert trie.lookup(long[:2]) == -1
    assert trie.max_len == 199  # long[:199], k = 1, 4, ..., 199


def test_cached_trie_is_the_built_trie_and_is_read_back(monkeypatch, tmp_path):
    from dataclasses import fields

    from gpu_bytepiece import jit_cache, trie as trie_mod

    monkeypatch.setitem(jit_cache._state, "dir", tmp_path)
    pieces = load_model(None).pieces
    built = build_trie(pieces)
    first = trie_mod.cached_trie(pieces)
    (stored,) = (tmp_path / "tries").glob("*.npz")

    def no_build(_):
        raise AssertionError("built again: the stored trie was not read")

    monkeypatch.setattr(trie_mod, "build_trie", no_build)
    again = trie_mod.cached_trie(pieces)
    for got in (first, again):
        for f in fields(Trie):
            a, b = getattr(got, f.name), getattr(built, f.name)
            if isinstance(b, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b), f.name
            else:
                assert type(a) is type(b) and a == b, f.name
    # another vocabulary gets its own file; an unreadable file is built again
    monkeypatch.setattr(trie_mod, "build_trie", build_trie)
    assert trie_mod.cached_trie(pieces[:-1]).lookup(pieces[-1]) == -1
    assert len(list((tmp_path / "tries").glob("*.npz"))) == 2
    stored.write_bytes(b"not a zip")
    assert trie_mod.cached_trie(pieces).lookup(pieces[-1]) == len(pieces) + 2
    assert np.array_equal(np.load(stored)["cells"], built.cells)  # and stored again


def test_whole_chars_hint():
    assert whole_chars([b"a", b"ab", "中".encode(), "中文x".encode(), b"\x80\x81"])
    assert not whole_chars([b"ab", b"\xe4\xb8"])  # ends inside a character
    assert not whole_chars([b" \xc3"])


def test_whole_chars_walk_gives_the_byte_walk_ids():
    """With the hint the lattice walks characters; the ids are the byte walk's.

    A real model less its pieces that end inside a character (its single bytes
    stay), on zh and en text, with and without the hint in the root cell.
    """
    from gpu_bytepiece.core.lattice import WHOLE_CHARS
    from gpu_bytepiece.cpu_fallback.tokenize import encode_chunk

    m = load_model(shared_model("bytepiece.plus.40k.model"))
    keep = [i for i, p in enumerate(m.pieces) if len(p) == 1 or whole_chars([p])]
    pieces = [m.pieces[i] for i in keep]
    trie = build_trie(pieces)
    assert trie.cells[0] >> 32 == WHOLE_CHARS
    plain = trie.cells.copy()
    plain[0] &= 0xFFFFFFFF
    scores = trie.node_scores(np.concatenate([np.zeros(3), m.scores()[3:][keep]]))
    text = "\n".join(corpus_sample("zh", n=20, every=97) + corpus_sample("en", n=5, every=97)).encode()
    data = np.frombuffer(text, dtype=np.uint8)
    outs = []
    for cells in (trie.cells, plain):
        out = np.zeros(len(data), np.uint32)
        counts = np.zeros(1, np.int64)
        encode_chunk(data, np.array([0]), np.array([len(data)]), np.zeros(1, np.uint64), np.zeros(1, np.int64), 0, 1,
                     cells, trie.node_id, trie.node_len, scores, trie.max_len, np.float64(-1), out, counts)
        outs.append(out[:counts[0]].copy())
    assert len(outs[0]) > 1000
    np.testing.assert_array_equal(outs[0], outs[1])
