"""Numba CPU drivers of the trainer (``gpu_bytepiece.trainer``).

The per-position key and the per-segment n-gram Viterbi are the shared plain
functions of :mod:`gpu_bytepiece.trainer`, compiled here with ``numba.njit``
(their GPU twins are in ``gpu_bytepiece.kernels.train``); the Unigram lattice
that splits pieces is :mod:`gpu_bytepiece.core.lattice`, compiled in
``cpu_fallback.tokenize``. Everything else here is host-side array work:
segmenting, sorting and merging counts, the piece table, a byte-string sort.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from gpu_bytepiece import trainer as _tr
from gpu_bytepiece.cpu_fallback.tokenize import backtrack as _backtrack
from gpu_bytepiece.cpu_fallback.tokenize import lattice as _lattice

# The shared bodies, compiled for the CPU (no fastmath: segmentations depend on it).
position_key = numba.njit(cache=True, nogil=True)(_tr.position_key)
ngram_lookup = numba.njit(cache=True, nogil=True)(_tr.ngram_lookup)
_tr_viterbi = _tr.ngram_viterbi
ngram_viterbi = numba.njit(cache=True, nogil=True)(_tr_viterbi)

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_FNV_OFF = np.uint64(0xCBF29CE484222325)
_FNV_MUL = np.uint64(0x100000001B3)


# ------------------------------------------------------------------ segments
@numba.njit(cache=True, nogil=True)
def _char_len(c):
    if c < 0x80:
        return 1
    if c < 0xE0:
        return 2
    if c < 0xF0:
        return 3
    return 4


@numba.njit(cache=True, nogil=True)
def _is_digit_at(data, q, digit_bits):
    c = data[q]
    if c < 0x80:
        return c >= 48 and c <= 57
    if c < 0xE0:
        cp = ((c & 0x1F) << 6) | (data[q + 1] & 0x3F)
    elif c < 0xF0:
        cp = ((c & 0x0F) << 12) | ((data[q + 1] & 0x3F) << 6) | (data[q + 2] & 0x3F)
    else:
        cp = ((c & 0x07) << 18) | ((data[q + 1] & 0x3F) << 12) | ((data[q + 2] & 0x3F) << 6) | (data[q + 3] & 0x3F)
    return (digit_bits[cp >> 3] >> (cp & 7)) & 1 == 1


@numba.njit(cache=True, nogil=True)
def _segment_end(data, p, end, max_chars, max_newlines, isolate_digits, digit_bits):
    """End of the training segment starting at ``p`` (BytePiece's regex, emulated).

    ``.{,N}\\n{1,M}|.{1,N}``; with ``isolate_digits``
    ``\\d|[^\\n\\d]{,N}\\n{1,M}|[^\\n\\d]{1,N}`` (``N`` counts characters).
    """
    if isolate_digits and _is_digit_at(data, p, digit_bits):
        return p + _char_len(data[p])
    q = p
    chars = 0
    while q < end and chars < max_chars:
        c = data[q]
        if c == 10:
            break
        if isolate_digits and _is_digit_at(data, q, digit_bits):
            break
        q += _char_len(c)
        chars += 1
    if q < end and data[q] == 10:
        k = 0
        while q < end and data[q] == 10 and k < max_newlines:
            q += 1
            k += 1
    return q


@numba.njit(cache=True, nogil=True)
def train_segments(data, doc_offsets, max_chars, max_newlines, isolate_digits, digit_bits):
    """Training segments of NFC UTF-8 documents: ``(seg_start, seg_end)`` int64.

    Segments tile every document, in text order.
    """
    n_docs = doc_offsets.shape[0] - 1
    count = 0
    for d in range(n_docs):
        p = doc_offsets[d]
        end = doc_offsets[d + 1]
        while p < end:
            p = _segment_end(data, p, end, max_chars, max_newlines, isolate_digits, digit_bits)
            count += 1
    seg_start = np.empty(count, dtype=np.int64)
    seg_end = np.empty(count, dtype=np.int64)
    k = 0
    for d in range(n_docs):
        p = doc_offsets[d]
        end = doc_offsets[d + 1]
        while p < end:
            q = _segment_end(data, p, end, max_chars, max_newlines, isolate_digits, digit_bits)
            seg_start[k] = p
            seg_end[k] = q
            k += 1
            p = q
    return seg_start, seg_end


# ------------------------------------------------------------------ n-gram counts
@numba.njit(cache=True, nogil=True, parallel=True)
def position_keys(data, seg_start, seg_end, order, chunk_bounds, out, out_off):
    """``out[p - out_off] = position_key(p)`` for every byte of the segments.

    CPU twin of ``kernels.train.gpu_position_keys``: ``prange`` over chunks of
    consecutive segments.
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        for s in range(chunk_bounds[c], chunk_bounds[c + 1]):
            e = seg_end[s]
            for p in range(seg_start[s], e):
                out[p - out_off] = position_key(data, p, e, order)


@numba.njit(cache=True, nogil=True)
def position_keys_serial(data, seg_start, seg_end, order, out, out_off):
    """``position_keys`` on one thread (for callers that run several at once)."""
    for s in range(seg_start.shape[0]):
        e = seg_end[s]
        for p in range(seg_start[s], e):
            out[p - out_off] = position_key(data, p, e, order)


@numba.njit(cache=True, nogil=True)
def run_lengths(keys):
    """Distinct values of sorted ``keys`` and their counts (int64)."""
    n = keys.shape[0]
    m = 0
    for i in range(n):
        if i == 0 or keys[i] != keys[i - 1]:
            m += 1
    uk = np.empty(m, dtype=np.uint64)
    uc = np.zeros(m, dtype=np.int64)
    j = -1
    for i in range(n):
        if i == 0 or keys[i] != keys[i - 1]:
            j += 1
            uk[j] = keys[i]
        uc[j] += 1
    return uk, uc


@numba.njit(cache=True, nogil=True)
def merge_runs(ka, ca, kb, cb):
    """Merge two sorted ``(key, count)`` runs of distinct keys, summing counts."""
    na = ka.shape[0]
    nb = kb.shape[0]
    i = 0
    j = 0
    m = 0
    while i < na and j < nb:
        if ka[i] < kb[j]:
            i += 1
        elif kb[j] < ka[i]:
            j += 1
        else:
            i += 1
            j += 1
        m += 1
    m += (na - i) + (nb - j)
    ko = np.empty(m, dtype=np.uint64)
    co = np.empty(m, dtype=np.int64)
    i = 0
    j = 0
    o = 0
    while i < na and j < nb:
        if ka[i] < kb[j]:
            ko[o] = ka[i]
            co[o] = ca[i]
            i += 1
        elif kb[j] < ka[i]:
            ko[o] = kb[j]
            co[o] = cb[j]
            j += 1
        else:
            ko[o] = ka[i]
            co[o] = ca[i] + cb[j]
            i += 1
            j += 1
        o += 1
    while i < na:
        ko[o] = ka[i]
        co[o] = ca[i]
        i += 1
        o += 1
    while j < nb:
        ko[o] = kb[j]
        co[o] = cb[j]
        j += 1
        o += 1
    return ko, co


@numba.njit(cache=True, nogil=True)
def merge_into(buf_k, buf_c, m, kb, cb):
    """Merge the sorted distinct run ``(kb, cb)`` into ``buf[:m]`` in place; returns the new length.

    ``buf_k``/``buf_c`` need room for ``m + len(kb)`` entries. The merge runs
    from the back (the write position never passes the unread part of
    ``buf``), then closes the gap left by keys present in both.
    """
    i = m - 1
    j = kb.shape[0] - 1
    w = m + kb.shape[0] - 1
    while j >= 0:
        if i >= 0 and buf_k[i] > kb[j]:
            buf_k[w] = buf_k[i]
            buf_c[w] = buf_c[i]
            i -= 1
        elif i >= 0 and buf_k[i] == kb[j]:
            buf_k[w] = buf_k[i]
            buf_c[w] = buf_c[i] + cb[j]
            i -= 1
            j -= 1
        else:
            buf_k[w] = kb[j]
            buf_c[w] = cb[j]
            j -= 1
        w -= 1
    gap = w - i
    n = m + kb.shape[0]
    if gap > 0:
        for q in range(w + 1, n):
            buf_k[q - gap] = buf_k[q]
            buf_c[q - gap] = buf_c[q]
    return n - gap


@numba.njit(cache=True, nogil=True)
def level_groups(keys, counts, k, thr, carry, final, out_keys, out_counts, write):
    """Stream sorted distinct position keys into the kept ``k``-grams.

    The ``k``-gram of a key holding at least ``k`` bytes is ``key >> (64 - 8k)``;
    in key order equal ``k``-grams are contiguous, so one pass sums them. A
    group reaching ``thr`` is written to ``out_keys``/``out_counts`` (when
    ``write``); the group still open at the end of the block is kept in
    ``carry = [open, k-gram, count]`` for the next block (``final`` closes
    it). Returns the number of groups written (or that would be).
    """
    shift = np.uint64(64 - 8 * k)
    has = carry[0] != 0
    g = carry[1]
    c = np.int64(carry[2])
    n = 0
    for i in range(keys.shape[0]):
        key = keys[i]
        if np.int64(key & np.uint64(0xFF)) < k:
            continue
        pk = key >> shift
        if has and pk == g:
            c += counts[i]
        else:
            if has and c >= thr:
                if write:
                    out_keys[n] = g
                    out_counts[n] = c
                n += 1
            has = True
            g = pk
            c = counts[i]
    if final and has:
        if c >= thr:
            if write:
                out_keys[n] = g
                out_counts[n] = c
            n += 1
        has = False
    if write:
        carry[0] = 1 if has else 0
        carry[1] = g
        carry[2] = np.uint64(c)
    return n


@numba.njit(cache=True, nogil=True)
def build_ngram_table(keys, vals, bits):
    """Open-addressing table (linear probing) of ``keys`` (distinct, nonzero) -> ``vals``.

    Returns ``ht`` (uint64, ``2 << bits``): slot ``h`` holds its key at
    ``ht[2h]`` and the float64 bits of its value at ``ht[2h + 1]`` (read it
    through ``ht.view(np.float64)``).
    """
    cap = 1 << bits
    mask = np.uint64(cap - 1)
    shift = np.uint64(64 - bits)
    ht = np.zeros(2 * cap, dtype=np.uint64)
    htf = ht.view(np.float64)
    for i in range(keys.shape[0]):
        k = keys[i]
        h = (k * _HASH_MUL) >> shift
        while ht[2 * h] != 0:
            h = (h + np.uint64(1)) & mask
        ht[2 * h] = k
        htf[2 * h + 1] = vals[i]
    return ht


# ------------------------------------------------------------------ n-gram Viterbi
@numba.njit(cache=True, nogil=True, parallel=True)
def ngram_viterbi_segments(data, seg_start, seg_end, chunk_bounds, order, ensure_unicode,
                           lp1, lp2, ht, htf, ht_shift, ht_mask, flags):
    """Run :func:`gpu_bytepiece.trainer.ngram_viterbi` over every segment.

    CPU twin of ``kernels.train.gpu_ngram_viterbi``: ``prange`` over chunks of
    consecutive segments, each with one scratch sized to its longest segment.
    ``flags[i] = 1`` where a piece starts.
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        k0 = chunk_bounds[c]
        k1 = chunk_bounds[c + 1]
        m = 1
        for k in range(k0, k1):
            if seg_end[k] - seg_start[k] > m:
                m = seg_end[k] - seg_start[k]
        routes = np.empty(m * order, dtype=np.uint8)
        node = np.empty(order, dtype=np.float64)
        prev = np.empty(order, dtype=np.float64)
        for k in range(k0, k1):
            ngram_viterbi(data, seg_start[k], seg_end[k], order, ensure_unicode, lp1, lp2,
                          ht, htf, ht_shift, ht_mask, node, prev, routes, 0, flags)


# ------------------------------------------------------------------ piece counts
@numba.njit(cache=True, nogil=True, parallel=True)
def piece_spans(flags, seg_start, seg_end, chunk_bounds, n_short, n_long):
    """Per chunk of segments: how many pieces hold <= 7 bytes and how many more."""
    for c in prange(chunk_bounds.shape[0] - 1):
        ns = 0
        nl = 0
        for s in range(chunk_bounds[c], chunk_bounds[c + 1]):
            b = seg_end[s]
            i = seg_start[s]
            while i < b and flags[i] == 0:
                i += 1
            while i < b:
                j = i + 1
                while j < b and flags[j] == 0:
                    j += 1
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
    piece's key packs it like :func:`gpu_bytepiece.trainer.position_key`.
    """
    for c in prange(chunk_bounds.shape[0] - 1):
        ps = short_at[c]
        pl = long_at[c]
        for s in range(chunk_bounds[c], chunk_bounds[c + 1]):
            b = seg_end[s]
            i = seg_start[s]
            while i < b and flags[i] == 0:
                i += 1
            while i < b:
                j = i + 1
                while j < b and flags[j] == 0:
                    j += 1
                if j - i <= 7:
                    k = np.uint64(0)
                    for t in range(j - i):
                        k |= np.uint64(data[i + t]) << np.uint64(56 - 8 * t)
                    short_keys[ps] = k | np.uint64(j - i)
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
def count_long_pieces(data, long_start, long_len, table, p_hash, p_off, p_len, p_cnt, pool, sizes):
    """Add pieces ``data[long_start[i]:][:long_len[i]]`` to the piece table.

    A hash table of byte strings (FNV-1a, linear probing); new pieces are
    copied to ``pool``. Returns the (possibly grown) arrays; ``sizes`` is
    updated in place.
    """
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
                p_cnt[n] = 1
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
                    p_cnt[t] += 1
                    break
            slot = (slot + 1) & mask
    sizes[0] = n
    sizes[1] = pool_n
    sizes[2] = bits
    return table, p_hash, p_off, p_len, p_cnt, pool


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
def tokenize_pieces(pool, off, ln, chunk_bounds, cells, node_id, node_len, node_score, max_len,
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
        back = np.empty(m + 1, dtype=np.int32)
        for i in range(i0, i1):
            a = off[i]
            b = a + ln[i]
            _lattice(pool, a, b, cells, node_score, max_len, -1.0, np.uint64(0), 0, best, back, 0)
            out_n[i] = _backtrack(b - a, back, node_id, node_len, 0, out_ids, out_start[i])


@numba.njit(cache=True, nogil=True)
def add_split_counts(out_ids, out_start, out_n, weights, result):
    """``result[id] += weights[i]`` for every id of string ``i``."""
    for i in range(out_start.shape[0]):
        w = weights[i]
        s = out_start[i]
        for t in range(out_n[i]):
            result[out_ids[s + t]] += w
