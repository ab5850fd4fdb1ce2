"""``gpu-bytepiece export``: a Hugging Face tokenizer directory from a BytePiece model."""

from __future__ import annotations

import sys

from .debug import debug_traceback

__all__ = ["add_subcommands"]


def add_subcommands(sub) -> None:
    p = sub.add_parser(
        "export", help="write a Hugging Face tokenizer directory (tokenizer.json, ...)",
        description="Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and the BytePiece "
                    "model into DIRECTORY. transformers.AutoTokenizer.from_pretrained(DIRECTORY) and "
                    "tokenizers.Tokenizer.from_file(DIRECTORY/tokenizer.json) then give gpu-bytepiece's ids.")
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="BytePiece model file (default: the bundled bytepiece.plus.40k)")
    p.add_argument("-o", "--output", required=True, metavar="DIRECTORY", help="directory to write (created)")
    p.add_argument("--special-token", dest="special_tokens", action="append", default=[], metavar="TOKEN",
                   help="a special token (e.g. '<|endoftext|>'), ids from the vocabulary size up in the "
                        "order given; repeat for several")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from .model import ModelError
    from .tokenizer import Tokenizer

    try:
        tok = Tokenizer(args.model, special_tokens=args.special_tokens, device="cpu")
    except (ModelError, ValueError) as e:
        debug_traceback()
        print(f"gpu-bytepiece export: {e}", file=sys.stderr)
        return 2
    for path in tok.save_pretrained(args.output):
        print(path)
    return 0
