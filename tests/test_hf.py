"""Hugging Face interop: the exported tokenizer.json and AutoTokenizer give our ids.

On every document of ../shared/corpus, for both shared models and a model
trained here by ``gpu-bytepiece train``: gpu-bytepiece ids == tokenizers'
ids on the exported ``tokenizer.json`` == ``transformers.AutoTokenizer``'s
ids, and decode(encode(x)) is the same text in all three. Then special tokens
in the text (allowed, disallowed, as text), offsets, the vocabulary, the
incremental decoder, import, and a hypothesis property over arbitrary text.
"""

from __future__ import annotations

import json
import os
import unicodedata

import pytest

from conftest import PARTS, corpus_sample, cpu_tokenizer, hypothesis_settings, realistic_text, reference_tokenizer, shared_model

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed (pip install -e '.[test]')")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[test]')")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpu_bytepiece import ModelError, Tokenizer  # noqa: E402
from gpu_bytepiece.cli import main  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> str:
    """A small model from ``gpu-bytepiece train`` on ~1.5 MB of the corpus (seconds)."""
    d = tmp_path_factory.mktemp("trained")
    src = d / "train.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for part in PARTS:
            for doc in corpus_sample(part, n=60, every=53, max_chars=8000):
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    out = d / "trained.model"
    assert main(["train", str(src), "-o", str(out), "--vocab-size", "2000", "--device", "cpu", "-q"]) == 0
    return str(out)


class Exported:
    """One model: our tokenizer (with specials), its export, tokenizers' and transformers' loads."""

    def __init__(self, path, directory, specials=SPECIALS):
        self.tok = Tokenizer(path, device="cpu", special_tokens=specials)
        self.dir = str(directory)
        self.files = self.tok.save_pretrained(self.dir)
        self.hf = tokenizers.Tokenizer.from_file(os.path.join(self.dir, "tokenizer.json"))
        self.auto = transformers.AutoTokenizer.from_pretrained(self.dir)

    def hf_ids(self, docs):
        return [e.ids for e in self.hf.encode_batch(docs, add_special_tokens=False)]

    def auto_ids(self, docs):
        return self.auto(docs, add_special_tokens=False)["input_ids"]


_EXPORTED: dict = {}


@pytest.fixture(scope="module", params=["bytepiece.plus.40k.model", "bytepiece_80k.model", "trained"])
def exported(request, trained_model, tmp_path_factory) -> Exported:
    name = request.param
    if name not in _EXPORTED:
        path = trained_model if name == "trained" else shared_model(name)
        _EXPORTED.clear()  # one model's HF objects at a time (memory)
        _EXPORTED[name] = Exported(path, tmp_path_factory.mktemp("export"))
    return _EXPORTED[name]


@pytest.fixture(scope="module")
def plus40k(tmp_path_factory) -> Exported:
    return Exported(shared_model("bytepiece.plus.40k.model"), tmp_path_factory.mktemp("plus40k"))


@pytest.fixture(scope="module")
def plus40k_plain(tmp_path_factory) -> Exported:
    """The same model exported without special tokens."""
    return Exported(shared_model("bytepiece.plus.40k.model"), tmp_path_factory.mktemp("plain"), specials=[])


def _nfc(text):
    return unicodedata.normalize("NFC", text)


# ------------------------------------------------------------- whole corpus

@pytest.mark.parametrize("part", PARTS)
def test_corpus_ids_and_decode_equal_in_all_three(exported, part):
    docs = corpus_sample(part)
    ours = exported.tok.encode_batch(docs, num_threads=2)
    assert exported.hf_ids(docs) == ours
    assert exported.auto_ids(docs) == ours
    text = exported.tok.decode_batch(ours)
    assert text == [_nfc(d) for d in docs]
    assert exported.hf.decode_batch(ours, skip_special_tokens=False) == text
    assert exported.auto.batch_decode(ours) == text


# ------------------------------------------------------------- special tokens

def _with_specials(docs):
    """Real documents with specials, BytePiece's own names and near-misses spliced in."""
    inserts = ["<|endoftext|>", "<eos>", "<|im_start|>", "<bos>", "<|im_end|>\n", "<pad><|endoftext|><|endoftext|>",
               "<|endoftext", "é<|im_end|>\u0301"]
    out = []
    for k, doc in enumerate(docs):
        a, b = (k * 7919) % (len(doc) + 1), (k * 104729) % (len(doc) + 1)
        a, b = min(a, b), max(a, b)
        out.append(inserts[k % len(inserts)] + doc[:a] + inserts[(k + 3) % len(inserts)] + doc[a:b]
                   + inserts[(k + 5) % len(inserts)] + doc[b:] + ("<|endoftext|>" if k % 2 else ""))
    return out


@pytest.mark.parametrize("part", PARTS)
def test_specials_in_text_allowed_equal_hf(exported, part):
    docs = _with_specials(corpus_sample(part, n=120, every=11, max_chars=3000))
    ours = exported.tok.encode_batch(docs, allowed_special="all")
    assert exported.hf_ids(docs) == ours
    assert exported.auto_ids(docs) == ours
    assert sum(ids.count(exported.tok.piece_to_id("<|endoftext|>")) for ids in ours) > len(docs) // 2
    assert not any(i in (0, 1, 2) for ids in ours for i in ids)  # <eos> in the text is never id 2
    text = exported.tok.decode_batch(ours)
    assert exported.hf.decode_batch(ours, skip_special_tokens=False) == text
    assert exported.auto.batch_decode(ours) == text


def test_specials_disallowed_raise_naming_the_document(plus40k):
    tok = plus40k.tok
    docs = ["plain text", "no specials <eos> here", "a <|im_end|> b"]
    with pytest.raises(ValueError, match=r"text 2 contains the special token '<\|im_end\|>' at character 2"):
        tok.encode_batch(docs)
    with pytest.raises(ValueError, match="text 0 contains"):
        tok.encode("<|endoftext|>", allowed_special={"<|im_end|>"})
    with pytest.raises(ValueError, match="text 0"):
        tok.encode_to_numpy([b"bytes <|endoftext|>"])
    assert tok.encode_batch(docs[:2]) == tok.encode_batch(docs[:2], allowed_special="all")
    eot = tok.piece_to_id("<|endoftext|>")
    assert tok.encode("x<|endoftext|>", allowed_special={"<|endoftext|>"}) == tok.encode("x") + [eot]
    assert tok.encode(b"x<|endoftext|>", allowed_special="all") == tok.encode("x") + [eot]
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="BytePiece's own id 2"):
        Tokenizer(tok.model, special_tokens=["<eos>"], device="cpu")


@pytest.mark.parametrize("part", PARTS)
def test_specials_as_text_equal_plain_export_and_reference(plus40k, plus40k_plain, part):
    docs = _with_specials(corpus_sample(part, n=60, every=23, max_chars=2000))
    ours = plus40k.tok.encode_batch(docs, disallowed_special=())
    assert ours == plus40k_plain.tok.encode_batch(docs)
    assert plus40k_plain.hf_ids(docs) == ours
    assert plus40k_plain.auto_ids(docs) == ours
    ref = reference_tokenizer(shared_model("bytepiece.plus.40k.model"))
    assert [ref.encode(d) for d in docs[:20]] == ours[:20]


def test_bos_eos_around_split_documents(plus40k):
    tok = plus40k.tok
    ids, offsets, spans = tok.encode_to_numpy(["a<|im_start|>b", "", "<|im_end|>"], add_bos=True, add_eos=True,
                                              allowed_special="all", return_spans=True)
    s, e = tok.piece_to_id("<|im_start|>"), tok.piece_to_id("<|im_end|>")
    a, b = tok.piece_to_id(b"a"), tok.piece_to_id(b"b")
    assert ids.tolist() == [1, a, s, b, 2, 1, 2, 1, e, 2]
    assert offsets.tolist() == [0, 5, 7, 10]
    assert spans.tolist() == [[0, 0], [0, 1], [1, 13], [13, 14], [14, 14], [0, 0], [0, 0], [0, 0], [0, 10],
                              [10, 10]]


# ------------------------------------------------------------- offsets

@pytest.mark.parametrize("part", PARTS)
def test_byte_spans_cover_the_nfc_utf8(plus40k, part):
    docs = corpus_sample(part, n=200, every=7)
    ids, offsets, spans = plus40k.tok.encode_to_numpy(docs, return_spans=True)
    for i in range(0, len(docs), 10):
        data = _nfc(docs[i]).encode()
        sp = spans[offsets[i]:offsets[i + 1]]
        assert b"".join(data[a:b] for a, b in sp.tolist()) == data
        assert [plus40k.tok.id_to_piece(t) for t in ids[offsets[i]:offsets[i + 1]].tolist()] == \
            [data[a:b] for a, b in sp.tolist()]


@pytest.mark.parametrize("part", PARTS)
def test_char_offsets_equal_hf_offsets_mapping(plus40k, part):
    docs = corpus_sample(part, n=80, every=29, max_chars=4000)
    docs += [d for d in corpus_sample(part) if not unicodedata.is_normalized("NFC", d)][:10]
    docs += _with_specials(docs[:10])
    for doc in docs:
        ids, offs = plus40k.tok.encode_with_offsets(doc, allowed_special="all")
        enc = plus40k.auto(doc, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == ids
        assert [tuple(o) for o in enc["offset_mapping"]] == offs


@pytest.mark.parametrize("text", ["e\u0301x\u212b \U0001F600\u0958", "i\u0308 e\u0301\u0323 \u1100\u1161\u11a8",
                                  "a\u0323\u0307<|endoftext|>\u0301", "\u0f73\u0f75 \u2126\u00c5\u0301"])
def test_char_offsets_of_byte_pieces_and_nfc(plus40k, text):
    tok = plus40k.tok
    ids, offs = tok.encode_with_offsets(text, add_bos=True, allowed_special="all")
    assert offs[0] == (0, 0)
    assert b"".join(tok.decode_bytes([i]) for i in ids[1:]) == tok.decode_bytes(ids)
    enc = plus40k.auto(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids[1:]
    assert [tuple(o) for o in enc["offset_mapping"]] == offs[1:]
    assert all(0 <= a < b <= len(text) for a, b in offs[1:])


# ------------------------------------------------------------- vocabulary, decoding

def test_vocab_len_and_ids(exported):
    tok, hf, auto = exported.tok, exported.hf, exported.auto
    assert len(tok) == tok.vocab_size == tok.model.vocab_size + len(SPECIALS) == hf.get_vocab_size() == len(auto)
    assert tok.get_vocab() == hf.get_vocab(with_added_tokens=True)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (auto.pad_token_id, auto.bos_token_id, auto.eos_token_id) \
        == (0, 1, 2)
    assert [tok.piece_to_id(t) for t in SPECIALS] == auto.convert_tokens_to_ids(SPECIALS)
    assert tok.id_to_piece(tok.vocab_size - 1) == SPECIALS[-1]
    # tokenizers reads every score as exactly our float64 (its JSON float parser is not
    # correctly rounded: the export writes decimals it reads exactly)
    theirs = [v for _, v in json.loads(hf.to_str())["model"]["vocab"]]
    assert theirs[3:] == tok.model.scores()[3:].tolist()


@pytest.mark.parametrize("part", PARTS)
def test_decode_stream_loses_no_byte(plus40k, part):
    tok = plus40k.tok
    hf_stream = tokenizers.decoders.DecodeStream(skip_special_tokens=False)
    for doc in corpus_sample(part, n=20, every=101, max_chars=3000) + ["😀 é<|endoftext|>中\n"]:
        ids = tok.encode(doc, allowed_special="all")
        stream = tok.decode_stream()
        out = [stream.step(i) for i in ids]
        assert "".join(o for o in out if o) + stream.finish() == tok.decode(ids) == _nfc(doc)
        hf_stream = tokenizers.decoders.DecodeStream(skip_special_tokens=False)
        hf_out = [hf_stream.step(plus40k.hf, i) for i in ids]
        assert "".join(o for o in hf_out if o) == tok.decode(ids)
        assert "\ufffd" not in "".join(o for o in out if o)
    # one id at a time, plain decode drops split characters; the stream does not
    ids = tok.encode("😀😀")
    assert len(ids) > 2 and "".join(tok.decode([i]) for i in ids) != "😀😀"


# ------------------------------------------------------------- import

def test_from_pretrained_model_file_and_tokenizer_json_alone(exported, tmp_path):
    docs = _with_specials(corpus_sample("zh", n=40, every=51, max_chars=2000))
    want = exported.tok.encode_batch(docs, allowed_special="all")
    again = Tokenizer.from_pretrained(exported.dir, device="cpu")
    assert again.special_tokens == tuple(SPECIALS)
    assert again.encode_batch(docs, allowed_special="all") == want
    # tokenizer.json alone: the file's scores, the same ids
    only = tmp_path / "only_json"
    only.mkdir()
    with open(os.path.join(exported.dir, "tokenizer.json"), encoding="utf-8") as f:
        (only / "tokenizer.json").write_text(f.read(), encoding="utf-8")
    from_json = Tokenizer.from_pretrained(only, device="cpu")
    assert from_json.model.pieces == exported.tok.model.pieces
    assert (from_json.model.scores() == exported.tok.model.scores()).all()
    assert from_json.encode_batch(docs, allowed_special="all") == want


def test_other_tokenizer_json_refused(tmp_path):
    from tokenizers import models, pre_tokenizers

    bpe = tokenizers.Tokenizer(models.BPE())
    (tmp_path / "tokenizer.json").write_text(bpe.to_str(), encoding="utf-8")
    with pytest.raises(ModelError, match="its model is BPE, not Unigram"):
        Tokenizer.from_pretrained(tmp_path)
    uni = tokenizers.Tokenizer(models.Unigram([("<pad>", 0.0), ("<bos>", 0.0), ("<eos>", 0.0), ("a", -1.0)]))
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    (tmp_path / "tokenizer.json").write_text(uni.to_str(), encoding="utf-8")
    with pytest.raises(ModelError, match="not a BytePiece tokenizer.json .its normalizer is"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a directory"):
        Tokenizer.from_pretrained(tmp_path / "nope")


def test_export_cli(tmp_path, plus40k):
    out = tmp_path / "cli"
    assert main(["export", str(shared_model("bytepiece.plus.40k.model")), "-o", str(out),
                 "--special-token", "<|endoftext|>", "--special-token", "<|im_start|>",
                 "--special-token", "<|im_end|>"]) == 0
    assert sorted(os.listdir(out)) == ["bytepiece.model", "special_tokens_map.json", "tokenizer.json",
                                       "tokenizer_config.json"]
    with open(out / "tokenizer.json", encoding="utf-8") as f, open(plus40k.files[0], encoding="utf-8") as g:
        assert json.load(f) == json.load(g)
    cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["eos_token"] == "<eos>"


# ------------------------------------------------------------- property

_CHARS = st.characters(blacklist_categories=("Cs", "Cn"))  # Cn: Python's and Rust's Unicode versions differ


@hypothesis_settings(max_examples=150)
@given(st.lists(st.one_of(realistic_text(4), st.sampled_from(SPECIALS + ["<eos>", "\r\n", "<|", "\U0001F600"]),
                          st.text(_CHARS, max_size=20)), max_size=6).map("".join))
def test_property_equal_in_all_three(plus40k, text):
    tok = plus40k.tok
    ours = tok.encode(text, allowed_special="all")
    assert plus40k.hf_ids([text]) == [ours]
    assert plus40k.auto_ids([text]) == [ours]
    dec = tok.decode(ours)
    assert plus40k.hf.decode(ours, skip_special_tokens=False) == dec == plus40k.auto.decode(ours)
    _, offs = tok.encode_with_offsets(text, allowed_special="all")
    enc = plus40k.auto(text, add_special_tokens=False, return_offsets_mapping=True)
    assert [tuple(o) for o in enc["offset_mapping"]] == offs
    plain = cpu_tokenizer(shared_model("bytepiece.plus.40k.model"))
    assert tok.encode(text, disallowed_special=()) == plain.encode(text)


# ------------------------------------------------------------- the pipeline

def test_encode_job_with_special_tokens(tmp_path):
    """`gpu-bytepiece encode --special-token ... [--allowed-special ...]` writes
    the ids of Tokenizer(special_tokens=...).encode_to_numpy(allowed_special=...),
    in several shards and workers; sampling with specials is refused."""
    from gpu_bytepiece.pipeline import read_dataset

    model = shared_model("bytepiece.plus.40k.model")
    docs = _with_specials(corpus_sample("en", n=40, every=13, max_chars=2000))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok = Tokenizer(str(model), device="cpu", special_tokens=SPECIALS)
    flags = sum((["--special-token", s] for s in SPECIALS), [])
    common = ["encode", str(src), "-m", str(model), "--device", "cpu", "--format", "npy", "--append-eos",
              "--shard-bytes", "20000", "--workers", "2"]
    assert main(common + ["-o", str(tmp_path / "all")] + flags) == 0
    ids, offsets = read_dataset(str(tmp_path / "all"), "npy")
    want, want_off = tok.encode_to_numpy(docs, add_eos=True, allowed_special="all")
    assert ids.tolist() == want.tolist() and offsets.tolist() == want_off.tolist()
    assert int((ids == tok.piece_to_id("<|im_start|>")).sum()) > 0
    # only <|endoftext|> matched; the other two are ordinary text
    assert main(common + ["-o", str(tmp_path / "one"), "--allowed-special", "<|endoftext|>"] + flags) == 0
    ids, _ = read_dataset(str(tmp_path / "one"), "npy")
    want, _ = tok.encode_to_numpy(docs, add_eos=True, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert ids.tolist() == want.tolist()
    assert int((ids == tok.piece_to_id("<|im_start|>")).sum()) == 0
    assert main(common + ["-o", str(tmp_path / "s"), "--alpha", "0.1"] + flags) == 1  # a job error
    assert main(common + ["-o", str(tmp_path / "u"), "--allowed-special", "<x>"] + flags) == 1
