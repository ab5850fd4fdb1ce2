"""A double-array trie of the vocabulary, in flat arrays the CPU and GPU read alike.

Layout (all ``int32``, one cell per trie node, node 0 is the root):

- ``base[s]``: the child of node ``s`` on byte ``c`` sits at cell ``base[s] + c``;
- ``check[t]``: the parent of cell ``t`` (``-1`` for a free cell), so
  ``t = base[s] + c`` is a real child iff ``check[t] == s``;
- ``node_id[t]``: the id of the piece that ends at node ``t``, or ``-1``;
- ``node_len[t]``: the depth of node ``t`` (the length of its piece).

The lattice reads ``cells`` (int64, ``check << 32 | base`` per cell): one load
gives both halves, so a step of the walk touches one word. The root's check
half (``cells[0] >> 32``), which no walk compares, carries one hint:
``core.lattice.WHOLE_CHARS`` when pieces are whole UTF-8 characters
(:func:`whole_chars`).

The arrays carry 256 spare cells past the last used one, so ``base[s] + c``
never indexes out of bounds and the walk needs no bounds check.

Walking forward from every start position finds exactly the set of matches
that BytePiece's Aho-Corasick automaton reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import jit_cache

__all__ = ["Trie", "build_trie", "cached_trie"]


@dataclass(frozen=True)
class Trie:
    base: np.ndarray
    check: np.ndarray
    node_id: np.ndarray
    node_len: np.ndarray
    cells: np.ndarray
    max_len: int

    @property
    def n_cells(self) -> int:
        return int(self.base.shape[0])

    def node_scores(self, scores: np.ndarray) -> np.ndarray:
        """Per cell: ``scores[id]`` of the piece ending there, ``-inf`` elsewhere."""
        out = np.full(self.n_cells, -np.inf, dtype=np.float64)
        term = self.node_id >= 0
        out[term] = scores[self.node_id[term]]
        return out

    def lookup(self, piece: bytes) -> int:
        """Id of ``piece`` or -1 (for tests and debugging; not a hot path)."""
        s = 0
        for c in piece:
            t = self.base[s] + c
            if self.check[t] != s:
                return -1
            s = t
        return int(self.node_id[s])


def build_trie(pieces: list, ids: np.ndarray | None = None) -> Trie:
    """Build the double-array trie of ``pieces`` (bytes) with their ``ids``.

    ``ids`` defaults to ``3 + index`` (BytePiece's numbering).
    """
    n = len(pieces)
    if ids is None:
        ids = np.arange(3, n + 3, dtype=np.int32)
    ids = np.asarray(ids, dtype=np.int32)
    order = sorted(range(n), key=pieces.__getitem__)
    flat = np.frombuffer(b"".join(pieces[i] for i in order), dtype=np.uint8)
    lens = np.fromiter((len(pieces[i]) for i in order), dtype=np.int64, count=n)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    from .core.lattice import WHOLE_CHARS
    from .cpu_fallback.double_array import build_double_array

    base, check, node_id, node_len = build_double_array(flat, starts, lens, ids[np.asarray(order, dtype=np.int64)])
    if base.shape[0] > (1 << 24):
        # the lattice's back pointers hold a cell in 24 bits (see lattice.CELL_BITS)
        raise ValueError(f"vocabulary too large: its trie needs {base.shape[0]:,} cells, at most 16,777,216")
    cells = pack_cells(base, check)
    if whole_chars(pieces):
        cells[0] |= np.int64(WHOLE_CHARS) << 32  # the lattice's hint (``core.lattice.WHOLE_CHARS``)
    return Trie(base=base, check=check, node_id=node_id, node_len=node_len,
                cells=cells, max_len=int(lens.max()) if n else 0)


def whole_chars(pieces: list) -> bool:
    """Whether every piece of two or more bytes ends where a UTF-8 character
    ends, reading its bytes from the first with ``core.lattice.char_len``.

    True for the models BytePiece trains with ``ensure_unicode`` (their
    pieces are valid UTF-8); the lattice then walks whole characters (see
    ``core.lattice.WHOLE_CHARS``). Valid UTF-8 passes at once; other pieces
    are read byte by byte.
    """
    from .core.lattice import char_len

    for p in pieces:
        if len(p) < 2:
            continue
        try:
            p.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        k = 0
        while k < len(p):
            k += int(char_len(p[k]))
        if k != len(p):
            return False
    return True


def pack_cells(base: np.ndarray, check: np.ndarray) -> np.ndarray:
    """One int64 per cell: ``check << 32 | base`` (``base >= 0``)."""
    return (check.astype(np.int64) << 32) | base.astype(np.int64)


def cached_trie(pieces: list) -> Trie:
    """``build_trie(pieces)``, kept on disk: a later process loads it instead.

    Kept by :func:`jit_cache.store_arrays` (the compiled-code cache folder)
    under a SHA-256 of the pieces and of ``jit_cache.source_key()`` (which
    covers this file), as every field of :class:`Trie`, so a change of the
    trie's layout or of the pieces builds a new one.
    """
    import hashlib
    from dataclasses import fields

    h = hashlib.sha256(jit_cache.source_key().encode())
    h.update(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)).tobytes())
    h.update(b"".join(pieces))
    names = [f.name for f in fields(Trie)]
    got = jit_cache.load_arrays("tries", h.hexdigest())
    if got is not None and set(got) == set(names):
        return Trie(**{n: (v.item() if v.ndim == 0 else v) for n, v in got.items()})
    jit_cache.announce("the tokenizer", "cpu_fallback/double_array")
    trie = build_trie(pieces)
    jit_cache.store_arrays("tries", h.hexdigest(), {n: getattr(trie, n) for n in names})
    return trie
