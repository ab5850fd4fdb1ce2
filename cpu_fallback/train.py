"""Numba CPU drivers of the trainer's n-gram side (``gpu_bytepiece.train``).

The per-position key and the per-segment n-gram Viterbi are the plain bodies
of :mod:`gpu_bytepiece.core.ngram`, compiled here with ``numba.njit`` (their
GPU twins are in ``gpu_bytepiece.kernels.train``). Around them: training
segments, sorting and merging ``(key, count)`` runs, the per-level n-gram
groups and the n-gram table. The piece side is in
:mod:`gpu_bytepiece.cpu_fallback.train_pieces`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from gpu_bytepiece import jit_cache
from gpu_bytepiece.core import ngram as _ng
from gpu_bytepiece.core.ngram import HASH_MUL as _HASH_MUL

jit_cache.install()  # the package's cache locator, before the cache=True functions below

# The shared bodies, compiled for the CPU (no fastmath: segmentations depend on it).
position_key = numba.njit(cache=True, nogil=True)(_ng.position_key)
ngram_lookup = numba.njit(cache=True, nogil=True)(_ng.ngram_lookup)
ngram_viterbi = numba.njit(cache=True, nogil=True)(_ng.ngram_viterbi)


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
@numba.njit(cache=True, nogil=True)
def position_keys(data, seg_start, seg_end, order, out, out_off):
    """``out[p - out_off] = position_key(p)`` for every byte of the segments, on one thread.

    CPU twin of ``kernels.train.count_position_keys`` (with numpy's sort and
    :func:`run_lengths` after it); the engine runs one per sub-batch on each
    of its threads.
    """
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
def fill_ngram_table(keys, vals, bits, ht):
    """Fill ``ht`` (uint64, ``2 << bits``, zeros; RAM or a memory-mapped file): an open-addressing
    table (linear probing) of ``keys`` (distinct, nonzero) -> ``vals``.

    Slot ``h`` holds its key at ``ht[2h]`` and the float64 bits of its value
    at ``ht[2h + 1]`` (read it through ``ht.view(np.float64)``).
    """
    cap = 1 << bits
    mask = np.uint64(cap - 1)
    shift = np.uint64(64 - bits)
    htf = ht.view(np.float64)
    for i in range(keys.shape[0]):
        k = keys[i]
        h = (k * _HASH_MUL) >> shift
        while ht[2 * h] != 0:
            h = (h + np.uint64(1)) & mask
        ht[2 * h] = k
        htf[2 * h + 1] = vals[i]


# ------------------------------------------------------------------ n-gram Viterbi
@numba.njit(cache=True, nogil=True, parallel=True)
def ngram_viterbi_segments(data, seg_start, seg_end, chunk_bounds, order, ensure_unicode,
                           lp1, lp2, ht, htf, ht_shift, ht_mask, flags):
    """Run :func:`gpu_bytepiece.core.ngram.ngram_viterbi` over every segment.

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
