"""The backends' shared host steps (``backends.layout``) and contract, on real text and models.

The bos/eos step is one function for every caller: the backends leave room
for the specials and ``put_specials`` writes them; ``insert_specials`` adds
them to documents encoded without them, with a bool or a per-document mask
each (the pipeline's pieces of documents split across batches). Both are
checked against a per-document loop and against ``encode_to_numpy``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import corpus_docs, cpu_tokenizer

from gpu_bytepiece.backends.layout import insert_specials, put_specials, segment_layout, segment_table
from gpu_bytepiece.core.rng import document_keys, mix64, splitmix, uniform
from gpu_bytepiece.text import pack_texts


def docs():
    return ["", *corpus_docs("en", n=3, every=11, max_chars=300), "\n\n", *corpus_docs("zh", n=2, every=5,
            max_chars=80), "a", *corpus_docs("code", n=2, every=7, max_chars=200), ""]


def loop_specials(ids, offsets, bos, eos):
    """Per document: ``[1] + ids + [2]`` as flagged."""
    out = []
    for d in range(len(offsets) - 1):
        out += [1] * int(bos[d]) + ids[offsets[d]:offsets[d + 1]].tolist() + [2] * int(eos[d])
    return out


def test_insert_specials_equals_encoding_with_them(plus40k_path):
    tok = cpu_tokenizer(plus40k_path)
    texts = docs()
    ids, offsets = tok.encode_to_numpy(texts)
    for bos, eos in ((True, True), (True, False), (False, True), (False, False)):
        want_ids, want_off = tok.encode_to_numpy(texts, add_bos=bos, add_eos=eos)
        got_ids, got_off = insert_specials(ids, offsets, bos, eos)
        assert got_ids.dtype == np.uint32 and got_off.dtype == np.int64
        np.testing.assert_array_equal(got_off, want_off)
        np.testing.assert_array_equal(got_ids, want_ids)


def test_insert_specials_with_masks(plus40k_path):
    tok = cpu_tokenizer(plus40k_path)
    texts = docs()
    ids, offsets = tok.encode_to_numpy(texts)
    n = len(texts)
    bos = np.arange(n) % 3 != 1
    eos = np.arange(n) % 2 == 0
    got_ids, got_off = insert_specials(ids, offsets, bos, eos)
    assert got_ids.tolist() == loop_specials(ids, offsets, bos, eos)
    np.testing.assert_array_equal(np.diff(got_off), np.diff(offsets) + bos + eos)
    # a mask of all True is the bool
    all_ids, all_off = insert_specials(ids, offsets, np.ones(n, bool), np.ones(n, bool))
    want_ids, want_off = tok.encode_to_numpy(texts, add_bos=True, add_eos=True)
    np.testing.assert_array_equal(all_ids, want_ids)
    np.testing.assert_array_equal(all_off, want_off)
    with pytest.raises(ValueError, match="per-document mask"):
        insert_specials(ids, offsets, bos[:-1], False)


def test_segment_layout_and_put_specials_with_masks(plus40k_path):
    """Room for the flagged specials, ids scattered in, specials put: the loop's result."""
    tok = cpu_tokenizer(plus40k_path)
    texts = docs()
    data, doc_off = pack_texts(texts)
    table = segment_table(data, doc_off)
    seg_ids = [tok.encode_to_numpy([data[a:b].tobytes()])[0] for a, b in zip(table.start, table.end)]
    counts = np.array([len(x) for x in seg_ids], dtype=np.int64)
    n = len(texts)
    bos = np.arange(n) % 2 == 1
    eos = np.arange(n) % 4 != 0
    dest, offsets = segment_layout(table.doc, counts, n, bos, eos)
    ids = np.zeros(int(offsets[-1]), dtype=np.uint32)
    for d, x in zip(dest, seg_ids):
        ids[d:d + len(x)] = x
    put_specials(ids, offsets, bos, eos)
    plain, plain_off = tok.encode_to_numpy(texts)
    assert ids.tolist() == loop_specials(plain, plain_off, bos, eos)


def test_segment_table_keys_and_positions(plus40k_path):
    texts = docs()
    data, doc_off = pack_texts(texts)
    table = segment_table(data, doc_off, stream_key=12345, first_doc=7)
    np.testing.assert_array_equal(table.key, document_keys(12345, np.arange(7, 7 + len(texts)))[table.doc])
    np.testing.assert_array_equal(table.pos, table.start - doc_off[table.doc])
    assert not segment_table(data, doc_off).key.any()  # best path: keys 0


def test_rng_is_splitmix64():
    """The scalar and array forms agree with splitmix64's published first outputs (seed 0)."""
    # splitmix64 from state 0: state += golden each step, then the finalizer
    golden = 0x9E3779B97F4A7C15
    first = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    states = np.array([0, golden, 2 * golden % 2**64], dtype=np.uint64)
    assert mix64(states).tolist() == first
    with np.errstate(over="ignore"):  # numpy scalars warn where uint64 arithmetic wraps
        assert [int(splitmix(s)) for s in states] == first
        u = uniform(np.uint64(99), 5, 3)
        assert 0.0 <= u < 1.0 and u == uniform(np.uint64(99), 5, 3) != uniform(np.uint64(99), 5, 2)
