"""The double-array trie: every piece found with its id, nothing else, and the
forward walk finds exactly the matches of the naive dictionary scan."""

from __future__ import annotations

import random

import numpy as np
import pytest

import naive
from conftest import PARTS, corpus_sample, shared_model
from gpu_bytepiece.model import load_model
from gpu_bytepiece.trie import Trie, build_trie

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
    nb = trie.base.shape[0]  # the byte trie's cells
    for a in (trie.base, trie.check):
        assert a.dtype == np.int32
    for a in (trie.node_id, trie.node_len):
        assert a.dtype == np.int32 and a.shape == (trie.n_cells,)
    assert trie.check.shape == (nb,) and trie.n_cells >= nb
    assert trie.max_len == max(map(len, pieces))
    # Each piece ends at its own node of the byte trie; no other node carries an id.
    got = np.sort(trie.node_id[:nb][trie.node_id[:nb] >= 0])
    np.testing.assert_array_equal(got, np.sort(np.asarray(ids, dtype=np.int32)))
    # The spare cells: base[s] + c stays inside the arrays for every node and byte.
    nodes = np.flatnonzero(trie.check >= 0)
    assert 0 in nodes
    assert int(trie.base[nodes].max()) + 255 < nb
    # A child's parent is a node; the root is cell 0 and nobody's child.
    assert set(trie.check[nodes].tolist()) <= set(nodes.tolist())
    # The lattice's packed words hold exactly base and check.
    assert trie.cells.dtype == np.int64 and trie.cells.shape[0] >= trie.n_cells
    np.testing.assert_array_equal(trie.cells[:nb] & 0xFFFFFFFF, trie.base)
    np.testing.assert_array_equal(trie.cells[1:nb] >> 32, trie.check[1:])
    # node_len is each node's depth: a child is one deeper than its parent.
    kids = nodes[nodes != 0]
    np.testing.assert_array_equal(trie.node_len[kids], trie.node_len[trie.check[kids]] + 1)
    assert trie.node_len[0] == 0
    # ... but the root's check half, which no walk compares, says where the header is
    assert trie.check[0] == 0
    head = int(trie.cells[0] >> 32)
    assert head == trie.n_cells and trie.cells.shape[0] == head + 1
    # The reversed trie follows the byte trie, its root at cell nb (its base in the header):
    # each piece, walked backward, ends at a node with its id and length, and the reversed
    # trie holds exactly the pieces.
    assert int(trie.cells[head]) == int(trie.cells[nb]) & 0xFFFFFFFF
    for p, i in zip(pieces, ids):
        s = reverse_walk(trie, p)
        assert s >= nb and trie.node_id[s] == i and trie.node_len[s] == len(p), p
    assert int((trie.node_id[nb:] >= 0).sum()) == len(pieces)


def reverse_walk(trie: Trie, piece: bytes) -> int:
    """The cell of the reversed byte trie that ``piece``'s bytes, last first, lead to, or -1."""
    cells = trie.cells
    s = trie.base.shape[0]  # the reversed root
    for c in reversed(piece):
        t = (int(cells[s]) & 0xFFFFFFFF) + c
        if int(cells[t]) >> 32 != s:
            return -1
        s = t
    return s


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


def backward_matches(trie: Trie, seg: bytes) -> list:
    """``out[e]`` = ``[(s, id), ...]``: walk the reversed trie back from every end, as the lattice does."""
    cells = trie.cells.tolist()
    node_id = trie.node_id.tolist()
    root = trie.base.shape[0]
    out = [[] for _ in range(len(seg) + 1)]
    for e in range(1, len(seg) + 1):
        s, found = root, []
        for j in range(1, e + 1):
            t = (cells[s] & 0xFFFFFFFF) + seg[e - j]
            if cells[t] >> 32 != s:
                break
            s = t
            if node_id[s] >= 0:
                found.append((e - j, node_id[s]))
        out[e] = found[::-1]  # in increasing start, as the naive scan lists them
    return out


@pytest.mark.parametrize("part", PARTS)
def test_backward_walk_equals_naive_matches(model_path, part):
    pieces, trie, vocab = real_trie(model_path)
    docs = corpus_sample(part, n=12, every=97, max_chars=3000)
    n_matches = 0
    for doc in docs:
        for seg in naive.segments(naive.normalize(doc)):
            expected = naive.matches(seg, vocab)
            assert backward_matches(trie, seg) == expected
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


def _lattice_ids(trie, scores, data, alpha):
    from gpu_bytepiece.backends.layout import sampling_scores
    from gpu_bytepiece.cpu_fallback.tokenize import encode_chunk

    run_scores, run_alpha = sampling_scores(scores, alpha)
    out = np.zeros(len(data), np.uint32)
    counts = np.zeros(1, np.int64)
    encode_chunk(data, np.array([0]), np.array([len(data)]), np.array([12345], np.uint64), np.array([7]), 0, 1,
                 trie.cells, trie.node_id, run_scores, trie.max_len, run_alpha, out, counts)
    return out[:counts[0]].copy()


# Bytes that are no UTF-8 around valid characters: truncated characters, stray
# continuation bytes (0xB7 alone is not "·", C2 B7), overlong forms (of "a", "é",
# "文"), surrogates, bytes >= 0xF8, code points past U+10FFFF, and valid 2/3/4-byte
# characters
AWKWARD = [b"\xe4\xb8", b"\x80\xbf", b"\xb7", b"\xc1\xa1", b"\xe0\x83\xa9", b"\xf0\x86\x96\x87",
           b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\xff",
           "é".encode(), "文".encode(), "😀".encode(), b"a", b"\xc3", b"\x00"]


@pytest.mark.parametrize("alpha", [-1.0, 0.1])
def test_lattice_on_awkward_bytes(alpha):
    """Pieces of whole characters ("中" + x for x in "a", "é", "·", "文", "😀", "\x00",
    "文文", "😀😀") in text of "中" followed by awkward bytes: the best path is the naive
    Viterbi's, and a sample's pieces spell the text."""
    extra = ["中" + x for x in ("a", "é", "·", "文", "😀", "\x00")] + ["文文", "😀😀"]
    pieces = [bytes([b]) for b in range(256)] + [p.encode() for p in extra]
    counts = np.array([1] * 256 + [10**6] * len(extra), dtype=np.int64)
    scores = np.log(counts.astype(np.float64)) - np.log(np.float64(int(counts.sum())))
    trie = build_trie(pieces)
    node_scores = trie.node_scores(np.concatenate([np.zeros(3), scores]))
    rng = random.Random(3)
    text = b"".join("中".encode() + rng.choice(AWKWARD) + rng.choice(AWKWARD) for _ in range(400))
    text += "中".encode()[:2]  # a character cut by the segment's end
    data = np.frombuffer(text, dtype=np.uint8)
    got = _lattice_ids(trie, node_scores, data, alpha).tolist()
    assert b"".join(pieces[i - 3] for i in got) == text
    assert sum(i >= 259 for i in got) > 100  # the long pieces were found
    if alpha < 0:
        vocab = naive.Vocab((p, int(c), i + 3) for i, (p, c) in enumerate(zip(pieces, counts)))
        assert got == naive.viterbi(text, vocab)
