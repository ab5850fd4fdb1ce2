"""The per-segment Unigram lattice: one plain function body, compiled twice.

``cpu_fallback`` compiles these functions with ``numba.njit`` and ``kernels``
with ``numba.cuda.jit(device=True)``. They allocate nothing, raise nothing and
touch no Python object, so both targets run the same arithmetic in the same
order (float64, no fastmath) and give identical ids.

The best path (Viterbi) pulls: for each end ``e`` of the segment, in
increasing ``e``, it walks the *reversed* byte trie (``gpu_bytepiece.trie``)
backward over ``b[e - 1]``, ``b[e - 2]``, ...; each match ``b[s:e]`` is a
candidate ``best[s] + score``, and ``best[s]`` is final since ``s < e``.
The candidates of ``e`` come shortest first and a later one wins on
``>=``, so on an exact tie the longest piece stays: the one BytePiece
keeps, whose Aho-Corasick automaton reports them longest first and keeps
the first best (``>``). The additions are the same either way, so are the
ids. Pulling keeps ``e``'s running best and back pointer in registers and
stores them once, where pushing forward from every start loads and stores
``best[e]`` for every match (pulling measured 1.14x-1.32x faster on en and
code and 1.07x-1.18x on zh, four vocabularies).

Sampling (``alpha >= 0``) walks the same way and forward-filters: each
end's total is the sum over its candidates, shortest first, and each
candidate is kept by a reservoir draw, with probability its weight over
the total so far. Its random numbers come from the counter-based
generator ``core.rng.uniform`` keyed by (``key``, end position, piece
length), so a seeded sample does not depend on threads, batch or device.
Two forms, chosen by the backends (``backends.layout.sampling_scores``):

- ``alpha == LINEAR``: ``node_score`` holds per-cell weights
  ``exp(alpha * score)`` (``0.0`` where no piece ends), computed once in
  numpy; ``best`` holds each position's total weight, scaled by a power of
  two whenever the total of a position leaves ``[2**-200, 2**200]``
  (``rescale``), so it neither underflows nor overflows. No transcendental
  function in the loop: a product, a sum and a comparison a match, all
  branch-free. Used when every weight is in ``[exp(-200), 1]``.
- otherwise (huge ``alpha``): the log-sum-exp form, ``best`` holds
  log-totals and ``sample_step`` does one ``exp`` and one ``log1p`` a
  match. The backends pass ``alpha * score`` clamped to finite values,
  sums that still overflow to ``-inf`` weigh nothing and the first
  candidate of every position is kept (``sample_step``), so no NaN arises
  and every back pointer is written.

The float64 arithmetic has no ``a + b * c`` whose rounding a fused
multiply-add could change (NVVM fuses such pairs even without fastmath;
``tests/test_ptx.py`` checks the PTX has no ``fma.rn.f64``), so CPU and GPU
draw the same samples.
"""

from __future__ import annotations

import math

import numpy as np
from numba.extending import register_jitable

from .rng import LEN_MUL, POS_MUL, uniform_of

_LOW32 = np.int64(0xFFFFFFFF)
_S32 = np.int64(32)
_U1 = np.uint64(1)

#: A back pointer is one int64: the trie cell where the chosen piece ends
#: (low 32 bits) and the piece's length in bytes (high 32 bits). The length
#: in the pointer keeps the backtrack's chain of loads short, and a whole
#: one needs no clamp in the walk: an int32 pointer with a 7-bit length
#: clamped at an escape value (a ``min`` every step of the walk) made the
#: lattice up to 9% slower on text with much ASCII.
LEN_SHIFT = 32

#: ``alpha`` value that selects the linear form of sampling (``node_score``
#: then holds weights, see the module docstring).
LINEAR = math.inf
#: The linear form keeps each position's total weight in ``[_LOW, _HIGH]``.
_LOW = 2.0 ** -200
_HIGH = 2.0 ** 200
_UP = 2.0 ** 300
_DOWN = 2.0 ** -300


@register_jitable
def initial_best(alpha):
    """``best`` of position 0 and of every other position before any candidate.

    ``(1.0, 0.0)`` for the linear form of sampling (weights), else
    ``(0.0, -inf)`` (log scores).
    """
    if alpha == LINEAR:
        return 1.0, 0.0
    return 0.0, -math.inf


@register_jitable
def rescale(total):
    """The power of two the live totals of the linear form are multiplied by
    when a position's total is ``total``: ``2**300`` below ``2**-200``,
    ``2**-300`` above ``2**200``, else ``1.0``. Exact (a power of two), and
    the same on every device: the lattice and ``core.long.relax_rows``
    apply it at the same positions to the totals later positions read.

    Bounds: a weight is at most 1 and at least ``exp(-200) > 2**-289``, so
    a position's total is at least its predecessor's times ``2**-289`` and
    at most ``max_len`` times the largest total of the last ``max_len``
    positions; after one rescale a position's total is back inside
    ``[2**-200, 2**200]``, far from overflow and from subnormals.
    """
    if total < _LOW:
        return _UP
    if total > _HIGH:
        return _DOWN
    return 1.0


@register_jitable
def sample_step(old, cand, u):
    """One candidate of a sampled lattice: the new log-sum, and whether the candidate is kept.

    ``old`` is the end position's log-sum so far, ``cand`` the candidate's
    log-weight, ``u`` its uniform. Returns ``(log(exp(old) + exp(cand)),
    keep)`` where ``keep`` has probability ``exp(cand) / (exp(old) +
    exp(cand))``: with ``z = exp(-|cand - old|)``, that is ``1 / (1 + z)``
    when ``cand`` is the larger, else ``z / (1 + z)``, tested as
    ``u * (1 + z) < 1`` (or ``< z``): one ``exp`` and one ``log1p`` a match.
    Plain and registered like ``core.rng.uniform``: the lattice and the
    long-segment kernel's ``core.long.relax_rows`` call it alike.

    Any finite ``alpha`` is safe: the first candidate of a position
    (``old == -inf``) is always kept, so every position gets a back pointer
    even when its weights overflowed to ``-inf`` (huge ``alpha``), and a
    ``-inf`` candidate after it weighs nothing (``z = 0``); no NaN arises.
    """
    if old == -math.inf:
        return cand, True
    if cand > old:
        z = math.exp(old - cand)
        return cand + math.log1p(z), u * (1.0 + z) < 1.0
    z = math.exp(cand - old)
    return old + math.log1p(z), u * (1.0 + z) < z


def lattice(data, start, end, cells, node_score, max_len,
            alpha, key, pos0, best, back, off):
    """Fill the lattice of segment ``data[start:end]``.

    Parameters
    ----------
    data : uint8[:]
        Bytes of many segments.
    start, end : int
        The segment is ``data[start:end]`` (``end > start``).
    cells : int64[:]
        The double-array tries, one word per cell: ``check << 32 | base``:
        the byte trie, then the reversed byte trie that the lattice walks,
        whose root's base is at ``cells[cells[0] >> 32]`` (see
        ``gpu_bytepiece.trie``). Every single byte must be a piece (model
        loading guarantees it).
    node_score : float64[:]
        Per trie cell: the score of the piece ending there, ``-inf`` where
        no piece ends (see ``Trie.node_scores``); with ``alpha == LINEAR``
        the piece's weight, ``0.0`` where no piece ends.
    max_len : int
        Longest piece, in bytes.
    alpha : float64
        ``< 0``: Viterbi (best path); ``LINEAR``: sample, ``node_score``
        holding weights; other values ``>= 0``: sample with this temperature
        (log-sum-exp form; the backends pass scaled scores and ``1.0``).
    key : uint64
        Random key of the segment's document (sampling only).
    pos0 : int
        Byte position of ``start`` inside its document (sampling only).
    best : float64[:]
        Scratch; position ``p`` of the segment (``0 <= p <= end - start``)
        uses index ``off + p``.
    back : int64[:]
        Same indexing: the chosen piece ending at ``p``, as
        ``cell | length << LEN_SHIFT`` (``cell`` is the trie cell where it
        ends: its id is ``node_id[cell]``). ``back[off]`` (position 0) is
        not used.
    off : int
        Offset of this segment's scratch.
    """
    n = end - start
    b0, _ = initial_best(alpha)  # position 0; every other is written before it is read
    best[off] = b0
    # the reversed byte trie's root (``gpu_bytepiece.trie``), known >= 0 (no negative-index code)
    rroot = cells[cells[0] >> _S32] & _LOW32
    if alpha < 0:
        # Viterbi, pulled: for each end ``e`` in increasing order, walk the
        # reversed trie backward over ``b[e - 1]``, ``b[e - 2]``, ...; a node
        # at depth ``j`` where a piece ends is the candidate ``b[e - j:e]``
        # from the final ``best[e - j]``. The candidates come shortest
        # first and a later one wins on ``>=``: the longest of the best
        # scores, the one the forward order keeps on ``>`` (same additions,
        # so same ids). Score and pointer stay in registers and are stored
        # once per position; a node where no piece ends scores ``-inf``
        # and never wins (the single byte, a piece, is the first
        # candidate, so the running best is finite). ``best[e - 1]`` is
        # carried in a register (``prev``). Scratch and text are indexed
        # with uint64 (no negative-index wraparound code in the hot loop).
        uoff = np.uint64(off)
        q = np.uint64(start)  # the byte before ``e``: ``data[q]``, ``q = start + e - 1``
        prev = b0
        for e in range(1, n + 1):
            ue = uoff + np.uint64(e)
            s = rroot + data[q]  # depth 1: every byte is a piece
            w = cells[s]
            bv = prev + node_score[s]
            bs = s  # the best piece so far: its cell and length - 1
            bj = 0
            b = w & _LOW32
            if b != 0:  # some piece ends with more than this byte
                # no cap at ``max_len``: no path of the trie is longer
                for j in range(1, e):
                    uj = np.uint64(j)
                    t = b + data[q - uj]
                    w = cells[t]
                    if (w >> _S32) != s:
                        break
                    s = t
                    b = w & _LOW32
                    cand = best[ue - uj - _U1] + node_score[s]
                    better = cand >= bv
                    bs = s if better else bs
                    bj = j if better else bj
                    bv = max(bv, cand)  # ``cand if better else bv``: equal when equal
            best[ue] = bv
            back[ue] = bs | (np.int64(bj + 1) << _S32)
            prev = bv
            q += _U1
        return
    # Sampling, pulled like the best path: ``e``'s total sums its candidates,
    # shortest first, each kept by a reservoir draw with probability its
    # weight over the total so far. The single byte comes first and is kept
    # without a draw (its draw would keep it). Two forms (``alpha`` is the
    # same for the whole loop, so the branches on ``lin`` are predicted):
    # - weights (``lin``): ``best[e - j] * weight`` summed, kept when
    #   ``u * total < weight``; branch-free: a cell where no piece ends
    #   weighs 0.0, adds nothing and is never kept. The random number's
    #   length input ``length * LEN_MUL`` advances by one addition a step
    #   (``core.rng.uniform`` computes the same numbers). When ``e``'s total
    #   leaves ``[2**-200, 2**200]`` the live window (the totals later ends
    #   read) is rescaled (``rescale``).
    # - log-sum-exp: ``sample_step`` per candidate that is a piece.
    lin = alpha == LINEAR
    uoff = np.uint64(off)
    q = np.uint64(start)
    prev = b0
    for e in range(1, n + 1):
        ue = uoff + np.uint64(e)
        s = rroot + data[q]
        w = cells[s]
        tot = prev * node_score[s] if lin else prev + alpha * node_score[s]
        bs = s
        bj = 0
        b = w & _LOW32
        if b != 0:
            kp = key ^ (np.uint64(pos0 + e) * POS_MUL)
            hl = LEN_MUL
            for j in range(1, e):
                uj = np.uint64(j)
                t = b + data[q - uj]
                w = cells[t]
                if (w >> _S32) != s:
                    break
                s = t
                b = w & _LOW32
                hl += LEN_MUL  # (j + 1) * LEN_MUL
                if lin:
                    cw = best[ue - uj - _U1] * node_score[s]
                    tot += cw
                    keep = uniform_of(kp ^ hl) * tot < cw
                else:
                    keep = False
                    sc = node_score[s]
                    if sc > -math.inf:
                        cand = best[ue - uj - _U1] + alpha * sc
                        tot, keep = sample_step(tot, cand, uniform_of(kp ^ hl))
                bs = s if keep else bs
                bj = j if keep else bj
        if lin:
            f = rescale(tot)
            if f != 1.0:
                tot *= f
                lo = e + 1 - max_len
                if lo < 0:
                    lo = 0
                for p in range(lo, e):
                    best[off + p] *= f
        best[ue] = tot
        back[ue] = bs | (np.int64(bj + 1) << _S32)
        prev = tot
        q += _U1


def backtrack(n, back, node_id, off, out, out_start):
    """Write the ids of the chosen path of an ``n``-byte segment.

    Ids go to ``out[out_start : out_start + count]`` in text order; returns
    ``count``. ``count <= n`` always, and ``out[out_start : out_start + n]``
    is used as room: one walk back from the end writes the ids from
    ``out_start + n - 1`` down, then they move to the front.
    """
    k = out_start + n
    e = n
    while e > 0:
        b = back[off + e]
        k -= 1
        out[k] = node_id[b & _LOW32]
        e -= b >> _S32
    count = out_start + n - k
    for j in range(count):
        out[out_start + j] = out[k + j]
    return count
