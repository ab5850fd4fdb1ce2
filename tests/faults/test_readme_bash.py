"""Issue 12 (newcomer's list): the README's shell examples run, offline, on
the bundled model and sample, and print what the README shows.

Each ```bash block is run line by line with bash in a temporary folder
prepared with the files the examples name (the bundled sample as
``data/*.jsonl.gz``, ``big.parquet``, ``docs.txt``, ``corpus/``; the bundled
model as ``path/to/bytepiece.model``; two small datasets ``out/a``,
``out/b``), with this environment's ``gpu-bytepiece`` first on the PATH:

- a block right after ``<!-- not-run: why -->`` is not run (setting up, the
  whole test suite, a Ray cluster);
- ``scripts/setup.sh ... &&`` before a command is dropped (the test
  environment is set up) and ``.venv/bin/gpu-bytepiece`` is this
  environment's;
- a whole-line comment under a command is a line of the output it shows: it
  must appear in what the command printed (stdout or stderr); a comment after
  a command on its line is a note;
- every command must exit 0.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DATA = resources.files("gpu_bytepiece.data")
BLOCK = re.compile(r"(<!--\s*not-run:(.*?)-->\s*)?```bash\n(.*?)```", flags=re.S)


def bash_blocks() -> list:
    """``(why not run or None, text)`` of each ```bash block."""
    return [((m.group(2) or "").strip() if m.group(1) else None, m.group(3))
            for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def commands(block: str) -> list:
    """``(command, [output lines shown])`` of a block."""
    out = []
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            assert out, f"an output line before any command: {line!r}"
            out[-1][1].append(line.lstrip()[1:].strip())
            continue
        cmd = re.sub(r"^scripts/setup\.sh[^&]*&&\s*", "", line.strip())
        cmd = cmd.replace(".venv/bin/gpu-bytepiece", "gpu-bytepiece")
        out.append((cmd, []))
    return out


def prepare(folder: Path) -> None:
    """The files the examples name, made from the bundled sample and model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpu_bytepiece.pipeline.runner import EncodeOptions, encode

    sample = Path(str(DATA.joinpath("sample.jsonl")))
    texts = [json.loads(x)["text"] for x in sample.read_text(encoding="utf-8").splitlines()]
    for sub in ("gpu_bytepiece/data", "path/to", "data", "corpus", "out"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, folder / "gpu_bytepiece/data/sample.jsonl")
    shutil.copy(sample, folder / "corpus/sample.jsonl")
    (folder / "data/sample.jsonl.gz").write_bytes(gzip.compress(sample.read_bytes()))
    (folder / "path/to/bytepiece.model").write_bytes(
        gzip.decompress(Path(str(DATA.joinpath("bytepiece.plus.40k.model.gz"))).read_bytes()))
    pq.write_table(pa.table({"content": texts}), folder / "big.parquet")
    (folder / "docs.txt").write_text("\n".join(t.replace("\n", " ") for t in texts[:5]) + "\n", encoding="utf-8")
    for name, part in (("a", texts[:20]), ("b", texts[20:])):
        src = folder / f"{name}.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in part), encoding="utf-8")
        encode(EncodeOptions(inputs=[str(src)], output=str(folder / "out" / name), format="megatron",
                             device="cpu", workers=1, progress=False))


def test_readme_shell_examples_run_and_print_what_they_show(tmp_path):
    blocks = bash_blocks()
    assert blocks, "README.md has no bash example"
    assert all(why != "" for why, _ in blocks), "a <!-- not-run: --> marker must say why"
    run = [b for why, b in blocks if why is None]
    assert run, "every bash block is marked not-run"
    prepare(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT))
    shown = 0
    for block in run:
        for cmd, outputs in commands(block):
            r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, timeout=300)
            printed = (r.stdout + r.stderr).decode()
            assert r.returncode == 0, f"{cmd}\n{printed}"
            for line in outputs:
                assert line in printed, f"{cmd}: the README shows {line!r}; it printed:\n{printed}"
                shown += 1
    assert shown, "the README shows no output of its shell examples"
