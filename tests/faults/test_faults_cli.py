"""Issue 12, "Messages": one-line user errors (``--debug`` for the
traceback), rates in text bytes, bar totals equal to the summary's, a line
per stage off a terminal, the stdin hint, SIGINT at start-up, ``-o -`` of
nothing but bad records."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from gpu_bytepiece.cli import main
from gpu_bytepiece.pipeline import progress as progress_mod
from gpu_bytepiece.pipeline import runner
from gpu_bytepiece.pipeline.cli import _fmt_bytes
from gpu_bytepiece.pipeline.runner import EncodeOptions, encode

SAMPLE = str(resources.files("gpu_bytepiece.data").joinpath("sample.jsonl"))
ROOT = Path(__file__).resolve().parents[2]


def cli(*args) -> int:
    return main([str(a) for a in args])


def gb(*args, timeout=180, **kw):
    """The real program in a child process (stderr a pipe: not a terminal)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gpu_bytepiece.cli", *map(str, args)], capture_output=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module", autouse=True)
def _compiled(tmp_path_factory):
    """The tokenizer compiled (and cached) before the tests read stderr: on a
    cold cache the first run's "compiling ... (first run only)" line comes first."""
    assert cli("encode", SAMPLE, "-o", tmp_path_factory.mktemp("warm") / "w", "--device", "cpu", "--no-progress") == 0


def sample_texts() -> list:
    with open(SAMPLE, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


# ------------------------------------------------------------------ item 1: --debug
def test_a_bad_record_is_one_line_naming_file_line_and_fix(tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": 1}\n')
    assert cli("encode", p, "-o", tmp_path / "o", "--device", "cpu", "--workers", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # was two lines
    assert f"{p}:2: text_not_string" in err[0] and "--on-error skip" in err[0]


def test_debug_shows_the_traceback_and_only_then(tmp_path):
    missing = tmp_path / "missing.jsonl"
    r = gb("encode", missing, "-o", tmp_path / "o")
    err = r.stderr.decode()
    assert r.returncode == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(missing) in err
    for argv in (["--debug", "encode", missing, "-o", tmp_path / "o"],
                 ["encode", missing, "-o", tmp_path / "o", "--debug"]):
        r = gb(*argv)
        err = r.stderr.decode()
        assert r.returncode == 1 and "Traceback (most recent call last)" in err, err
        assert err.strip().splitlines()[-1].startswith("gpu-bytepiece encode: ") and str(missing) in err


def test_an_unwritable_summary_json_is_one_line(tmp_path, capsys):
    rc = cli("encode", SAMPLE, "-o", tmp_path / "o", "--device", "cpu", "--workers", "1",
             "--summary-json", tmp_path / "no" / "such" / "dir" / "s.json")
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "s.json" in err.strip().splitlines()[-1], err


# ------------------------------------------------------------------ item 2: rates in text bytes
def test_the_summary_of_a_gz_input_counts_text_bytes(tmp_path, capsys):
    texts = sample_texts()
    gz = tmp_path / "s.jsonl.gz"
    gz.write_bytes(gzip.compress(Path(SAMPLE).read_bytes()))
    assert cli("encode", gz, "-o", tmp_path / "o", "--device", "cpu", "--workers", "1",
               "--summary-json", tmp_path / "s.json") == 0
    err = capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    text_bytes = sum(len(t.encode()) for t in texts)
    assert s["text_bytes"] == text_bytes and s["input_bytes"] == gz.stat().st_size
    assert f"from {_fmt_bytes(text_bytes)} of text" in err
    assert "/s of text," in err and "/s of input" not in err, err  # was: compressed bytes per second
    assert f"read {_fmt_bytes(gz.stat().st_size)} of input files" in err


# ------------------------------------------------------------------ item 3: bar totals
@pytest.mark.parametrize("kind", ["jsonl", "text", "resumed"])
def test_the_bar_ends_on_the_summarys_totals(tmp_path, monkeypatch, kind):
    bars = []

    class Spy(progress_mod.Progress):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            bars.append(self)

    monkeypatch.setattr(runner, "Progress", Spy)
    if kind == "resumed":  # a rerun whose shards an earlier run finished: the bar starts at them
        src, extra = SAMPLE, dict(shard_bytes=4096, format="npy")
        encode(EncodeOptions(inputs=[src], output=str(tmp_path / "o"), device="cpu", workers=1, progress=False,
                             keep_shards=True, **extra))
        manifest = tmp_path / "o.manifest.json"
        m = json.loads(manifest.read_text())
        m["complete"] = False
        del m["done"]["1"]
        manifest.write_text(json.dumps(m))
    elif kind == "jsonl":
        src, extra = SAMPLE, dict(shard_bytes=4096)
    else:  # one document per file: the writer's close ends it
        src = tmp_path / "doc.txt"
        src.write_text("\n".join(sample_texts()[:3]), encoding="utf-8")
        extra = {}
    opts = EncodeOptions(inputs=[str(src)], output=str(tmp_path / "o"), device="cpu", workers=1,
                         progress=True, **extra)
    s = encode(opts)
    bar = bars[-1]
    assert s["shards_resumed"] == (s["shards"] - 1 if kind == "resumed" else 0)
    assert (bar.docs, bar.tokens) == (s["docs"], s["tokens"]) and s["docs"] >= 1
    assert bar.bytes == bar.total == s["input_bytes"] == os.path.getsize(src)
    assert bar.bar.n == bar.total  # what tqdm shows at 100%


# ------------------------------------------------------------------ item 4: off a terminal
def test_off_a_terminal_a_plain_line_per_stage(tmp_path):
    r = gb("encode", SAMPLE, "-o", tmp_path / "o", "--device", "cpu", "--workers", "1")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "\r" not in err and "█" not in err and "|" not in err, err
    lines = err.splitlines()
    n = len(sample_texts())
    assert any(x.startswith("encode: ") and f"{n} documents" in x for x in lines), err
    assert any(x.startswith("join: ") for x in lines), err
    assert f"encoded {n} documents:" in err
    r = gb("encode", SAMPLE, "-o", tmp_path / "p", "--device", "cpu", "--workers", "1", "--no-progress")
    assert not any(x.startswith(("encode: ", "join: ")) for x in r.stderr.decode().splitlines())


# ------------------------------------------------------------------ item 5: stdin hint
def test_stdin_of_many_lines_as_one_document_hints_split_lines(tmp_path):
    hint = "pass --split-lines"
    r = gb("encode", "-", "-o", "-", "--device", "cpu", input="第一行\nsecond line\nthird\n".encode())
    err = r.stderr.decode()
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, err
    notes = [x for x in err.splitlines() if hint in x]
    assert len(notes) == 1 and "3 line breaks" in notes[0], err
    r = gb("encode", "-", "-o", "-", "--device", "cpu", "--split-lines", input=b"one\ntwo\nthree\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and hint not in r.stderr.decode()
    r = gb("encode", "-", "-o", "-", "--device", "cpu", input=b"one line\n")
    assert r.returncode == 0 and hint not in r.stderr.decode()


# ------------------------------------------------------------------ item 6: SIGINT at start-up
#: Runs the program after arranging a SIGINT to itself at a chosen moment of
#: its start-up: while importing NumPy (the command line's first heavy
#: import), or inside Numba's loading of the cached compiled code (a compile
#: when the cache is cold).
_INTERRUPTED_RUN = """
import os, signal, sys
point = sys.argv.pop(1)
if point == "import":
    class Hook:
        def find_spec(self, name, path=None, target=None):
            if name == "numpy":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, Hook())
else:
    from numba.core import caching
    load = caching.Cache._load_overload  # what Numba's load_overload and jit_cache's both call
    def interrupted_load(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return load(self, *a, **kw)
    caching.Cache._load_overload = interrupted_load
sys.argv[0] = "gpu-bytepiece"
from gpu_bytepiece.cli import run
run()
"""


@pytest.mark.parametrize("point", ["import", "numba"])
def test_sigint_at_start_up_is_one_line_and_130(tmp_path, point):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if point == "numba":
        env["GPU_BYTEPIECE_AOT"] = "0"  # a small input would run the ahead-of-time module: no Numba load
    r = subprocess.run([sys.executable, "-c", _INTERRUPTED_RUN, point, "encode", SAMPLE, "-o", tmp_path / "o",
                        "--device", "cpu", "--workers", "1"], capture_output=True, timeout=180, env=env)
    err = r.stderr.decode()
    assert (r.returncode, err.strip().splitlines()) == (130, ["interrupted"]), err


# ------------------------------------------------------------------ item 8: -o - of bad records only
def test_stdout_output_of_only_skipped_records_fails(tmp_path, capsys):
    p = tmp_path / "wrong_key.jsonl"
    p.write_text('{"body": "one"}\n{"body": "two"}\n', encoding="utf-8")
    rc = cli("encode", p, "-o", "-", "--device", "cpu", "--on-error", "skip")
    err = capsys.readouterr().err
    assert rc == 1 and "every record was skipped (missing_text 2) (wrong --text-key?)" in err, err
    assert f"{p}:1: missing_text" in err


# ------------------------------------------------------------------ item 7: record size cap
def _bomb(tmp_path) -> Path:
    """A small .gz whose second line (a JSON object) decompresses to 3 MiB."""
    p = tmp_path / "bomb.jsonl.gz"
    body = b'{"text": "ok"}\n{"text": "' + b"a" * (3 << 20) + b'"}\n{"text": "after"}\n'
    p.write_bytes(gzip.compress(body, 9))
    assert p.stat().st_size < 10_000
    return p


def test_a_line_over_the_cap_is_a_counted_bad_record(tmp_path, monkeypatch):
    from gpu_bytepiece import Tokenizer, config
    from gpu_bytepiece.pipeline import read_dataset, streams

    reads = []
    real = streams.Source.read
    monkeypatch.setattr(streams.Source, "read", lambda self, n: reads.append(n) or real(self, n))
    monkeypatch.setattr(config, "READ_BLOCK", 1 << 16)
    bomb = _bomb(tmp_path)
    s = encode(EncodeOptions(inputs=[str(bomb)], output=str(tmp_path / "o"), format="npy", device="cpu",
                             workers=1, progress=False, on_error="skip", max_record_bytes=1 << 16))
    assert (s["docs"], s["skipped"]) == (2, {"too_large": 1})
    assert s["skipped_samples"][0]["line"] == 2 and "3,145,740 bytes" in s["skipped_samples"][0]["detail"]
    tok = Tokenizer(device="cpu")
    assert list(read_dataset(str(tmp_path / "o"), "npy")[0]) == tok.encode("ok") + tok.encode("after")
    assert max(reads) <= 4 << 16  # the line was read past in bounded pieces, never whole
    monkeypatch.setattr(config, "MAX_RECORD_BYTES", 1 << 20)  # the tunable default
    monkeypatch.setattr(config, "READ_BLOCK", 4 << 20)  # the whole line in one block: still too large
    s = encode(EncodeOptions(inputs=[str(bomb)], output=str(tmp_path / "p"), format="npy", device="cpu",
                             workers=1, progress=False, on_error="skip"))
    assert s["skipped"] == {"too_large": 1}


def test_a_line_over_the_cap_fails_with_file_and_line(tmp_path, capsys):
    bomb = _bomb(tmp_path)
    rc = cli("encode", bomb, "-o", tmp_path / "o", "--device", "cpu", "--workers", "1", "--max-record-bytes", "1M")
    err = capsys.readouterr().err
    assert rc == 1 and f"{bomb}:2: too_large" in err and "--max-record-bytes" in err, err
    txt = tmp_path / "lines.txt"
    txt.write_bytes(b"short\n" + b"b" * 5000 + b"\nend\n")
    rc = cli("encode", txt, "-o", tmp_path / "t", "--device", "cpu", "--workers", "1", "--split-lines",
             "--max-record-bytes", "4K", "--on-error", "skip")
    err = capsys.readouterr().err
    assert rc == 0 and "skipped 1 bad records: too_large 1" in err, err


def test_line_blocks_stand_for_each_line_over_the_cap_once_in_any_range():
    import random

    from gpu_bytepiece.pipeline.streams import LongLine, iter_line_blocks

    rng = random.Random(1)
    for _ in range(300):
        lines = [b"x" * rng.choice([0, 1, 5, 30, 100, 300]) for _ in range(rng.randint(1, 30))]
        ended = rng.random() < 0.5  # the last line ends with \n (else an empty last line is no line)
        data = b"\n".join(lines) + b"\n" * ended
        cap, step = rng.choice([10, 50, 200]), rng.choice([7, 50, 200, 10_000])
        got = []
        for a in range(0, len(data), step):
            f = io.BytesIO(data)
            f.seek(max(a - 1, 0))
            for off, d in iter_line_blocks(f.read, a, min(a + step, len(data)), block=rng.choice([16, 64, 1 << 16]),
                                           max_line=cap):
                if type(d) is LongLine:
                    got.append((off, int(d)))
                    continue
                for ln in (d[:-1] if d.endswith(b"\n") else d).split(b"\n"):
                    got.append((off, int(len(ln)) if len(ln) > cap else ln))
                    off += len(ln) + 1
        want, off = [], 0
        for ln in lines if ended or lines[-1] else lines[:-1]:
            want.append((off, len(ln)) if len(ln) > cap else (off, ln))
            off += len(ln) + 1
        assert got == want


# ------------------------------------------------------------------ item 10: --overwrite removes what the manifest lists
def test_overwrite_removes_only_what_the_manifest_lists(tmp_path):
    from gpu_bytepiece.pipeline.errors import JobConflict

    out = tmp_path / "o"
    opts = dict(inputs=[SAMPLE], output=str(out), format="npy", device="cpu", workers=1, progress=False,
                shard_bytes=16 << 10, keep_shards=True)
    encode(EncodeOptions(**opts))
    shards = tmp_path / "o.shards"
    ours = sorted(os.listdir(shards))
    assert "000000.ids.npy" in ours
    stranger = shards / "999999.ids.npy"  # this tool's name pattern, but no job wrote it
    stranger.write_bytes(b"not ours")
    s = encode(EncodeOptions(**dict(opts, overwrite=True, keep_shards=False)))
    assert s["shards_resumed"] == 0 and stranger.read_bytes() == b"not ours"
    assert os.listdir(shards) == ["999999.ids.npy"]  # the job's own shard files are gone (was: every match)
    m = json.loads((tmp_path / "o.manifest.json").read_text())
    m["done"]["0"]["files"] = {"../elsewhere.npy": 1}
    (tmp_path / "o.manifest.json").write_text(json.dumps(m))
    (tmp_path / "elsewhere.npy").write_bytes(b"keep")
    with pytest.raises(JobConflict, match="outside the job's shard folder"):
        encode(EncodeOptions(**dict(opts, overwrite=True)))
    assert (tmp_path / "elsewhere.npy").read_bytes() == b"keep"


def test_an_output_folder_that_cannot_be_made_is_one_line_with_the_fix(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = cli("encode", SAMPLE, "-o", tmp_path / "file" / "sub" / "o", "--device", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and f"{tmp_path / 'file' / 'sub'}: cannot create" in err[0], err
    assert "choose another --output" in err[0] and "Errno" not in err[0]
