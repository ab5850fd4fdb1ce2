"""Numba CPU drivers of the trainer's piece side (``gpu_bytepiece.train``).

Host-side array work on the pieces the n-gram Viterbi cut: extracting and
packing them, a hash table of long pieces, a byte-string sort, and splitting
pieces with the Unigram lattice of :mod:`gpu_bytepiece.core.lattice`
(compiled here with ``numba.njit``, as ``cpu_fallback.tokenize`` does for the
tokenizer). The n-gram side is in :mod:`gpu_bytepiece.cpu_fallback.train`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from gpu_bytepiece import jit_cache
from gpu_bytepiece.core import lattice as _lat
from gpu_bytepiece.core.ngram import HASH_MUL as _HASH_MUL

from .train import position_key

jit_cache.install()  # the package's cache locator, before the cache=True functions below

# The one lattice body, compiled for the CPU (no fastmath: ids depend on it).
_lattice = numba.njit(cache=True, nogil=True)(_lat.lattice)
_backtrack = numba.njit(cache=True, nogil=True)(_lat.backtrack)

_FNV_OFF = np.uint64(0xCBF29CE484222325)
_FNV_MUL = np.uint64(0x100000001B3)


# ------------------------------------------------------------------ piece counts
@numba.njit(cache=True, nogil=True)
def _next_start(flags, i, b):
    """The first ``j >= i`` below ``b`` where a piece starts (``flags[j] == 1``), or ``b``."""
    while i < b and flags[i] == 0:
        i += 1
    return i


@numba.njit(cache=True, nogil=True, parallel=True)
def piece_spans(flags, seg_start, seg_end, chunk_bounds, n_short, n_long):
    """Per chunk of segments: how many pieces hold <= 7 bytes and how many more."""
    for c in prange(chunk_bounds.shape[0] - 1):
        ns = 0
        nl = 0
        for s in range(chunk_bounds[c], chunk_bounds[c + 1]):
            b = seg_end[s]
            i = _next_start(flags, seg_start[s], b)
            while i < b:
                j = _next_start(flags, i + 1, b)
                if j - i <= 7:
                    ns += 1
                else:
                    nl += 1
                i = j
        n_short[c] = ns
        n_long[c] = nl


@numba.njit(cache=True, nogil=True, parallel=True)
def extract_pieces(data, flags, seg_start, seg_end, chunk_bounds, short_at, long_at,
                   short_keys, long_start, long_len):
    """Pieces of segmented text: short ones (<= 7 bytes) as packed keys, long ones as spans.

    In a segment a piece runs from a byte flagged 1 to the next flagged byte
    or the segment end (as the reference; bytes before the first flag would
    be dropped, but the first byte of a segment is always flagged). A short
    piece's key is :func:`gpu_bytepiece.core.ngram.position_key` of its first
    byte with the piece's end as the segment end. GPU twin:
    ``kernels.train.count_piece_keys`` and ``long_piece_lengths``.
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        ps = short_at[c]
        pl = long_at[c]
        for s in range(chunk_bounds[c], chunk_bounds[c + 1]):
            b = seg_end[s]
            i = _next_start(flags, seg_start[s], b)
            while i < b:
                j = _next_start(flags, i + 1, b)
                if j - i <= 7:
                    short_keys[ps] = position_key(data, i, j, 7)  # all j - i bytes
                    ps += 1
                else:
                    long_start[pl] = i
                    long_len[pl] = j - i
                    pl += 1
                i = j


@numba.njit(cache=True, nogil=True)
def unpack_keys(keys):
    """Bytes of packed piece keys: ``(pool, off, ln)``."""
    n = keys.shape[0]
    ln = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        ln[i] = np.int64(keys[i] & np.uint64(0xFF))
        total += ln[i]
    pool = np.empty(total, dtype=np.uint8)
    off = np.empty(n, dtype=np.int64)
    o = 0
    for i in range(n):
        off[i] = o
        k = keys[i]
        for t in range(ln[i]):
            pool[o + t] = np.uint8((k >> np.uint64(56 - 8 * t)) & np.uint64(0xFF))
        o += ln[i]
    return pool, off, ln


# ------------------------------------------------------------------ piece table
@numba.njit(cache=True, nogil=True)
def _bytes_hash(data, a, b):
    h = _FNV_OFF ^ np.uint64(b - a)
    for i in range(a, b):
        h = (h ^ np.uint64(data[i])) * _FNV_MUL
    return h


@numba.njit(cache=True, nogil=True)
def _slot(h, shift):
    return (h * _HASH_MUL) >> shift


@numba.njit(cache=True, nogil=True)
def _grow(a, size):
    out = np.empty(size, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True, nogil=True)
def new_piece_table(cap_bits):
    """An empty piece table: ``(table, hashes, offsets, lengths, counts, pool, sizes)``.

    ``sizes = [n_pieces, pool_bytes, cap_bits]``.
    """
    cap = 1 << cap_bits
    table = np.full(cap, -1, dtype=np.int32)
    n0 = cap // 2 + 1
    return (table, np.empty(n0, dtype=np.uint64), np.empty(n0, dtype=np.int64),
            np.empty(n0, dtype=np.int32), np.empty(n0, dtype=np.int64),
            np.empty(1 << 16, dtype=np.uint8), np.array([0, 0, cap_bits], dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def count_long_pieces(data, long_start, long_len, weights, table, p_hash, p_off, p_len, p_cnt, pool, sizes):
    """Add pieces ``data[long_start[i]:][:long_len[i]]`` to the piece table.

    A hash table of byte strings (FNV-1a, linear probing); new pieces are
    copied to ``pool``. Piece ``i`` counts ``weights[i]`` (1 when
    ``weights`` is empty). Returns the (possibly grown) arrays; ``sizes`` is
    updated in place.
    """
    weighted = weights.shape[0] > 0
    n = sizes[0]
    pool_n = sizes[1]
    bits = sizes[2]
    cap = table.shape[0]
    mask = cap - 1
    shift = np.uint64(64 - bits)
    for q in range(long_start.shape[0]):
        i = long_start[q]
        ln = long_len[q]
        j = i + ln
        w = weights[q] if weighted else np.int64(1)
        h = _bytes_hash(data, i, j)
        slot = np.int64(_slot(h, shift))
        while True:
            t = table[slot]
            if t < 0:
                if n == p_hash.shape[0]:
                    size = 2 * n + 16
                    p_hash = _grow(p_hash, size)
                    p_off = _grow(p_off, size)
                    p_len = _grow(p_len, size)
                    p_cnt = _grow(p_cnt, size)
                if pool_n + ln > pool.shape[0]:
                    pool = _grow(pool, max(2 * pool.shape[0], pool_n + ln))
                pool[pool_n:pool_n + ln] = data[i:j]
                p_hash[n] = h
                p_off[n] = pool_n
                p_len[n] = ln
                p_cnt[n] = w
                table[slot] = n
                pool_n += ln
                n += 1
                if 2 * n > cap:
                    bits += 1
                    cap = 1 << bits
                    mask = cap - 1
                    shift = np.uint64(64 - bits)
                    table = np.full(cap, -1, dtype=np.int32)
                    for r in range(n):
                        sl = np.int64(_slot(p_hash[r], shift))
                        while table[sl] >= 0:
                            sl = (sl + 1) & mask
                        table[sl] = r
                break
            if p_hash[t] == h and p_len[t] == ln:
                o = p_off[t]
                same = True
                for r in range(ln):
                    if pool[o + r] != data[i + r]:
                        same = False
                        break
                if same:
                    p_cnt[t] += w
                    break
            slot = (slot + 1) & mask
    sizes[0] = n
    sizes[1] = pool_n
    sizes[2] = bits
    return table, p_hash, p_off, p_len, p_cnt, pool


@numba.njit(cache=True, nogil=True)
def gather_pieces(pool, off, ln, idx):
    """Pieces ``idx`` copied in that order into one pool: ``(pool, offsets)``, ``len(idx) + 1`` offsets."""
    n = idx.shape[0]
    out_off = np.empty(n + 1, dtype=np.int64)
    total = 0
    for q in range(n):
        out_off[q] = total
        total += ln[idx[q]]
    out_off[n] = total
    out = np.empty(total, dtype=np.uint8)
    for q in range(n):
        o = off[idx[q]]
        d = out_off[q]
        for t in range(ln[idx[q]]):
            out[d + t] = pool[o + t]
    return out, out_off


# ------------------------------------------------------------------ byte-string order
@numba.njit(cache=True, nogil=True)
def _bytes_less(pool, oa, la, ob, lb):
    m = la if la < lb else lb
    for t in range(m):
        x = pool[oa + t]
        y = pool[ob + t]
        if x != y:
            return x < y
    return la < lb


@numba.njit(cache=True, nogil=True)
def prefix_keys(pool, off, ln):
    """First 8 bytes of each string, big-endian, zero-padded (uint64)."""
    n = off.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    for i in range(n):
        k = np.uint64(0)
        m = ln[i] if ln[i] < 8 else 8
        for t in range(m):
            k |= np.uint64(pool[off[i] + t]) << np.uint64(56 - 8 * t)
        out[i] = k
    return out


@numba.njit(cache=True, nogil=True)
def _merge_sort_range(idx, tmp, lo, hi, pool, off, ln):
    # bottom-up merge sort of idx[lo:hi] by bytes (stable)
    width = 1
    n = hi - lo
    src = idx
    dst = tmp
    in_tmp = False
    while width < n:
        i = lo
        while i < hi:
            mid = min(i + width, hi)
            end = min(i + 2 * width, hi)
            a = i
            b = mid
            o = i
            while a < mid and b < end:
                x = src[a]
                y = src[b]
                if _bytes_less(pool, off[y], ln[y], off[x], ln[x]):
                    dst[o] = y
                    b += 1
                else:
                    dst[o] = x
                    a += 1
                o += 1
            while a < mid:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < end:
                dst[o] = src[b]
                b += 1
                o += 1
            i += 2 * width
        src, dst = dst, src
        in_tmp = not in_tmp
        width *= 2
    if in_tmp:
        idx[lo:hi] = tmp[lo:hi]


@numba.njit(cache=True, nogil=True)
def fix_prefix_ties(order, key8, pool, off, ln):
    """Finish sorting ``order`` (already sorted by ``key8``) by full bytes."""
    n = order.shape[0]
    tmp = np.empty(n, dtype=order.dtype)
    i = 0
    while i < n:
        j = i + 1
        k = key8[order[i]]
        while j < n and key8[order[j]] == k:
            j += 1
        if j - i > 1:
            _merge_sort_range(order, tmp, i, j, pool, off, ln)
        i = j


# ------------------------------------------------------------------ splitting pieces
@numba.njit(cache=True, nogil=True, parallel=True)
def tokenize_pieces(pool, off, ln, chunk_bounds, cells, node_id, node_score, max_len,
                    out_ids, out_start, out_n):
    """Unigram-tokenize each string ``pool[off[i]:off[i] + ln[i]]`` as one segment.

    Ids of string ``i`` go to ``out_ids[out_start[i]:]``, their number to
    ``out_n[i]``. The lattice is ``gpu_bytepiece.core.lattice`` (best path);
    ``node_score`` is per trie cell (``Trie.node_scores``).
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        i0 = chunk_bounds[c]
        i1 = chunk_bounds[c + 1]
        m = 1
        for i in range(i0, i1):
            if ln[i] > m:
                m = ln[i]
        best = np.empty(m + 1, dtype=np.float64)
        back = np.empty(m + 1, dtype=np.int64)
        for i in range(i0, i1):
            a = off[i]
            b = a + ln[i]
            _lattice(pool, a, b, cells, node_score, max_len, -1.0, np.uint64(0), 0, best, back, 0)
            out_n[i] = _backtrack(b - a, back, node_id, 0, out_ids, out_start[i])


@numba.njit(cache=True, nogil=True)
def add_split_counts(out_ids, out_start, out_n, weights, result):
    """``result[id] += weights[i]`` for every id of string ``i``."""
    for i in range(out_start.shape[0]):
        w = weights[i]
        s = out_start[i]
        for t in range(out_n[i]):
            result[out_ids[s + t]] += w
