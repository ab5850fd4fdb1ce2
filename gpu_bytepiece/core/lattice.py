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
``best[e]`` for every match (pulling measured 1.07x-1.3x faster on zh, en
and code, four vocabularies).

Sampling (``alpha >= 0``) pushes forward: it walks the byte trie from every
start ``s`` in increasing ``s`` and adds each match ``b[s:e]`` to ``e``'s
total, so for a fixed end the candidates arrive longest first. From a UTF-8
lead byte (``>= 0xC0``), when the trie has a character trie (every piece
starting with a lead byte is valid UTF-8), it walks characters instead:
the character's code point (``char_code``) indexes a table giving its
number, and one load of the character trie's cell a character replaces
the byte trie's one a byte (a third of the dependent loads on Chinese).
It relaxes only where a character ends, which is where every such piece
ends; the single byte is relaxed from the byte trie as at every start.

Sampling forward-filters with a reservoir draw per position: each
candidate is kept with probability its weight over the position's total
so far. Its random numbers come from the
counter-based generator ``core.rng.uniform`` keyed by (``key``, end
position, piece length), so a seeded sample does not depend on threads,
batch or device. Two forms, chosen by the backends
(``backends.layout.sampling_scores``):

- ``alpha == LINEAR``: ``node_score`` holds per-cell weights
  ``exp(alpha * score)`` (``0.0`` where no piece ends), computed once in
  numpy; ``best`` holds each position's total weight, scaled by a power of
  two whenever the weight of a start leaves ``[2**-200, 2**200]``
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

from .rng import LEN_MUL, POS_MUL, uniform, uniform_of

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
_ONE_LEN = np.int64(1 << LEN_SHIFT)
_TWO_LEN = np.int64(2 << LEN_SHIFT)

#: ``char_code`` of bytes that encode no character (above any code point).
BAD_CHAR = 1 << 40
_BAD = np.int64(BAD_CHAR)
_U2 = np.uint64(2)
_U3 = np.uint64(3)


@register_jitable
def char_len(c):
    """Bytes of the UTF-8 character that lead byte ``c`` starts, as the
    lattice counts them: 1 below ``0xC0`` (ASCII, and a stray continuation
    byte), 2, 3, 4 from ``0xC0``, ``0xE0``, ``0xF0``."""
    return np.int64(1) + (c >= 0xC0) + (c >= 0xE0) + (c >= 0xF0)


@register_jitable
def char_code(data, p, c, ln):
    """Code point of the ``ln``-byte UTF-8 character at ``data[p]`` (``p``
    uint64, lead byte ``c``, ``ln = char_len(c)``), or ``BAD_CHAR`` when
    the bytes are no valid encoding (a stray continuation byte, a missing
    continuation byte, an overlong form, a lead byte ``>= 0xF8``). Valid
    encodings and code points correspond one to one, so equal codes mean
    equal bytes. (Surrogates and code points past ``0x10FFFF`` decode, but
    no character table holds them: ``trie.char_walk_ok`` pieces are valid
    UTF-8.)
    """
    c = np.int64(c)
    if ln == 1:
        return c if c < 0x80 else _BAD
    x1 = np.int64(data[p + _U1]) ^ 0x80
    if ln == 2:
        cp = ((c & 0x1F) << 6) | x1
        return cp if (x1 < 0x40) & (cp >= 0x80) else _BAD
    x2 = np.int64(data[p + _U2]) ^ 0x80
    if ln == 3:
        cp = ((c & 0x0F) << 12) | (x1 << 6) | x2
        return cp if ((x1 | x2) < 0x40) & (cp >= 0x800) else _BAD
    x3 = np.int64(data[p + _U3]) ^ 0x80
    cp = ((c & 0x0F) << 18) | (x1 << 12) | (x2 << 6) | x3
    return cp if ((x1 | x2 | x3) < 0x40) & (cp >= 0x10000) else _BAD


#: ``alpha`` value that selects the linear form of sampling (``node_score``
#: then holds weights, see the module docstring).
LINEAR = math.inf
#: The linear form keeps a start's total weight in ``[_LOW, _HIGH]``.
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
    when a start's total is ``total``: ``2**300`` below ``2**-200``,
    ``2**-300`` above ``2**200``, else ``1.0``. Exact (a power of two), and
    the same on every device: the lattice and ``core.long.relax_rows``
    apply it at the same starts to the same values.

    Bounds: a weight is at most 1 and at least ``exp(-200) > 2**-289``, so
    a position's total is at least its predecessor's times ``2**-289`` and
    at most ``max_len`` times the largest total of the last ``max_len``
    positions; after one rescale a start's total is back inside
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
        the byte trie, the reversed byte trie, the character trie if any,
        then the header at ``cells[0] >> 32`` and the character table (see
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
        ends: its id is ``node_id[cell]``). ``back[off]`` (position 0) is a
        sink that sampling writes losing candidates to; nothing reads it.
    off : int
        Offset of this segment's scratch.
    """
    n = end - start
    b0, rest = initial_best(alpha)
    best[off] = b0
    # the header (``gpu_bytepiece.trie``): the reversed byte trie's root, then
    # the character trie's table (``n_cp == 0``: no character trie)
    head = cells[0] >> _S32
    rroot = cells[head] & _LOW32  # (known >= 0: no negative-index code)
    n_cp = cells[head + 1]
    first = cells[head + 2]
    table = head + 3
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
    # sampling pushes forward: each start ``i`` adds its pieces to the ends it reaches
    for p in range(1, n + 1):
        best[off + p] = rest
    root = cells[0] & _LOW32
    if alpha == LINEAR:
        # Branch-free like the best path: a cell where no piece ends weighs
        # 0.0, adds nothing and is never kept (``u * tot < 0`` is false), its
        # pointer goes to the sink. The random number's inputs ``end *
        # POS_MUL`` and ``length * LEN_MUL`` advance by one addition a step
        # (``core.rng.uniform`` computes the same numbers).
        uoff = np.uint64(off)
        for i in range(n):
            ui = np.uint64(i)
            lim = n - i
            if lim > max_len:
                lim = max_len
            f = rescale(best[uoff + ui])
            if f != 1.0:
                for p in range(i, i + lim + 1):
                    best[off + p] *= f
            si = best[uoff + ui]
            c = data[start + i]
            if n_cp != 0 and c >= 0xC0:
                # the single byte, then the character trie as in the best
                # path: the cells it skips weigh 0.0 (no piece ends inside
                # a character), so their relaxations were no-ops
                s = root + c
                e = uoff + ui + _U1
                cw = si * node_score[s]
                tot = best[e] + cw
                best[e] = tot
                keep = uniform(key, pos0 + i + 1, 1) * tot < cw
                back[e if keep else uoff] = s | _ONE_LEN
                q = np.uint64(start + i)
                j = char_len(c)
                if j > lim:
                    continue
                cp = char_code(data, q, c, j)
                if cp >= n_cp:
                    continue
                x = cells[table + cp]
                if x < 0:
                    continue
                s = first + (x & _LOW32)
                b = x >> _S32
                while True:
                    e = uoff + ui + np.uint64(j)
                    cw = si * node_score[s]
                    tot = best[e] + cw
                    best[e] = tot
                    keep = uniform(key, pos0 + i + j, j) * tot < cw
                    back[e if keep else uoff] = s | (j << _S32)
                    if b == 0 or j == lim:
                        break
                    c = data[q + np.uint64(j)]
                    ln = char_len(c)
                    if j + ln > lim:
                        break
                    cp = char_code(data, q + np.uint64(j), c, ln)
                    if cp >= n_cp:
                        break
                    x = cells[table + cp]
                    if x < 0:
                        break
                    t = b + (x & _LOW32)
                    w = cells[t]
                    if (w >> _S32) != s:
                        break
                    s = t
                    b = w & _LOW32
                    j += ln
                continue
            hp = np.uint64(pos0 + i) * POS_MUL
            hl = np.uint64(0)
            s = np.int64(0)
            w = cells[0]
            for j in range(lim):
                t = (w & _LOW32) + data[start + i + j]
                w = cells[t]
                if (w >> _S32) != s:
                    break
                s = t
                hp += POS_MUL
                hl += LEN_MUL
                e = uoff + ui + np.uint64(j + 1)
                cw = si * node_score[s]
                tot = best[e] + cw
                best[e] = tot
                keep = uniform_of(key ^ hp ^ hl) * tot < cw
                back[e if keep else uoff] = s | (np.int64(j + 1) << _S32)
    else:
        for i in range(n):
            bs = best[off + i]
            lim = n - i
            if lim > max_len:
                lim = max_len
            s = np.int64(0)
            w = cells[0]
            for j in range(lim):
                t = (w & _LOW32) + data[start + i + j]
                w = cells[t]
                if (w >> _S32) != s:
                    break
                s = t
                sc = node_score[s]
                if sc > -math.inf:
                    e = off + i + j + 1
                    cand = bs + alpha * sc
                    tot, keep = sample_step(best[e], cand, uniform(key, pos0 + i + j + 1, j + 1))
                    best[e] = tot
                    if keep:
                        back[e] = s | (np.int64(j + 1) << _S32)


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
