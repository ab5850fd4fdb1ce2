"""Issue 12, items 7, 9, 10 and the newcomer's list: hostile inputs and
model files give one clear error (or a counted bad record), never a
traceback, a hang or a run that "succeeds" at nothing."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import shared_model
from gpu_bytepiece.model import ModelError, load_model
from gpu_bytepiece.pipeline.errors import DataError, PipelineError
from gpu_bytepiece.pipeline.runner import EncodeOptions, encode

PLUS = "bytepiece.plus.40k.model"
DEEP = "[" * 100_000 + "]" * 100_000


def run(src, out, **kw):
    opts = EncodeOptions(inputs=[str(src)], output=str(out), format="megatron", model=str(shared_model(PLUS)),
                         device="cpu", workers=1, progress=False, **kw)
    return encode(opts)


@pytest.fixture()
def deep_jsonl(tmp_path):
    src = tmp_path / "deep.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n" + '{"text": "x", "meta": ' + DEEP + "}\n"
                   + json.dumps({"text": "world"}) + "\n")
    return src


# ------------------------------------------------------------------ item 7
def test_a_deeply_nested_line_is_a_counted_bad_record(deep_jsonl, tmp_path):
    """Was: a RecursionError traceback stopped a ``--on-error skip`` job."""
    s = run(deep_jsonl, tmp_path / "o" / "a", on_error="skip")
    assert (s["docs"], s["skipped"]) == (2, {"too_deep": 1})
    assert s["skipped_samples"][0]["line"] == 2
    with pytest.raises(DataError, match=r"deep.jsonl:2: too_deep"):
        run(deep_jsonl, tmp_path / "o" / "b")


def test_a_deeply_nested_line_fails_train_with_its_file_and_line(deep_jsonl, tmp_path, capsys):
    from gpu_bytepiece.cli import main

    rc = main(["train", str(deep_jsonl), "-o", str(tmp_path / "m.model"), "--vocab-size", "300"])
    err = capsys.readouterr().err
    assert rc != 0 and "deep.jsonl:2: too_deep" in err and "Traceback" not in err, err


@pytest.mark.parametrize("body", [DEEP, '{"aGk=": ' + DEEP + "}"])
def test_a_deeply_nested_model_is_a_model_error(tmp_path, body):
    path = tmp_path / "deep.model"
    path.write_text(body)
    with pytest.raises(ModelError, match=r"deep.model: not a model: JSON nested deeper"):
        load_model(path)


# ------------------------------------------------------------------ item 9
def test_model_path_must_be_a_regular_file(tmp_path):
    """Was: a FIFO blocked for ever, /dev/zero ate memory."""
    fifo = tmp_path / "fifo.model"
    os.mkfifo(fifo)
    code = ("import sys\nfrom gpu_bytepiece.model import ModelError, load_model\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        load_model(p)\n    except ModelError as e:\n        print(e)\n")
    # apart, with a time limit: the old code blocked for ever on the FIFO
    r = subprocess.run([sys.executable, "-c", code, str(fifo), "/dev/zero", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines() == [f"{p}: cannot read: not a regular file (a model is a .model, .gz or .zip file)"
                                     for p in (fifo, "/dev/zero", tmp_path)], r.stderr[-2000:]


def test_model_decompressed_size_is_capped(tmp_path, monkeypatch):
    """Was: gz/zip bombs decompressed to 2 GiB before failing."""
    from gpu_bytepiece import config

    monkeypatch.setattr(config, "MAX_MODEL_BYTES", 1 << 20)
    gz = tmp_path / "bomb.model.gz"
    gz.write_bytes(gzip.compress(b" " * (8 << 20)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("m.model", b" " * (8 << 20))
    zp = tmp_path / "bomb.zip"
    zp.write_bytes(buf.getvalue())
    for path in (gz, zp):
        with pytest.raises(ModelError, match=r"more than 1,048,576 bytes once decompressed"):
            load_model(path)
    monkeypatch.setenv("GPU_BYTEPIECE_MAX_MODEL_BYTES", str(64 << 20))  # the option to raise it
    with pytest.raises(ModelError, match=r"not valid JSON"):
        load_model(gz)
    assert load_model(shared_model(PLUS)).vocab_size == 39843


# ---------------------------------------------------------------- newcomer
def test_a_job_that_skipped_every_record_fails(tmp_path):
    """Was: a wrong --text-key with --on-error skip exited 0 having encoded 0 documents."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    with pytest.raises(PipelineError, match=r"every record was skipped \(missing_text 5\) \(wrong --text-key\?\)"):
        run(src, tmp_path / "o" / "a", on_error="skip", text_key="body")


def test_encode_alpha_nan_is_a_usage_error(tmp_path, capsys):
    """Was: ``--alpha nan`` gave a TypeError traceback; ``--alpha 1e308`` exited 139."""
    from gpu_bytepiece.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    for bad in ("nan", "inf", "1e400"):
        with pytest.raises(SystemExit) as e:
            main(["encode", str(src), "-o", str(tmp_path / "o"), "--alpha", bad])
        assert e.value.code == 2
        assert f"argument --alpha: '{bad}' is not a finite number" in capsys.readouterr().err


# ------------------------------------------------------- item 9: bounded work
def test_a_tiny_shard_size_is_refused(tmp_path):
    """Was: ``--shard-bytes 1`` on 200 KB planned 218k shards (unfinished after 280 s)."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(50)))
    with pytest.raises(PipelineError, match=r"--shard-bytes 1 is too small for [\d,]+ input bytes: at least 256"):
        run(src, tmp_path / "o" / "a", shard_bytes=1)


def test_a_long_line_is_read_in_linear_time():
    """Was: a line much longer than the range was re-copied for every 64 KB
    read (100 MB: 62 s). Counted in reads, not timed: the reads now double."""
    from gpu_bytepiece.pipeline.streams import iter_line_blocks

    data = b"a\n" + b"x" * (16 << 20) + b"\nb\n"
    pos, reads = 0, []

    def read(n):
        nonlocal pos
        reads.append(n)
        chunk = data[pos:pos + n]
        pos += len(chunk)
        return chunk

    blocks = list(iter_line_blocks(read, 0, 1000))
    assert blocks == [(0, data[:-2])]  # the lines starting in [0, 1000)
    assert len(reads) <= 16, len(reads)  # 16 MiB in 64 KiB steps was 257 reads


# ------------------------------------------------------------------ item 10
def test_model_identity_takes_pieces_of_64_kib_and_more():
    """Was: OverflowError in model_identity for a piece of >= 65,536 bytes."""
    import numpy as np

    from gpu_bytepiece.model import Model
    from gpu_bytepiece.pipeline.runner import model_identity

    import hashlib

    short = Model([b"ab", b"c"], np.array([5, 3]))  # identities of existing jobs are unchanged
    old = hashlib.sha256(b"\x02\x00ab\x01\x00c" + np.array([5, 3], "<i8").tobytes()).hexdigest()
    assert model_identity(short) == old
    ids = {model_identity(Model([b"x" * n], np.array([1]))) for n in (65_534, 65_535, 65_536, 1 << 20)}
    assert len(ids) == 4


def test_corrupt_parquet_is_named(tmp_path):
    """Was: an ArrowInvalid traceback."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["hello"] * 100}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PipelineError, match=r"bad.parquet: not a readable Parquet file"):
        run(bad, tmp_path / "o" / "a")


def test_corrupt_gzip_names_the_file(tmp_path):
    """Was: the worker's error did not name the file."""
    data = gzip.compress("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(2000)).encode())
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(data[:20] + bytes(b ^ 0x55 for b in data[20:200]) + data[200:])
    with pytest.raises(PipelineError, match=r"in.jsonl.gz: cannot read it after"):
        run(src, tmp_path / "o" / "a")


def test_empty_output_prefix_is_refused(tmp_path, monkeypatch):
    """Was: ``-o ""`` wrote .bin/.idx into the current folder."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    for out in ("", "out/", "."):
        with pytest.raises(PipelineError, match=r"names no dataset"):
            run(src, out)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


# ------------------------------------------------------------------ item 11
def test_trainer_refuses_infinite_min_count_at_construction():
    """Was: refused only after all the counting."""
    from gpu_bytepiece import Trainer

    for bad in (float("inf"), float("nan"), -1, True):
        with pytest.raises(ValueError, match=r"min_count must be a finite number >= 0"):
            Trainer(min_count=bad)


def test_train_checks_the_output_path_before_training(tmp_path, capsys, monkeypatch):
    """Was: an unwritable path lost the whole run; ``-o DIR`` left DIR.tmp."""
    import gpu_bytepiece.train.trainer as trainer_mod
    from gpu_bytepiece.cli import main

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer_mod.Trainer, "train", no_training)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\n")
    (tmp_path / "file").write_text("x")
    cases = {str(tmp_path): "is a folder: name the model file",
             str(tmp_path / "nope" / "m.model"): "does not exist; create it first",
             str(tmp_path / "file" / "m.model"): "does not exist; create it first"}
    for out, why in cases.items():
        assert main(["train", str(src), "-o", out, "--vocab-size", "300"]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, err
    assert main(["train", str(src), "-o", str(tmp_path / "m.model"), "--tmp-dir", str(tmp_path / "no")]) == 2
    assert "--tmp-dir" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["file", "in.jsonl"]
