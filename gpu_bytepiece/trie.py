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
gives both halves, so a step of the walk touches one word. ``cells`` holds,
one after the other (``base`` and ``check`` of the later parts absolute,
a leaf's ``base`` still ``0``):

1. the byte trie above (``cells[:len(base)]``), which sampling walks
   forward from every start;
2. the *reversed* byte trie: every piece with its bytes in reverse order
   (``_add_reversed_trie``). The best path walks it backward from every
   end position, so that each position's best score is taken in registers
   and stored once (``core.lattice``);
3. when every piece that starts with a UTF-8 lead byte is valid UTF-8
   (:func:`char_walk_ok`, models trained with ``ensure_unicode``), a trie
   over *characters* of those pieces (one step a character instead of one
   a byte: a third of the dependent loads on Chinese; ``_add_char_trie``);
4. the header, at ``n_cells``: ``[reversed root's base, ncp, R]``
   (``ncp == 0``: no character trie), then the character table from
   code points to character numbers.

``node_id`` and ``node_len`` (in bytes) cover the cells of all the tries
(``n_cells``); header and table are in ``cells`` only. The root's check
half (``cells[0] >> 32``), which no walk compares, holds where the header
starts.

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


def build_trie(pieces: list, ids: np.ndarray | None = None, *, char_trie: bool = True) -> Trie:
    """Build the double-array trie of ``pieces`` (bytes) with their ``ids``.

    ``ids`` defaults to ``3 + index`` (BytePiece's numbering). The reversed
    byte trie follows the byte trie in ``cells``, then, when
    :func:`char_walk_ok` (and ``char_trie``), the character trie, then the
    header and the character table (see the module docstring).
    """
    n = len(pieces)
    if ids is None:
        ids = np.arange(3, n + 3, dtype=np.int32)
    ids = np.asarray(ids, dtype=np.int32)
    base, check, node_id, node_len = _byte_trie(pieces, ids)
    cells = pack_cells(base, check)
    cells, node_id, node_len = _add_reversed_trie(pieces, ids, cells, node_id, node_len)
    rbase = int(cells[base.shape[0]] & 0xFFFFFFFF)  # the reversed root's base (absolute)
    ncp, first, table = 0, 0, np.zeros(0, dtype=np.int64)
    if char_trie and char_walk_ok(pieces):
        cells, node_id, node_len, ncp, first, table = _add_char_trie(pieces, ids, cells, node_id, node_len)
    header = cells.shape[0]
    cells = np.concatenate([cells, np.array([rbase, ncp, first], dtype=np.int64), table])
    cells[0] = (np.int64(header) << 32) | (cells[0] & 0xFFFFFFFF)
    if node_id.shape[0] > (1 << 31) - 1:
        # cells are indexed in int32 (``check``, ``base``, and the low half of a back pointer)
        raise ValueError(f"vocabulary too large: its trie needs {node_id.shape[0]:,} cells, at most 2,147,483,647")
    return Trie(base=base, check=check, node_id=node_id, node_len=node_len,
                cells=cells, max_len=max(map(len, pieces)) if n else 0)


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


def _shifted(base, check, offset):
    """``check << 32 | base`` of a trie built alone, its cells moved ``offset`` on
    (absolute ``base`` and ``check``; a leaf keeps ``base == 0``, a free cell ``check == -1``)."""
    abs_base = np.where(base > 0, base.astype(np.int64) + offset, 0)
    abs_check = np.where(check >= 0, check.astype(np.int64) + offset, -1)
    return (abs_check << 32) | abs_base


def _add_reversed_trie(pieces, ids, cells, node_id, node_len):
    """``cells``, ``node_id``, ``node_len`` with the byte trie of the reversed pieces appended.

    The best path walks it backward from each end position ``e``: byte
    ``e - 1`` from the root, then ``e - 2`` and so on; a node at depth
    ``j`` where a piece ends is the piece ``b[e - j:e]``.
    """
    nb = cells.shape[0]
    rbase, rcheck, r_id, r_len = _byte_trie([p[::-1] for p in pieces], ids)
    return (np.concatenate([cells, _shifted(rbase, rcheck, nb)]), np.concatenate([node_id, r_id]),
            np.concatenate([node_len, r_len]))


def _add_char_trie(pieces, ids, cells, node_id, node_len):
    """``cells``, ``node_id``, ``node_len`` with the character trie appended, and ``ncp``, ``R`` and the table.

    Characters of the pieces that start with a lead byte get numbers
    (``uid``), the most common (in the most such pieces) first; the trie
    over uids holds those pieces, plus every character alone (id ``-1``
    where it is no piece), so the root's children are the dense block
    ``R + uid``. Its cells are shifted past ``cells`` (absolute ``base``
    and ``check``; a leaf keeps ``base == 0``). The table (``table[cp]``,
    at ``cells[header + 3 + cp]`` in the end) is ``base_abs << 32 | uid``
    of character ``cp``, ``-1`` for a character in no such piece; ``ncp``
    is its length (``0``, and no trie, when no piece starts with a lead byte).
    """
    lead = [k for k, p in enumerate(pieces) if len(p) >= 2 and p[0] >= 0xC0]
    if not lead:
        return cells, node_id, node_len, 0, 0, np.zeros(0, dtype=np.int64)
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
    ccells = _shifted(cbase, ccheck, nb)
    ncp = max(map(ord, chars)) + 1
    table = np.full(ncp, -1, dtype=np.int64)
    cps = np.fromiter(map(ord, chars), dtype=np.int64, count=len(chars))
    table[cps] = (ccells[r + np.arange(len(chars))] & 0xFFFFFFFF) << 32 | np.arange(len(chars))
    return (np.concatenate([cells, ccells]), np.concatenate([node_id, c_id]), np.concatenate([node_len, blen]),
            ncp, nb + r, table)


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
