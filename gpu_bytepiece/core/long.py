"""Plain bodies of the long-segment kernel: the lattice split into walk and relax.

``kernels.encode_long_segments`` runs the lattice of one long segment on a
whole thread block. It splits ``core.lattice.lattice`` in two steps, each a
plain function here (no allocation, no exceptions, no Python objects, no
CUDA): ``walk_matches`` lists the pieces that start at one position (the
block's walker threads run it for many starts at once) and ``relax_rows``
applies a tile of such lists in lattice order (one thread). The kernel
compiles them with ``numba.cuda.jit(device=True)`` and keeps to itself what
is CUDA: shared-memory tiles, the ring of live ``best`` values, barriers and
the windowed backtrack. The tests compile them with ``numba.njit`` and check
that walking then relaxing tile by tile reproduces ``lattice.lattice``
exactly, for the best path and for sampling.
"""

from __future__ import annotations

import math

import numpy as np

from .lattice import _LOW32, _S32, LINEAR, initial_best, rescale, sample_step
from .rng import uniform

__all__ = ["walk_matches", "relax_rows"]


def walk_matches(data, start, i, lim, cells, node_score,
                 row_score, row_cell, row_len, row_off):
    """The pieces that start at ``data[start + i]``, shortest first.

    Walks the double-array trie (``cells``: ``check << 32 | base`` per
    cell, as ``lattice.lattice`` walks it) for at most ``lim`` bytes and
    writes each piece found (a cell whose score is not ``-inf``) as
    ``row_score``, ``row_cell`` (the trie cell where it ends), ``row_len``
    at ``row_off``, ``row_off + 1``, ...; returns how many. A cell where no
    piece ends is skipped: in the lattice it scores ``-inf`` and can never
    win (Viterbi) or is skipped (sampling).
    """
    s = np.int64(0)
    count = 0
    for j in range(lim):
        t = (cells[s] & _LOW32) + data[start + i + j]
        if (cells[t] >> _S32) != s:
            break
        s = t
        sc = node_score[s]
        if sc > -math.inf:
            row_score[row_off + count] = sc
            row_cell[row_off + count] = s
            row_len[row_off + count] = j + 1
            count += 1
    return count


def relax_rows(i0, rows, row_score, row_cell, row_len, row_cnt, cnt_off, row_off, row_stride,
               ring, ring_mask, alpha, key, pos0, back, off):
    """Apply the matches of starts ``i0 .. i0 + rows - 1`` in lattice order.

    Row ``r`` (start ``i0 + r``) holds ``row_cnt[cnt_off + r]`` matches at
    ``row_off + r * row_stride`` (from ``walk_matches``). ``ring`` holds
    ``best`` of the live positions: position ``p`` in ``ring[p & ring_mask]``
    (``ring_mask + 1 > max_len``); the slot of a start is reset to the
    empty value (``lattice.initial_best``) once its matches are applied,
    ready for position ``start + ring size``. Back pointers (trie cell and
    length, packed) go to ``back[off + e]`` as in ``lattice.lattice``, whose
    arithmetic this repeats exactly: with weights (``alpha == LINEAR``) a
    start's rescale multiplies every ring slot, which holds exactly the
    lattice's live window (the other slots are empty: ``0.0``).
    """
    _, rest = initial_best(alpha)
    if alpha < 0:
        for r in range(rows):
            i = i0 + r
            bs = ring[i & ring_mask]
            ro = row_off + r * row_stride
            for m in range(row_cnt[cnt_off + r]):
                ln = np.int64(row_len[ro + m])
                e = i + ln
                slot = e & ring_mask
                cand = bs + row_score[ro + m]
                if cand > ring[slot]:
                    ring[slot] = cand
                    back[off + e] = row_cell[ro + m] | (ln << _S32)
            ring[i & ring_mask] = rest
    elif alpha == LINEAR:
        for r in range(rows):
            i = i0 + r
            f = rescale(ring[i & ring_mask])
            if f != 1.0:
                for p in range(ring_mask + 1):
                    ring[p] *= f
            si = ring[i & ring_mask]
            ro = row_off + r * row_stride
            for m in range(row_cnt[cnt_off + r]):
                ln = np.int64(row_len[ro + m])
                e = i + ln
                slot = e & ring_mask
                cw = si * row_score[ro + m]
                tot = ring[slot] + cw
                ring[slot] = tot
                # lattice.lattice's random number for this (key, end, length)
                if uniform(key, pos0 + e, ln) * tot < cw:
                    back[off + e] = row_cell[ro + m] | (ln << _S32)
            ring[i & ring_mask] = rest
    else:
        for r in range(rows):
            i = i0 + r
            bs = ring[i & ring_mask]
            ro = row_off + r * row_stride
            for m in range(row_cnt[cnt_off + r]):
                ln = np.int64(row_len[ro + m])
                e = i + ln
                slot = e & ring_mask
                cand = bs + alpha * row_score[ro + m]
                # lattice.lattice's random number for this (key, end, length)
                tot, keep = sample_step(ring[slot], cand, uniform(key, pos0 + e, ln))
                ring[slot] = tot
                if keep:
                    back[off + e] = row_cell[ro + m] | (ln << _S32)
            ring[i & ring_mask] = rest
