"""``gpu-bytepiece encode`` / ``merge`` from the command line.

Uses the bundled ``gpu_bytepiece/data/sample.jsonl`` (real documents from
../shared/corpus), so it runs without ../shared.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from gpu_bytepiece import Tokenizer
from gpu_bytepiece.cli import main
from gpu_bytepiece.pipeline import read_dataset

SAMPLE = str(resources.files("gpu_bytepiece.data").joinpath("sample.jsonl"))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(device="cpu")


@pytest.fixture(scope="module")
def texts():
    with open(SAMPLE, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def cli(*args) -> int:
    return main([str(a) for a in args])


def test_sample_is_a_real_mix(texts):
    assert 40 <= len(texts) <= 100
    size = sum(len(t.encode()) for t in texts)
    assert 30_000 <= size <= 80_000
    assert any("的" in t for t in texts) and any("def " in t for t in texts)


def test_help_lists_formats_and_options(capsys):
    with pytest.raises(SystemExit) as e:
        cli("encode", "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("megatron", "npy", "parquet", "jsonl", "--append-eos", "--workers", "--on-error", "--resume",
                 "--overwrite", "--ray", "--split-lines", "--text-key"):
        assert word in out


def test_encode_jsonl_to_jsonl(tmp_path, tok, texts, capsys):
    assert cli("encode", SAMPLE, "-o", tmp_path / "out.jsonl", "--device", "cpu", "--workers", "1") == 0
    err = capsys.readouterr().err
    assert f"encoded {len(texts)} documents" in err and "bytes/token" in err and "no bad records" in err
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"ids": ids} for ids in tok.encode_batch(texts)]


def test_encode_to_npy_with_eos_and_summary_json(tmp_path, tok, texts):
    assert cli("encode", SAMPLE, "-o", tmp_path / "o", "--format", "npy", "--append-eos", "--device", "cpu",
               "--workers", "1", "--summary-json", tmp_path / "s.json") == 0
    ids, offsets = read_dataset(str(tmp_path / "o"), "npy")
    want = tok.encode_to_numpy(texts, add_eos=True)
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_array_equal(offsets, want[1])
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["docs"] == len(texts) and s["tokens"] == len(want[0])
    assert s["text_bytes"] == sum(len(t.encode()) for t in texts)


def fake_stdin(monkeypatch, data: bytes):
    class In:
        buffer = io.BufferedReader(io.BytesIO(data))

    monkeypatch.setattr(sys, "stdin", In())


def test_stdin_text_and_jsonl_to_stdout(monkeypatch, capfdbinary, tok):
    fake_stdin(monkeypatch, "第一行\nsecond line\n".encode())
    assert cli("-v", "encode", "-", "-o", "-", "--split-lines", "--device", "cpu") == 0
    out = capfdbinary.readouterr().out.decode().splitlines()
    assert [json.loads(x)["ids"] for x in out] == tok.encode_batch(["第一行", "second line"])
    fake_stdin(monkeypatch, b'{"text": "one doc"}\n{"text": "two"}\n')
    assert cli("encode", "-", "-o", "-", "--device", "cpu") == 0  # sniffed as JSONL
    out = capfdbinary.readouterr().out.decode().splitlines()
    assert [json.loads(x)["ids"] for x in out] == tok.encode_batch(["one doc", "two"])


def test_stdin_whole_text_is_one_document(monkeypatch, tmp_path, tok):
    text = "a\n\nb c\n"
    fake_stdin(monkeypatch, text.encode())
    assert cli("encode", "-", "-o", tmp_path / "o.npy", "--device", "cpu") == 0
    ids, offsets = read_dataset(str(tmp_path / "o"), "npy")
    assert list(offsets) == [0, len(tok.encode(text))] and list(ids) == tok.encode(text)
    fake_stdin(monkeypatch, b"other text")  # stdin cannot be checked for changes: a rerun starts over
    assert cli("encode", "-", "-o", tmp_path / "o.npy", "--device", "cpu") == 0
    assert list(read_dataset(str(tmp_path / "o"), "npy")[0]) == tok.encode("other text")


def test_real_pipe_and_progress_bar(tmp_path, tok):
    """A real process reading a pipe; --progress forces the bar on a non-terminal stderr."""
    r = subprocess.run([sys.executable, "-m", "gpu_bytepiece.cli", "encode", "-", "-o", "-", "--device", "cpu",
                        "--progress"], input=b'{"text": "piped text"}\n', capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout) == {"ids": tok.encode("piped text")}
    err = r.stderr.decode()
    assert "encode" in err and "tok/s" in err and "encoded 1 document:" in err and "B/s of text" in err
    r = subprocess.run([sys.executable, "-m", "gpu_bytepiece.cli", "encode", "-", "-o", "-", "--device", "cpu"],
                       input=b"x", capture_output=True, timeout=120)
    assert "tok/s" not in r.stderr.decode()  # no bar when stderr is not a terminal


def test_bad_data_exit_code_and_message(tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": 1}\n')
    assert cli("encode", p, "-o", tmp_path / "o", "--device", "cpu") == 1
    err = capsys.readouterr().err
    assert f"{p}:2: text_not_string" in err and "--on-error skip" in err
    assert cli("encode", p, "-o", tmp_path / "o", "--device", "cpu", "--on-error", "skip") == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad records: text_not_string 1" in err


def test_conflicting_rerun_is_refused(tmp_path, capsys):
    assert cli("encode", SAMPLE, "-o", tmp_path / "o", "--device", "cpu", "--format", "npy") == 0
    assert cli("encode", SAMPLE, "-o", tmp_path / "o", "--device", "cpu", "--format", "npy", "--add-bos") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli("encode", SAMPLE, "-o", tmp_path / "o", "--device", "cpu", "--format", "npy", "--add-bos",
               "--overwrite") == 0
    assert read_dataset(str(tmp_path / "o"), "npy")[0][0] == 1


def test_merge_command(tmp_path, tok, texts, capsys):
    half = len(texts) // 2
    for name, part in (("a", texts[:half]), ("b", texts[half:])):
        with open(tmp_path / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for t in part:
                f.write(json.dumps({"text": t}) + "\n")
        assert cli("encode", tmp_path / f"{name}.jsonl", "-o", tmp_path / f"part-{name}", "--device", "cpu") == 0
    assert cli("merge", str(tmp_path / "part-*.idx"), "-o", tmp_path / "all") == 0
    assert "merged 2 megatron datasets" in capsys.readouterr().err
    ids, offsets = read_dataset(str(tmp_path / "all"), "megatron")
    want = tok.encode_to_numpy(texts)
    np.testing.assert_array_equal(np.asarray(ids), want[0])
    np.testing.assert_array_equal(offsets, want[1])
    assert cli("merge", str(tmp_path / "part-*.idx"), "-o", tmp_path / "all") == 1  # exists


def test_size_arguments():
    from gpu_bytepiece.pipeline.cli import parse_size

    assert parse_size("16M") == 16 << 20 and parse_size("1g") == 1 << 30 and parse_size("4096") == 4096
    assert parse_size("1.5k") == 1536


def test_main_leaves_the_garbage_collector_as_it_found_it(tmp_path):
    """The CLI holds collection off while a job starts (gpu_bytepiece._gc); a
    caller of main() gets it back on, whether the job ran or failed."""
    import gc

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert cli("encode", SAMPLE, "-o", tmp_path / "o.npy", "--device", "cpu", "--workers", "1") == 0
    assert gc.isenabled()
    assert cli("encode", tmp_path / "missing.jsonl", "-o", tmp_path / "p.npy") == 1
    assert gc.isenabled() and gc.get_freeze_count() == frozen  # the caller's objects are never frozen


def test_import_is_light():
    """``import gpu_bytepiece`` loads neither Numba nor the trainer; the names load on use
    (the tokenizer's module without Numba too: its CPU backend imports it on first use)."""
    code = ("import sys, gpu_bytepiece as g; assert 'numba' not in sys.modules, 'numba'; "
            "assert 'gpu_bytepiece.train.trainer' not in sys.modules; "
            "assert g.Tokenizer.__name__ == 'Tokenizer' and 'numba' not in sys.modules; "
            "assert 'gpu_bytepiece.train.trainer' not in sys.modules; assert g.Trainer.__name__ == 'Trainer'; "
            "assert sorted(g.__all__) == sorted(n for n in g.__all__ if hasattr(g, n))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run([sys.executable, "-c", "import gpu_bytepiece as g; g.Nope"], capture_output=True, timeout=120)
    assert r.returncode == 1 and b"has no attribute 'Nope'" in r.stderr
