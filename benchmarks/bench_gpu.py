"""GPU throughput of gpu-bytepiece on real text, with the CPU path measured in the same run.

For each model in ../shared/models and each corpus part (zh, en, code):

- **end to end**: ``Tokenizer(path, device="cuda").encode_to_numpy(docs)``,
  Python strs in, host numpy ids out (NFC + packing, segmentation, uploads,
  kernels, downloads, layout), median of ``--repeat``;
- **kernel only**: the same batches through ``CUDABackend.encode_packed``
  with ``profile = True``; CUDA events time the lattice kernel, the scatter
  kernel and the copies; the rest of the call is host work;
- the CPU backend (Numba, all cores) on the same documents, end to end, and
  the GPU/CPU ratio;
- **device input**: the same documents packed (NFC) and uploaded once, then
  ``Tokenizer.encode_device`` (segmentation, lattice and layout on the GPU,
  device arrays out), median of ``--repeat``; ids checked against the host
  path;
- **pipelining**: end to end again with ``config.CUDA_PIPELINE_BYTES`` off
  (one chunk per batch, no copy/kernel overlap), and the ratio;
- parity: GPU ids == CPU ids, best path and seeded sampling (``alpha=0.1,
  seed=7``); any mismatch is printed and the script exits 1.

Then **long lines** (``--long-mb`` of English text joined into lines of
``--line-kb``): end to end with the cooperative long-segment kernel (one
block per segment) and with it off (one thread per segment), the speed-up,
and parity with the CPU.

Figures are MB/s or GB/s of UTF-8 input (10**6 / 10**9 bytes). Without a
usable CUDA GPU the script says why and exits 0: there is nothing to measure.

    python benchmarks/bench_gpu.py                      # both models, all parts, 16 MB each
    python benchmarks/bench_gpu.py --mb 4 --parts en --models bytepiece.plus.40k --no-cpu
    python benchmarks/bench_gpu.py --long-mb 8 --line-kb 4096     # longer lines
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager

import numpy as np


def gpu_or_exit(device: str, allow_simulator: bool = False):
    import os

    from gpu_bytepiece.device import cuda_usable

    if allow_simulator and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "the CUDA SIMULATOR (a smoke test of this script: the figures mean nothing)"
    ok, why = cuda_usable()
    if not ok:
        print(f"bench_gpu: no usable CUDA GPU ({why}); nothing measured.")
        sys.exit(0)
    from numba import cuda

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= len(cuda.gpus):
        print(f"bench_gpu: {device} asked for but there are {len(cuda.gpus)} CUDA device(s); nothing measured.")
        sys.exit(0)
    with cuda.gpus[index]:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        return f"{name}, compute capability {dev.compute_capability[0]}.{dev.compute_capability[1]}"


def kernel_breakdown(tok, docs, batch_bytes):
    """Seconds per phase over all batches (CUDA events; ``host`` is the rest of encode_packed)."""
    from gpu_bytepiece.text import iter_packed

    backend = tok._backend
    total = dict.fromkeys(("host", "h2d", "lattice", "scatter", "d2h", "total"), 0.0)
    backend.profile = True
    try:
        t0 = time.perf_counter()
        batches = list(iter_packed(docs, batch_bytes))
        pack = time.perf_counter() - t0
        for _, data, doc_off in batches:
            backend.encode_packed(data, doc_off, -1.0)
            for k, v in backend.last_timings.items():
                total[k] += v
    finally:
        backend.profile = False
    total["pack"] = pack
    return total


@contextmanager
def patched(mod, **values):
    old = {k: getattr(mod, k) for k in values}
    for k, v in values.items():
        setattr(mod, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(mod, k, v)


def device_input(tok, docs, repeat, host_result):
    """Seconds of ``encode_device`` on already uploaded NFC text, and whether it equals ``host_result``."""
    from numba import cuda

    from gpu_bytepiece.text import pack_texts

    data, offsets = pack_texts(docs)
    d_data, d_off = cuda.to_device(data), cuda.to_device(offsets)
    tok.encode_device(d_data, d_off)  # warm up (compiles the layout kernels)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ids, offs = tok.encode_device(d_data, d_off)  # synchronizes before returning
        times.append(time.perf_counter() - t0)
    same = mismatches((ids.copy_to_host(), offs.copy_to_host()), host_result) == 0
    return float(np.median(times)), same


def long_lines(gpu, cpu, args, batch_bytes, model):
    """Lines of ``--line-kb``: the cooperative long-segment kernel vs one thread per segment."""
    from _common import MB, load_docs, time_runs, utf8_len

    from gpu_bytepiece import config

    text = " ".join(d.replace("\n", " ") for d in load_docs("en", limit_mb=args.long_mb))
    line = max(1, int(args.line_kb * 1000))
    chars = [text[i:i + line] for i in range(0, len(text), line)]
    docs = ["".join(chars[i:i + 2]) for i in range(0, len(chars), 2)]  # two lines per document
    docs = [d[:line] + "\n" + d[line:] for d in docs]
    nbytes = utf8_len(docs)

    def run():
        return gpu.encode_to_numpy(docs, batch_bytes=batch_bytes)

    coop, *_ = time_runs(run, repeat=args.repeat)
    with patched(config, CUDA_LONG_SEGMENT_BYTES=None):
        single, *_ = time_runs(run, repeat=1)
        off = run()
    on = run()
    bad = 0
    line_s = f"long lines ({model}, {len(docs) * 2} lines of ~{args.line_kb:.0f} KB, {nbytes / MB:.1f} MB): " \
             f"block per segment {nbytes / coop / MB:.3g} MB/s, thread per segment {nbytes / single / MB:.3g} MB/s, " \
             f"speed-up {single / coop:.3g}x"
    if not args.no_parity:
        m = mismatches(on, cpu.encode_to_numpy(docs)) + mismatches(off, on)
        line_s += f", mismatched docs {m}"
        if m:
            bad = 1
            print(f"MISMATCH {model} long lines: {m} docs differ")
    print("  " + line_s, flush=True)
    return bad


def mismatches(a, b):
    """Documents whose ids differ between two ``(ids, offsets)`` results."""
    (ia, oa), (ib, ob) = a, b
    if np.array_equal(oa, ob) and np.array_equal(ia, ib):
        return 0
    n = len(oa) - 1
    return sum(1 for i in range(n) if not np.array_equal(ia[oa[i]:oa[i + 1]], ib[ob[i]:ob[i + 1]]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="bytepiece.plus.40k.model,bytepiece_80k.model")
    ap.add_argument("--parts", default="zh,en,code")
    ap.add_argument("--mb", type=float, default=16.0, help="MB of UTF-8 text per part (whole documents)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--batch-mb", type=float, default=None,
                    help="packed batch size in MB (default: config.CUDA_BATCH_BYTES, as Tokenizer on a GPU)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU backend (no ratio)")
    ap.add_argument("--no-parity", action="store_true", help="skip the GPU == CPU check")
    ap.add_argument("--long-mb", type=float, default=4.0, help="MB of long lines (0: skip that part)")
    ap.add_argument("--line-kb", type=float, default=1024.0, help="length of each long line in KB")
    ap.add_argument("--no-device-input", action="store_true", help="skip the device-input measurement")
    ap.add_argument("--allow-simulator", action="store_true",
                    help="under NUMBA_ENABLE_CUDASIM=1, run anyway (checks the script; use a tiny --mb)")
    args = ap.parse_args(argv)

    gpu_name = gpu_or_exit(args.device, args.allow_simulator)

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _common import MB, load_docs, machine_line, model_path, require_shared, time_runs, utf8_len

    from gpu_bytepiece import Tokenizer, config

    require_shared()
    batch_bytes = int(args.batch_mb * MB) if args.batch_mb else config.CUDA_BATCH_BYTES
    print(f"host: {machine_line()}")
    print(f"gpu:  {gpu_name} ({args.device}); batch {batch_bytes / MB:.0f} MB, "
          f"{config.THREADS_PER_BLOCK} threads/block, median of {args.repeat}")
    parts = [p for p in args.parts.split(",") if p]
    bad = 0
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        path = model_path(name)
        gpu = Tokenizer(path, device=args.device, seed=1)
        cpu = None if args.no_cpu and args.no_parity else Tokenizer(path, device="cpu", seed=1)
        t0 = time.perf_counter()
        gpu.encode_to_numpy(["warm up the kernels\n", "编译"], alpha=0.1, seed=1)
        compile_s = time.perf_counter() - t0
        for part in parts:
            docs = load_docs(part, limit_mb=args.mb)
            nbytes = utf8_len(docs)

            def run_gpu():
                return gpu.encode_to_numpy(docs, batch_bytes=batch_bytes)

            e2e, *_ = time_runs(run_gpu, repeat=args.repeat)
            kb = kernel_breakdown(gpu, docs, batch_bytes)
            row = {
                "model": path.name, "part": part, "MB": nbytes / MB,
                "gpu e2e MB/s": nbytes / e2e / MB,
                "lattice GB/s": nbytes / kb["lattice"] / 1e9 if kb["lattice"] > 0 else float("nan"),
                "kernels GB/s": nbytes / (kb["lattice"] + kb["scatter"]) / 1e9 if kb["lattice"] > 0 else float("nan"),
                "h2d ms": kb["h2d"] * 1e3, "d2h ms": kb["d2h"] * 1e3,
                "seg/host ms": kb["host"] * 1e3, "pack ms": kb["pack"] * 1e3,
            }
            with patched(config, CUDA_PIPELINE_BYTES=1 << 62):
                flat, *_ = time_runs(run_gpu, repeat=args.repeat)
            row["no-overlap e2e MB/s"] = nbytes / flat / MB
            row["overlap gain"] = flat / e2e
            if not args.no_device_input:
                dev_s, same = device_input(gpu, docs, args.repeat, run_gpu())
                row["device-in GB/s"] = nbytes / dev_s / 1e9
                if not same:
                    bad += 1
                    print(f"MISMATCH {path.name} {part}: device input gives other ids than host input")
            if not args.no_cpu:
                c_e2e, *_ = time_runs(lambda: cpu.encode_to_numpy(docs, num_threads=-1), repeat=args.repeat)
                row["cpu e2e MB/s"] = nbytes / c_e2e / MB
                row["gpu/cpu"] = c_e2e / e2e
            if not args.no_parity:
                m_best = mismatches(run_gpu(), cpu.encode_to_numpy(docs))
                m_samp = mismatches(gpu.encode_to_numpy(docs, alpha=0.1, seed=7, batch_bytes=batch_bytes),
                                    cpu.encode_to_numpy(docs, alpha=0.1, seed=7))
                row["mismatched docs"] = f"{m_best}/{m_samp} of {len(docs)}"
                if m_best or m_samp:
                    bad += 1
                    print(f"MISMATCH {path.name} {part}: {m_best} docs (best path), {m_samp} docs (alpha=0.1) "
                          f"differ between GPU and CPU")
            rows.append(row)
            print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        print(f"  ({path.name}: first call incl. kernel compilation {compile_s:.1f} s)")
        if args.long_mb > 0:
            bad += long_lines(gpu, cpu, args, batch_bytes, path.name)
    if rows:
        keys = list(rows[0])
        print()
        print("| " + " | ".join(keys) + " |")
        print("|" + " --- |" * len(keys))
        for r in rows:
            print("| " + " | ".join(f"{r.get(k, ''):.3g}" if isinstance(r.get(k), float) else str(r.get(k, ''))
                                    for k in keys) + " |")
        print("\nMB/s and GB/s of UTF-8 input; 'kernels' = lattice + scatter kernels alone (CUDA events); "
              "mismatched docs = best path / sampling.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
