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

import numba
import numpy as np

from . import jit_cache
from .core.lattice import WHOLE_CHARS, char_len

jit_cache.install()  # the package's cache locator, before the cache=True functions below

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


@numba.njit(cache=True)
def _grow(a, size, fill):
    out = np.full(size, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True)
def _build(flat, starts, lens, ids):
    """Build the double array from pieces sorted by bytes (lexicographically).

    Breadth-first: each queue item is a node with the range ``[lo, hi)`` of
    sorted pieces sharing its prefix; its children's labels are the distinct
    bytes at position ``depth`` in that range.
    """
    n = starts.shape[0]
    size = int(lens.sum()) + 1024
    base = np.zeros(size, dtype=np.int32)
    check = np.full(size, -1, dtype=np.int32)
    node_id = np.full(size, -1, dtype=np.int32)
    node_len = np.zeros(size, dtype=np.int32)
    check[0] = 0  # root occupies cell 0 (its own parent, never a child: labels land at base+c >= 1)
    q_node = np.empty(size, dtype=np.int64)
    q_lo = np.empty(size, dtype=np.int64)
    q_hi = np.empty(size, dtype=np.int64)
    q_depth = np.empty(size, dtype=np.int64)
    q_node[0] = 0
    q_lo[0] = 0
    q_hi[0] = n
    q_depth[0] = 0
    qh = 0
    qt = 1
    labels = np.empty(256, dtype=np.int64)
    lab_lo = np.empty(256, dtype=np.int64)
    lab_hi = np.empty(256, dtype=np.int64)
    next_free = 1
    multi_hint = 1
    used_max = 0
    while qh < qt:
        s = q_node[qh]
        lo = q_lo[qh]
        hi = q_hi[qh]
        d = q_depth[qh]
        qh += 1
        i = lo
        if i < hi and lens[i] == d:
            node_id[s] = ids[i]
            i += 1
        # distinct labels of the children
        nl = 0
        while i < hi:
            c = flat[starts[i] + d]
            j = i + 1
            while j < hi and flat[starts[j] + d] == c:
                j += 1
            labels[nl] = c
            lab_lo[nl] = i
            lab_hi[nl] = j
            nl += 1
            i = j
        if nl == 0:
            continue
        # find the first base so that every base + label is free; nodes with
        # several children skip the dense front that keeps failing them
        while next_free < size and check[next_free] != -1:
            next_free += 1
        t = next_free
        if nl > 1 and multi_hint > t:
            t = multi_hint
            while t < size and check[t] != -1:
                t += 1
        probes = 0
        while True:
            if t + 256 >= size:
                size = size * 2
                base = _grow(base, size, 0)
                check = _grow(check, size, -1)
                node_id = _grow(node_id, size, -1)
                node_len = _grow(node_len, size, 0)
                q_node = _grow(q_node, size, 0)
                q_lo = _grow(q_lo, size, 0)
                q_hi = _grow(q_hi, size, 0)
                q_depth = _grow(q_depth, size, 0)
            b = t - labels[0]
            ok = b >= 1
            if ok:
                for k in range(nl):
                    if check[b + labels[k]] != -1:
                        ok = False
                        break
            if ok:
                break
            t += 1
            probes += 1
            while t < size and check[t] != -1:
                t += 1
        if nl > 1 and probes > 32:
            multi_hint = t - 16
        base[s] = b
        for k in range(nl):
            c = b + labels[k]
            check[c] = s
            node_len[c] = d + 1
            if c > used_max:
                used_max = c
            q_node[qt] = c
            q_lo[qt] = lab_lo[k]
            q_hi[qt] = lab_hi[k]
            q_depth[qt] = d + 1
            qt += 1
    # 256 spare cells past the last used one (and past any base + 255)
    max_base = 0
    for k in range(used_max + 1):
        if base[k] > max_base:
            max_base = base[k]
    end = max(used_max, max_base) + 257
    if end > size:
        base = _grow(base, end, 0)
        check = _grow(check, end, -1)
        node_id = _grow(node_id, end, -1)
        node_len = _grow(node_len, end, 0)
    return base[:end].copy(), check[:end].copy(), node_id[:end].copy(), node_len[:end].copy()


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
    base, check, node_id, node_len = _build(flat, starts, lens, ids[np.asarray(order, dtype=np.int64)])
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
    trie = build_trie(pieces)
    jit_cache.store_arrays("tries", h.hexdigest(), {n: getattr(trie, n) for n in names})
    return trie
