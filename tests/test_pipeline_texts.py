"""``iter_texts`` / ``InputTexts``: inputs read as ``str`` documents, exactly as ``encode`` reads them.

What ``gpu-bytepiece train`` reads its inputs with, so that ``train`` and
``encode`` take the same inputs. Real documents from ``../shared/corpus``.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import corpus_docs
from gpu_bytepiece import Tokenizer, config
from gpu_bytepiece.pipeline import DataError, EncodeOptions, InputTexts, PipelineError, encode, iter_texts, read_dataset
from gpu_bytepiece.pipeline.readers import ShardStats


@pytest.fixture(scope="module")
def docs():
    return corpus_docs("zh", 12, every=89) + corpus_docs("en", 6, every=97, max_chars=4000) \
        + corpus_docs("code", 6, every=101, max_chars=4000)


def jsonl_bytes(texts, key="text") -> bytes:
    return "".join(json.dumps({key: t, "n": i}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)).encode()


def test_directory_of_mixed_inputs_reads_as_encode_does(tmp_path, docs):
    """A folder (nested, with a file that is no input): the documents, in
    encode's order; tokenized, they are encode's dataset exactly."""
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(jsonl_bytes(docs[:8]))
    (folder / "b" / "c.txt").write_text(docs[8], encoding="utf-8")
    (folder / "b" / "d.txt").write_text(docs[9], encoding="utf-8")
    pq.write_table(pa.table({"text": docs[10:16]}), folder / "b" / "e.parquet", row_group_size=4)
    (folder / "notes.md").write_text("not an input")
    (folder / ".hidden.txt").write_text("hidden")
    want = docs[:8] + [docs[8], docs[9]] + docs[10:16]
    assert list(iter_texts([folder])) == want
    tok = Tokenizer(device="cpu")
    encode(EncodeOptions(inputs=[str(folder)], output=str(tmp_path / "o"), format="npy", device="cpu",
                         workers=1, progress=False))
    ids, offsets = read_dataset(str(tmp_path / "o"), "npy")
    got = tok.encode_to_numpy(list(iter_texts(str(folder))))
    np.testing.assert_array_equal(np.asarray(ids), got[0])
    np.testing.assert_array_equal(offsets, got[1])


def test_quoted_glob(tmp_path, docs):
    for i in range(3):
        (tmp_path / f"part-{i}.jsonl").write_bytes(jsonl_bytes(docs[4 * i:4 * i + 4]))
    (tmp_path / "other.jsonl").write_bytes(jsonl_bytes(["not matched"]))
    assert list(iter_texts([str(tmp_path / "part-*.jsonl")])) == docs[:12]
    with pytest.raises(PipelineError, match="matches no file"):
        iter_texts([str(tmp_path / "nothing-*.jsonl")])


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_every_compression(tmp_path, docs, suffix):
    """encode's (.gz, .zst, .bz2) and train's (.gz, .bz2, .xz) compressions, for JSONL and text."""
    def write(path, payload):
        if suffix == ".gz":
            path.write_bytes(gzip.compress(payload))
        elif suffix == ".bz2":
            path.write_bytes(bz2.compress(payload))
        elif suffix == ".xz":
            path.write_bytes(lzma.compress(payload))
        else:
            with pa.CompressedOutputStream(str(path), "zstd") as f:
                f.write(payload)

    write(tmp_path / f"d.jsonl{suffix}", jsonl_bytes(docs))
    write(tmp_path / f"t.txt{suffix}", docs[3].encode())
    assert list(iter_texts([tmp_path / f"d.jsonl{suffix}", tmp_path / f"t.txt{suffix}"])) == docs + [docs[3]]


def test_xz_encodes_like_plain(tmp_path, docs):
    """encode takes .xz too (train took it, encode did not)."""
    (tmp_path / "d.jsonl.xz").write_bytes(lzma.compress(jsonl_bytes(docs)))
    s = encode(EncodeOptions(inputs=[str(tmp_path / "d.jsonl.xz")], output=str(tmp_path / "o"), format="npy",
                             device="cpu", workers=1, progress=False, batch_bytes=10_000))
    assert s["docs"] == len(docs)
    ids, offsets = read_dataset(str(tmp_path / "o"), "npy")
    want = Tokenizer(device="cpu").encode_to_numpy(docs)
    np.testing.assert_array_equal(np.asarray(ids), want[0])
    np.testing.assert_array_equal(offsets, want[1])


def test_jsonl_text_key_and_parquet_column(tmp_path, docs):
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes(docs[:5], key="content"))
    pq.write_table(pa.table({"id": list(range(5)), "content": docs[5:10]}), tmp_path / "d.parquet")
    assert list(iter_texts([tmp_path / "d.jsonl", tmp_path / "d.parquet"], text_key="content")) == docs[:10]
    with pytest.raises(DataError) as e:
        list(iter_texts([tmp_path / "d.jsonl"]))
    assert (e.value.line, e.value.reason) == (1, "missing_text")
    with pytest.raises(PipelineError, match="no column 'text'"):
        list(iter_texts([tmp_path / "d.parquet"]))


def test_split_lines(tmp_path, docs):
    lines = [ln for d in docs[:4] for ln in d.split("\n")]
    (tmp_path / "l.txt").write_bytes(("\n".join(lines) + "\n").encode())
    assert list(iter_texts(tmp_path / "l.txt", split_lines=True)) == lines


def test_bad_line_fails_with_file_and_line_or_is_skipped(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "good one"}\n\n{"text": "broken\n{"text": 42}\n{"text": "caf\xff"}\n'
                  b'{"text": "good two"}\n')
    with pytest.raises(DataError) as e:
        list(iter_texts(p))
    assert str(e.value).startswith(f"{p}:3: malformed_json")
    stats = ShardStats()
    assert list(iter_texts(p, on_error="skip", stats=stats)) == ["good one", "good two"]
    assert stats.skipped == {"malformed_json": 1, "text_not_string": 1, "invalid_utf8": 1}
    assert stats.blank_lines == 1
    with pytest.raises(PipelineError, match="on_error"):
        iter_texts(p, on_error="ignore")


def test_missing_input_and_unknown_kind_raise_at_once(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        iter_texts([tmp_path / "nope.jsonl"])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(PipelineError, match="unknown input kind"):
        InputTexts([tmp_path / "x.csv"])


def test_big_text_in_fragments_and_a_bad_one_dropped_whole(tmp_path, monkeypatch):
    """A text file over TEXT_FRAGMENT_BYTES comes in fragments cut after a run
    of newlines (they join to the file); skipping drops a bad file whole."""
    monkeypatch.setattr(config, "TEXT_FRAGMENT_BYTES", 300)
    monkeypatch.setattr(config, "READ_BLOCK", 128)
    text = "".join(corpus_docs("en", 3, every=300, max_chars=1500)) + "\n\n\nend"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(("y" * 50 + "\n").encode() * 20 + b"\xff bad\n")
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    got = list(iter_texts(tmp_path / "a.txt"))
    assert len(got) > 3 and "".join(got) == text
    assert all(a.endswith("\n") and not b.startswith("\n") for a, b in zip(got, got[1:]))  # cut after a run
    paths = [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    with pytest.raises(DataError) as e:
        list(iter_texts(paths))
    assert (e.value.path.endswith("b.txt"), e.value.line, e.value.reason) == (True, 21, "invalid_utf8")
    stats = ShardStats()
    got = list(iter_texts(paths, on_error="skip", stats=stats))
    assert "".join(got) == text + text and stats.skipped == {"invalid_utf8": 1}


def test_input_texts_is_reiterable(tmp_path, docs):
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes(docs[:6]))
    texts = InputTexts(tmp_path / "d.jsonl")
    assert list(texts) == list(texts) == docs[:6]
