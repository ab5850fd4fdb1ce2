"""First-call time: a fresh install's first process, and the processes after it.

Builds a wheel of this tree (``pip wheel --no-deps``), installs it (not
editable) into a fresh virtual environment in a temporary folder, and times
whole processes of that environment's Python, interpreter start included:

- tokenizer: ``import gpu_bytepiece; Tokenizer(); encode("x")`` (the bundled
  model, CPU);
- trainer: ``Trainer(order=4, max_vocab_size=300, min_count=2).train(texts)``
  on a tiny list of sentences, ``workers=1``, CPU.

The first process of each meets an empty user cache (a fresh install): it
finds the machine code the wheel ships (``setup.py`` compiles every CPU path
while building it, here on this machine; ``--no-precompile`` builds a wheel
without it) or compiles; the next ``--later`` processes find what the first
one cached. The tokenizer runs first, so the trainer's first process
already finds the lattice the tokenizer cached (as a user who tokenized
before training would); without shipped code the trainer's own paths
(n-grams, pieces) are compiled cold there. Every process also prints its own
split (import, model, first call) to stderr, and its wall and CPU time (a
busy machine stretches the wall time far more than the CPU time).

The new environment gets its dependencies (numpy, numba, ...) from the
environment running this script through a ``.pth`` line (no network, and the
same versions); gpu-bytepiece itself comes only from the wheel.
``--read-only`` makes the installed package read-only first: the cache must
then go to the user's cache folder (``~/.cache/gpu-bytepiece``, pointed at a
temporary folder here through ``XDG_CACHE_HOME``).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --read-only --later 3
    python benchmarks/bench_startup.py --no-precompile     # what compiling on first use costs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOKENIZER = r"""
import sys, time
t0 = time.perf_counter()
import gpu_bytepiece
from gpu_bytepiece import Tokenizer
t1 = time.perf_counter()
tok = Tokenizer(device="cpu")
t2 = time.perf_counter()
ids = tok.encode("x")
t3 = time.perf_counter()
assert tok.decode(ids) == "x", ids
print(f"  split: import {t1 - t0:.2f} s, Tokenizer() {t2 - t1:.2f} s, encode {t3 - t2:.2f} s "
      f"({gpu_bytepiece.__file__})", file=sys.stderr)
"""

TRAINER = r"""
import sys, time
t0 = time.perf_counter()
from gpu_bytepiece import Trainer
t1 = time.perf_counter()
texts = [f"line {i}: the quick brown fox jumps over the lazy dog; 你好，世界 {i * 7}" for i in range(200)]
tr = Trainer(order=4, max_vocab_size=300, min_count=2)
tr.train(texts, workers=1, device="cpu", progress=False)
t2 = time.perf_counter()
assert len(tr.models[0].pieces) > 256, len(tr.models[0].pieces)
print(f"  split: import {t1 - t0:.2f} s, train {t2 - t1:.2f} s", file=sys.stderr)
"""


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(py: Path, code: str, env: dict, cwd: Path) -> tuple:
    """(wall, CPU) seconds of one whole process."""
    c0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.run([str(py), "-c", code], env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the timed process failed (exit {proc.returncode})")
    for line in proc.stderr.splitlines():
        print(f"    {line.strip()}")
    print(f"    process: {wall:.2f} s wall, {cpu:.2f} s CPU")
    return wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--later", type=int, default=3, help="processes timed after the first; default 3")
    ap.add_argument("--read-only", action="store_true",
                    help="make the installed package read-only (the cache goes to the user's cache folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    ap.add_argument("--no-precompile", action="store_true",
                    help="build the wheel without compiled code (GPU_BYTEPIECE_PRECOMPILE=0)")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)

    tmp = Path(tempfile.mkdtemp(prefix="gbp-startup-"))
    wheels, venv, home = tmp / "wheels", tmp / "venv", tmp / "home"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    t0 = time.perf_counter()
    build_env = dict(os.environ, GPU_BYTEPIECE_PRECOMPILE="0" if args.no_precompile else "1")
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, stdout=subprocess.DEVNULL, env=build_env)
    wheel = next(wheels.glob("gpu_bytepiece-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(pip + ["--python", str(py), "install", "--no-deps", str(wheel)], check=True)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # dependencies from this environment (a path line: its own .pth files, such as
    # an editable gpu-bytepiece, are not processed)
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if args.read_only:
        subprocess.run(["chmod", "-R", "a-w", str(site / "gpu_bytepiece")], check=True)
    print(f"wheel {wheel.name} built and installed in {time.perf_counter() - t0:.1f} s into {venv}")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "GPU_BYTEPIECE"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONDONTWRITEBYTECODE="",
               CUDA_VISIBLE_DEVICES="")
    home.mkdir()
    # bytecode of the installed package is compiled on the first import, as after a plain pip install
    rows = []
    for name, code in (("tokenizer", TOKENIZER), ("trainer", TRAINER)):
        print(f"{name}: first process")
        first = _run(py, code, env, home)
        later = []
        for i in range(args.later):
            print(f"{name}: later process {i + 1}")
            later.append(_run(py, code, env, home))
        rows.append((name, first, later))

    print(f"\nStartup, whole processes (interpreter start included), wheel install"
          f"{', read-only package' if args.read_only else ''}"
          f"{', no compiled code in the wheel' if args.no_precompile else ''}:\n")
    print("| process | first (cold cache) | later (median; all) | CPU first | CPU later (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, first, later in rows:
        walls = [w for w, _ in later]
        med = statistics.median(walls) if later else float("nan")
        cpu_med = statistics.median(c for _, c in later) if later else float("nan")
        print(f"| {name} | {first[0]:.2f} s | {med:.2f} s ({', '.join(f'{x:.2f}' for x in walls)}) "
              f"| {first[1]:.2f} s | {cpu_med:.2f} s |")
    print("\n(CPU: user + system time of the process; on a busy machine the wall time is"
          " longer, the CPU time much less so)")
    cache = home / ".cache" / "gpu-bytepiece"
    if cache.exists():
        n = sum(1 for _ in cache.rglob("*.nbi"))
        print(f"\nuser cache folder {cache}: {n} cached function index files")
    if args.keep:
        print(f"kept {tmp}")
    else:
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
