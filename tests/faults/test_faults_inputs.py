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
