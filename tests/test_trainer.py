"""The trainer: saved models equal bytepiece 0.6.3's Trainer's, byte for byte.

On a ~250 KB slice of the real corpus (zh, en, code) with several parameter
sets, on edge-case texts, through every input path (list, generator, files,
CLI), with spilling forced by a tiny memory budget, and with bad input.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
from contextlib import redirect_stderr
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import corpus_docs

from gpu_bytepiece import Tokenizer, TextError, config
from gpu_bytepiece.cpu_fallback import train as ct
from gpu_bytepiece.train.corpus import Corpus
from gpu_bytepiece.train.engines import CPUEngine, make_engine
from gpu_bytepiece.train.ngrams import count_ngrams
from gpu_bytepiece.train.pieces import count_pieces
from gpu_bytepiece.train.trainer import Trainer


def _ref():
    return pytest.importorskip("bytepiece", reason="the reference bytepiece==0.6.3 is not installed: run scripts/setup.sh")


@pytest.fixture(scope="module")
def slice_texts():
    """About 250 KB of real text: Chinese news and manpages, English docs, Python code."""
    texts = corpus_docs("zh", 160, every=127, max_chars=3000)
    texts += corpus_docs("en", 18, every=83, max_chars=8000)
    texts += corpus_docs("code", 16, every=89, max_chars=7000)
    return texts


EDGE_TEXTS = [
    "",
    "x" * 10000 + "\n" + "y" * 10001 + "z" * 25000 + "\n\n",  # the 10,000-character cap
    "中文" * 7000 + "\n" + "é" * 10003,  # the cap counts characters, not bytes
    "\n" * 250 + "after a long newline run" + "\n" * 101,  # the 100-newline cap
    "crlf line\r\nnext\r\n\r\nU+2028\u2028inside\x85 NEL\x0b\x0c\ttab\x00nul\n",
    "digits 0123 ٣٤ ३४ ３４ ²³ ¹ Ⅻ 1.5e10 v2.0\n12\n\n34 5",  # \\d is str.isdecimal
    "e\u0301 cafe\u0301 A\u030a \u1e9b\u0323 한국어 한\n",  # NFC changes these
    "😀🎉 emoji 🧑‍💻 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n" * 3,
    "    def f(x):\n        return x  # 注释\n" * 20,
]


def _train_ref(texts, kw, path):
    bp = _ref()
    t = bp.Trainer(**kw)
    with redirect_stderr(io.StringIO()):
        t.train(texts, workers=1)
    t.save(str(path))
    return [str(path)] if len(t.pieces) == 1 else ["%s.%s" % (path, s) for s in t.max_vocab_size]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _assert_same_files(ours, ref):
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        da, db = _read(a), _read(b)
        if da != db:
            ja, jb = json.loads(da), json.loads(db)
            only_a, only_b = set(ja) - set(jb), set(jb) - set(ja)
            diff = [k for k in set(ja) & set(jb) if ja[k] != jb[k]]
            pytest.fail(f"{a} != {b}: {len(ja)} vs {len(jb)} pieces, {len(only_a)} only ours, "
                        f"{len(only_b)} only reference, {len(diff)} differ, e.g. {[(k, ja[k], jb[k]) for k in diff[:3]]}")


PARAMS = [
    pytest.param(dict(), id="defaults"),
    pytest.param(dict(max_vocab_size=3000), id="size-3000"),
    pytest.param(dict(max_vocab_size=[300, 4000, 1000], min_count=3), id="sizes-list-min3"),
    pytest.param(dict(isolate_digits=True, max_vocab_size=2000), id="isolate-digits"),
    pytest.param(dict(ensure_unicode=False, max_vocab_size=2000), id="no-ensure-unicode"),
    pytest.param(dict(order=4, max_piece_length=6, min_count=1, max_vocab_size=1500), id="order4-len6-min1"),
    pytest.param(dict(order=2, min_count=5, max_vocab_size=800), id="order2-min5"),
    pytest.param(dict(order=7, max_piece_length=math.inf, min_count=2.5, max_vocab_size=2500), id="order7-inf-len"),
]


@pytest.mark.reference
@pytest.mark.parametrize("kw", PARAMS)
def test_model_equals_reference(slice_texts, kw, tmp_path):
    ref_paths = _train_ref(slice_texts, kw, tmp_path / "ref.model")
    ours = Trainer(**kw).train(slice_texts, workers=2, progress=False)
    _assert_same_files(ours.save(tmp_path / "ours.model"), ref_paths)
    # the in-memory result says the same
    for pieces, path in zip(ours.pieces, ref_paths):
        ref = {k: v for k, v in _load_ref_pieces(path).items()}
        assert pieces == ref


def _load_ref_pieces(path):
    import base64

    obj = json.loads(_read(path))
    return {base64.b64decode(k): v[2] for k, v in obj.items()}


@pytest.mark.reference
@pytest.mark.parametrize("kw", [dict(min_count=1, max_vocab_size=600),
                                dict(min_count=1, max_vocab_size=600, isolate_digits=True),
                                dict(min_count=2, max_vocab_size=400, ensure_unicode=False, order=3)],
                         ids=["min1", "isolate-digits", "order3-no-unicode"])
def test_edge_texts_equal_reference(kw, tmp_path):
    ref_paths = _train_ref(EDGE_TEXTS, kw, tmp_path / "ref.model")
    ours = Trainer(**kw).train(EDGE_TEXTS, progress=False)
    _assert_same_files(ours.save(tmp_path / "ours.model"), ref_paths)


@pytest.mark.reference
@pytest.mark.parametrize("isolate", [False, True])
def test_segments_match_reference_regex(slice_texts, isolate):
    bp = _ref()
    texts = EDGE_TEXTS + slice_texts[::5]
    tr = Trainer(isolate_digits=isolate)
    eng = CPUEngine(tr)
    for data, offsets in Corpus(texts, 1 << 30, None).first_pass():
        seg_start, seg_end = eng.segments(data, offsets)
        ours = [data[a:b].tobytes() for a, b in zip(seg_start, seg_end)]
    ref = [s for t in texts for s in bp.bytepiece.normalize(t, 10000, isolate)]
    assert ours == ref


@pytest.mark.reference
def test_ngram_counts_and_pieces_match_reference(slice_texts):
    """Stage by stage: n-gram log-probabilities and piece counts equal the reference's."""
    bp = _ref()
    texts = slice_texts[::3]
    ref = bp.Trainer(min_count=3)
    with redirect_stderr(io.StringIO()):
        ref.ngrams = ref.prune_ngrams(ref.count_ngrams(ref.norm(texts)))
        ref_pieces = ref.count_pieces(ref.norm(texts))
    tr = Trainer(min_count=3)
    corpus = Corpus(texts, 1 << 16, None)
    eng = make_engine(tr, False, 0)
    ng = count_ngrams(tr, corpus, eng, 1 << 30, None, False)
    lookup = ct.ngram_lookup
    for k in range(1, 7):
        assert len(ref.ngrams[k]) == ng.n_kept[k - 1]
        for gram, lp in ref.ngrams[k].items():
            if k == 1:
                ours = ng.lp1[gram[0]]
            elif k == 2:
                ours = ng.lp2[gram[0] << 8 | gram[1]]
            else:
                key = np.uint64(int.from_bytes(gram, "big") << 8 | k)
                ours = lookup(key, ng.ht, ng.htf, ng.ht_shift, ng.ht_mask)
            assert ours == lp, (gram, ours, lp)
    pieces = count_pieces(tr, corpus, eng, ng, 1 << 30, None, False)
    ours = dict(pieces.items())  # the pieces pruning keeps and the dropped ones
    assert len(ours) == tr.stats["n_pieces_counted"]
    for i in range(256):
        ref_pieces.setdefault(bytes([i]), 1)
    assert ours == ref_pieces


def test_bounded_memory_spills_give_the_same_model(slice_texts, tmp_path):
    texts = slice_texts[::2]
    kw = dict(max_vocab_size=[1200, 3000])
    full = Trainer(**kw).train(texts, progress=False)
    assert full.stats["n_ngram_spills"] == 0
    small = Trainer(**kw).train(texts, progress=False, memory_budget="16K", batch_bytes="32K",
                                tmp_dir=str(tmp_path))
    assert small.stats["n_ngram_spills"] > 3 and small.stats["n_piece_spills"] > 0
    assert small.stats["n_long_piece_spills"] > 0 and small.stats["pieces_dropped_on_disk"]
    assert small.stats["ngram_table_mapped"] and not full.stats["ngram_table_mapped"]
    assert small.pieces == full.pieces
    assert os.listdir(tmp_path) == []  # spills cleaned up


def test_piece_counts_do_not_depend_on_budget(slice_texts, tmp_path):
    """A tiny budget spills the short and long piece runs and puts the dropped pieces on disk: same counts."""
    texts = slice_texts[::4]
    tr = Trainer(min_count=3)
    eng = make_engine(tr, False, 0)
    corpus = Corpus(texts, 1 << 13, None)
    ng = count_ngrams(tr, corpus, eng, 1 << 30, None, False)
    got = []
    for budget in (1 << 30, 1 << 12):
        pieces = count_pieces(tr, corpus, eng, ng, budget, lambda: str(tmp_path), False)
        got.append((dict(pieces.items()), pieces.bytes_of(pieces.rank), pieces.cnt.tolist(), dict(tr.stats)))
    (all_a, kept_a, cnt_a, st_a), (all_b, kept_b, cnt_b, st_b) = got
    assert st_a["n_piece_spills"] == st_a["n_long_piece_spills"] == 0 and not st_a["pieces_dropped_on_disk"]
    assert st_b["n_piece_spills"] > 3 and st_b["n_long_piece_spills"] > 3 and st_b["pieces_dropped_on_disk"]
    assert kept_a == sorted(kept_a) and kept_b == kept_a and cnt_b == cnt_a
    assert len(all_a) == st_a["n_pieces_counted"] > len(kept_a) and all_b == all_a


def test_ngram_tables_do_not_depend_on_budget_or_batches(slice_texts, tmp_path):
    texts = slice_texts[::4]
    models = []
    for budget, batch in [(1 << 30, 1 << 30), (1 << 12, 1 << 13)]:
        tr = Trainer()
        eng = make_engine(tr, False, 0)
        corpus = Corpus(texts, batch, lambda: str(tmp_path))
        models.append(count_ngrams(tr, corpus, eng, budget, lambda: str(tmp_path), False))
    a, b = models
    assert a.total == b.total and a.n_kept == b.n_kept
    for name in ("lp1", "lp2", "ht"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_inputs_workers_and_batches_do_not_change_the_model(slice_texts):
    texts = slice_texts[::3]
    base = Trainer(max_vocab_size=1000).train(texts, workers=1, progress=False).pieces
    gen = Trainer(max_vocab_size=1000).train((t for t in texts), workers=2, progress=False).pieces
    tup = Trainer(max_vocab_size=1000).train(tuple(texts), batch_size=7, batch_bytes=50_000,
                                             progress=False).pieces
    assert base == gen == tup


def test_save_formats_and_tokenizer(slice_texts, tmp_path):
    tr = Trainer(max_vocab_size=[500, 800]).train(slice_texts[::4], progress=False)
    paths = tr.save(tmp_path / "m.model")
    assert [os.path.basename(p) for p in paths] == ["m.model.800", "m.model.500"]
    tr1 = Trainer(max_vocab_size=700).train(slice_texts[::4], progress=False)
    (p,) = tr1.save(tmp_path / "one.model.gz")
    with gzip.open(p, "rb") as f:
        assert f.read() == _read(tr1.save(tmp_path / "one.model")[0])
    for m in tr.models + tr1.models:
        assert len(m.pieces) <= 800 - 3 and all(bytes([i]) in set(m.pieces) for i in range(256))
    tok = Tokenizer(p, device="cpu")
    assert tok.vocab_size == tr1.models[0].vocab_size
    text = slice_texts[1]
    assert tok.decode(tok.encode(text)) == text
    assert Tokenizer(tr1.models[0], device="cpu").encode(text) == tok.encode(text)


class _Changing:
    def __init__(self):
        self.n = 0

    def __iter__(self):
        self.n += 1
        return iter(["abc " * self.n])


@pytest.mark.parametrize("texts, exc, match", [
    (5, TypeError, "iterable of str"),
    ("just one string", TypeError, "not a single str"),
    (b"bytes", TypeError, "not a single bytes"),
    (["ok", b"raw bytes"], TextError, "text 1: expected str, got bytes"),
    (["ok", None], TextError, "text 1: expected str, got NoneType"),
    ([3.5], TextError, "text 0: expected str, got float"),
    (["bad \ud800 surrogate"], TextError, "lone surrogate"),
    ([], ValueError, "empty corpus"),
    (["", ""], ValueError, "empty corpus"),
    (_Changing(), RuntimeError, "changed between the two passes"),
])
def test_bad_input_raises(texts, exc, match):
    with pytest.raises(exc, match=match):
        Trainer(max_vocab_size=300).train(texts, progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(max_vocab_size=258), "below 259"),
    (dict(max_vocab_size=[1000, 100]), "below 259"),
    (dict(max_vocab_size=[]), "empty"),
    (dict(max_vocab_size="1000"), "int or a list"),
    (dict(order=0), "order"),
    (dict(order=8), "order"),
    (dict(min_count=-1), "min_count"),
    (dict(max_piece_length=0), "max_piece_length"),
])
def test_bad_parameters_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        Trainer(**kw)


def test_bad_train_arguments_raise(slice_texts):
    tr = Trainer(max_vocab_size=300)
    with pytest.raises(ValueError, match="device"):
        tr.train(slice_texts[:2], device="tpu", progress=False)
    with pytest.raises(ValueError, match="workers"):
        tr.train(slice_texts[:2], workers=0, progress=False)
    with pytest.raises(ValueError, match="memory_budget"):
        tr.train(slice_texts[:2], memory_budget="lots", progress=False)
    with pytest.raises(RuntimeError, match="train"):
        Trainer().save("/nonexistent/x.model")


def test_cli_train_files(slice_texts, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from gpu_bytepiece.cli import main

    docs = slice_texts[::3]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs[:6]:
            f.write(json.dumps({"body": d, "x": 1}) + "\n\n")
    pq.write_table(pa.table({"body": docs[6:], "n": list(range(len(docs) - 6))}), tmp_path / "b.parquet")
    txt = "\n\n".join(docs[:4]) + "\r\n\n\n"
    (tmp_path / "c.txt").write_bytes(txt.encode())
    out = tmp_path / "cli.model"
    rc = main(["train", str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.parquet"), str(tmp_path / "c.txt"),
               "--text-key", "body", "-o", str(out), "--vocab-size", "900", "--min-count", "3", "-q",
               "--memory-budget", "1M"])
    assert rc == 0
    want = Trainer(max_vocab_size=900, min_count=3).train(docs[:6] + docs[6:] + [txt], progress=False)
    assert _read(out) == _read(want.save(tmp_path / "want.model")[0])
    # small txt fragments: still the same segments as the whole file
    from gpu_bytepiece.pipeline import InputTexts

    old = config.TEXT_FRAGMENT_BYTES, config.READ_BLOCK
    config.TEXT_FRAGMENT_BYTES, config.READ_BLOCK = 40, 64
    try:
        chunks = list(InputTexts([tmp_path / "c.txt"]))
    finally:
        config.TEXT_FRAGMENT_BYTES, config.READ_BLOCK = old
    assert len(chunks) > 3 and "".join(chunks) == txt
    a = Trainer(max_vocab_size=500, min_count=1).train(chunks, progress=False).pieces
    b = Trainer(max_vocab_size=500, min_count=1).train([txt], progress=False).pieces
    assert a == b


def test_cli_train_takes_what_encode_takes(slice_texts, tmp_path, capsys):
    """A folder, a quoted glob and .zst/.xz inputs (encode's inputs) give the
    model of the same documents; a bad record fails with encode's message."""
    import lzma

    pa = pytest.importorskip("pyarrow")
    from gpu_bytepiece.cli import main
    from gpu_bytepiece.pipeline import EncodeOptions, encode

    docs = slice_texts[::4]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs[:5]).encode()
    with pa.CompressedOutputStream(str(folder / "a.jsonl.zst"), "zstd") as f:
        f.write(lines)
    (folder / "sub" / "b.jsonl.xz").write_bytes(lzma.compress(
        "".join(json.dumps({"text": d}) + "\n" for d in docs[5:]).encode()))
    want = Trainer(max_vocab_size=700, min_count=2).train(docs, progress=False)
    want_bytes = _read(want.save(tmp_path / "want.model")[0])
    for arg in (str(folder), str(folder / "**" / "*.jsonl.*")):
        out = tmp_path / "m.model"
        assert main(["train", arg, "-o", str(out), "--vocab-size", "700", "--min-count", "2", "-q"]) == 0
        assert _read(out) == want_bytes
    # the same bad record: the same message from train and encode
    (folder / "c.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
    assert main(["train", str(folder), "-o", str(tmp_path / "x.model"), "-q"]) == 2
    train_err = capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(Exception) as e:
        encode(EncodeOptions(inputs=[str(folder)], output=str(tmp_path / "o"), format="npy", device="cpu"))
    assert str(e.value) in train_err and "c.jsonl:2" in train_err


def test_cli_errors(tmp_path, capsys):
    from gpu_bytepiece.cli import main

    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n')
    assert main(["train", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "m"), "-q"]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "m"), "-q"]) == 2
    assert main(["train", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "m"), "--vocab-size", "100",
                 "-q"]) == 2
    assert "below 259" in capsys.readouterr().err


# ---------------------------------------------------------------- GPU kernels, compiled without a GPU
@pytest.fixture
def no_driver(monkeypatch):
    d = pytest.importorskip("numba.cuda.dispatcher")
    monkeypatch.setattr(d, "get_current_device", lambda: SimpleNamespace(compute_capability=(9, 0)))


TRAIN_KERNELS = ("fill_u64", "count_position_keys", "count_piece_keys", "long_piece_lengths", "compact_counts",
                 "ngram_viterbi_segments", "split_pieces")


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="no PTX compiler under the simulator")
@pytest.mark.parametrize("name", TRAIN_KERNELS)
def test_train_kernels_compile_to_ptx(no_driver, name):
    """The trainer's kernels are real CUDA code: PTX for sm_90, float64, no calls out."""
    cuda = pytest.importorskip("numba.cuda")
    from gpu_bytepiece.kernels import train as kt

    assert set(kt.SIGNATURES) == set(kt.__all__) - {"SIGNATURES"} == set(TRAIN_KERNELS)  # none left out

    try:
        ptx, _ = cuda.compile_ptx(getattr(kt, name).py_func, kt.SIGNATURES[name], cc=(9, 0))
    except Exception as e:
        if "NVVM" in str(e) or "libnvvm" in str(e).lower():
            pytest.skip(f"NVVM is not available to compile PTX: {e}")
        raise
    assert re.search(r"^\.target sm_90\b", ptx, flags=re.M)
    assert "\tcall" not in ptx
    assert not re.search(r"\b(div|rcp|sqrt)\.approx\.f64|\b(ex2|lg2)\.approx", ptx)
    if name == "ngram_viterbi_segments":
        assert "add.f64" in ptx or "add.rn.f64" in ptx
        assert "fma" not in ptx
    if name in ("count_position_keys", "count_piece_keys"):
        assert "atom.global.cas.b64" in ptx
    if name == "split_pieces":
        assert re.search(r"atom\.global\.add\.u64|red\.global\.add\.u64", ptx)


def test_progress_off_a_terminal_and_the_small_model_note(slice_texts, capsys):
    """Not a terminal: one plain line per stage; the note says why the model is smaller than asked."""
    tr = Trainer(max_vocab_size=[20000, 600], min_count=3).train(slice_texts[::6], progress=True)
    err = capsys.readouterr().err
    stages = [line.split(":")[0] for line in err.splitlines()]
    assert stages == ["Count Ngrams", "Prune Ngrams", "Count Pieces", "Prune Pieces"], err
    n, n2 = tr.models[0].vocab_size, tr.models[1].vocab_size
    assert (n, n2) == (777, 599)
    assert tr.stats["notes"] == [
        f"777 ids, fewer than the 20000 asked: only {tr.stats['pieces_kept_by_min_count']:,} pieces (the 256 bytes "
        f"included) are seen at least min_count=3 times and are at most max_piece_length=36 bytes long, and "
        f"774 of them survive pruning; a lower min_count or more text gives more",
        "599 ids, fewer than the 600 asked: after the cut to 597 pieces, 1 that the others' tokenization no "
        "longer uses were dropped (as BytePiece does)"]
