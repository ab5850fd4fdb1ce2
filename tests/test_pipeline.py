"""The encode pipeline: formats, readers, bad data, parallelism, resume rules.

Every check compares with ``Tokenizer.encode_to_numpy`` on the same real
documents (``../shared/corpus``), exactly.
"""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import corpus_docs
from gpu_bytepiece import Tokenizer
from gpu_bytepiece.pipeline import (DataError, EncodeOptions, JobConflict, PipelineError, encode,
                                    merge_datasets, read_dataset)
from gpu_bytepiece import config
from gpu_bytepiece.pipeline import readers as readers_mod
from gpu_bytepiece.pipeline.inputs import discover_inputs, plan_shards
from gpu_bytepiece.pipeline.streams import iter_line_blocks
from gpu_bytepiece.pipeline.writers import jsonl_lines

FORMATS = ("megatron", "npy", "parquet", "jsonl")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(device="cpu")


@pytest.fixture(scope="module")
def docs():
    """A small real mix: Chinese, English, code; some long, some not NFC-sensitive."""
    return (corpus_docs("zh", 40, every=97) + corpus_docs("en", 12, every=101, max_chars=6000)
            + corpus_docs("code", 12, every=103, max_chars=6000))


def write_jsonl(path, texts, extra=True):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            rec = {"text": t, "id": i, "src": "corpus"} if extra else {"text": t}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return str(path)


def run(inputs, out, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return encode(EncodeOptions(inputs=[str(i) for i in inputs], output=str(out), **kw))


def expected(tok, texts, **kw):
    return tok.encode_to_numpy(texts, **kw)


def assert_same(got, want):
    ids, offsets = got
    np.testing.assert_array_equal(np.asarray(ids).astype(np.int64), want[0].astype(np.int64))
    np.testing.assert_array_equal(offsets, want[1])


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_round_trip(tmp_path, tok, docs, fmt):
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    s = run([src], tmp_path / "out" / "ds", format=fmt, append_eos=True, shard_bytes=40_000, batch_bytes=20_000)
    assert s["docs"] == len(docs) and s["shards"] > 2
    assert_same(read_dataset(str(tmp_path / "out" / "ds"), fmt), expected(tok, docs, add_eos=True))
    assert not os.path.exists(tmp_path / "out" / "ds.shards")  # joined and removed


def read_megatron_independently(prefix):
    """Megatron-LM's MMIDIDX v1, read from its description alone."""
    with open(prefix + ".idx", "rb") as f:
        raw = f.read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, = struct.unpack_from("<Q", raw, 9)
    code, = struct.unpack_from("<B", raw, 17)
    n_seq, n_doc_idx = struct.unpack_from("<QQ", raw, 18)
    pos = 34
    lengths = np.frombuffer(raw, "<i4", n_seq, pos)
    pos += 4 * n_seq
    pointers = np.frombuffer(raw, "<i8", n_seq, pos)
    pos += 8 * n_seq
    doc_idx = np.frombuffer(raw, "<i8", n_doc_idx, pos)
    pos += 8 * n_doc_idx
    assert pos == len(raw), "trailing bytes in .idx"
    dtype = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}[code]
    data = np.fromfile(prefix + ".bin", dtype=dtype)
    return version, np.dtype(dtype), lengths, pointers, doc_idx, data


def test_megatron_layout(tmp_path, tok, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:30])
    run([src], tmp_path / "m", format="megatron", add_bos=True, append_eos=True, shard_bytes=30_000)
    version, dtype, lengths, pointers, doc_idx, data = read_megatron_independently(str(tmp_path / "m"))
    ids, offsets = expected(tok, docs[:30], add_bos=True, add_eos=True)
    assert version == 1 and dtype == np.uint16  # vocab 39,843 < 65,500
    np.testing.assert_array_equal(lengths, np.diff(offsets))
    np.testing.assert_array_equal(pointers, offsets[:-1] * 2)
    np.testing.assert_array_equal(doc_idx, np.arange(31))  # one sequence per document, from 0
    np.testing.assert_array_equal(data, ids)
    for i in range(30):
        seq = data[pointers[i] // 2: pointers[i] // 2 + lengths[i]]
        assert seq[0] == 1 and seq[-1] == 2
        assert tok.decode(seq) == tok.decode(tok.encode(docs[i]))


def test_megatron_int32_for_big_vocab(tmp_path):
    from conftest import shared_model

    model = shared_model("bytepiece_80k.model")
    texts = corpus_docs("en", 5, every=50, max_chars=2000)
    src = write_jsonl(tmp_path / "d.jsonl", texts)
    run([src], tmp_path / "m", format="megatron", model=str(model))
    _, dtype, _, pointers, _, data = read_megatron_independently(str(tmp_path / "m"))
    assert dtype == np.int32
    want = Tokenizer(model, device="cpu").encode_to_numpy(texts)
    np.testing.assert_array_equal(data, want[0].astype(np.int32))
    np.testing.assert_array_equal(pointers, want[1][:-1] * 4)


def test_npy_files_are_plain_numpy(tmp_path, tok, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:10])
    run([src], tmp_path / "o.npy", format="npy")  # the .npy suffix names the format and is dropped
    ids = np.load(tmp_path / "o.ids.npy")
    offsets = np.load(tmp_path / "o.offsets.npy")
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64
    assert_same((ids, offsets), expected(tok, docs[:10]))


def test_parquet_keeps_columns(tmp_path, tok, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:20])
    run([src], tmp_path / "p", format="parquet")
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column_names == ["text", "meta", "ids"]
    assert t.schema.field("ids").type == pa.list_(pa.uint32())
    assert t.column("text").to_pylist() == docs[:20]
    assert [json.loads(m) for m in t.column("meta").to_pylist()] == [{"id": i, "src": "corpus"} for i in range(20)]
    want = tok.encode_batch(docs[:20])
    assert t.column("ids").to_pylist() == want


def test_parquet_input_to_parquet_and_megatron(tmp_path, tok, docs):
    table = pa.table({"doc_id": pa.array(range(len(docs)), pa.int64()), "text": docs,
                      "score": pa.array(np.linspace(0, 1, len(docs)))})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=9)
    run([tmp_path / "in.parquet"], tmp_path / "p", format="parquet", shard_bytes=20_000, batch_bytes=8_000)
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column_names == ["doc_id", "text", "score", "ids"]
    assert t.drop_columns(["ids"]).equals(table)
    assert t.column("ids").to_pylist() == tok.encode_batch(docs)
    run([tmp_path / "in.parquet"], tmp_path / "m", format="megatron", shard_bytes=20_000)
    assert_same(read_dataset(str(tmp_path / "m"), "megatron"), expected(tok, docs))


@pytest.mark.parametrize("fmt", FORMATS)
def test_merge_command_joins_datasets(tmp_path, tok, docs, fmt):
    a = write_jsonl(tmp_path / "a.jsonl", docs[:25])
    b = write_jsonl(tmp_path / "b.jsonl", docs[25:])
    run([a], tmp_path / "da", format=fmt)
    run([b], tmp_path / "db", format=fmt)
    merge_datasets([str(tmp_path / "da"), str(tmp_path / "db")], str(tmp_path / "ab"), fmt)
    run([a, b], tmp_path / "direct", format=fmt)
    assert_same(read_dataset(str(tmp_path / "ab"), fmt), expected(tok, docs))
    if fmt != "parquet":  # (Parquet row groups follow the parts)
        for f in os.listdir(tmp_path):
            if f.startswith("direct.") and "manifest" not in f:
                assert (tmp_path / f).read_bytes() == (tmp_path / f.replace("direct", "ab")).read_bytes()


def test_jsonl_formatter():
    ids = np.array([0, 9, 10, 99, 100, 39842, 7, 4294967295], dtype=np.uint32)
    offsets = np.array([0, 3, 3, 7, 8])
    lines = jsonl_lines(ids, offsets).decode().splitlines()
    assert [json.loads(x)["ids"] for x in lines] == [[0, 9, 10], [], [99, 100, 39842, 7], [4294967295]]
    assert lines[1] == '{"ids":[]}'


# ------------------------------------------------------------------ inputs
def test_text_files_one_document_each(tmp_path, tok, docs):
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    texts = docs[:6]
    for i, t in enumerate(texts):
        (folder / ("sub" if i % 2 else "") / f"{i:02d}.txt").write_text(t, encoding="utf-8")
    (folder / "notes.md").write_text("not an input")
    run([folder], tmp_path / "o", format="npy")
    order = sorted([f"{i:02d}.txt" for i in range(0, 6, 2)]) + sorted([f"sub/{i:02d}.txt" for i in range(1, 6, 2)])
    want = [texts[int(os.path.basename(p)[:2])] for p in order]
    assert_same(read_dataset(str(tmp_path / "o"), "npy"), expected(tok, want))


def test_big_text_file_in_fragments_equals_whole(tmp_path, tok, monkeypatch):
    text = "".join(corpus_docs("en", 6, every=200, max_chars=20000)) + "\n\n\nend without newline"
    p = tmp_path / "big.txt"
    p.write_text(text, encoding="utf-8")
    monkeypatch.setattr(config, "TEXT_FRAGMENT_BYTES", 3000)
    monkeypatch.setattr(config, "READ_BLOCK", 1024)
    for fmt in ("megatron", "jsonl"):
        run([p, p], tmp_path / fmt, format=fmt, add_bos=True, append_eos=True, batch_bytes=5000)
        assert_same(read_dataset(str(tmp_path / fmt), fmt), expected(tok, [text, text], add_bos=True, add_eos=True))


def test_split_lines(tmp_path, tok, docs):
    lines = [ln for d in docs[:8] for ln in d.split("\n")]
    p = tmp_path / "lines.txt"
    p.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    run([p], tmp_path / "o", format="npy", split_lines=True, shard_bytes=5000, batch_bytes=3000)
    assert_same(read_dataset(str(tmp_path / "o"), "npy"), expected(tok, lines))


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".txt.gz"])
def test_compressed_inputs(tmp_path, tok, docs, suffix):
    path = tmp_path / f"in{suffix}"
    if suffix.startswith(".txt"):
        payload = docs[3].encode()
        texts = [docs[3]]
    else:
        payload = "".join(json.dumps({"text": t}) + "\n" for t in docs).encode()
        texts = docs
    codec = "zstd" if suffix.endswith(".zst") else "gzip"
    with pa.CompressedOutputStream(str(path), codec) as f:
        f.write(payload)
    run([path], tmp_path / "o", format="npy", batch_bytes=10_000)
    assert_same(read_dataset(str(tmp_path / "o"), "npy"), expected(tok, texts))


def test_line_blocks_cover_every_line_once():
    data = b"a\n\nbb\nccc\n" * 50 + b"last"
    import io

    lines = data.split(b"\n")
    for step in (1, 3, 7, 40, 1000):
        got = []
        for a in range(0, len(data), step):
            f = io.BytesIO(data)
            f.seek(max(a - 1, 0))
            for off, block in iter_line_blocks(f.read, a, min(a + step, len(data)), block=5):
                got.extend(block.split(b"\n")[:-1] if block.endswith(b"\n") else block.split(b"\n"))
        assert got == lines, step


def test_shard_plan_groups_and_splits(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"text": "x"}\n' * 1000)  # 14,000 bytes
    small = []
    for i in range(5):
        small.append(tmp_path / f"s{i}.jsonl")
        small[-1].write_bytes(b'{"text": "y"}\n' * 10)
    inputs = discover_inputs([str(big)] + [str(s) for s in small])
    shards = plan_shards(inputs, 4000, False)
    assert [s["parts"] for s in shards[:4]] == [[[0, 0, 4000]], [[0, 4000, 8000]], [[0, 8000, 12000]],
                                                  [[0, 12000, 14000]]]
    assert shards[4]["parts"] == [[i, 0, 140] for i in range(1, 6)]  # small files grouped


# ------------------------------------------------------------------ bad data
BAD_LINES = [
    (b'{"text": "good one"}', None),
    (b'{"text": "broken', "malformed_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'{"body": "no text field"}', "missing_text"),
    (b'{"text": null}', "null_text"),
    (b'{"text": 42}', "text_not_string"),
    (b'{"text": "caf\xff"}', "invalid_utf8"),
    (b'{"text": "lone \\ud800 surrogate"}', "lone_surrogate"),
    (b"", None),  # blank: not a document, counted apart
    (b'{"text": "pair \\ud83d\\ude00 is fine"}', None),
    (b'{"text": "good two", "extra": [1]}', None),
    # where the fast parser (orjson) and json differ, json's answer stands
    (b'{"text": NaN}', "text_not_string"),
    (b'\xef\xbb\xbf{"text": "a BOM"}', "malformed_json"),
    (b'{"text": "raw\ttab"}', "malformed_json"),
    (b'{"text": 1, "text": "the last key wins"}', None),
    (b'{"text": "big int elsewhere", "n": 123456789012345678901234567890}', None),
    (b'{"text": "lone surrogate elsewhere", "t": "\\udc80"}', None),
]
GOOD = ["good one", "pair \U0001F600 is fine", "good two", "the last key wins", "big int elsewhere",
        "lone surrogate elsewhere"]


def bad_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b"\n".join(line for line, _ in BAD_LINES) + b"\n")
    return p


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "json-only"])
def test_bad_data_skip_counts_every_reason(tmp_path, tok, monkeypatch, fast):
    from gpu_bytepiece.pipeline import readers

    if not fast:
        monkeypatch.setattr(readers, "_fast_loads", None)
    else:
        assert readers._fast_loads is not None, "orjson (a dependency) is not installed"
    p = bad_file(tmp_path)
    s = run([p], tmp_path / "o", format="jsonl", on_error="skip")
    reasons = [r for _, r in BAD_LINES if r]
    assert s["skipped"] == {r: reasons.count(r) for r in sorted(set(reasons))}
    assert s["blank_lines"] == 1
    assert s["docs"] == len(GOOD)
    assert_same(read_dataset(str(tmp_path / "o"), "jsonl"), expected(tok, GOOD))
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert manifest["totals"]["skipped"] == s["skipped"]
    lines = {d["reason"]: d["line"] for d in manifest["done"]["0"]["samples"]}
    assert lines == {r: i + 1 for i, (_, r) in enumerate(BAD_LINES) if r}


def test_parquet_meta_keeps_odd_fields(tmp_path, tok):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "fine", "title": "lone \\udc80 here", "n": 1.5}\n{"text": "\xe4\xb8\xad", "k": null}\n')
    run([p], tmp_path / "o", format="parquet")
    t = pq.read_table(tmp_path / "o.parquet")
    assert [json.loads(m) for m in t.column("meta").to_pylist()] == [{"title": "lone \udc80 here", "n": 1.5},
                                                                      {"k": None}]
    assert t.column("ids").to_pylist() == tok.encode_batch(["fine", "\u4e2d"])


def test_bad_data_fail_names_file_line_and_reason(tmp_path):
    p = bad_file(tmp_path)
    with pytest.raises(DataError) as e:
        run([p], tmp_path / "o", format="megatron")
    assert e.value.reason == "malformed_json" and e.value.line == 2
    assert str(e.value).startswith(f"{p}:2: malformed_json")
    assert not os.path.exists(tmp_path / "o.bin")


def test_bad_data_fail_in_a_later_shard_gives_the_true_line(tmp_path, tok):
    p = tmp_path / "d.jsonl"
    good = [json.dumps({"text": f"document {i}"}).encode() for i in range(300)]
    p.write_bytes(b"\n".join(good[:250] + [b'{"text": 1}'] + good[250:]) + b"\n")
    with pytest.raises(DataError) as e:
        run([p], tmp_path / "o", format="npy", shard_bytes=2000)
    assert e.value.line == 251 and e.value.reason == "text_not_string"
    # the shards before the bad one are kept; skipping resumes from them
    m = json.loads((tmp_path / "o.manifest.json").read_text())
    assert len(m["done"]) > 0
    s = run([p], tmp_path / "o", format="npy", shard_bytes=2000, on_error="skip")
    assert s["shards_resumed"] == len(m["done"]) and s["skipped"] == {"text_not_string": 1}
    assert_same(read_dataset(str(tmp_path / "o"), "npy"), expected(tok, [f"document {i}" for i in range(300)]))


def test_bad_text_files(tmp_path, tok, monkeypatch):
    (tmp_path / "a.txt").write_bytes("first file\nline two\n".encode())
    (tmp_path / "b.txt").write_bytes(b"ok line\nbad \xc3\x28 byte\n")
    (tmp_path / "c.txt").write_bytes("third\n".encode())
    with pytest.raises(DataError) as e:
        run([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"], tmp_path / "o", format="npy")
    assert (e.value.path.endswith("b.txt"), e.value.line, e.value.reason) == (True, 2, "invalid_utf8")
    s = run([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"], tmp_path / "o2", format="npy",
            on_error="skip")
    assert s["skipped"] == {"invalid_utf8": 1}
    assert_same(read_dataset(str(tmp_path / "o2"), "npy"), expected(tok, ["first file\nline two\n", "third\n"]))
    # split lines: only the bad line goes
    s = run([tmp_path / "b.txt"], tmp_path / "o3", format="npy", split_lines=True, on_error="skip")
    assert s["skipped"] == {"invalid_utf8": 1}
    assert_same(read_dataset(str(tmp_path / "o3"), "npy"), expected(tok, ["ok line"]))


def test_bad_fragment_of_a_big_text_drops_the_whole_document(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(config, "TEXT_FRAGMENT_BYTES", 100)
    monkeypatch.setattr(config, "READ_BLOCK", 64)
    good = "a fine line of text\n" * 40
    (tmp_path / "a.txt").write_text(good)
    (tmp_path / "b.txt").write_bytes(("x" * 30 + "\n").encode() * 20 + b"\xff oops\n" + b"more\n" * 5)
    (tmp_path / "c.txt").write_text(good)
    for fmt in ("megatron", "npy", "jsonl", "parquet"):
        s = run([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"], tmp_path / fmt, format=fmt,
                on_error="skip", batch_bytes=150, append_eos=True)
        assert s["skipped"] == {"invalid_utf8": 1} and s["docs"] == 2
        assert_same(read_dataset(str(tmp_path / fmt), fmt), expected(tok, [good, good], add_eos=True))


def test_bad_parquet_rows(tmp_path, tok):
    data = b"goodbad\xffalso good"
    offsets = np.array([0, 4, 8, 8, 17], dtype=np.int32)
    validity = np.packbits(np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=np.uint8), bitorder="little")
    arr = pa.Array.from_buffers(pa.string(), 4, [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)],
                                null_count=1)
    pq.write_table(pa.table({"text": arr, "n": [0, 1, 2, 3]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError) as e:
        run([tmp_path / "bad.parquet"], tmp_path / "o", format="npy")
    assert (e.value.row, e.value.reason) == (2, "null_text")
    s = run([tmp_path / "bad.parquet"], tmp_path / "o2", format="parquet", on_error="skip")
    assert s["skipped"] == {"invalid_utf8": 1, "null_text": 1}
    t = pq.read_table(tmp_path / "o2.parquet")
    assert t.column("n").to_pylist() == [0, 3]
    assert t.column("ids").to_pylist() == tok.encode_batch(["good", "also good"])


# ------------------------------------------------------------------ job rules
def test_workers_batch_size_and_shards_do_not_change_bytes(tmp_path, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    outs = []
    for i, kw in enumerate([dict(workers=1, batch_bytes=1 << 20), dict(workers=2, batch_bytes=7_000)]):
        for fmt in ("megatron", "parquet"):
            run([src], tmp_path / f"o{i}" / fmt, format=fmt, shard_bytes=30_000, append_eos=True, **kw)
        outs.append({f: (tmp_path / f"o{i}" / f).read_bytes() for f in ("megatron.bin", "megatron.idx",
                                                                        "parquet.parquet")})
    assert outs[0] == outs[1]


def test_sampling_is_reproducible_and_independent_of_batches(tmp_path, tok, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:20])
    a = run([src], tmp_path / "a", format="npy", alpha=0.1, seed=7, batch_bytes=3000)
    b = run([src], tmp_path / "b", format="npy", alpha=0.1, seed=7, batch_bytes=1 << 20)
    assert a["tokens"] == b["tokens"]
    for ext in (".ids.npy", ".offsets.npy"):
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()
    ids, offsets = read_dataset(str(tmp_path / "a"), "npy")
    best = expected(tok, docs[:20])
    assert not np.array_equal(np.asarray(ids), best[0])  # sampled, not the best path
    assert tok.decode_batch((np.asarray(ids), offsets)) == tok.decode_batch(best)  # same text back


def test_rerun_refuses_another_job_unless_overwrite(tmp_path, tok, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:5])
    run([src], tmp_path / "o", format="npy")
    again = run([src], tmp_path / "o", format="npy")
    assert again["already_complete"] and again["docs"] == 5
    with pytest.raises(JobConflict, match="append_eos: False then, True now.*--overwrite"):
        run([src], tmp_path / "o", format="npy", append_eos=True)
    write_jsonl(src, docs[:6])  # the input changed
    with pytest.raises(JobConflict, match="changed"):
        run([src], tmp_path / "o", format="npy")
    run([src], tmp_path / "o", format="npy", append_eos=True, overwrite=True)
    assert_same(read_dataset(str(tmp_path / "o"), "npy"), expected(tok, docs[:6], add_eos=True))


def test_refuses_foreign_files_without_manifest(tmp_path, docs):
    src = write_jsonl(tmp_path / "d.jsonl", docs[:3])
    (tmp_path / "o.bin").write_bytes(b"someone else's")
    with pytest.raises(JobConflict, match="no job manifest"):
        run([src], tmp_path / "o", format="megatron")


def test_missing_input_and_unknown_kind(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        run([tmp_path / "nope.jsonl"], tmp_path / "o")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(PipelineError, match="--input-format"):
        run([tmp_path / "x.csv"], tmp_path / "o")


def test_gzip_corpus_file_directly(tmp_path, tok):
    """A real corpus file, as shipped (.jsonl.gz), first documents only via a copy."""
    from conftest import CORPUS

    src = CORPUS / "zh.jsonl.gz"
    if not src.exists():
        pytest.skip("../shared/corpus is absent")
    texts = corpus_docs("zh", 200)
    p = tmp_path / "zh200.jsonl.gz"
    with gzip.open(src, "rb") as f, gzip.open(p, "wb") as g:
        for _ in range(200):
            g.write(f.readline())
    run([p], tmp_path / "o", format="megatron", append_eos=True)
    assert_same(read_dataset(str(tmp_path / "o"), "megatron"), expected(tok, texts, add_eos=True))


# ------------------------------------------------------------------ fast JSON path
def _json_line():
    """A hypothesis strategy: one JSONL line (bytes), valid or broken in the ways real dumps are."""
    from hypothesis import strategies as st

    from conftest import TRICKY_CHARS

    chars = st.one_of(st.sampled_from(TRICKY_CHARS), st.characters(blacklist_categories=("Cs",)))
    text = st.one_of(st.lists(chars, max_size=20).map("".join),
                     st.sampled_from(["\ud800", "a\udc80b", "\ud83d\ude00"]))
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                       st.floats(allow_nan=True, allow_infinity=True), text)
    value = st.recursive(scalar, lambda v: st.one_of(st.lists(v, max_size=3),
                                                     st.dictionaries(st.text(max_size=4), v, max_size=3)),
                         max_leaves=6)
    key = st.sampled_from(["text", "text", "text", "Text", "body"])
    fields = st.lists(st.tuples(key, st.one_of(text, value)), max_size=4)

    def dump(args):
        pairs, ascii_, how, cut, noise = args
        # written by hand so that a key may repeat, as json.dumps never does
        body = "{" + ", ".join(json.dumps(k) + ": " + json.dumps(v, ensure_ascii=ascii_) for k, v in pairs) + "}"
        raw = body.encode("utf-8", "surrogatepass")
        if how == "truncate":
            raw = raw[: cut % (len(raw) + 1)]
        elif how == "insert":
            p = cut % (len(raw) + 1)
            raw = raw[:p] + noise + raw[p:]
        elif how == "array":
            raw = b"[" + raw + b"]"
        return raw

    how = st.sampled_from(["keep"] * 6 + ["truncate", "insert", "array"])
    noise = st.sampled_from([b"\xff", b"\xef\xbb\xbf", b"\t", b"\x01", b" ", b"\\", b'"', b"NaN", b"\xc3"])
    return st.tuples(fields, st.booleans(), how, st.integers(0, 10 ** 6), noise).map(dump)


def _read_all(path, on_error="skip"):
    inputs = discover_inputs([str(path)])
    shard = plan_shards(inputs, 1 << 40, False)[0]
    stats = readers_mod.ShardStats()
    texts = []
    for batch in readers_mod.iter_shard(inputs, shard, {"text_key": "text", "batch_bytes": 1 << 20},
                                        on_error, stats, want_table=False):
        texts.extend(batch.texts)
    return texts, stats.skipped, stats.blank_lines, [(d["line"], d["reason"]) for d in stats.samples]


def test_fast_json_path_reads_exactly_what_json_reads(tmp_path_factory, monkeypatch):
    """orjson takes the ordinary lines, json the rest: together they must read
    every line as json alone does (texts, skip reasons, line numbers)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from conftest import hypothesis_settings

    assert readers_mod._fast_loads is not None, "orjson (a dependency) is not installed"
    fast = readers_mod._fast_loads

    @hypothesis_settings(max_examples=150)
    @given(st.lists(st.one_of(_json_line(), st.sampled_from([b"", b"  ", b"\t"])), min_size=1, max_size=12))
    def check(lines):
        path = tmp_path_factory.mktemp("j") / "d.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        monkeypatch.setattr(readers_mod, "_fast_loads", fast)
        with_fast = _read_all(path)
        monkeypatch.setattr(readers_mod, "_fast_loads", None)
        json_only = _read_all(path)
        assert with_fast == json_only

    check()


def test_device_strings_read_by_the_one_parser(tmp_path):
    """Local workers and Ray read ``--device`` through gpu_bytepiece.device: a
    bad string fails alike; Ray's ``auto`` follows the cluster's GPUs."""
    from gpu_bytepiece.device import cluster_device

    assert [cluster_device(d, 0) for d in (None, "auto", "cpu", " CPU ")] == ["cpu"] * 4
    assert [cluster_device(d, 2) for d in ("auto", "cpu", "cuda", "cuda:1")] == ["cuda", "cpu", "cuda", "cuda"]
    assert cluster_device("cuda", 0) == "cuda"  # the cluster may add GPU nodes: Ray places the actors
    for bad in ("tpu", "cuda:x", ""):
        with pytest.raises(ValueError):
            cluster_device(bad, 2)
    src = write_jsonl(tmp_path / "d.jsonl", ["a document"])
    with pytest.raises(PipelineError, match=r"--device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        run([src], tmp_path / "o", device="tpu")
