"""``gpu-bytepiece train``: train a BytePiece model from files, streamed.

The documents come from :class:`gpu_bytepiece.pipeline.InputTexts`: ``train``
finds and reads its inputs exactly as ``encode`` does (files, directories,
globs, compressions, ``--text-key``, ``--input-format``, ``--split-lines``,
``--on-error``) and reports bad records with the same errors.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..debug import debug_traceback
from ..sizes import size_option


__all__ = ["add_subcommands", "run_train"]

_EPILOG = """\
inputs (streamed, never loaded whole; read twice, once per counting pass),
found and read exactly as `gpu-bytepiece encode` does:
  FILE.txt       one document per file (or per line with --split-lines); a
                 big file is read in fragments cut after runs of newlines,
                 which gives the same training segments as the whole file
  FILE.jsonl     one JSON object per line, the document under --text-key;
                 also .json/.ndjson; blank lines are skipped
  FILE.parquet   the string column --text-key
  DIR, 'GLOB'    every input below a folder / matching a quoted glob
  *.gz *.zst *.bz2 *.xz   compressed text or JSONL

With one --vocab-size the model goes to --output; with several, one model per
size goes to OUTPUT.SIZE (as BytePiece's Trainer.save). The models equal
bytepiece 0.6.3's Trainer on the same documents and parameters.
"""


def add_subcommands(sub) -> None:
    """Register ``train`` on an argparse subparsers object."""
    p = sub.add_parser(
        "train",
        help="train a BytePiece model (exactly bytepiece 0.6.3's Trainer, fast)",
        description="Train a BytePiece model from text, JSONL or Parquet files: an n-gram language "
                    "model segments the text, then Unigram pruning picks the vocabulary.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="input files, folders or quoted globs (see below)")
    p.add_argument("-o", "--output", required=True, help="model path (with several sizes: OUTPUT.SIZE each)")
    p.add_argument("--text-key", default="text", help="JSON field / Parquet column of the text (default: text)")
    p.add_argument("--input-format", choices=("auto", "text", "jsonl", "parquet"), default="auto",
                   help="how to read the inputs (default: from each name)")
    p.add_argument("--split-lines", action="store_true", help="text files: one document per line")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="a bad record stops the run (fail, the default) or is skipped and counted (skip)")
    p.add_argument("--vocab-size", type=int, nargs="+", default=[10000], metavar="N",
                   help="vocabulary size(s), >= 259 (default: 10000)")
    p.add_argument("--order", type=int, default=6, help="n-gram order, 1..7 (default: 6)")
    p.add_argument("--max-piece-length", type=int, default=36, help="longest piece in bytes (default: 36)")
    p.add_argument("--min-count", type=int, default=2, help="prune n-grams and pieces seen fewer times (default: 2)")
    p.add_argument("--isolate-digits", action="store_true", help="every digit is a segment of its own")
    p.add_argument("--no-ensure-unicode", dest="ensure_unicode", action="store_false",
                   help="allow pieces that start inside a UTF-8 character")
    p.add_argument("--workers", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--memory-budget", type=size_option, default=None, metavar="SIZE",
                   help="memory for n-gram and piece count runs before they spill to disk, e.g. 512M, 2G "
                        "(default: 1G)")
    p.add_argument("--tmp-dir", default=None,
                   help="where spills go with --no-work-dir (default: the system temporary folder)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="checkpoints (each finished stage, finished input batches of the corpus passes) and "
                        "spills: a killed run rerun with the same arguments resumes from them and writes the "
                        "same model; removed after the model is saved (default: OUTPUT.work beside the output)")
    p.add_argument("--no-work-dir", dest="work_dir", action="store_const", const="",
                   help="no checkpoints (spills go to --tmp-dir)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again when the work folder holds another training's checkpoints "
                        "(other inputs or parameters) instead of refusing")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="count both corpus passes on a Ray cluster (HOST:PORT, or alone: a local Ray), one "
                        "actor per CPU or GPU; the inputs are read here; same model as without --ray")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


#: ``train`` refuses to start with less free space than this where it spills.
MIN_FREE_TMP_BYTES = 64 << 20


def _check_before_training(args) -> None:
    """Fail before the work, not after it: every model path must be a file
    name in an existing, writable folder, and the spill folder must exist,
    be writable and have ``MIN_FREE_TMP_BYTES`` free."""
    import os
    import shutil
    import tempfile

    sizes = args.vocab_size
    paths = [args.output] if len(sizes) == 1 else [f"{args.output}.{n}" for n in sizes]
    for p in paths:
        folder = os.path.dirname(os.path.abspath(p))
        if not p or os.path.isdir(p):
            raise ValueError(f"-o {p!r} is a folder: name the model file (e.g. {os.path.join(p, 'my.model')})")
        if not os.path.isdir(folder):
            raise ValueError(f"{p}: the folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{p}: cannot write in {folder}")
    tmp = args.tmp_dir or tempfile.gettempdir()
    if not os.path.isdir(tmp) or not os.access(tmp, os.W_OK | os.X_OK):
        raise ValueError(f"--tmp-dir {tmp}: not a writable folder")
    free = shutil.disk_usage(tmp).free
    if free < MIN_FREE_TMP_BYTES:
        raise ValueError(f"--tmp-dir {tmp}: only {free:,} bytes free (training spills count runs there; "
                         f"needs at least {MIN_FREE_TMP_BYTES:,}); free space or pass another --tmp-dir")


def run_train(args) -> int:
    from .. import _gc
    from ..pipeline.documents import InputTexts
    from .checkpoint import WorkDir
    from .trainer import Trainer

    _gc.release()  # startup is over: the training allocates and frees a lot

    try:
        _check_before_training(args)
        texts = InputTexts(args.inputs, text_key=args.text_key, input_format=args.input_format,
                           split_lines=args.split_lines, on_error=args.on_error)
        sizes = args.vocab_size if len(args.vocab_size) > 1 else args.vocab_size[0]
        trainer = Trainer(order=args.order, max_vocab_size=sizes, max_piece_length=args.max_piece_length,
                          min_count=args.min_count, isolate_digits=args.isolate_digits,
                          ensure_unicode=args.ensure_unicode)
        work_dir = f"{args.output}.work" if args.work_dir is None else (args.work_dir or None)
        t0 = time.perf_counter()
        trainer.train(texts, workers=args.workers, device=args.device, memory_budget=args.memory_budget,
                      tmp_dir=args.tmp_dir, progress=not args.quiet, work_dir=work_dir, overwrite=args.overwrite,
                      ray=args.ray)
        paths = trainer.save(args.output)
        if work_dir is not None:
            WorkDir.remove_folder(work_dir)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        debug_traceback()
        print(f"gpu-bytepiece train: error: {e}", file=sys.stderr)
        return 2
    st = trainer.stats
    print(f"trained on {st['n_docs']:,} documents, {st['n_bytes']:,} bytes in {time.perf_counter() - t0:.1f} s "
          f"({st['device']})", file=sys.stderr)
    res = st.get("resumed", {})
    if any(res.values()):
        done = [f"{k} {v}" for k, v in res.items() if v]
        print(f"resumed from {work_dir}: {', '.join(done)} (counted now: "
              f"{', '.join(f'{k} {v} batches' for k, v in st['batches_counted'].items())})", file=sys.stderr)
    for m, path in zip(trainer.models, paths):
        print(f"{path}: {m.vocab_size} ids ({len(m.pieces)} pieces)", file=sys.stderr)
    for note in st["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0
