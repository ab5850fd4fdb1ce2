"""The trainer's per-position and per-segment bodies: one plain function each, compiled twice.

``cpu_fallback.train`` compiles them with ``numba.njit`` and ``kernels.train``
with ``numba.cuda.jit(device=True)``. They allocate nothing, raise nothing and
touch no Python object, so both targets run the same integer and float64
arithmetic in the same order (no fastmath: the segmentation depends on it).

- :func:`position_key`: the n-gram key of one byte position (the n-gram
  counting pass).
- :func:`ngram_lookup`: ``lp`` of one n-gram in the open-addressing table.
- :func:`ngram_viterbi`: the n-gram language-model Viterbi of one training
  segment (the piece counting pass).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_ORDER", "HASH_MUL", "position_key", "ngram_lookup", "ngram_viterbi"]

#: Largest supported ``order``: 7 bytes + a length byte fill a uint64 key.
MAX_ORDER = 7

#: Multiplier of the n-gram tables' Fibonacci hashing (``(key * HASH_MUL) >> shift``).
HASH_MUL = np.uint64(0x9E3779B97F4A7C15)

_ONE = np.uint64(1)
_U8 = np.uint64(8)
_LOW16 = np.uint64(0xFFFF)


def position_key(data, p, end, order):
    """The key of position ``p`` of a segment ending at ``end``.

    The ``n = min(order, end - p)`` bytes ``data[p:p + n]`` big-endian in bits
    63..8 (byte ``t`` at bits ``63 - 8t .. 56 - 8t``), ``n`` in bits 7..0. Keys
    sort like their bytes (zero-padded), then by length, so the keys holding
    at least ``k`` bytes that share their first ``k`` bytes are contiguous in
    sorted order; ``key >> (64 - 8k)`` is that ``k``-gram.
    """
    n = end - p
    if n > order:
        n = order
    k = np.uint64(0)
    for t in range(n):
        k |= np.uint64(data[p + t]) << np.uint64(56 - 8 * t)
    return k | np.uint64(n)


def ngram_lookup(key, ht, htf, ht_shift, ht_mask):
    """``lp`` of an n-gram of length >= 3 in the open-addressing table, or -inf.

    ``key`` is ``(bytes as a big-endian integer) << 8 | length`` (never 0).
    Slot ``h`` holds its key at ``ht[2h]`` and its ``lp`` at ``htf[2h + 1]``
    (``htf`` is ``ht`` viewed as float64: one cache line per probe); empty
    slots hold key 0; linear probing.
    """
    h = (key * HASH_MUL) >> ht_shift
    while True:
        k = ht[2 * h]
        if k == key:
            return htf[2 * h + 1]
        if k == 0:
            return -math.inf
        h = (h + _ONE) & ht_mask


def ngram_viterbi(data, start, end, order, ensure_unicode, lp1, lp2, ht, htf,
                  ht_shift, ht_mask, node, prev, routes, roff, flags):
    """The n-gram language-model Viterbi of one training segment.

    Tags ``0..order-1``: a byte's position in its piece (capped). Node score of
    byte ``i`` with tag ``j``: ``lp`` of ``data[i-j..i]`` (-inf when pruned or
    when ``j > i``); with ``ensure_unicode`` a UTF-8 continuation byte
    (0x80..0xBF) cannot take tag 0. Transitions ``a -> 0`` and
    ``a -> min(a+1, order-1)`` score 0, all others -inf. Sums are
    ``(prev[a] + 0.0) + node[b]`` and ties go to the lowest ``a``, as numpy's
    ``(nodes[i-1][:, None] + trans + nodes[i]).argmax(0)`` in the reference.

    Parameters
    ----------
    data : uint8[:]
        Bytes; the segment is ``data[start:end]``.
    order : int
        Tags per byte, 1..7.
    ensure_unicode : bool
    lp1 : float64[256]
        ``lp`` of single bytes.
    lp2 : float64[65536]
        ``lp`` of 2-grams (index ``b0 << 8 | b1``; -inf when pruned).
    ht, htf, ht_shift, ht_mask
        Open-addressing table of the n-grams of length >= 3 (see
        :func:`ngram_lookup`).
    node, prev : float64[order]
        Scratch.
    routes : uint8[:]
        Scratch of ``(end - start - 1) * order`` bytes from ``roff``.
    flags : uint8[:]
        Output: ``flags[i] = 1`` where byte ``i`` of the segment takes tag 0
        on the best path (a piece starts there), else 0.
    """
    n = end - start
    last = order - 1
    ninf = -math.inf
    w = np.uint64(0)
    for r in range(n):
        c = data[start + r]
        w = (w << _U8) | np.uint64(c)
        for j in range(order):
            node[j] = ninf
        node[0] = lp1[c]
        m = r + 1
        if m > order:
            m = order
        if m >= 2:
            v = lp2[w & _LOW16]
            node[1] = v
            # kept n-grams are suffix-closed (a suffix occurs wherever its
            # n-gram does), so the first pruned suffix ends the walk
            if v != ninf:
                for ln in range(3, m + 1):
                    suf = w & ((_ONE << np.uint64(8 * ln)) - _ONE)
                    key = (suf << _U8) | np.uint64(ln)
                    # ngram_lookup, inlined (the shared bodies call nothing)
                    h = (key * HASH_MUL) >> ht_shift
                    while True:
                        hk = ht[2 * h]
                        if hk == key:
                            v = htf[2 * h + 1]
                            break
                        if hk == 0:
                            v = ninf
                            break
                        h = (h + _ONE) & ht_mask
                    node[ln - 1] = v
                    if v == ninf:
                        break
        if ensure_unicode and c >= 0x80 and c < 0xC0:
            node[0] = ninf
        if r == 0:
            for j in range(order):
                prev[j] = node[j]
            continue
        base = roff + (r - 1) * order
        # b = 0: every a may start a new piece
        nb = node[0]
        best0 = (prev[0] + 0.0) + nb
        arg0 = 0
        for a in range(1, order):
            s = (prev[a] + 0.0) + nb
            if s > best0:
                best0 = s
                arg0 = a
        if order >= 2:
            # b = last: from a = last - 1 and a = last (the rest is -inf)
            nb = node[last]
            s1 = (prev[last - 1] + 0.0) + nb
            s2 = (prev[last] + 0.0) + nb
            if s2 > s1:
                routes[base + last] = last
                prev[last] = s2
            elif s1 == ninf:
                routes[base + last] = 0  # the whole column is -inf: argmax is 0
                prev[last] = ninf
            else:
                routes[base + last] = last - 1
                prev[last] = s1
            # 0 < b < last: only from a = b - 1 (descending b: prev[b - 1] is still the old value)
            for b in range(last - 1, 0, -1):
                s = (prev[b - 1] + 0.0) + node[b]
                if s == ninf:
                    routes[base + b] = 0
                else:
                    routes[base + b] = b - 1
                prev[b] = s
        routes[base] = arg0
        prev[0] = best0
    tag = 0
    bv = prev[0]
    for j in range(1, order):
        if prev[j] > bv:
            bv = prev[j]
            tag = j
    flags[start + n - 1] = 1 if tag == 0 else 0
    for r in range(n - 1, 0, -1):
        tag = routes[roff + (r - 1) * order + tag]
        flags[start + r - 1] = 1 if tag == 0 else 0
