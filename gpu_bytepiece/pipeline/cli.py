"""``gpu-bytepiece encode`` and ``gpu-bytepiece merge``."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from ..debug import debug_traceback, one_line
from ..files import write_atomic
from .errors import DataError, PipelineError
from ..sizes import size_option
from .formats import FORMATS, strip_suffix

__all__ = ["add_subcommands", "parse_size"]

_ENCODE_EPILOG = """\
inputs:
  FILE.txt           one document per file (newlines kept; BytePiece tokenizes
                     line by line anyway); --split-lines: one per line, without
                     its \\n
  FILE.jsonl         one JSON object per line, text under --text-key; also
                     .json/.ndjson; blank lines are not documents
  FILE.parquet       the string column --text-key
  *.gz *.zst *.bz2 *.xz  compressed text or JSONL, streamed
  DIR, 'GLOB'        every such file inside, sorted by path
  -                  standard input: JSONL if it starts with '{', else text
                     (or --input-format)

outputs (--output PREFIX; a suffix naming the format is dropped):
  megatron  PREFIX.bin + PREFIX.idx: Megatron-LM indexed dataset (MMIDIDX v1),
            one sequence per document, uint16 ids when vocab < 65500 else int32
  npy       PREFIX.ids.npy (uint32, flat) + PREFIX.offsets.npy (int64,
            documents + 1): encode_to_numpy's (ids, offsets)
  parquet   PREFIX.parquet: the input's columns plus ids (list<uint32>); for
            text/JSONL: the text column, 'meta' (the other JSON fields, as
            JSON) and ids
  jsonl     PREFIX.jsonl: {"ids": [...]} per document; --output - streams it

The job keeps PREFIX.manifest.json (inputs, parameters, finished shards) and
PREFIX.shards/ until done. Run the same command again after a crash or kill:
finished shards are kept and the result is byte-identical to an uninterrupted
run, whatever --workers, --device or --batch-bytes. A different job on the
same output is refused unless --overwrite, which deletes only the files the
job's manifest lists (and the dataset). Bad records (malformed JSON, a
missing or non-string text, invalid UTF-8, lone surrogates, JSON nested too
deep, a line over --max-record-bytes) stop the job with file and line
(--on-error fail) or are skipped and counted per reason (--on-error skip);
none is dropped silently. An error is one line (--debug: and its traceback).
"""



#: ``'16M'`` -> 16 MiB; plain digits are bytes (argparse type).
parse_size = size_option


def _alpha_arg(text: str) -> float:
    """argparse type of ``--alpha``: a finite number."""
    import argparse

    from ..checks import check_alpha

    try:
        return check_alpha(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a finite number (< 0: best segmentation, >= 0: sample)") from None


def add_subcommands(sub) -> None:
    """Register ``encode`` and ``merge`` on an argparse subparsers object."""
    enc = sub.add_parser(
        "encode", help="tokenize text, JSONL or Parquet files into Megatron, NumPy, Parquet or JSONL",
        description="Tokenize documents with a BytePiece model into a dataset. Streaming, resumable, "
                    "parallel (processes, GPUs or a Ray cluster).",
        epilog=_ENCODE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    enc.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories, globs, or - for stdin")
    enc.add_argument("-o", "--output", required=True, metavar="PREFIX",
                     help="output prefix (PREFIX.bin/.idx, ...); '-': JSONL to standard output")
    enc.add_argument("-f", "--format", choices=FORMATS, default=None,
                     help="output format (default: from the output's suffix, else megatron; jsonl for -)")
    enc.add_argument("--text-key", default="text", help="JSONL field / Parquet column holding the text (text)")
    enc.add_argument("--input-format", choices=("auto", "text", "jsonl", "parquet"), default="auto",
                     help="how to read the inputs (default: from each file's name; stdin: sniffed)")
    enc.add_argument("--split-lines", action="store_true",
                     help="text files: one document per line (default: one per file)")
    enc.add_argument("-m", "--model", default=None, help="BytePiece model file (default: bundled bytepiece.plus.40k)")
    enc.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    enc.add_argument("-w", "--workers", type=int, default=None,
                     help="worker processes (default: one per CPU core, or one per GPU)")
    enc.add_argument("--threads", type=int, default=None, help="Numba threads per worker (default: cores / workers)")
    enc.add_argument("--batch-bytes", type=parse_size, default=None,
                     help="text tokenized at a time per worker; bounds memory (default 16M)")
    enc.add_argument("--shard-bytes", type=parse_size, default=None,
                     help="input bytes per shard, the unit of resuming and of parallel work (default: "
                          "inputs' size / 64, between 8M and 64M; part of the job)")
    enc.add_argument("--add-bos", action="store_true", help="put <bos> (id 1) before each document")
    enc.add_argument("--append-eos", "--add-eos", dest="append_eos", action="store_true",
                     help="put <eos> (id 2) after each document")
    enc.add_argument("--alpha", type=_alpha_arg, default=-1.0,
                     help="< 0: best segmentation (default); >= 0: sample one (reproducible with --seed)")
    enc.add_argument("--seed", type=int, default=None, help="sampling seed (default: drawn, kept in the manifest)")
    enc.add_argument("--special-token", dest="special_tokens", action="append", default=[], metavar="TOKEN",
                     help="a special token (repeatable), given ids from the model's vocabulary size upwards in "
                          "order, as Tokenizer(special_tokens=...) and the exported tokenizer.json do")
    enc.add_argument("--allowed-special", nargs="+", default=None, metavar="TOKEN",
                     help="which special tokens are matched in the text and written as their ids (default: all "
                          "given with --special-token); the others are encoded as ordinary text")
    enc.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                     help="bad records: stop with file and line (fail, default) or skip and count them")
    enc.add_argument("--max-record-bytes", type=parse_size, default=None, metavar="SIZE",
                     help="a longer line (JSONL, --split-lines text) is a bad record (too_large), read past "
                          "without being kept (default 256M)")
    mode = enc.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="overwrite", action="store_false", default=False,
                      help="continue a job on this output (the default; refused if inputs or parameters differ)")
    mode.add_argument("--overwrite", dest="overwrite", action="store_true", default=False,
                      help="delete whatever this output holds and start over")
    enc.add_argument("--keep-shards", action="store_true", help="keep PREFIX.shards/ after joining them")
    prog = enc.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar even when stderr is not a terminal")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    enc.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                     help="run the shards on a Ray cluster (ADDRESS, or a local one); needs a filesystem "
                          "shared by all nodes for inputs and output")
    enc.add_argument("--summary-json", metavar="FILE", default=None, help="also write the summary as JSON")
    enc.set_defaults(func=run_encode)

    mer = sub.add_parser(
        "merge", help="join datasets (e.g. shard outputs) into one",
        description="Join datasets of one format, in the order given, into one dataset. "
                    "Inputs are prefixes (or any of their files, or globs).")
    mer.add_argument("inputs", nargs="+", metavar="PREFIX")
    mer.add_argument("-o", "--output", required=True, metavar="PREFIX")
    mer.add_argument("-f", "--format", choices=FORMATS, default=None, help="default: detected from the files")
    mer.add_argument("--overwrite", action="store_true", help="replace an existing output")
    mer.add_argument("--allow-duplicates", action="store_true", help="take a dataset given more than once "
                     "(refused by default)")
    mer.set_defaults(func=run_merge)


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_summary(s: dict) -> str:
    secs = max(s["seconds"], 1e-9)
    lines = []
    if s.get("already_complete"):
        lines.append(f"{s['output']}: already complete (nothing to do)")
    lines.append(
        f"encoded {_n(s['docs'], 'document')}: {_n(s['tokens'], 'token')} from {_fmt_bytes(s['text_bytes'])} "
        f"of text ({s['bytes_per_token']:.2f} bytes/token)")
    if not s.get("already_complete"):
        # rates in text bytes (UTF-8 of the documents: decompressed, without JSON), whatever the files
        read = f"; read {_fmt_bytes(s['input_bytes'])} of input files" if s["input_bytes"] else ""
        lines.append(f"time {secs:.1f} s: {_fmt_bytes(s['text_bytes'] / secs)}/s of text, "
                     f"{s['tokens'] / secs:,.0f} tokens/s{read}")
    if s.get("manifest"):
        lines.append(f"shards: {s['shards']} ({s['shards_resumed']} already done, {s['shards_run']} run now)")
    if s.get("blank_lines"):
        lines.append(f"blank lines (no document): {s['blank_lines']:,}")
    skipped = s.get("skipped") or {}
    if skipped:
        n = sum(skipped.values())
        lines.append(f"skipped {n:,} bad records: " + ", ".join(f"{r} {c:,}" for r, c in skipped.items())
                     + (f" (details in {s['manifest']})" if s.get("manifest") else ""))
        for d in s.get("skipped_samples", [])[:3]:
            lines.append(f"  e.g. {DataError.from_dict(d)}")
    else:
        lines.append("no bad records")
    if s["files"] != ["-"]:
        lines.append("wrote " + ", ".join(s["files"]))
    return "\n".join(lines)


def run_encode(args) -> int:
    from ..device import DeviceError
    from ..model import ModelError
    from .runner import EncodeOptions, encode

    opts = EncodeOptions(
        inputs=args.inputs, output=args.output, format=args.format, text_key=args.text_key,
        input_format=args.input_format, split_lines=args.split_lines, model=args.model, device=args.device,
        workers=args.workers, batch_bytes=args.batch_bytes, shard_bytes=args.shard_bytes,
        special_tokens=tuple(args.special_tokens), allowed_special=args.allowed_special or "all",
        add_bos=args.add_bos, append_eos=args.append_eos, alpha=args.alpha, seed=args.seed,
        on_error=args.on_error, overwrite=args.overwrite, keep_shards=args.keep_shards, progress=args.progress,
        ray=args.ray, threads=args.threads, max_record_bytes=args.max_record_bytes)
    try:
        summary = encode(opts)
        print(format_summary(summary), file=sys.stderr)
        if args.summary_json:
            write_atomic(args.summary_json, json.dumps(summary, indent=1).encode())
    except DataError as e:
        debug_traceback()
        fix = "check --text-key, " if e.reason == "missing_text" else ""
        print(f"gpu-bytepiece encode: bad data: {e}; {fix}fix the input, or rerun with --on-error skip to skip "
              "and count bad records (finished shards are kept)", file=sys.stderr)
        return 1
    except (PipelineError, ModelError, DeviceError, OSError) as e:
        debug_traceback()
        print(f"gpu-bytepiece encode: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _prefixes(specs) -> list:
    """Dataset prefixes of the merge's arguments, in order. Several files of
    one dataset (``d.bin d.idx``) name it once; the same argument twice names
    it twice (refused by the merge unless ``--allow-duplicates``)."""
    out, seen = [], set()
    for spec in specs:
        paths = sorted(glob.glob(spec)) if any(c in spec for c in "*?[") and not os.path.exists(spec) else [spec]
        if not paths:
            raise PipelineError(f"{spec}: the pattern matches no file")
        for p in paths:
            prefix = strip_suffix(p)
            if p in seen or prefix not in out:
                out.append(prefix)
            seen.add(p)
    return out


def run_merge(args) -> int:
    from .datasets import merge_datasets
    from .formats import detect_format, infer_format, output_files

    try:
        prefixes = _prefixes(args.inputs)
        fmt = args.format or detect_format(prefixes[0])
        fmt, out = infer_format(args.output, fmt)
        existing = [p for p in output_files(out, fmt) if os.path.exists(p)]
        if existing and not args.overwrite:
            raise PipelineError(f"{existing[0]} exists; use --overwrite to replace it")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        sizes = merge_datasets(prefixes, out, fmt, allow_duplicates=args.allow_duplicates)
    except (PipelineError, OSError) as e:
        debug_traceback()
        print(f"gpu-bytepiece merge: {one_line(e)}", file=sys.stderr)
        return 1
    print(f"merged {len(prefixes)} {fmt} datasets into " + ", ".join(f"{k} ({v:,} bytes)" for k, v in sizes.items()),
          file=sys.stderr)
    return 0
