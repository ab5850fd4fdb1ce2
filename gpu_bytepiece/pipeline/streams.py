"""Byte streams of inputs: opening one (decompressing), runs of whole lines, fragment cuts.

The readers (:mod:`.readers`) read every input through these, so a
compressed file, a byte range of a big file and standard input look alike.

A :class:`Source` hashes the bytes it reads as it reads them (no extra
pass): :meth:`Source.finish` records ``[path, start, length, blake2b]`` for
the shard's manifest record and checks that the file still has the size and
modification time it had when the job was planned (an input that changes
while the job runs fails the job). :func:`verify_read` re-reads such a
range to check it before a rerun trusts a finished shard.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Iterator

from .. import config
from .errors import PipelineError
from .inputs import InputFile

__all__ = ["Source", "InputChanged", "check_unchanged", "hash_bytes", "verify_read", "iter_line_blocks", "LongLine",
           "count_lines", "fragment_cut"]


class InputChanged(PipelineError):
    """An input file is not the file the job was planned on (or a shard was encoded from)."""


def _new_hash():
    return hashlib.blake2b(digest_size=16)


def check_unchanged(inp: InputFile) -> None:
    """Raise :class:`InputChanged` when ``inp``'s size or modification time differ from the plan's."""
    try:
        st = os.stat(inp.path)
    except OSError as e:
        raise InputChanged(f"{inp.path}: the input went away while the job read it ({e.strerror})") from None
    if st.st_size != inp.size or st.st_mtime_ns != inp.mtime_ns:
        what = (f"size {inp.size:,} -> {st.st_size:,} bytes" if st.st_size != inp.size
                else "modified after the job started")
        raise InputChanged(f"{inp.path}: the input changed while the job read it ({what}); the job stops "
                           "(its dataset would mix two versions): rerun it once the input is final")


def hash_bytes(path: str, start: int, length: int) -> str:
    """blake2b of ``length`` raw bytes of ``path`` from ``start`` (fewer if the file is shorter)."""
    h = _new_hash()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            chunk = f.read(min(left, 8 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def verify_read(inp: InputFile, start: int, length: int, digest: str) -> bool:
    """Whether the ``length`` bytes a reader read from ``start`` (decompressed
    bytes for a compressed input, raw bytes otherwise; see :meth:`Source.finish`)
    still hash to ``digest``."""
    if not inp.compression:
        return hash_bytes(inp.path, start, length) == digest
    src = Source(inp)
    try:
        left = length
        while left > 0:
            chunk = src.read(min(left, 8 << 20))
            if not chunk:
                break
            left -= len(chunk)
        return src._hash.hexdigest() == digest and left == 0
    finally:
        src.close()


class Source:
    """A binary input stream (decompressed) and how far into the file it has read.

    gzip, zstd and bz2 are read by pyarrow; xz by the standard library.
    """

    def __init__(self, inp: InputFile, start: int = 0, reads: list | None = None):
        self.inp = inp
        self.raw = None
        self._start, self._nread, self._hash, self._reads = start, 0, _new_hash(), reads
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
        try:
            data = self.stream.read(n)
        except (OSError, EOFError, ValueError, ImportError) as e:  # corrupt compressed data, I/O error
            raise PipelineError(f"{self.inp.path}: cannot read it after {self._start + self._nread:,} "
                                f"{'decompressed ' if self.inp.compression else ''}bytes: {e}") from None
        except Exception as e:  # lzma.LZMAError
            if type(e).__name__ != "LZMAError":
                raise
            raise PipelineError(f"{self.inp.path}: corrupt xz data after {self._nread:,} bytes: {e}") from None
        self._hash.update(data)
        self._nread += len(data)
        return data

    def finish(self) -> None:
        """Reading went to its end: check the file did not change
        (:func:`check_unchanged`) and append ``[path, start, length, hash]``
        of what was read to ``reads``."""
        if self.inp.is_stdin:
            return
        check_unchanged(self.inp)
        if self._reads is not None:
            self._reads.append([self.inp.path, self._start, self._nread, self._hash.hexdigest()])

    def close(self) -> None:
        if not self.inp.is_stdin:
            self.stream.close()
            if self.raw is not None:
                self.raw.close()


class LongLine(int):
    """What :func:`iter_line_blocks` yields for a line over ``max_line``
    bytes instead of its bytes: the line's length (without its ``\\n``)."""


def _skip_line(read, small: int):
    """Read on to the end of the current line without keeping it: ``(bytes
    skipped before the \\n, the bytes after it, eof)``."""
    n = 0
    while True:
        chunk = read(small)
        if not chunk:
            return n, b"", True
        i = chunk.find(b"\n")
        if i >= 0:
            return n + i, chunk[i + 1:], False
        n += len(chunk)


def iter_line_blocks(read, start: int, end: int | None, block: int | None = None,
                     max_line: int | None = None) -> Iterator:
    """Yield ``(offset, data)``: runs of whole lines of a stream.

    ``read(n)`` reads from file offset ``start - 1`` when ``start > 0`` (the
    byte before the range, to find where lines begin), else from 0. The lines
    yielded are those whose first byte lies in ``[start, end)`` (``end`` None:
    to the end); each ends with ``\\n`` except possibly the file's last. Reads
    at most about ``block`` bytes at a time, and little past ``end``.
    A line longer than ``max_line`` bytes is not kept: once that many of its
    bytes are buffered the rest is read and dropped, and ``(offset,
    LongLine(length))`` stands for it (memory stays within a few times
    ``max_line``, whatever the line: a decompression bomb of one line).
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
        if max_line is not None and len(buf) > max_line:
            j = buf.rfind(b"\n")
            # the last line in the buffer is over the cap, and starts in the range
            if len(buf) - j - 1 > max_line and (end is None or off + j + 1 < end):
                if j >= 0:
                    yield off, buf[:j + 1]
                    off += j + 1
                n, buf = len(buf) - j - 1, b""
                if not eof:
                    more, buf, eof = _skip_line(read, small)
                    n += more
                yield off, LongLine(n)
                off += n + 1
                continue
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
        want = max(want, len(buf))  # a line longer than the reads: double, so it is copied O(1) times
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
