"""The public Tokenizer on the CPU: exact ids vs the naive lattice, batch == loop,
round trips, edge cases, pyarrow inputs, and reproducible sampling."""

from __future__ import annotations

import unicodedata
from collections import Counter
from unittest import mock

import numba
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from conftest import (PARTS, corpus_sample, cpu_tokenizer, hypothesis_settings, realistic_text,
                      shared_model)
from gpu_bytepiece import TextError, Tokenizer, config
from gpu_bytepiece.cpu_fallback import find_segments

PLUS = "bytepiece.plus.40k.model"


@pytest.fixture(scope="module")
def tok():
    return cpu_tokenizer(shared_model(PLUS))


@pytest.fixture(scope="module")
def vocab():
    return naive.load_vocab(str(shared_model(PLUS)))


@pytest.fixture(scope="module")
def own_tok(tok):
    """A tokenizer of our own whose seed state the tests may change."""
    return Tokenizer(tok.model, device="cpu", seed=99)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def long_line(n_bytes: int) -> str:
    """One line (no newline) of about ``n_bytes`` UTF-8 bytes of real mixed text."""
    parts = [d.replace("\n", " ") for p in PARTS for d in corpus_sample(p, n=30, every=13, max_chars=2000)]
    data = (" ".join(parts) + " ").encode()
    data = data * (n_bytes // len(data) + 1)
    return data[:n_bytes].decode("utf-8", "ignore")  # may lose the last partial character


# ------------------------------------------------------------- exact ids


@pytest.mark.parametrize("part", PARTS)
def test_real_text_equals_naive(model_path, part):
    tok = cpu_tokenizer(model_path)
    vocab = naive.load_vocab(str(model_path))
    docs = corpus_sample(part, n=25, every=61, max_chars=2500)
    assert tok.encode_batch(docs) == [naive.encode(d, vocab) for d in docs]


@hypothesis_settings(100)
@given(realistic_text())
def test_random_text_equals_naive(tok, vocab, text):
    assert tok.encode(text) == naive.encode(text, vocab)


@hypothesis_settings(100)
@given(st.binary(max_size=80) | realistic_text(4).map(lambda t: t.encode("utf-8")))
def test_random_bytes_equal_naive(tok, vocab, data):
    ids = tok.encode(data)
    assert ids == naive.encode(data, vocab)
    # Invalid UTF-8 is never dropped: the bytes come back exactly (valid runs NFC'd).
    assert tok.decode_bytes(ids) == naive.normalize(data)
    assert tok.decode(ids, errors="surrogateescape").encode("utf-8", "surrogateescape") == naive.normalize(data)


def test_find_segments_equals_regex():
    docs = ["", "a", "\n", "\n\n\nx", "a\r\nb\u2028c\n\nd\n", "no newline", "x\n\n"] + corpus_sample("code", n=5, every=200)
    data = b"".join(naive.normalize(d) for d in docs)
    offsets = np.cumsum([0] + [len(naive.normalize(d)) for d in docs]).astype(np.int64)
    seg_start, seg_end, seg_doc = find_segments(np.frombuffer(data, np.uint8), offsets)
    expected = [(k, s) for k, d in enumerate(docs) for s in naive.segments(naive.normalize(d))]
    got = [(int(k), data[a:b]) for a, b, k in zip(seg_start, seg_end, seg_doc)]
    assert got == expected


@given(st.lists(st.binary(max_size=40).map(lambda b: bytes(10 if x % 3 == 0 else 97 for x in b)), max_size=12))
def test_find_segments_equals_regex_at_every_word_boundary(docs):
    # documents of newlines and letters, runs of newlines across the 8-byte words the scan reads
    # and across document ends
    data = b"".join(docs)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    seg_start, seg_end, seg_doc = find_segments(np.frombuffer(data, np.uint8), offsets)
    expected = [(k, s) for k, d in enumerate(docs) for s in naive.segments(d)]
    assert [(int(k), data[a:b]) for a, b, k in zip(seg_start, seg_end, seg_doc)] == expected


# ------------------------------------------------------------- API basics


def test_basic_api(tok):
    assert tok.device == "cpu"
    assert tok.vocab_size == len(tok.model.pieces) + 3 == 39843
    assert "cpu" in repr(tok) and "39843" in repr(tok)
    text = "Hello, 世界!\n\nSecond line\ttab"
    ids = tok.encode(text)
    assert all(type(i) is int for i in ids)
    assert list(tok.encode(text, iter=True)) == ids
    assert tok.encode(text, add_bos=True) == [1] + ids
    assert tok.encode(text, add_eos=True) == ids + [2]
    assert tok.encode(text, True, True) == [1] + ids + [2]
    pieces = tok.tokenize(text)
    assert pieces == [tok.model.pieces[i - 3] for i in ids]
    assert list(tok.tokenize(text, iter=True)) == pieces
    assert b"".join(pieces) == text.encode()
    assert tok.encode(text.encode()) == ids
    assert tok.encode(bytearray(text.encode())) == ids
    assert tok.encode(memoryview(text.encode())) == ids
    assert tok.encode(np.str_(text)) == ids


def test_encode_rejects_lists(tok):
    with pytest.raises(TypeError, match=r"use encode_batch"):
        tok.encode(["a", "b"])
    with pytest.raises(TypeError):
        tok.encode(None)


def test_pieces_and_ids(tok):
    everything = tok.ids_to_pieces(range(tok.vocab_size))
    assert everything[:3] == ["<pad>", "<bos>", "<eos>"]
    assert everything[3:] == tok.model.pieces
    assert tok.pieces_to_ids(everything) == list(range(tok.vocab_size))
    assert tok.piece_to_id(b"\r\n") == tok.model.pieces.index(b"\r\n") + 3
    assert tok.piece_to_id("<bos>") == 1
    assert tok.id_to_piece(np.uint32(2)) == "<eos>"
    assert tok.id_to_piece(np.int64(tok.vocab_size - 1)) == tok.model.pieces[-1]
    for bad in (-1, tok.vocab_size, 10**9):
        with pytest.raises(KeyError):
            tok.id_to_piece(bad)
    for bad in (b"not a piece of any vocabulary \x00\xff", "<unk>", b"<pad>"):
        with pytest.raises(KeyError):
            tok.piece_to_id(bad)


def test_decode(tok):
    text = "naïve café 你好 \U0001F600\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([1] + ids + [2, 0]) == text  # specials are skipped
    assert tok.decode(np.array(ids, dtype=np.uint32)) == text
    assert tok.decode(np.array(ids, dtype=np.int64)) == text
    assert tok.decode([]) == "" and tok.decode_bytes([]) == b""
    assert tok.decode([0, 1, 2]) == "" and tok.decode_bytes(np.array([1, 2], np.uint32)) == b""
    # A lone UTF-8 lead byte: dropped by default (as BytePiece does), kept by decode_bytes.
    ids = tok.encode(b"ok\xe4")
    assert tok.decode_bytes(ids) == b"ok\xe4"
    assert tok.decode(ids) == "ok"
    assert tok.decode(ids, errors="replace") == "ok\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids, errors="strict")
    for bad in ([-1], [tok.vocab_size], [5, tok.vocab_size + 7]):
        with pytest.raises(KeyError):
            tok.decode(bad)


def test_decode_batch(tok):
    docs = ["first", "", "第二\n", "e\u0301"]
    ids, offsets = tok.encode_to_numpy(docs)
    expected = [nfc(d) for d in docs]
    assert tok.decode_batch((ids, offsets)) == expected
    assert tok.decode_batch(tok.encode_batch(docs)) == expected
    assert tok.decode_batch([]) == []


# ------------------------------------------------------------- batch == loop


def check_batch(tok, docs, **kw):
    singles = [tok.encode(d, kw.get("add_bos", False), kw.get("add_eos", False)) for d in docs]
    assert tok.encode_batch(docs, **kw) == singles
    ids, offsets = tok.encode_to_numpy(docs, **kw)
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64
    assert offsets.shape == (len(docs) + 1,)
    assert offsets[0] == 0 and offsets[-1] == ids.shape[0]
    assert np.all(np.diff(offsets) >= 0)
    assert [ids[offsets[i]: offsets[i + 1]].tolist() for i in range(len(docs))] == singles
    return singles


@hypothesis_settings()
@given(st.lists(realistic_text(4), max_size=8), st.booleans(), st.booleans())
def test_batch_equals_loop(tok, docs, add_bos, add_eos):
    singles = check_batch(tok, docs, add_bos=add_bos, add_eos=add_eos)
    for d, ids in zip(docs, singles):
        assert tok.decode(ids) == nfc(d)


@hypothesis_settings(60)
@given(st.lists(realistic_text(4) | st.binary(max_size=40), max_size=10), st.sampled_from([1, 2, 5, 50, 1 << 20]),
       st.booleans(), st.booleans())
def test_threads_and_batch_bytes_do_not_matter(tok, docs, batch_bytes, add_bos, add_eos):
    expected = [tok.encode(d, add_bos, add_eos) for d in docs]
    # Many small chunks, so that two threads really split the work.
    with mock.patch.object(config, "CPU_MIN_CHUNK_BYTES", 1), mock.patch.object(config, "CPU_THREAD_CHUNK_BYTES", 1), \
            mock.patch.object(config, "CPU_CHUNKS_PER_THREAD", 3):
        for threads in (1, 2, -1, None):
            ids, offsets = tok.encode_to_numpy(docs, num_threads=threads, batch_bytes=batch_bytes,
                                               add_bos=add_bos, add_eos=add_eos)
            assert [ids[offsets[i]: offsets[i + 1]].tolist() for i in range(len(docs))] == expected
            assert tok.encode_batch(docs, num_threads=threads, add_bos=add_bos, add_eos=add_eos) == expected


def test_errors_in_later_batches_name_the_document(tok):
    # Several batches, packed ahead of the tokenizer when threads > 1.
    docs = ["aaaa", "é" * 3] * 20 + ["bad \ud800"]
    for threads in (1, 2):
        with pytest.raises(TextError, match=r"text 40: lone surrogate"):
            tok.encode_to_numpy(docs, batch_bytes=5, num_threads=threads)
        with pytest.raises(TextError, match=r"text 3: expected str or bytes, got int"):
            tok.encode_to_numpy(["x"] * 3 + [7], batch_bytes=1, num_threads=threads)
    with pytest.raises(ValueError, match=r"batch_bytes"):
        tok.encode_to_numpy(["x"], batch_bytes=-1)


def test_threads_on_real_text(tok):
    docs = [d for p in PARTS for d in corpus_sample(p, n=40, every=29, max_chars=6000)]
    base = tok.encode_batch(docs, num_threads=1)
    assert tok.encode_batch(docs, num_threads=2) == base
    with mock.patch.object(config, "CPU_MIN_CHUNK_BYTES", 64), mock.patch.object(config, "CPU_THREAD_CHUNK_BYTES", 64):
        assert tok.encode_batch(docs, num_threads=2) == base
        for batch_bytes in (1, 1000, 100_000):
            ids, offsets = tok.encode_to_numpy(docs, batch_bytes=batch_bytes, num_threads=2)
            assert [ids[offsets[i]: offsets[i + 1]].tolist() for i in range(len(docs))] == base
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # restored


def test_one_thread_batches_share_a_scratch_their_ids_do_not(tok, monkeypatch):
    """One thread's batches write their ids into one reused scratch
    (``backends.cpu.reuse_scratch``); each batch's ids are copied out of it, so
    the result equals the per-document ids and no batch's ids share memory
    with another's or with the scratch; nothing stays held after the call."""
    from gpu_bytepiece.backends import cpu

    docs = [d for p in PARTS for d in corpus_sample(p, n=12, every=31, max_chars=3000)]
    per_doc = [tok.encode_to_numpy([d], num_threads=1)[0].tolist() for d in docs]
    outs, batches = [], []
    finish = cpu._Batch.finish

    def spy(self, add_bos, add_eos):
        ids, offsets = finish(self, add_bos, add_eos)
        outs.append(self.out)
        batches.append(ids)
        return ids, offsets

    monkeypatch.setattr(cpu._Batch, "finish", spy)
    for kw in ({}, {"add_bos": True, "add_eos": True}):
        outs.clear()
        batches.clear()
        ids, offsets = tok.encode_to_numpy(docs, batch_bytes=2000, num_threads=1, **kw)
        extra = int(kw.get("add_bos", 0)) + int(kw.get("add_eos", 0))
        assert offsets[-1] == sum(map(len, per_doc)) + extra * len(docs)
        lo = int(kw.get("add_bos", 0))
        assert [ids[offsets[i] + lo: offsets[i + 1] - (extra - lo)].tolist() for i in range(len(docs))] == per_doc
        assert len(batches) > 5
        firsts = [o for i, o in enumerate(outs) if not any(np.shares_memory(o, p) for p in outs[:i])]
        assert len(firsts) <= 2  # one scratch (grown at most once)...
        assert not any(np.shares_memory(b, o) for b in batches for o in firsts)  # ...never in the ids
        assert not any(np.shares_memory(a, b) for i, a in enumerate(batches) for b in batches[i + 1:])
    assert getattr(cpu._LOCAL, "scratch", None) is None  # let go after the call


def test_threads_restore_the_switch_interval(tok, monkeypatch):
    """Threads shorten Python's switch interval while they run
    (config.CPU_THREAD_SWITCH_INTERVAL) and put the caller's back; ``None``
    leaves it alone; a caller's shorter interval is kept."""
    import sys
    import threading

    from gpu_bytepiece.backends import cpu

    docs = corpus_sample("zh", n=20, every=7)
    seen = []
    run_chunk = cpu.CPUBackend._run_chunk

    def spy(self, job, c, alpha):
        seen.append(sys.getswitchinterval())
        return run_chunk(self, job, c, alpha)

    monkeypatch.setattr(cpu.CPUBackend, "_run_chunk", spy)
    monkeypatch.setattr(config, "CPU_THREAD_CHUNK_BYTES", 64)
    old = sys.getswitchinterval()
    try:
        for caller, setting, inside in [(5e-3, 2e-4, 2e-4), (5e-3, None, 5e-3), (1e-4, 2e-4, 1e-4)]:
            sys.setswitchinterval(caller)
            caller = sys.getswitchinterval()
            monkeypatch.setattr(config, "CPU_THREAD_SWITCH_INTERVAL", setting)
            seen.clear()
            base = tok.encode_batch(docs, num_threads=1)
            assert seen and set(seen) == {caller}  # one thread: untouched
            seen.clear()
            assert tok.encode_batch(docs, num_threads=2) == base
            assert seen and {round(x, 6) for x in seen} == {inside}
            assert sys.getswitchinterval() == caller
        # two calls at once from two threads: the interval is back once both are done
        sys.setswitchinterval(5e-3)
        caller = sys.getswitchinterval()
        monkeypatch.setattr(config, "CPU_THREAD_SWITCH_INTERVAL", 2e-4)
        out = [None, None]

        def call(i):
            out[i] = tok.encode_batch(docs, num_threads=2)

        callers = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert out == [base, base]
        assert sys.getswitchinterval() == caller
    finally:
        sys.setswitchinterval(old)


def test_num_threads_validation(tok):
    with pytest.raises(ValueError, match=r"num_threads"):
        tok.encode_batch(["a"], num_threads=0)


def test_input_containers(tok):
    docs = ["one", "e\u0301", "", "三"]
    expected = [tok.encode(d) for d in docs]
    assert tok.encode_batch(tuple(docs)) == expected
    assert tok.encode_batch(iter(docs)) == expected
    assert tok.encode_batch(d for d in docs) == expected
    assert tok.encode_batch([np.str_(d) for d in docs]) == expected
    assert tok.encode_batch([d.encode() for d in docs]) == expected
    # A single str or bytes is one document.
    assert tok.encode_batch("e\u0301 x") == [tok.encode("é x")]
    assert tok.encode_batch(b"abc") == [tok.encode("abc")]


# ------------------------------------------------------------- round trips


@hypothesis_settings()
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_decode_encode_is_nfc_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == nfc(text)


@hypothesis_settings()
@given(realistic_text())
def test_decode_encode_is_nfc_realistic(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == nfc(text)
    assert all(3 <= i < tok.vocab_size for i in ids)
    assert len(ids) <= len(nfc(text).encode())


@hypothesis_settings()
@given(st.binary(max_size=200))
def test_decode_bytes_any_bytes(tok, data):
    assert tok.decode_bytes(tok.encode(data)) == naive.normalize(data)


# ------------------------------------------------------------- edge cases


def test_empty(tok):
    assert tok.encode("") == []
    assert tok.encode(b"") == []
    assert tok.encode("", add_bos=True, add_eos=True) == [1, 2]
    assert tok.tokenize("") == []
    assert tok.encode_batch([]) == []
    ids, offsets = tok.encode_to_numpy([])
    assert ids.dtype == np.uint32 and ids.shape == (0,) and offsets.tolist() == [0]
    assert tok.encode_batch(["", "", ""]) == [[], [], []]
    assert tok.encode_batch(["", "a", ""], add_bos=True, add_eos=True) == [[1, 2], [1, tok.piece_to_id(b"a"), 2], [1, 2]]
    assert tok.encode_batch(["", "a", ""], add_eos=True) == [[2], [tok.piece_to_id(b"a"), 2], [2]]


def test_only_newlines(tok, vocab):
    for text in ["\n", "\n\n", "\n" * 7, "\n" * 1000]:
        ids = tok.encode(text)
        assert ids == naive.encode(text, vocab)
        assert tok.decode(ids) == text
    # A run of newlines is one segment: it is cut like any other string of bytes.
    assert tok.encode("\n" * 37) == naive.viterbi(b"\n" * 37, vocab)


def test_line_breaks_other_than_newline_stay_inside_segments(tok, vocab):
    # b"\r\n" is a piece: it can only be chosen if "\r" does not end a segment.
    assert tok.tokenize("a\r\nb") == [b"a", b"\r\n", b"b"]
    for text in ["a\r\nb", "x\u2028y", "p\u2029q\x85r", "line\r\n\r\nnext\r", "\u2028\u2028\n"]:
        assert tok.encode(text) == naive.encode(text, vocab)
    # The whole of "x\u2028y" is one segment.
    assert tok.encode("x\u2028y") == naive.viterbi("x\u2028y".encode(), vocab)


def test_nul_and_astral(tok, vocab):
    for text in ["\x00", "a\x00b\x00\x00", "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467",
                 "\U0001D11E\U00020000\U0010FFFD", "mixed 😀 text\x00\n"]:
        ids = tok.encode(text)
        assert ids == naive.encode(text, vocab)
        assert tok.decode(ids) == text


def test_invalid_utf8_bytes(tok, vocab):
    for data in [b"\xff", b"\xff\xfe\xfd", b"abc\x80def", b"\xe4\xbd", b"\xe4\xbd\xa0\xe4", b"\xed\xa0\x80",
                 b"\xc0\xaf", b"\xf4\x90\x80\x80", b"e\xcc\x81\xff"]:
        ids = tok.encode(data)
        assert ids == naive.encode(data, vocab)
        assert tok.decode_bytes(ids) == naive.normalize(data)
    # Only the valid run is normalized: e + combining acute -> é, the 0xFF stays.
    assert tok.decode_bytes(tok.encode(b"e\xcc\x81\xff")) == "é".encode() + b"\xff"


def test_non_nfc_text_gives_nfc_ids(tok):
    pairs = [("e\u0301", "\u00e9"), ("\u1100\u1161\u11a8", "\uac01"), ("\u212b", "\u00c5"),
             ("Cafe\u0301 de\u0301ja\u0300 vu", "Café déjà vu"), ("\u0041\u030a\u0301", "\u01fa")]
    for raw, composed in pairs:
        assert nfc(raw) == composed
        assert tok.encode(raw) == tok.encode(composed)
        assert tok.encode(raw.encode()) == tok.encode(composed)
        assert tok.decode(tok.encode(raw)) == composed


def test_lone_surrogates_raise(tok):
    with pytest.raises(TextError, match=r"text 0: lone surrogate"):
        tok.encode("abc\ud800")
    with pytest.raises(TextError, match=r"text 2: lone surrogate '\\udc00'"):
        tok.encode_batch(["ok", "fine", "x\udc00y"])
    with pytest.raises(ValueError):
        tok.tokenize("\ud83d\ude00")


def test_non_text_items_raise(tok):
    with pytest.raises(TextError, match=r"text 1: expected str or bytes, got int"):
        tok.encode_batch(["a", 1])
    with pytest.raises(TextError, match=r"text 0: expected str or bytes, got NoneType"):
        tok.encode_batch([None])
    with pytest.raises(TextError, match=r"got float"):
        tok.encode_batch(1.5)


def test_one_megabyte_line(tok, vocab):
    text = long_line(1 << 20)
    assert "\n" not in text and len(text.encode()) > (1 << 20) - 4
    ids = tok.encode(text)
    assert tok.decode(ids) == nfc(text)
    # The same document inside a batch, between others.
    batch = tok.encode_batch(["before\n", text, "after"])
    assert batch[1] == ids
    head = long_line(60_000)
    assert tok.encode(head) == naive.encode(head, vocab)


# ------------------------------------------------------------- pyarrow


def arrow_docs():
    return ["plain", "e\u0301t\u00e9", "", "中文\n\n第二行", "\U0001F600\x00", "last line\r\n", "x"]


@pytest.mark.parametrize("arrow_type", ["string", "large_string"])
def test_arrow_text_gives_same_ids(tok, arrow_type):
    docs = arrow_docs() + corpus_sample("zh", n=20, every=7, max_chars=500)
    expected = tok.encode_batch(docs)
    arr = pa.array(docs, getattr(pa, arrow_type)())
    assert tok.encode_batch(arr) == expected
    ids, offsets = tok.encode_to_numpy(arr, batch_bytes=100)
    assert [ids[offsets[i]: offsets[i + 1]].tolist() for i in range(len(docs))] == expected


def test_arrow_binary_gives_same_ids(tok):
    docs = [d.encode() for d in arrow_docs()] + [b"\xff\xfe", b"e\xcc\x81", b"z"]
    assert tok.encode_batch(pa.array(docs, pa.binary())) == tok.encode_batch(docs)
    assert tok.encode_batch(pa.array(docs, pa.large_binary())) == tok.encode_batch(docs)


def test_arrow_sliced_and_chunked_give_same_ids(tok):
    docs = arrow_docs() * 4
    expected = tok.encode_batch(docs)
    arr = pa.array(docs, pa.string())
    sliced = arr.slice(3, 17)
    assert sliced.offset == 3
    assert tok.encode_batch(sliced) == expected[3:20]
    chunked = pa.chunked_array([arr.slice(0, 5), arr.slice(5, 0), arr.slice(5, 11), arr.slice(16)])
    assert tok.encode_batch(chunked) == expected
    assert tok.encode_batch(pa.chunked_array([arr.slice(2, 9)])) == expected[2:11]


def test_arrow_empty_and_nulls(tok):
    assert tok.encode_batch(pa.array([], pa.string())) == []
    ids, offsets = tok.encode_to_numpy(pa.array([], pa.large_string()))
    assert ids.shape == (0,) and offsets.tolist() == [0]
    with pytest.raises(TextError, match=r"text 2: null"):
        tok.encode_batch(pa.array(["a", "b", None, "d"]))
    with pytest.raises(TextError, match=r"null"):
        tok.encode_batch(pa.chunked_array([pa.array(["a"]), pa.array([None], pa.string())]))


def test_arrow_null_in_a_later_batch_names_the_document(tok):
    arr = pa.array(["aaaa"] * 10 + [None, "b"], pa.string())
    with pytest.raises(TextError, match=r"text 10: null"):
        tok.encode_to_numpy(arr, batch_bytes=3)


def test_arrow_trailing_empty_document(tok):
    docs = ["é", "x", ""]
    assert tok.encode_batch(pa.array(docs)) == tok.encode_batch(docs)


# ------------------------------------------------------------- sampling

SAMPLE_DOCS_PARTS = {"zh": (30, 11, 800), "en": (8, 53, 3000), "code": (8, 71, 3000)}


def sample_docs():
    return [d for p, (n, every, m) in SAMPLE_DOCS_PARTS.items() for d in corpus_sample(p, n=n, every=every, max_chars=m)]


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_seeded_sampling_is_reproducible(tok, alpha):
    docs = sample_docs()
    a = tok.encode_batch(docs, alpha=alpha, seed=7)
    assert tok.encode_batch(docs, alpha=alpha, seed=7) == a
    assert a != tok.encode_batch(docs)  # really sampled
    assert a != tok.encode_batch(docs, alpha=alpha, seed=8)
    with mock.patch.object(config, "CPU_MIN_CHUNK_BYTES", 64), mock.patch.object(config, "CPU_THREAD_CHUNK_BYTES", 64):
        for threads in (1, 2):
            assert tok.encode_batch(docs, alpha=alpha, seed=7, num_threads=threads) == a
        for batch_bytes in (1, 5000, 1 << 30):
            ids, offsets = tok.encode_to_numpy(docs, alpha=alpha, seed=7, batch_bytes=batch_bytes)
            assert [ids[offsets[i]: offsets[i + 1]].tolist() for i in range(len(docs))] == a
    # A document's sample depends on its index in the call, not on its neighbours.
    for k in (0, 5, len(docs) - 1):
        assert tok.encode_batch([""] * k + [docs[k]], alpha=alpha, seed=7)[k] == a[k]
        assert tok.encode_batch(["other text"] * k + [docs[k]] + ["more"], alpha=alpha, seed=7)[k] == a[k]
    assert tok.encode(docs[0], alpha=alpha, seed=7) == a[0]
    assert tok.tokenize(docs[0], alpha=alpha, seed=7) == tok.ids_to_pieces(a[0])
    # The same (long) text at another index is another draw.
    k = max(range(len(docs)), key=lambda i: len(docs[i]))
    assert len(docs[k]) >= 2000
    assert tok.encode_batch([docs[k]] * (k + 2), alpha=alpha, seed=7)[k + 1] != a[k]
    # Every sample is a segmentation of the NFC text into pieces.
    for d, ids in zip(docs, a):
        assert all(3 <= i < tok.vocab_size for i in ids)
        assert tok.decode_bytes(ids) == nfc(d).encode()
    # bos/eos around the same sample.
    with_specials = tok.encode_batch(docs[:3], alpha=alpha, seed=7, add_bos=True, add_eos=True)
    assert with_specials == [[1] + x + [2] for x in a[:3]]


@hypothesis_settings(100)
@given(st.lists(realistic_text(3), min_size=1, max_size=5), st.sampled_from([0.0, 0.05, 0.5, 3.0]),
       st.integers(0, 2**63 - 1))
def test_samples_are_segmentations(tok, docs, alpha, seed):
    out = tok.encode_batch(docs, alpha=alpha, seed=seed)
    for d, ids in zip(docs, out):
        assert tok.decode_bytes(ids) == nfc(d).encode()
        assert all(3 <= i < tok.vocab_size for i in ids)
    with mock.patch.object(config, "CPU_MIN_CHUNK_BYTES", 1), mock.patch.object(config, "CPU_THREAD_CHUNK_BYTES", 1):
        assert tok.encode_batch(docs, alpha=alpha, seed=seed, num_threads=2) == out
        assert tok.encode_batch(docs, alpha=alpha, seed=seed, num_threads=1) == out


@pytest.mark.parametrize("word", ["hello", "你好", "the cat"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 10.0])
def test_sample_law_is_exact(tok, vocab, word, alpha):
    """Samples follow P(segmentation) ~ exp(alpha * score) (BYTEPIECE.md section 3).

    The law is computed exactly by enumerating every segmentation; with a fixed
    seed the draw is deterministic, so this cannot flake.
    """
    law = naive.sample_distribution(word.encode(), vocab, alpha)
    assert len(law) > 5
    n = 20000
    ids, offsets = tok.encode_to_numpy([word] * n, alpha=alpha, seed=2024)
    counts = Counter(tuple(ids[offsets[i]: offsets[i + 1]].tolist()) for i in range(n))
    assert set(counts) <= set(law)
    tv = 0.5 * sum(abs(counts.get(k, 0) / n - p) for k, p in law.items())
    assert tv < 0.03, (tv, counts.most_common(5), sorted(law.items(), key=lambda t: -t[1])[:5])
    if alpha == 10.0:
        viterbi = tuple(naive.viterbi(word.encode(), vocab))
        assert law[viterbi] == max(law.values())
        assert abs(counts[viterbi] / n - law[viterbi]) < 0.02


EXTREME_ALPHAS = (0.0, 1e-300, 0.5, 100.0, 1e308)


@pytest.mark.parametrize("alpha", EXTREME_ALPHAS)
def test_any_finite_alpha_gives_a_segmentation(tok, alpha):
    """No finite alpha overflows: ``alpha * score`` past float64 gave NaN sums and
    stale back pointers (ids of another text, or a crash) before."""
    docs = ["hello world", "你好，世界！12345 hello", long_line(3000)] + sample_docs()[:6]
    out = tok.encode_batch(docs, alpha=alpha, seed=1)
    for d, ids in zip(docs, out):
        assert all(3 <= i < tok.vocab_size for i in ids)
        assert tok.decode_bytes(ids) == nfc(d).encode()
    assert tok.encode("hello world", alpha=alpha, seed=1) == out[0]
    with mock.patch.object(config, "CPU_MIN_CHUNK_BYTES", 1), mock.patch.object(config, "CPU_THREAD_CHUNK_BYTES", 1):
        assert tok.encode_batch(docs, alpha=alpha, seed=1, num_threads=2) == out


def test_huge_alpha_weights_are_finite(tok):
    """``alpha * score`` is clamped to float64's range; cells without a piece stay ``-inf``."""
    from gpu_bytepiece.backends.layout import F64_MAX, sampling_scores
    from gpu_bytepiece.core.lattice import LINEAR

    node = tok._backend.node_score
    scaled, run_alpha = sampling_scores(node, 1e308)
    piece = np.isfinite(node)
    assert run_alpha == 1.0
    assert np.isneginf(scaled[~piece]).all()
    assert (scaled[piece] >= -F64_MAX).all() and (scaled[piece] <= 0).all()
    # a usual alpha: the linear form, weights exp(alpha * score), 0.0 where no piece ends
    weights, run_alpha = sampling_scores(node, 0.5)
    assert run_alpha == LINEAR
    np.testing.assert_array_equal(weights[piece], np.exp(0.5 * node[piece]))
    assert (weights[~piece] == 0.0).all()
    # beyond exp(-200) the log form keeps the scaled scores
    big = 201.0 / -node[piece].min()
    same, run_alpha = sampling_scores(node, big)
    assert run_alpha == 1.0
    np.testing.assert_array_equal(same[piece], big * node[piece])


def test_unseeded_calls_advance_and_set_seed_restarts(own_tok):
    text = long_line(20_000)
    own_tok.set_seed(3)
    a = own_tok.encode(text, alpha=0.1)
    b = own_tok.encode(text, alpha=0.1)
    assert a != b
    own_tok.set_seed(3)
    assert own_tok.encode(text, alpha=0.1) == a
    assert own_tok.encode(text, alpha=0.1) == b
    # A seeded call and a best-path call leave the sequence alone.
    own_tok.set_seed(3)
    assert own_tok.encode(text, alpha=0.1) == a
    own_tok.encode(text, alpha=0.1, seed=12345)
    own_tok.encode(text)
    assert own_tok.encode(text, alpha=0.1) == b
    # Another seed, another sequence.
    own_tok.set_seed(4)
    assert own_tok.encode(text, alpha=0.1) != a
    # The constructor's seed starts the same sequence as set_seed.
    fresh = Tokenizer(own_tok.model, device="cpu", seed=3)
    assert fresh.encode(text, alpha=0.1) == a
    assert fresh.encode_batch([text], alpha=0.1) == [b]


def test_unseeded_batch_is_one_step(own_tok):
    text = long_line(5_000)
    own_tok.set_seed(11)
    first = own_tok.encode_batch([text, text], alpha=0.2)
    second = own_tok.encode_batch([text, text], alpha=0.2)
    own_tok.set_seed(11)
    assert own_tok.encode(text, alpha=0.2) == first[0]
    assert own_tok.encode_batch(["", text], alpha=0.2)[1] == second[1]
    assert first[0] != first[1] and first != second


def test_best_path_ignores_seed(tok, own_tok):
    docs = sample_docs()[:10]
    best = tok.encode_batch(docs)
    assert tok.encode_batch(docs, seed=5) == best
    assert tok.encode_batch(docs, alpha=-1, seed=5) == best
    assert tok.encode_batch(docs, alpha=-0.5) == best
    own_tok.set_seed(77)
    assert own_tok.encode_batch(docs) == best


def test_alpha_and_seed_validation(tok, own_tok):
    for bad in (float("nan"), "0.1", None):
        with pytest.raises(ValueError, match=r"alpha"):
            tok.encode("x", alpha=bad)
    with pytest.raises(TypeError, match=r"seed must be an int"):
        own_tok.set_seed("3")
    assert tok.encode("hello world", alpha=0, seed=1) == tok.encode("hello world", alpha=0.0, seed=1)
    assert tok.encode("hello world", alpha=np.float32(0.5), seed=1) == tok.encode("hello world", alpha=0.5, seed=1)


def test_long_pieces():
    """Back pointers hold a piece's whole length (an int32 pointer with a
    7-bit length needed an escape from 127 bytes on): pieces of 126, 127,
    128, 200 and 300 bytes give the naive lattice's ids, best path and
    decode."""
    import base64 as _b64

    pieces = {bytes([b]): 1 + (b * 37) % 101 for b in range(256)}
    long_pieces = [b"x" * 126, b"x" * 127, b"y" * 200, b"xy" * 150, b"z" * 128 + "你".encode()]
    for k, p in enumerate(long_pieces):
        pieces[p] = 10**9 + k  # frequent enough to win
    order = sorted(pieces, key=lambda p: (len(p), p))
    obj = {_b64.b64encode(p).decode(): [i + 3, p.decode(errors="ignore"), pieces[p]] for i, p in enumerate(order)}
    tok = Tokenizer(obj, device="cpu")
    vocab = naive.Vocab((p, pieces[p], i + 3) for i, p in enumerate(order))
    texts = ["x" * 127, "x" * 126 + "x", "y" * 450, "xy" * 300 + "\n" + "x" * 400, "z" * 128 + "你好", "a" + "y" * 200]
    got = tok.encode_batch(texts)
    assert got == [naive.encode(t, vocab) for t in texts]
    # the long pieces are really used
    used = {tok.id_to_piece(i) for ids in got for i in ids}
    assert {b"x" * 127, b"y" * 200, b"xy" * 150, b"z" * 128 + "你".encode()} <= used
    assert [tok.decode(ids) for ids in got] == texts


def test_threaded_batches_equal_one_thread_and_raise_in_the_caller(monkeypatch):
    """With several threads, the threads pack small batches and share their
    chunks of segments; a batch far larger than the others (one huge document)
    is split among them. Output equals one thread's; an error in a worker
    thread is raised in the caller and names the document."""
    from gpu_bytepiece import TextError, config

    tok = Tokenizer(device="cpu")
    monkeypatch.setattr(config, "CPU_THREAD_BATCH_BYTES", 64)
    docs = ["你好，世界。\n" * 3, "hello world " * 5] * 20 + ["x y z " * 2000] + ["tail\n"] * 7
    ids1, off1 = tok.encode_to_numpy(docs, num_threads=1)
    ids2, off2 = tok.encode_to_numpy(docs, num_threads=2)
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(off1, off2)
    assert tok.encode_batch(docs, num_threads=2, add_bos=True, add_eos=True) == [
        [1] + tok.encode(d) + [2] for d in docs]
    bad = ["fine text"] * 30 + ["\ud800 lone"] + ["more"] * 5
    with pytest.raises(TextError, match="text 30"):
        tok.encode_to_numpy(bad, num_threads=2)


def test_long_documents_split_across_threads_at_segment_boundaries(tok, monkeypatch):
    """Two threads share one queue of chunks of segments: each long real
    document (a batch alone) is split between both threads at segment
    boundaries. Ids and offsets equal one thread's exactly: best path,
    sampling (keys by document and byte position), with and without bos/eos."""
    import threading
    import time

    from gpu_bytepiece.backends import cpu

    docs = sorted(corpus_sample("code", n=60) + corpus_sample("en", n=60), key=len)[-4:]
    docs = docs + ["短文本。\n" * 3] * 5 + docs[:1]
    assert min(len(d.encode()) for d in docs[:4]) > 40_000
    calls = [dict(alpha=-1), dict(alpha=0.1, seed=3), dict(alpha=-1, add_bos=True, add_eos=True),
             dict(alpha=0.5, seed=9, add_bos=True)]
    expected = [tok.encode_to_numpy(docs, num_threads=1, **kw) for kw in calls]
    monkeypatch.setattr(config, "CPU_THREAD_BATCH_BYTES", 4096)
    monkeypatch.setattr(config, "CPU_THREAD_CHUNK_BYTES", 512)
    ran = []  # (batch size, thread) of every chunk run
    run_chunk = cpu.CPUBackend._run_chunk

    def slow_run_chunk(self, job, c, alpha):
        ran.append((len(job.data), threading.current_thread().name))
        time.sleep(0.002)  # leave the other thread time to take the next chunk
        return run_chunk(self, job, c, alpha)

    monkeypatch.setattr(cpu.CPUBackend, "_run_chunk", slow_run_chunk)
    for kw, (ids1, off1) in zip(calls, expected):
        ran.clear()
        ids2, off2 = tok.encode_to_numpy(docs, num_threads=2, **kw)
        np.testing.assert_array_equal(ids2, ids1)
        np.testing.assert_array_equal(off2, off1)
        for d in docs[:4]:  # each long document ran on both threads
            assert len({name for size, name in ran if size == len(d.encode())}) == 2
