"""A double-array trie of the vocabulary, in flat arrays the CPU and GPU read alike.

Layout of the byte trie (all ``int32``, one cell per trie node, node 0 is the root):

- ``base[s]``: the child of node ``s`` on byte ``c`` sits at cell ``base[s] + c``;
- ``check[t]``: the parent of cell ``t`` (``-1`` for a free cell), so
  ``t = base[s] + c`` is a real child iff ``check[t] == s``;
- ``node_id[t]``: the id of the piece that ends at node ``t``, or ``-1``;
- ``node_len[t]``: the depth of node ``t`` (the length of its piece).

The arrays carry 256 spare cells past the last used one, so ``base[s] + c``
never indexes out of bounds and the walk needs no bounds check.

The lattice reads ``cells`` (int64, ``check << 32 | base`` per cell): one load
gives both halves, so a step of the walk touches one word. ``cells`` holds
the byte trie above (``cells[:len(base)]``), then the *reversed* byte trie:
every piece with its bytes in reverse order, its cells moved past the byte
trie's (absolute ``base`` and ``check``; a leaf's ``base`` is still ``0``;
``_add_reversed_trie``), then one header word at ``n_cells``: the reversed
root's base. The lattice walks the reversed trie backward from every end
position (``core.lattice``); the byte trie is what ``Trie.lookup`` walks.
``node_id`` and ``node_len`` cover the cells of both tries (``n_cells``).
The root's check half (``cells[0] >> 32``), which no walk compares, holds
where the header is.

Walking forward from every start position, or backward from every end
position, finds exactly the set of matches that BytePiece's Aho-Corasick
automaton reports.
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
        """Cells of both tries (``node_id``'s length); ``cells`` also holds the header."""
        return int(self.node_id.shape[0])

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


def _byte_trie(pieces: list, ids: np.ndarray):
    """``base, check, node_id, node_len`` of the double-array trie of ``pieces`` (bytes)."""
    n = len(pieces)
    order = sorted(range(n), key=pieces.__getitem__)
    flat = np.frombuffer(b"".join(pieces[i] for i in order), dtype=np.uint8)
    lens = np.fromiter((len(pieces[i]) for i in order), dtype=np.int64, count=n)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    from .cpu_fallback.double_array import build_double_array

    return build_double_array(flat, starts, lens, ids[np.asarray(order, dtype=np.int64)], 256)


def build_trie(pieces: list, ids: np.ndarray | None = None) -> Trie:
    """Build the double-array trie of ``pieces`` (bytes) with their ``ids``.

    ``ids`` defaults to ``3 + index`` (BytePiece's numbering). The reversed
    byte trie and the header follow the byte trie in ``cells`` (see the
    module docstring).
    """
    n = len(pieces)
    if ids is None:
        ids = np.arange(3, n + 3, dtype=np.int32)
    ids = np.asarray(ids, dtype=np.int32)
    base, check, node_id, node_len = _byte_trie(pieces, ids)
    cells = pack_cells(base, check)
    cells, node_id, node_len = _add_reversed_trie(pieces, ids, cells, node_id, node_len)
    header = cells.shape[0]
    rbase = cells[base.shape[0]] & 0xFFFFFFFF  # the reversed root's base (absolute)
    cells = np.concatenate([cells, np.array([rbase], dtype=np.int64)])
    cells[0] = (np.int64(header) << 32) | (cells[0] & 0xFFFFFFFF)
    if node_id.shape[0] > (1 << 31) - 1:
        # cells are indexed in int32 (``check``, ``base``, and the low half of a back pointer)
        raise ValueError(f"vocabulary too large: its trie needs {node_id.shape[0]:,} cells, at most 2,147,483,647")
    return Trie(base=base, check=check, node_id=node_id, node_len=node_len,
                cells=cells, max_len=max(map(len, pieces)) if n else 0)


def _add_reversed_trie(pieces, ids, cells, node_id, node_len):
    """``cells``, ``node_id``, ``node_len`` with the byte trie of the reversed pieces appended.

    The lattice walks it backward from each end position ``e``: byte
    ``e - 1`` from the root, then ``e - 2`` and so on; a node at depth
    ``j`` where a piece ends is the piece ``b[e - j:e]``.
    """
    nb = cells.shape[0]
    rbase, rcheck, r_id, r_len = _byte_trie([p[::-1] for p in pieces], ids)
    abs_base = np.where(rbase > 0, rbase.astype(np.int64) + nb, 0)
    abs_check = np.where(rcheck >= 0, rcheck.astype(np.int64) + nb, -1)
    return (np.concatenate([cells, pack_cells(abs_base, abs_check)]), np.concatenate([node_id, r_id]),
            np.concatenate([node_len, r_len]))


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
