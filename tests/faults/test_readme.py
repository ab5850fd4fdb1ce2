"""Issue 12 (newcomer's list): the README's Python examples run, and every
output they show in a comment (one starting ``[b'``, ``['`` or ``[0-9``) is
a Python literal equal to what the code gives.

(Was: ``tok.tokenize("BytePiece 分词")  # [b'Byte', b'Piece', ...]``, an
output neither this code nor bytepiece gives.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SHOWN = re.compile(r"^\[(b?['\"]|\d)")
README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_give_the_outputs_they_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (save_pretrained)
    blocks = python_blocks()
    assert blocks, "README.md has no python example"
    checked = 0
    for block in blocks:
        ns = {"texts": ["BytePiece 分词", "hello world"], "text": "hello world"}
        for line in block.splitlines():
            code, _, comment = line.partition("  #")
            if not code.strip():
                continue
            if "ids" not in ns and "tok" in ns:
                ns["ids"] = ns["tok"].encode("BytePiece 分词")
            comment = comment.strip()
            if not SHOWN.match(comment):
                exec(compile(code, "README.md", "exec"), ns)
                continue
            try:
                shown = ast.literal_eval(comment)
            except (ValueError, SyntaxError):
                raise AssertionError(f"README.md shows an output that is not a Python literal: {line}") from None
            assert eval(compile(code.strip(), "README.md", "eval"), ns) == shown, line
            checked += 1
    assert checked >= 1
