"""Packing texts: NFC + UTF-8 of str, the bytes rule, pyarrow arrays, batches, errors."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from conftest import corpus_sample, hypothesis_settings, realistic_text
from gpu_bytepiece import TextError
from gpu_bytepiece.text import iter_packed, normalize_bytes, normalize_str, pack_texts

# Documents with every kind of trouble: empty, non-NFC (combining accent,
# Hangul jamo, angstrom sign), astral, NUL, CR/LF, U+2028, CJK.
DOCS = [
    "plain ascii\n",
    "",
    "e\u0301t\u00e9 caf\u0065\u0301",
    "\u1100\u1161\u11a8 \u212b",
    "",
    "\U0001F600 emoji \U0001D11E\x00nul\r\nline\u2028sep",
    "中文，你好。\n\n\n",
    "",
]


def expected_pack(docs):
    parts = [naive.normalize(d) for d in docs]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return b"".join(parts), offsets


def assert_pack(got, docs):
    data, offsets = got
    exp_data, exp_offsets = expected_pack(docs)
    assert data.dtype == np.uint8 and offsets.dtype == np.int64
    assert data.tobytes() == exp_data
    np.testing.assert_array_equal(offsets, exp_offsets)


def test_pack_str_list_is_nfc_utf8():
    assert_pack(pack_texts(DOCS), DOCS)
    assert_pack(pack_texts(tuple(DOCS)), DOCS)
    assert_pack(pack_texts(iter(DOCS)), DOCS)
    assert_pack(pack_texts(d for d in DOCS), DOCS)
    # Derived by hand: é composed, jamo composed to one syllable, Å for the angstrom sign.
    data, off = pack_texts(["e\u0301", "\u1100\u1161", "\u212b"])
    assert data.tobytes() == "\u00e9\uac00\u00c5".encode()
    assert off.tolist() == [0, 2, 5, 7]


def test_pack_single_text_is_one_document():
    for one in ["e\u0301 x", b"e\xcc\x81 x", bytearray(b"e\xcc\x81 x"), memoryview(b"e\xcc\x81 x")]:
        data, off = pack_texts(one)
        assert data.tobytes() == "\u00e9 x".encode()
        assert off.tolist() == [0, 4]


def test_pack_empty():
    data, off = pack_texts([])
    assert data.shape == (0,) and off.tolist() == [0]
    data, off = pack_texts(["", ""])
    assert data.shape == (0,) and off.tolist() == [0, 0, 0]
    data, off = pack_texts("")
    assert off.tolist() == [0, 0]


def test_pack_bytes_keeps_invalid_utf8():
    docs = [b"ok \xff\xfe bad", b"e\xcc\x81\x80", b"\xed\xa0\x80 (an encoded surrogate)", b"\xe4\xbd", b"\xc3", b""]
    data, off = pack_texts(docs)
    parts = [b"ok \xff\xfe bad", b"\xc3\xa9\x80", b"\xed\xa0\x80 (an encoded surrogate)", b"\xe4\xbd", b"\xc3", b""]
    assert data.tobytes() == b"".join(parts)
    assert off.tolist() == np.cumsum([0] + [len(p) for p in parts]).tolist()


def test_pack_str_subclass():
    assert_pack(pack_texts([np.str_("e\u0301"), "x"]), ["e\u0301", "x"])


def test_mixed_str_and_bytes():
    docs = ["e\u0301", b"e\xcc\x81\xff", "x"]
    assert_pack(pack_texts(docs), docs)


@hypothesis_settings()
@given(realistic_text())
def test_normalize_str_is_nfc_utf8(text):
    assert normalize_str(text) == unicodedata.normalize("NFC", text).encode("utf-8")
    assert normalize_bytes(text.encode("utf-8")) == normalize_str(text)


@hypothesis_settings()
@given(st.binary(max_size=64) | realistic_text().map(lambda t: t.encode("utf-8")))
def test_normalize_bytes_rule(data):
    assert normalize_bytes(data) == naive.normalize(data)


@hypothesis_settings()
@given(st.lists(st.binary(max_size=12) | st.sampled_from([b"\xff", b"\xcc\x81", b"e", b"\xe4\xbd", b"\xa0", b"\n"]),
                max_size=12).map(b"".join))
def test_normalize_bytes_rule_on_fragments(data):
    # Fragments of UTF-8 characters and combining marks next to invalid bytes.
    assert normalize_bytes(data) == naive.normalize(data)


# ------------------------------------------------------------------ errors


def test_lone_surrogate_names_the_document():
    assert issubclass(TextError, ValueError)
    docs = ["fine", "also fine", "bad \ud800 here", "x"]
    with pytest.raises(TextError, match=r"text 2: lone surrogate '\\ud800' at character 4"):
        pack_texts(docs)
    with pytest.raises(TextError, match=r"text 0: lone surrogate"):
        pack_texts("\udfff")
    # A surrogate pair spelled as two code points is two lone surrogates.
    with pytest.raises(TextError, match=r"text 1: lone surrogate"):
        pack_texts(["a", "\ud83d\ude00"])
    # Also after normalization moved characters around.
    with pytest.raises(TextError, match=r"text 0"):
        pack_texts(["e\u0301\udc80"])


@pytest.mark.parametrize("bad", [5, None, 1.5, ["nested"], object()])
def test_non_text_items_name_the_document(bad):
    with pytest.raises(TextError, match=r"text 1: expected str or bytes, got " + type(bad).__name__):
        pack_texts(["ok", bad, "ok"])


def test_non_iterable_input():
    with pytest.raises(TextError, match=r"expected str, bytes, a sequence of them or a pyarrow array, got int"):
        pack_texts(5)


# ------------------------------------------------------------------ batches


def collect(texts, batch_bytes):
    datas, offsets, firsts = [], [], []
    for first, data, off in iter_packed(texts, batch_bytes):
        firsts.append(first)
        datas.append(data)
        offsets.append(off)
    return firsts, datas, offsets


def assert_batches(texts, batch_bytes, n_docs, filled=True):
    firsts, datas, offsets = collect(texts, batch_bytes)
    whole_data, whole_off = pack_texts(texts)
    # Concatenated batches are the whole; batches hold whole, consecutive documents.
    assert np.concatenate(datas).tobytes() == whole_data.tobytes()
    assert firsts[0] == 0
    k = 0
    for first, data, off in zip(firsts, datas, offsets):
        assert first == k
        assert off[0] == 0 and off[-1] == len(data)
        n = len(off) - 1
        np.testing.assert_array_equal(off, whole_off[k: k + n + 1] - whole_off[k])
        # Only the last batch, or a batch of one document, may exceed batch_bytes...
        if n > 1:
            assert off[-2] < batch_bytes
        # ... and every batch but the last ends at the document that takes it to batch_bytes (not
        # Arrow's, cut by the raw sizes, before NFC)
        if filled and k + n < n_docs:
            assert off[-1] >= batch_bytes
        k += n
    assert k == n_docs
    return firsts


@pytest.mark.parametrize("batch_bytes", [1, 7, 64, 1000, 1 << 30])
def test_iter_packed_batches_list(batch_bytes):
    docs = DOCS + corpus_sample("zh", n=30, every=11, max_chars=300) + DOCS
    firsts = assert_batches(docs, batch_bytes, len(docs))
    # a stream (read in blocks of documents) is cut where the list is
    for a, b in zip(collect(iter(docs), batch_bytes), collect(docs, batch_bytes)):
        assert [x.tolist() if hasattr(x, "tolist") else x for x in a] == \
            [x.tolist() if hasattr(x, "tolist") else x for x in b]
    if batch_bytes == 1:  # every non-empty document ends a batch
        assert len(firsts) >= sum(1 for d in docs if d)
    if batch_bytes == 1 << 30:
        assert firsts == [0]


@pytest.mark.parametrize("batch_bytes", [1, 7, 64, 1000, 1 << 30])
def test_iter_packed_batches_arrow(batch_bytes):
    docs = DOCS + corpus_sample("zh", n=30, every=11, max_chars=300) + DOCS
    for arr in (pa.array(docs, pa.string()), pa.array(docs, pa.large_string())):
        assert_batches(arr, batch_bytes, len(docs), filled=False)


def test_iter_packed_reads_a_stream_about_one_batch_ahead():
    # a stream of large documents is not read in blocks of many (a training corpus's
    # documents can be 32 MiB each)
    consumed = []

    def stream(size, n):
        for k in range(n):
            consumed.append(k)
            yield "x" * size

    first, data, off = next(iter_packed(stream(100, 100), 1000))
    assert (first, len(off) - 1, len(data)) == (0, 10, 1000)
    assert len(consumed) <= 20
    consumed.clear()
    big = iter_packed(stream(5000, 50), 1000)
    for k in range(3):  # one document a batch, each read when its batch is asked for
        assert next(big)[0] == k and len(consumed) == k + 1


def test_iter_packed_empty():
    assert [(f, d.tolist(), o.tolist()) for f, d, o in iter_packed([], 10)] == [(0, [], [0])]
    assert [(f, d.tolist(), o.tolist()) for f, d, o in iter_packed(pa.array([], pa.string()), 10)] == [(0, [], [0])]


def test_iter_packed_error_index_is_global():
    docs = ["aaaa"] * 10 + ["\ud800"]
    with pytest.raises(TextError, match=r"text 10: lone surrogate"):
        list(iter_packed(docs, 3))
    with pytest.raises(TextError, match=r"text 7: expected str or bytes, got NoneType"):
        list(iter_packed(["aaaa"] * 7 + [None], 3))


def test_arrow_null_index_is_global_when_batched():
    arr = pa.array(["aaaa"] * 10 + [None, "b"], pa.string())
    with pytest.raises(TextError, match=r"text 10: null"):
        list(iter_packed(arr, 1 << 30))
    with pytest.raises(TextError, match=r"text 10: null"):
        list(iter_packed(arr, 3))


# ------------------------------------------------------------------ pyarrow

# Ends with a non-empty document: see test_arrow_trailing_empty_documents.
ARROW_DOCS = DOCS + ["tail é", "", "中", "", "last"]


def _arrow_type(name):
    if not hasattr(pa, name):
        pytest.skip(f"pyarrow {pa.__version__} has no {name}")
    return getattr(pa, name)()


@pytest.mark.parametrize("arrow_type", ["string", "large_string", "string_view"])
def test_arrow_text_equals_list(arrow_type):
    typ = _arrow_type(arrow_type)
    for docs in (ARROW_DOCS, ["", "e\u0301"], ["a", "é", "", "b"], ["ascii only", "", "x"], []):
        assert_pack(pack_texts(pa.array(docs, typ)), docs)


@hypothesis_settings()
@given(st.lists(realistic_text(3) | realistic_text(3).map(lambda t: unicodedata.normalize("NFC", t)), max_size=8))
def test_arrow_text_equals_list_property(docs):
    # documents NFC or not, alone or only once put end to end (a combining mark or a Hangul vowel
    # after a document ending in a letter or a leading consonant): the one check of the whole
    # array, then each document's when it fails, give each document's NFC
    for typ in (pa.string(), pa.large_string()):
        assert_pack(pack_texts(pa.array(docs, typ)), docs)


@pytest.mark.parametrize("arrow_type", ["binary", "large_binary"])
def test_arrow_binary_equals_bytes_list(arrow_type):
    docs = [d.encode() for d in ARROW_DOCS] + [b"\xff\xfe", b"e\xcc\x81\x80", b"", b"\xe4\xbd", b"z"]
    assert_pack(pack_texts(pa.array(docs, getattr(pa, arrow_type)())), docs)


@pytest.mark.parametrize("arrow_type", ["string", "large_string", "string_view", "binary"])
def test_arrow_trailing_empty_documents(arrow_type):
    # Non-ASCII text followed by empty documents at the end of the array.
    typ = _arrow_type(arrow_type)
    for docs in (["é", ""], ["e\u0301", ""], ["x", "中", "", ""], DOCS):
        values = docs if "string" in arrow_type else [d.encode() for d in docs]
        assert_pack(pack_texts(pa.array(values, typ)), values)


@pytest.mark.parametrize("arrow_type", ["string", "large_string", "binary"])
def test_arrow_sliced_and_chunked(arrow_type):
    docs = ARROW_DOCS * 3
    values = docs if "string" in arrow_type else [d.encode() for d in docs]
    arr = pa.array(values, getattr(pa, arrow_type)())
    # (Slices that end with a non-empty document: see test_arrow_trailing_empty_documents.)
    for a, b in [(1, 6), (3, 14), (2, len(docs)), (9, 9), (0, len(docs) - 2)]:
        sliced = arr.slice(a, b - a)
        assert sliced.offset == a
        assert_pack(pack_texts(sliced), docs[a:b])
    chunks = [arr.slice(0, 4), arr.slice(4, 0), arr.slice(4, 9), arr.slice(13)]
    chunked = pa.chunked_array(chunks)
    assert chunked.num_chunks == 4
    assert_pack(pack_texts(chunked), docs)
    assert_pack(pack_texts(pa.chunked_array([arr.slice(5, 8)])), docs[5:13])
    assert_pack(pack_texts(pa.chunked_array([], arr.type)), [])


def test_arrow_nulls_raise():
    for arr in (pa.array(["a", None, "c"]), pa.array([b"a", b"b", None], pa.binary()),
                pa.chunked_array([pa.array(["a", "b"]), pa.array([None, "d"])])):
        with pytest.raises(TextError, match=r"null"):
            pack_texts(arr)
    with pytest.raises(TextError, match=r"text 1: null in the input array \(2 nulls\)"):
        pack_texts(pa.array(["a", None, None]))
    # A null outside the slice is not in the input.
    assert_pack(pack_texts(pa.array([None, "x", "é", None]).slice(1, 2)), ["x", "é"])


def test_arrow_other_types_raise():
    with pytest.raises(TextError, match=r"expected a pyarrow string or binary array, got int64"):
        pack_texts(pa.array([1, 2, 3]))
