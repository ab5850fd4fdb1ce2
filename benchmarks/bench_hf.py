"""gpu-bytepiece vs Hugging Face tokenizers on the exported tokenizer.json.

Same model, same text, same ids (checked). Two comparisons:

1. In process, per corpus part, from a Python list of ``str`` to ids:
   ``tokenizers.Tokenizer.from_file(EXPORT/tokenizer.json)`` with
   ``[tok.encode(d) for d in docs]`` (1 thread) and ``encode_batch(docs)``
   (Rayon, every core), vs ``gpu_bytepiece.Tokenizer(model, device="cpu")
   .encode_to_numpy(docs, num_threads=1 / 2)``. Input UTF-8 MB per second,
   median of ``--repeat`` interleaved runs after a warm-up.
2. A tokenizing job on one JSONL file of the three parts (``--job-mb`` MB):
   datatrove's ``JsonlReader`` + ``DocumentTokenizer`` on the exported
   tokenizer.json (one task; its ``encode_batch`` uses every core) vs
   ``gpu-bytepiece encode FILE -o OUT.npy --device cpu``. Each runs in a
   fresh process: wall seconds (including start-up and model loading), MB/s
   and peak resident memory (``ru_maxrss`` of the process and its children);
   both outputs are read back and compared token for token. Skipped with a
   message when datatrove is not installed.

    python benchmarks/bench_hf.py                       # plus.40k, 4 MB per part, 16 MB job
    python benchmarks/bench_hf.py --limit-mb 1 --job-mb 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import MB, PARTS, load_docs, machine_line, model_path, require_shared, time_interleaved, utf8_len

_CHILD_DATATROVE = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
src, tj, out, logs = sys.argv[1:5]
LocalPipelineExecutor(pipeline=[
    JsonlReader(os.path.dirname(src), glob_pattern=os.path.basename(src)),
    DocumentTokenizer(out, tokenizer_name_or_path=tj, save_filename="tokens", shuffle_documents=False),
], tasks=1, workers=1, logging_dir=logs).run()
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": time.perf_counter() - t0, "max_rss_kb": rss}))
"""

_CHILD_GPU_BYTEPIECE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from gpu_bytepiece.cli import main
rc = main(["encode", sys.argv[1], "-o", sys.argv[2], "-m", sys.argv[3], "--device", "cpu", "--no-progress",
           "--overwrite"])
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "max_rss_kb": rss}))
"""


def _child(code, *args):
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _read_datatrove(folder):
    """Flat tokens and document ends of DocumentTokenizer's ``tokens.ds`` (+ ``.index``)."""
    names = [n for n in os.listdir(folder) if n.endswith(".ds")]
    assert len(names) == 1, names
    path = os.path.join(folder, names[0])
    meta = path + ".metadata"
    dtype = np.uint16
    if os.path.exists(meta):
        with open(meta) as f:
            if "token_size=4" in f.read() or os.path.getsize(path) % 2:
                dtype = np.uint32
    ends = np.fromfile(path + ".index", dtype=np.uint64)
    ids = np.fromfile(path, dtype=dtype)
    if len(ends) and ends[-1] != len(ids):  # 4-byte tokens
        ids = np.fromfile(path, dtype=np.uint32)
    return ids.astype(np.uint32), ends


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bytepiece.plus.40k.model")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--limit-mb", type=float, default=4.0, help="MB of each part for comparison 1 (default 4)")
    ap.add_argument("--job-mb", type=float, default=16.0, help="MB of the JSONL job, comparison 2 (default 16; 0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    require_shared()
    import tokenizers

    from gpu_bytepiece import Tokenizer

    path = model_path(args.model)
    tok = Tokenizer(str(path), device="cpu")
    export = tempfile.mkdtemp(prefix="bench_hf_")
    tok.save_pretrained(export)
    tj = os.path.join(export, "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(tj)
    print(f"machine: {machine_line()}; model {path.name}; tokenizers {tokenizers.__version__}")
    print(f"\n## In process, MB/s of UTF-8 input ({args.limit_mb:g} MB per part, median of {args.repeat})\n")
    rows = {k: [] for k in ("tokenizers, encode loop (1 thread)", "tokenizers, encode_batch (all cores)",
                            "gpu-bytepiece, 1 thread", "gpu-bytepiece, 2 threads")}
    for part in args.parts:
        docs = load_docs(part, limit_mb=args.limit_mb)
        mb = utf8_len(docs) / MB
        want = tok.encode_batch(docs)
        if [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)] != want:
            print(f"{part}: tokenizers' ids differ from gpu-bytepiece's")
            return 1
        res = time_interleaved({
            "tokenizers, encode loop (1 thread)": lambda: [hf.encode(d, add_special_tokens=False) for d in docs],
            "tokenizers, encode_batch (all cores)": lambda: hf.encode_batch(docs, add_special_tokens=False),
            "gpu-bytepiece, 1 thread": lambda: tok.encode_to_numpy(docs, num_threads=1),
            "gpu-bytepiece, 2 threads": lambda: tok.encode_to_numpy(docs, num_threads=2),
        }, repeat=args.repeat)
        for name, (median, _) in res.items():
            rows[name].append(mb / median)
    print("| tool | " + " | ".join(args.parts) + " |")
    print("| --- |" + " ---: |" * len(args.parts))
    for name, rates in rows.items():
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")
    print("ids: identical on every document")

    if args.job_mb <= 0:
        return 0
    try:
        import datatrove  # noqa: F401
    except ImportError:
        print("\ndatatrove is not installed (pip install datatrove): job comparison skipped")
        return 0
    work = tempfile.mkdtemp(prefix="bench_hf_job_")
    src = os.path.join(work, "input.jsonl")
    with open(src, "w", encoding="utf-8") as f:
        for part in args.parts:
            for d in load_docs(part, limit_mb=args.job_mb / len(args.parts)):
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    with open(src, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    mb = utf8_len(docs) / MB
    dt = _child(_CHILD_DATATROVE, src, tj, os.path.join(work, "dt"), os.path.join(work, "logs"))
    gb = _child(_CHILD_GPU_BYTEPIECE, src, os.path.join(work, "gb.npy"), path)
    from gpu_bytepiece.pipeline import read_dataset

    ids, offsets = read_dataset(os.path.join(work, "gb"), "npy")
    dt_ids, dt_ends = _read_datatrove(os.path.join(work, "dt"))
    same = np.array_equal(np.asarray(ids, dtype=np.uint32), dt_ids) and np.array_equal(offsets[1:], dt_ends)
    print(f"\n## JSONL job: {len(docs):,} documents, {mb:.1f} MB (fresh process each, start-up included)\n")
    print("| tool | seconds | MB/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in (("datatrove DocumentTokenizer (tokenizers, exported tokenizer.json)", dt),
                    ("gpu-bytepiece encode --device cpu (npy)", gb)):
        print(f"| {name} | {r['seconds']:.1f} | {mb / r['seconds']:.2f} | {r['max_rss_kb'] / 1024:.0f} |")
    print(f"tokens: {len(ids):,}; identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
