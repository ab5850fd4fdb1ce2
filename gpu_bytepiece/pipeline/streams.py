"""Byte streams of inputs: opening one (decompressing), runs of whole lines, fragment cuts.

The readers (:mod:`.readers`) read every input through these, so a
compressed file, a byte range of a big file and standard input look alike.
"""

from __future__ import annotations

import sys
from typing import Iterator

from .. import config
from .inputs import InputFile

__all__ = ["Source", "iter_line_blocks", "count_lines", "fragment_cut"]


class Source:
    """A binary input stream (decompressed) and how far into the file it has read.

    gzip, zstd and bz2 are read by pyarrow; xz by the standard library.
    """

    def __init__(self, inp: InputFile, start: int = 0):
        self.inp = inp
        self.raw = None
        if inp.is_stdin:
            self.stream = sys.stdin.buffer
        elif inp.compression == "xz":
            import lzma

            self.raw = open(inp.path, "rb")
            self.stream = lzma.LZMAFile(self.raw)
        elif inp.compression:
            import pyarrow as pa

            self.raw = pa.OSFile(inp.path, "rb")
            self.stream = pa.CompressedInputStream(self.raw, inp.compression)
        else:
            self.stream = open(inp.path, "rb", buffering=0)
            if start:
                self.stream.seek(start)
        self._last = start

    def consumed(self) -> int:
        """Input-file bytes read since the last call (compressed bytes for compressed files)."""
        if self.inp.is_stdin:
            return 0
        pos = self.raw.tell() if self.raw is not None else self.stream.tell()
        d, self._last = pos - self._last, pos
        return d

    def read(self, n: int) -> bytes:
        return self.stream.read(n)

    def close(self) -> None:
        if not self.inp.is_stdin:
            self.stream.close()
            if self.raw is not None:
                self.raw.close()


def iter_line_blocks(read, start: int, end: int | None, block: int | None = None) -> Iterator:
    """Yield ``(offset, data)``: runs of whole lines of a stream.

    ``read(n)`` reads from file offset ``start - 1`` when ``start > 0`` (the
    byte before the range, to find where lines begin), else from 0. The lines
    yielded are those whose first byte lies in ``[start, end)`` (``end`` None:
    to the end); each ends with ``\\n`` except possibly the file's last. Reads
    at most about ``block`` bytes at a time, and little past ``end``.
    """
    block = config.READ_BLOCK if block is None else block
    small = 1 << 16
    if start > 0:
        off = start - 1
        while True:
            chunk = read(small)
            if not chunk:
                return
            i = chunk.find(b"\n")
            if i >= 0:
                off += i + 1
                buf = chunk[i + 1:]
                break
            off += len(chunk)
    else:
        off, buf = 0, b""
    eof = False
    while True:
        if end is not None and off >= end:
            return
        if end is not None and end - off <= len(buf):
            i = buf.find(b"\n", end - off - 1)
            if i >= 0:  # the last line that starts before `end` is complete
                yield off, buf[:i + 1]
                return
        elif len(buf) >= block:
            j = buf.rfind(b"\n")
            if j >= 0:
                yield off, buf[:j + 1]
                off += j + 1
                buf = buf[j + 1:]
                continue
        if eof:
            if buf:
                yield off, buf
            return
        want = block if end is None else max(small, min(block, end - off - len(buf) + 1))
        chunk = read(want)
        if chunk:
            buf = buf + chunk if buf else chunk
        else:
            eof = True


def count_lines(path: str, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` of a plain file."""
    n = 1
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            chunk = f.read(min(left, 16 << 20))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def fragment_cut(buf: bytes, eof: bool) -> int | None:
    """Where to end the next fragment of a one-document text: after a run of
    ``\\n`` followed by another byte, at or past ``config.TEXT_FRAGMENT_BYTES``;
    the whole buffer at the end of the file; None: need more bytes."""
    size = config.TEXT_FRAGMENT_BYTES
    if len(buf) <= size:
        return len(buf) if eof else None
    i = buf.find(b"\n", size - 1)
    while i >= 0:
        j = i
        while j < len(buf) and buf[j] == 10:
            j += 1
        if j < len(buf):
            return j
        if eof:
            return len(buf)
        return None  # the run of \n may go on in the next block
    return len(buf) if eof else None
