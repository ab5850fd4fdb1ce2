"""Parity with the reference ``bytepiece==0.6.3`` on real models and real text.

Like tokenizers' ``spm_parity_check.py``: the same documents through both
tokenizers, ids compared exactly. The reference runs at ~1.5 MB/s, so each
model sees a deterministic sample of a few hundred KB.
"""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from conftest import (MODEL_NAMES, PARTS, corpus_sample, cpu_tokenizer, hypothesis_settings, realistic_text,
                      reference_tokenizer, shared_model)

pytestmark = pytest.mark.reference

# part -> (every k-th document, truncated to this many characters): ~230 KB each.
SAMPLES = {"zh": (60, 2000), "en": (20, 3000), "code": (20, 3000)}


def sample(part):
    every, max_chars = SAMPLES[part]
    return corpus_sample(part, every=every, max_chars=max_chars)


def first_difference(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k, x, y
    return min(len(a), len(b)), len(a), len(b)


@pytest.mark.parametrize("part", PARTS)
def test_encode_batch_equals_reference(model_path, part):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    docs = sample(part)
    assert sum(len(d.encode()) for d in docs) > 150_000
    ours = tok.encode_batch(docs)
    mismatches = [i for i, d in enumerate(docs) if ours[i] != ref.encode(d)]
    assert not mismatches, [
        (i, docs[i][:80], first_difference(ours[i], ref.encode(docs[i]))) for i in mismatches[:3]
    ]


@pytest.mark.parametrize("part", PARTS)
def test_tokenize_equals_reference(model_path, part):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    for d in sample(part)[::4]:
        assert tok.tokenize(d) == ref.tokenize(d)


@pytest.mark.parametrize("part", PARTS)
def test_single_encode_and_decode_equal_reference(model_path, part):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    for d in sample(part)[::7]:
        ids = tok.encode(d, add_bos=True, add_eos=True)
        assert ids == ref.encode(d, add_bos=True, add_eos=True)
        assert tok.encode(d, add_bos=True) == ref.encode(d, add_bos=True)
        assert tok.encode(d, add_eos=True) == ref.encode(d, add_eos=True)
        assert tok.decode(ids) == ref.decode(ids) == unicodedata.normalize("NFC", d)


def test_decode_of_arbitrary_ids_equals_reference(model_path):
    # Arbitrary id sequences: specials, half characters (dropped as the reference drops them).
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    rng = random.Random(5)
    for _ in range(300):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 40))]
        ids += [rng.randrange(3, 259) for _ in range(rng.randrange(0, 5))]  # single bytes
        rng.shuffle(ids)
        assert tok.decode(ids) == ref.decode(ids)


def test_vocabulary_equals_reference(model_path):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    assert tok.vocab_size == ref.vocab_size
    all_ids = list(range(tok.vocab_size))
    pieces = tok.ids_to_pieces(all_ids)
    assert pieces == ref.ids_to_pieces(all_ids)
    assert tok.pieces_to_ids(pieces) == ref.pieces_to_ids(pieces) == all_ids
    for special, i in (("<pad>", 0), ("<bos>", 1), ("<eos>", 2)):
        assert tok.piece_to_id(special) == ref.piece_to_id(special) == i
        assert tok.id_to_piece(i) == ref.id_to_piece(i) == special
    for i in (3, 100, 258, 259, tok.vocab_size // 2, tok.vocab_size - 1):
        p = ref.id_to_piece(i)
        assert tok.id_to_piece(i) == p
        assert tok.piece_to_id(p) == ref.piece_to_id(p) == i


@pytest.mark.parametrize("part", PARTS)
def test_naive_equals_reference(model_path, part):
    ref = reference_tokenizer(model_path)
    vocab = naive.load_vocab(str(model_path))
    for d in sample(part)[::5][:40]:
        d = d[:1500]
        assert naive.encode(d, vocab) == ref.encode(d)


EDGE_TEXTS = [
    "", "\n", "\n\n\n", "a\n", "\na", "a\r\nb\r\n", "\r", "x\u2028y\u2029z\x85", "\x00", "a\x00\x00b",
    "\t\t  \t", "\U0001F600", "\U0001F468\u200d\U0001F469\u200d\U0001F467 family", "\U00020000\U0010FFFD",
    "e\u0301", "\u1100\u1161\u11a8", "\u212b ngstr\u00f6m", "Cafe\u0301\nde\u0301ja\u0300 vu\n\n",
    "\ufeffBOM", "\u00a0\u3000", "1234567890", "ｆｕｌｌｗｉｄｔｈ", "مرحبا", "नमस्ते", "日本語のテキスト",
    " " * 100, "-" * 500, "\n" * 300 + "x",
]


def test_edge_texts_equal_reference(model_path):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    assert tok.encode_batch(EDGE_TEXTS) == [ref.encode(t) for t in EDGE_TEXTS]
    for t in EDGE_TEXTS:
        assert tok.encode(t, True, True) == ref.encode(t, True, True)
        assert tok.tokenize(t) == ref.tokenize(t)


def test_lone_surrogate_raises_like_reference(plus40k_path):
    tok, ref = cpu_tokenizer(plus40k_path), reference_tokenizer(plus40k_path)
    with pytest.raises(ValueError):
        ref.encode("a\ud800")
    with pytest.raises(ValueError):
        tok.encode("a\ud800")


def test_long_single_line_equals_reference(model_path):
    tok, ref = cpu_tokenizer(model_path), reference_tokenizer(model_path)
    parts = [d.replace("\n", " ") for p in PARTS for d in corpus_sample(p, n=30, every=13, max_chars=2000)]
    text = " ".join(parts)
    text = (text * (200_000 // len(text.encode()) + 1))
    while len(text.encode()) > 200_000:
        text = text[: len(text) * 9 // 10]
    assert "\n" not in text and len(text.encode()) > 150_000
    assert tok.encode(text) == ref.encode(text)


@hypothesis_settings(200)
@given(realistic_text(), st.sampled_from([0, 1]))
def test_random_text_equals_reference(text, which):
    path = shared_model(MODEL_NAMES[which])
    tok, ref = cpu_tokenizer(path), reference_tokenizer(path)
    assert tok.encode(text) == ref.encode(text)
    assert tok.decode(ref.encode(text)) == ref.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)


@hypothesis_settings(100)
@given(st.lists(realistic_text(3), max_size=6))
def test_random_batches_equal_reference(docs):
    path = shared_model("bytepiece.plus.40k.model")
    tok, ref = cpu_tokenizer(path), reference_tokenizer(path)
    assert tok.encode_batch(docs, add_bos=True) == [ref.encode(d, add_bos=True) for d in docs]
