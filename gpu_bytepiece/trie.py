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
gives both halves, so a step of the walk touches one word. When every piece
that starts with a UTF-8 lead byte is valid UTF-8 (:func:`char_walk_ok`,
models trained with ``ensure_unicode``), ``cells`` goes on past the byte
trie with a second trie over *characters* of those pieces (one step a
character instead of one a byte: a third of the dependent loads on
Chinese) and a table from code points to character numbers
(``_add_char_trie``); ``node_id`` and ``node_len`` (in bytes) cover the
cells of both tries (``n_cells``), the table is in ``cells`` only. The
root's check half (``cells[0] >> 32``), which no walk compares, holds
where the table's header starts (``0``: no character trie);
``core.lattice.char_walk`` reads it.

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
        """Cells of both tries (``node_id``'s length); ``cells`` also holds the character table."""
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


def build_trie(pieces: list, ids: np.ndarray | None = None) -> Trie:
    """Build the double-array trie of ``pieces`` (bytes) with their ``ids``.

    ``ids`` defaults to ``3 + index`` (BytePiece's numbering). When
    :func:`char_walk_ok`, the character trie and its table follow the byte
    trie in ``cells`` (see the module docstring).
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
    from .cpu_fallback.double_array import build_double_array

    base, check, node_id, node_len = build_double_array(flat, starts, lens, ids[np.asarray(order, dtype=np.int64)],
                                                        256)
    cells = pack_cells(base, check)
    if char_walk_ok(pieces):
        cells, node_id, node_len = _add_char_trie(pieces, ids, cells, node_id, node_len)
    if node_id.shape[0] > (1 << 31) - 1:
        # cells are indexed in int32 (``check``, ``base``, and the low half of a back pointer)
        raise ValueError(f"vocabulary too large: its trie needs {node_id.shape[0]:,} cells, at most 2,147,483,647")
    return Trie(base=base, check=check, node_id=node_id, node_len=node_len,
                cells=cells, max_len=int(lens.max()) if n else 0)


def char_walk_ok(pieces: list) -> bool:
    """Whether every piece of two or more bytes that starts with a UTF-8
    lead byte (``>= 0xC0``) is valid UTF-8.

    True for the models BytePiece trains with ``ensure_unicode`` (all their
    pieces are valid UTF-8). Such pieces are then sequences of characters,
    and the lattice finds those starting at a lead byte in the character
    trie (``core.lattice.char_walk``).
    """
    for p in pieces:
        if len(p) >= 2 and p[0] >= 0xC0:
            try:
                p.decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


def _add_char_trie(pieces, ids, cells, node_id, node_len):
    """``cells``, ``node_id``, ``node_len`` with the character trie, header and table appended.

    Characters of the pieces that start with a lead byte get numbers
    (``uid``), the most common (in the most such pieces) first; the trie
    over uids holds those pieces, plus every character alone (id ``-1``
    where it is no piece), so the root's children are the dense block
    ``R + uid``. Its cells are shifted past the byte trie (absolute
    ``base`` and ``check``; a leaf keeps ``base == 0``). Then the header
    ``[ncp, R]`` at ``cells[0] >> 32`` and the table: ``cells[header + 2 +
    cp]`` is ``base_abs << 32 | uid`` of character ``cp``, ``-1`` for a
    character in no such piece.
    """
    lead = [k for k, p in enumerate(pieces) if len(p) >= 2 and p[0] >= 0xC0]
    if not lead:
        return cells, node_id, node_len
    texts = [pieces[k].decode("utf-8") for k in lead]
    freq: dict = {}
    for t in texts:
        for ch in set(t):
            freq[ch] = freq.get(ch, 0) + 1
    chars = sorted(freq, key=lambda ch: (-freq[ch], ord(ch)))
    uid = {ch: u for u, ch in enumerate(chars)}
    seqs = [(tuple(uid[ch] for ch in t), int(ids[k])) for t, k in zip(texts, lead)]
    alone = {q[0][0] for q in seqs if len(q[0]) == 1}
    seqs += [((u,), -1) for u in range(len(chars)) if u not in alone]
    seqs.sort()
    flat = np.fromiter((u for q, _ in seqs for u in q), dtype=np.int64)
    lens = np.fromiter((len(q) for q, _ in seqs), dtype=np.int64, count=len(seqs))
    starts = np.zeros(len(seqs), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    cid = np.fromiter((i for _, i in seqs), dtype=np.int32, count=len(seqs))
    from .cpu_fallback.double_array import build_double_array

    cbase, ccheck, c_id, c_depth = build_double_array(flat, starts, lens, cid, len(chars))
    nb = cells.shape[0]
    r = int(cbase[0])
    kids = r + np.arange(len(chars))
    assert (ccheck[kids] == 0).all() and (c_depth[kids] == 1).all()  # the dense first level
    # byte length of each node: its parent's plus its character's
    char_bytes = np.fromiter((len(ch.encode()) for ch in chars), dtype=np.int32, count=len(chars))
    used = np.flatnonzero(ccheck >= 0)
    used = used[used != 0]
    blen = np.zeros(cbase.shape[0], dtype=np.int32)
    for d in range(1, int(c_depth.max()) + 1):
        at = used[c_depth[used] == d]
        blen[at] = blen[ccheck[at]] + char_bytes[at - cbase[ccheck[at]]]
    abs_base = np.where(cbase > 0, cbase.astype(np.int64) + nb, 0)
    abs_check = np.where(ccheck >= 0, ccheck.astype(np.int64) + nb, -1)
    ccells = (abs_check << 32) | abs_base
    ncp = max(map(ord, chars)) + 1
    table = np.full(ncp, -1, dtype=np.int64)
    cps = np.fromiter(map(ord, chars), dtype=np.int64, count=len(chars))
    table[cps] = (abs_base[r + np.arange(len(chars))] << 32) | np.arange(len(chars))
    header = nb + cbase.shape[0]
    out = np.concatenate([cells, ccells, np.array([ncp, nb + r], dtype=np.int64), table])
    out[0] = (np.int64(header) << 32) | (cells[0] & 0xFFFFFFFF)
    return (out, np.concatenate([node_id, c_id]), np.concatenate([node_len, blen]))


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
