"""Model files: loading (plain, .gz, .zip), the bundled default, saving, and every bad file."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from importlib import resources

import numpy as np
import pytest

import naive
from conftest import MODEL_NAMES, reference_tokenizer, shared_model
from gpu_bytepiece import ModelError, Tokenizer, config, load_model, save_model
from gpu_bytepiece.model import DEFAULT_MODEL_NAME, Model, parse_pieces

# ----------------------------------------------------------------- helpers

# A small hand-made vocabulary: the 256 single bytes, a few ASCII pieces, a
# CJK character, a piece that is not valid UTF-8 on its own (its printable
# text field loses the bytes) and one holding a control character.
EXTRA = [b"ab", b"abc", b"hello", b" world", "你".encode(), "你好".encode(), b"\xe4\xbd", b"a\x00b"]


def small_pieces() -> dict:
    """``piece -> count``; counts are positive and all different."""
    pieces = {bytes([b]): 1 + (b * 37) % 101 for b in range(256)}
    for k, p in enumerate(EXTRA):
        pieces[p] = 1000 + 17 * k
    return pieces


def canonical(pieces: dict) -> list:
    """Pieces in the order BytePiece numbers them: (length, bytes)."""
    return sorted(pieces, key=lambda p: (len(p), p))


def small_obj(pieces: dict | None = None) -> dict:
    """The on-disk mapping ``{base64: [id, text, count]}`` of ``pieces``, ids 3.. in canonical order."""
    pieces = small_pieces() if pieces is None else pieces
    return {
        base64.b64encode(p).decode(): [i + 3, p.decode(errors="ignore"), pieces[p]]
        for i, p in enumerate(canonical(pieces))
    }


def dump(obj) -> bytes:
    return json.dumps(obj, indent=4, ensure_ascii=False).encode("utf-8")


def zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def assert_small_model(m: Model, source: str | None = None):
    pieces = small_pieces()
    order = canonical(pieces)
    assert m.pieces == order
    assert m.counts.dtype == np.int64
    assert m.counts.tolist() == [pieces[p] for p in order]
    assert m.vocab_size == len(order) + 3
    if source is not None:
        assert m.source == source


# ----------------------------------------------------------------- loading


def test_load_plain_gz_zip(tmp_path):
    raw = dump(small_obj())
    plain = tmp_path / "small.model"
    plain.write_bytes(raw)
    gz = tmp_path / "small.model.gz"
    gz.write_bytes(gzip.compress(raw))
    zp = tmp_path / "small.zip"
    zp.write_bytes(zip_bytes({"small.model": raw}))
    for path in (plain, gz, zp):
        assert_small_model(load_model(path), str(path))
        assert_small_model(load_model(str(path)), str(path))


def test_load_zip_ignores_directory_entries(tmp_path):
    raw = dump(small_obj())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("models/"), b"")
        z.writestr("models/small.model", raw)
    path = tmp_path / "small.zip"
    path.write_bytes(buf.getvalue())
    assert_small_model(load_model(path))


def test_load_accepts_reference_formatting_variants(tmp_path):
    # Compact JSON and ensure_ascii=True escapes are the same model.
    obj = small_obj()
    for i, text in enumerate([json.dumps(obj), json.dumps(obj, ensure_ascii=True, indent=1)]):
        path = tmp_path / f"v{i}.model"
        path.write_text(text, encoding="utf-8")
        assert_small_model(load_model(path))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_model_plain_gz_zip_agree(tmp_path, name):
    path = shared_model(name)
    raw = path.read_bytes()
    plain = load_model(path)
    obj = json.loads(raw)
    assert plain.vocab_size == len(obj) + 3
    assert plain.pieces == [base64.b64decode(k) for k in obj]  # the files list pieces by id
    assert [v[0] for v in obj.values()] == list(range(3, len(obj) + 3))
    assert plain.counts.tolist() == [v[2] for v in obj.values()]
    gz = tmp_path / (name + ".gz")
    gz.write_bytes(gzip.compress(raw, compresslevel=1))
    zp = tmp_path / (name + ".zip")
    zp.write_bytes(zip_bytes({name: raw}))
    for other in (load_model(gz), load_model(zp)):
        assert other.pieces == plain.pieces
        np.testing.assert_array_equal(other.counts, plain.counts)


def test_tokenizer_accepts_path_dict_and_model(tmp_path):
    obj = small_obj()
    path = tmp_path / "small.model"
    path.write_bytes(dump(obj))
    text = "hello world 你好 abc\x00 ab\n\nabc"
    expected = Tokenizer(path, device="cpu").encode(text)
    assert Tokenizer(str(path), device="cpu").encode(text) == expected
    assert Tokenizer(obj, device="cpu").encode(text) == expected
    assert Tokenizer(load_model(path), device="cpu").encode(text) == expected
    vocab = naive.Vocab((base64.b64decode(k), v[2], v[0]) for k, v in obj.items())
    assert expected == naive.encode(text, vocab)


def test_default_model_is_bytepiece_plus_40k(plus40k_path):
    bundled = resources.files("gpu_bytepiece.data").joinpath(DEFAULT_MODEL_NAME)
    # The bundled file is the published model, byte for byte, gzipped.
    assert gzip.decompress(bundled.read_bytes()) == plus40k_path.read_bytes()
    default = load_model()
    shared = load_model(plus40k_path)
    assert default.pieces == shared.pieces
    np.testing.assert_array_equal(default.counts, shared.counts)
    tok = Tokenizer(device="cpu")
    assert tok.vocab_size == shared.vocab_size == 39840 + 3
    assert tok.model.pieces == shared.pieces
    text = "默认模型 is bytepiece.plus.40k\n"
    assert tok.encode(text) == Tokenizer(plus40k_path, device="cpu").encode(text)


def test_scores_are_log_count_minus_log_total(model_path):
    m = load_model(model_path)
    scores = m.scores()
    assert scores.dtype == np.float64
    assert scores.shape == (m.vocab_size,)
    assert np.all(np.isneginf(scores[:3]))
    vocab = naive.load_vocab(str(model_path))
    np.testing.assert_array_equal(scores[3:], [vocab.score[p] for p in m.pieces])


@pytest.mark.reference
def test_scores_equal_reference_automaton(model_path):
    # Bit-equal to the scores the reference stores in its automaton.
    ref = reference_tokenizer(model_path)
    m = load_model(model_path)
    ref_scores = []
    for p in m.pieces:
        length, v = ref._automaton.get(p)
        assert length == len(p)
        ref_scores.append(v)
    np.testing.assert_array_equal(m.scores()[3:], np.array(ref_scores, dtype=np.float64))


# ------------------------------------------------------------------ saving


def reference_dump_text(pieces: list, counts) -> str:
    """What the reference ``Trainer.save`` writes for these pieces."""
    from bytepiece.bytepiece import Trainer

    return json.dumps(Trainer().dump(dict(zip(pieces, [int(c) for c in counts]))), indent=4, ensure_ascii=False)


def test_save_small_model_as_reference_trainer(tmp_path):
    pytest.importorskip("bytepiece")
    m = load_model(_write(tmp_path, dump(small_obj())))
    out = tmp_path / "saved.model"
    save_model(m, out)
    text = out.read_bytes().decode("utf-8")
    assert text == reference_dump_text(m.pieces, m.counts)
    assert json.loads(text) == small_obj()
    # The printable text field drops bytes that are not UTF-8, as the reference does.
    assert json.loads(text)[base64.b64encode(b"\xe4\xbd").decode()][1] == ""
    assert_small_model(load_model(out), str(out))
    assert not list(tmp_path.glob("*.tmp"))


def test_save_gz_round_trips(tmp_path):
    m = load_model(_write(tmp_path, dump(small_obj())))
    out = tmp_path / "saved.model.gz"
    Tokenizer(m, device="cpu").save(out)
    raw = out.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == dump(small_obj())
    assert_small_model(load_model(out), str(out))


def test_save_overwrites(tmp_path):
    out = tmp_path / "saved.model"
    out.write_bytes(b"old contents")
    save_model(load_model(_write(tmp_path, dump(small_obj()))), out)
    assert_small_model(load_model(out))


def test_save_real_model_reproduces_the_file(tmp_path, model_path):
    # Both published files are exactly what Trainer.save writes; so must ours be.
    m = load_model(model_path)
    out = tmp_path / "saved.model"
    Tokenizer(m, device="cpu").save(out)
    assert out.read_bytes() == model_path.read_bytes()
    again = load_model(out)
    assert again.pieces == m.pieces
    np.testing.assert_array_equal(again.counts, m.counts)


@pytest.mark.reference
def test_real_model_file_is_reference_trainer_dump(model_path):
    m = load_model(model_path)
    assert model_path.read_bytes().decode("utf-8") == reference_dump_text(m.pieces, m.counts)


@pytest.mark.reference
def test_reference_reads_our_saved_model(tmp_path):
    import bytepiece

    m = load_model(_write(tmp_path, dump(small_obj())))
    out = tmp_path / "saved.model"
    save_model(m, out)
    ref = bytepiece.Tokenizer(str(out))
    ours = Tokenizer(out, device="cpu")
    assert ref.vocab_size == ours.vocab_size
    for text in ["hello world", "abcabc\n\n你好你\n", "a\x00b\x00", ""]:
        assert ours.encode(text, add_bos=True, add_eos=True) == ref.encode(text, add_bos=True, add_eos=True)


# -------------------------------------------------------------- bad files


def _write(tmp_path, data: bytes, name: str = "m.model"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _obj_with(edit) -> bytes:
    obj = small_obj()
    edit(obj)
    return dump(obj)


def _key(p: bytes) -> str:
    return base64.b64encode(p).decode()


def _set_field(piece: bytes, field: int, value):
    def edit(obj):
        obj[_key(piece)][field] = value

    return edit


def _set_value(piece: bytes, value):
    def edit(obj):
        obj[_key(piece)] = value

    return edit


def _add(key: str, value_of_n):
    def edit(obj):
        obj[key] = value_of_n(len(obj))

    return edit


def _drop_bytes(values):
    pieces = small_pieces()
    for b in values:
        del pieces[bytes([b])]
    return dump(small_obj(pieces))


def _dup_json_key() -> bytes:
    text = dump(small_obj()).decode()
    # A second "YWI=" (b"ab") entry, spelled out in the JSON text itself.
    extra = f'    "{_key(b"ab")}": [\n        {len(small_obj()) + 3},\n        "ab",\n        5\n    ]\n}}'
    return (text[: text.rstrip().rfind("}")].rstrip() + ",\n" + extra).encode()


_GOOD = dump(small_obj())
N_SMALL = len(small_obj())

BAD_FILES = [
    ("not_json", b"{this is not json", r"not valid JSON"),
    ("truncated_json", _GOOD[: len(_GOOD) // 2], r"not valid JSON"),
    ("not_utf8", b'{"YQ==": [3, "\xff", 1]}', r"not UTF-8"),
    ("top_level_list", b"[[3, \"a\", 1]]", r"expected a JSON object.*list"),
    ("top_level_string", b'"YQ=="', r"expected a JSON object.*str"),
    ("top_level_null", b"null", r"expected a JSON object"),
    ("empty_model", b"{}", r"no pieces"),
    ("empty_file", b"", r"not valid JSON"),
    ("bad_base64_chars", _obj_with(_add("@@==", lambda n: [n + 3, "?", 1])), r"'@@==' is not valid base64"),
    ("bad_base64_padding", _obj_with(_add("YWI", lambda n: [n + 3, "ab", 1])), r"'YWI' is not valid base64"),
    ("bad_base64_space", _obj_with(_add("YW Jk", lambda n: [n + 3, "abd", 1])), r"not valid base64"),
    ("empty_piece", _obj_with(_add("", lambda n: [n + 3, "", 1])), r"empty piece"),
    ("duplicate_id", _obj_with(_set_field(b"ab", 0, small_obj()[_key(b"abc")][0])), r"duplicate id"),
    # "YR==" is a non-canonical spelling of b"a": a second key for the same piece.
    ("duplicate_piece", _obj_with(_add("YR==", lambda n: [n + 3, "a", 1])), r"duplicate piece b'a'"),
    ("duplicate_json_key", _dup_json_key(), r"duplicate key 'YWI='"),
    ("missing_one_byte", _drop_bytes([0x41]), r"missing single-byte pieces 0x41\b"),
    ("missing_many_bytes", _drop_bytes(range(0x80, 0x8A)), r"missing single-byte pieces 0x80, 0x81.*and 2 more"),
    ("count_zero", _obj_with(_set_field(b"abc", 2, 0)), r"piece b'abc': count must be > 0, got 0"),
    ("count_negative", _obj_with(_set_field(b"\x07", 2, -3)), r"count must be > 0, got -3"),
    ("count_float", _obj_with(_set_field(b"abc", 2, 2.5)), r"piece b'abc': value must be \[id:int, text, count:int\]"),
    ("count_integral_float", _obj_with(_set_field(b"abc", 2, 2.0)), r"value must be"),
    ("count_string", _obj_with(_set_field(b"abc", 2, "7")), r"value must be"),
    ("count_bool", _obj_with(_set_field(b"abc", 2, True)), r"value must be"),
    ("count_null", _obj_with(_set_field(b"abc", 2, None)), r"value must be"),
    ("id_float", _obj_with(_set_field(b"abc", 0, float(small_obj()[_key(b"abc")][0]))), r"value must be"),
    ("id_string", _obj_with(_set_field(b"abc", 0, str(small_obj()[_key(b"abc")][0]))), r"value must be"),
    ("value_not_list", _obj_with(_set_value(b"abc", 5)), r"value must be"),
    ("value_too_short", _obj_with(_set_value(b"abc", [N_SMALL, 5])), r"value must be"),
    ("value_too_long", _obj_with(_set_value(b"abc", [N_SMALL, "abc", 5, 1])), r"value must be"),
    ("id_reserved_0", _obj_with(_set_field(b"abc", 0, 0)), r"id 0 outside 3\.\.%d" % (N_SMALL + 2)),
    ("id_reserved_2", _obj_with(_set_field(b"abc", 0, 2)), r"id 2 outside"),
    ("id_negative", _obj_with(_set_field(b"abc", 0, -1)), r"id -1 outside"),
    ("id_too_large", _obj_with(_set_field(b"abc", 0, N_SMALL + 3)), r"id %d outside" % (N_SMALL + 3)),
    ("total_overflows", _obj_with(lambda o: (o[_key(b"ab")].__setitem__(2, 2**62), o[_key(b"abc")].__setitem__(2, 2**62))),
     r"overflow"),
]


@pytest.mark.parametrize("name, data, problem", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_model_file(tmp_path, name, data, problem):
    path = _write(tmp_path, data, f"{name}.model")
    with pytest.raises(ModelError, match=problem) as info:
        load_model(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match=problem):
        Tokenizer(path, device="cpu")


def test_model_error_is_value_error():
    assert issubclass(ModelError, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.model"
    with pytest.raises(ModelError, match=r"cannot read") as info:
        load_model(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match=r"cannot read"):
        Tokenizer(str(path), device="cpu")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match=r"cannot read") as info:
        load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_corrupt_gzip(tmp_path):
    for name, data in [
        ("junk.model.gz", b"\x1f\x8b" + b"this is not deflate data" * 4),
        ("truncated.model.gz", gzip.compress(_GOOD)[:200]),
    ]:
        path = _write(tmp_path, data, name)
        with pytest.raises(ModelError, match=r"corrupt gzip") as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_corrupt_zip(tmp_path):
    for name, data in [
        ("junk.zip", b"PK\x03\x04" + b"not a zip archive" * 8),
        ("truncated.zip", zip_bytes({"m.model": _GOOD})[:300]),
    ]:
        path = _write(tmp_path, data, name)
        with pytest.raises(ModelError, match=r"corrupt zip") as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_zip_with_two_files(tmp_path):
    path = _write(tmp_path, zip_bytes({"a.model": _GOOD, "b.model": _GOOD}), "two.zip")
    with pytest.raises(ModelError, match=r"exactly one file, found 2") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_zip_holding_a_bad_model(tmp_path):
    path = _write(tmp_path, zip_bytes({"m.model": b"[1, 2, 3]"}), "bad.zip")
    with pytest.raises(ModelError, match=r"expected a JSON object") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_gzip_holding_a_bad_model(tmp_path):
    path = _write(tmp_path, gzip.compress(_drop_bytes([0xFF])), "bad.model.gz")
    with pytest.raises(ModelError, match=r"missing single-byte pieces 0xFF") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_bad_pieces_dict_names_its_source():
    obj = small_obj()
    obj[_key(b"abc")][2] = 0
    with pytest.raises(ModelError, match=r"^<pieces>: piece b'abc': count must be > 0"):
        Tokenizer(obj, device="cpu")
    # Keys may already be bytes; the same piece under two spellings is a duplicate.
    mixed = dict(small_obj())
    mixed[b"ab"] = [len(mixed) + 3, "ab", 4]
    with pytest.raises(ModelError, match=r"duplicate piece b'ab'"):
        parse_pieces(mixed)
    with pytest.raises(ModelError, match=r"neither base64 text nor bytes"):
        parse_pieces({**small_obj(), 7: [N_SMALL + 3, "", 1]})


def test_bytes_keys_are_accepted():
    pieces = small_pieces()
    obj = {p: [i + 3, "", pieces[p]] for i, p in enumerate(canonical(pieces))}
    assert_small_model(parse_pieces(obj))


def test_model_argument_of_wrong_type():
    with pytest.raises(ModelError, match=r"model must be a path, a pieces dict or None, got int"):
        Tokenizer(5, device="cpu")


def test_load_model_cache_gives_the_parsed_model(monkeypatch, tmp_path):
    from gpu_bytepiece import jit_cache
    from gpu_bytepiece import model as model_mod

    monkeypatch.setitem(jit_cache._state, "dir", tmp_path)
    plain = load_model(None)
    first = load_model(None, cache=True)
    assert list((tmp_path / "models").glob("*.npz"))

    def no_parse(*a, **k):
        raise AssertionError("parsed again: the kept model was not read")

    monkeypatch.setattr(model_mod, "parse_pieces", no_parse)
    again = load_model(None, cache=True)
    for got in (first, again):
        assert got.pieces == plain.pieces and got.counts.dtype == np.int64
        assert np.array_equal(got.counts, plain.counts) and got.source == plain.source
    # the size cap (on the decompressed bytes) still holds for a kept model
    gz = resources.files("gpu_bytepiece.data").joinpath(DEFAULT_MODEL_NAME).read_bytes()
    monkeypatch.delenv("GPU_BYTEPIECE_MAX_MODEL_BYTES", raising=False)
    monkeypatch.setattr(config, "MAX_MODEL_BYTES", len(gz) + 10)
    with pytest.raises(ModelError, match="GPU_BYTEPIECE_MAX_MODEL_BYTES"):
        load_model(None, cache=True)
