"""Plain bodies of the long-segment kernel: the lattice split into walk and relax.

``kernels.encode_long_segments`` runs the lattice of one long segment on a
whole thread block. It splits ``core.lattice.lattice`` in two steps, each a
plain function here (no allocation, no exceptions, no Python objects, no
CUDA): ``walk_matches`` lists the pieces that end at one position (the
block's walker threads run it for many ends at once) and ``relax_rows``
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

from .lattice import _LOW32, _S32, LINEAR, rescale, sample_step
from .rng import uniform

__all__ = ["walk_matches", "relax_rows"]


def walk_matches(data, start, e, lim, cells, node_score,
                 row_score, row_cell, row_len, row_off):
    """The pieces that end at position ``e`` of the segment at ``data[start]``, shortest first.

    Walks the reversed byte trie (``cells``: ``check << 32 | base`` per
    cell, its root's base at ``cells[cells[0] >> 32]``, as
    ``lattice.lattice`` walks it) backward over ``data[start + e - 1]``,
    ``data[start + e - 2]``, ... for at most ``lim`` bytes and writes each
    piece found (a cell whose score is not ``-inf``) as ``row_score``,
    ``row_cell`` (the trie cell where it ends), ``row_len`` at
    ``row_off``, ``row_off + 1``, ...; returns how many. The first is the
    single byte (every byte is a piece). A cell where no piece ends is
    skipped: in the lattice it scores ``-inf`` (weighs ``0.0``) and can
    never win or be kept.
    """
    s = np.int64(0)
    b = cells[cells[0] >> _S32] & _LOW32
    count = 0
    for j in range(lim):
        t = b + data[start + e - 1 - j]
        w = cells[t]
        if j > 0 and (w >> _S32) != s:
            break
        s = t
        b = w & _LOW32
        sc = node_score[s]
        if sc > -math.inf:
            row_score[row_off + count] = sc
            row_cell[row_off + count] = s
            row_len[row_off + count] = j + 1
            count += 1
    return count


def relax_rows(e0, rows, row_score, row_cell, row_len, row_cnt, cnt_off, row_off, row_stride,
               ring, ring_mask, alpha, key, pos0, back, off):
    """Apply the matches of ends ``e0 .. e0 + rows - 1`` in lattice order.

    Row ``r`` (end ``e0 + r``) holds ``row_cnt[cnt_off + r]`` matches at
    ``row_off + r * row_stride`` (from ``walk_matches``, shortest first).
    ``ring`` holds ``best`` of the live positions: position ``p`` in
    ``ring[p & ring_mask]`` (``ring_mask + 1 > max_len``), so an end reads
    the final values of the ``max_len`` positions before it and writes its
    own. Back pointers (trie cell and length, packed) go to ``back[off +
    e]`` as in ``lattice.lattice``, whose arithmetic this repeats exactly:
    the same candidates in the same order (those where no piece ends, which
    the lattice adds as ``-inf`` or ``0.0``, change nothing), the same
    comparisons and random numbers; with weights (``alpha == LINEAR``) an
    end's rescale multiplies every ring slot, a superset of the lattice's
    window (``max_len`` positions), by the same power of two.
    """
    for r in range(rows):
        e = e0 + r
        ro = row_off + r * row_stride
        cnt = row_cnt[cnt_off + r]
        prev = ring[(e - 1) & ring_mask]
        bc = row_cell[ro]  # the single byte, first
        bl = np.int64(1)
        if alpha < 0:
            bv = prev + row_score[ro]
            for m in range(1, cnt):
                ln = np.int64(row_len[ro + m])
                cand = ring[(e - ln) & ring_mask] + row_score[ro + m]
                if cand >= bv:
                    bv = cand
                    bc = row_cell[ro + m]
                    bl = ln
        elif alpha == LINEAR:
            bv = prev * row_score[ro]
            for m in range(1, cnt):
                ln = np.int64(row_len[ro + m])
                cw = ring[(e - ln) & ring_mask] * row_score[ro + m]
                bv += cw
                # lattice.lattice's random number for this (key, end, length)
                if uniform(key, pos0 + e, ln) * bv < cw:
                    bc = row_cell[ro + m]
                    bl = ln
            f = rescale(bv)
            if f != 1.0:
                bv *= f
                for p in range(ring_mask + 1):
                    ring[p] *= f
        else:
            bv = prev + alpha * row_score[ro]
            for m in range(1, cnt):
                ln = np.int64(row_len[ro + m])
                cand = ring[(e - ln) & ring_mask] + alpha * row_score[ro + m]
                bv, keep = sample_step(bv, cand, uniform(key, pos0 + e, ln))
                if keep:
                    bc = row_cell[ro + m]
                    bl = ln
        ring[e & ring_mask] = bv
        back[off + e] = bc | (bl << _S32)
