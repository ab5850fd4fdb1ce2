"""Incremental decoding: text out as soon as whole characters are there.

Decoding one id at a time with ``decode`` loses the characters whose UTF-8
bytes are split across byte pieces (each half alone is dropped as
undecodable). :class:`DecodeStream` keeps the incomplete tail of a character
until its last byte arrives, like ``tokenizers.decoders.DecodeStream``.
The concatenation of everything ``step`` and ``finish`` return equals
``tok.decode(all_ids, errors)``: no byte is lost or duplicated.
"""

from __future__ import annotations

import codecs

__all__ = ["DecodeStream"]


class DecodeStream:
    """Decode ids one (or a few) at a time.

    Parameters
    ----------
    tokenizer : Tokenizer
        Any object with ``decode_bytes(ids) -> bytes``.
    errors : str
        What to do with bytes that can never become a character, as for
        ``bytes.decode`` (BytePiece's ``decode`` drops them: ``"ignore"``).

    Examples
    --------
    >>> stream = tok.decode_stream()
    >>> for i in ids:
    ...     text = stream.step(i)
    ...     if text is not None:
    ...         print(text, end="")
    >>> print(stream.finish(), end="")
    """

    def __init__(self, tokenizer, errors: str = "ignore"):
        self._tok = tokenizer
        self._errors = errors
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors)

    def step(self, ids) -> str | None:
        """Feed one id (or a sequence of ids); the text completed by them, or
        ``None`` while a character is still incomplete or nothing came."""
        if isinstance(ids, int) or hasattr(ids, "__index__"):
            ids = [int(ids)]
        text = self._decoder.decode(self._tok.decode_bytes(ids))
        return text or None

    def finish(self) -> str:
        """The end of the stream: what is left (an incomplete character is
        handled by ``errors``); the stream starts afresh after it."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text
