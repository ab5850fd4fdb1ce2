"""``gpu-bytepiece`` command line: ``encode``, ``merge``, ``train``, ``export``.

Each subcommand lives with its feature and registers itself here:
``encode``/``merge`` in :mod:`gpu_bytepiece.pipeline.cli`, ``train`` in
:mod:`gpu_bytepiece.train.cli`, ``export`` in :mod:`gpu_bytepiece.hf_cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, _gc, debug


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-bytepiece",
        description="BytePiece's byte-level Unigram tokenizer, exact and fast, on CPUs and GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"gpu-bytepiece {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (device choice, stages)")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    try:
        from .pipeline.cli import add_subcommands as add_pipeline
    except ImportError:  # pragma: no cover - during development
        add_pipeline = None
    if add_pipeline is not None:
        add_pipeline(sub)
    try:
        from .train.cli import add_subcommands as add_train
    except ImportError:  # pragma: no cover - during development
        add_train = None
    if add_train is not None:
        add_train(sub)
    from .hf_cli import add_subcommands as add_hf  # issue 10: gpu-bytepiece export

    add_hf(sub)
    for command in sub.choices.values():  # also taken after the command: `gpu-bytepiece encode ... --debug`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


_DEBUG_HELP = "on an error, also show its traceback (an error is otherwise one line)"


def main(argv=None) -> int:
    _gc.hold()  # released by the job once it has started (see gpu_bytepiece._gc)
    try:  # a SIGINT anywhere (importing, loading the compiled code, running): one line, 130
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(message)s")
        debug.enable(args.debug)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        debug.debug_traceback()
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _gc.release()


def run() -> None:
    """The ``gpu-bytepiece`` program: :func:`main`, then exit without the final collection."""
    _gc.hold(freeze=True)
    try:
        rc = main()
    finally:
        _gc.finish()
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    run()
