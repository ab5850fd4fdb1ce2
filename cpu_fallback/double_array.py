"""The double-array trie's builder (``gpu_bytepiece.trie.build_trie``), compiled with ``numba.njit``.

Here rather than in ``trie.py`` so that loading a cached trie
(``trie.cached_trie``) does not import Numba.
"""

from __future__ import annotations

import numba
import numpy as np

from gpu_bytepiece import jit_cache

jit_cache.install()  # the package's cache locator, before the cache=True functions below


@numba.njit(cache=True)
def grow(a, size, fill):
    out = np.full(size, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True)
def build_double_array(flat, starts, lens, ids, n_labels):
    """Build the double array from pieces sorted by labels (lexicographically).

    Labels are ``flat``'s values, in ``[0, n_labels)`` (bytes: ``n_labels =
    256``, for the tries of ``gpu_bytepiece.trie``).
    Depth-first: each stack item is a node with the range ``[lo, hi)`` of
    sorted pieces sharing its prefix; its children's labels are the distinct
    labels at position ``depth`` in that range. A node's children take the
    first free cells that fit, then the first child's subtree is built
    before its siblings', so a walk down a piece steps through nearby cells
    (breadth-first put every depth after the whole previous one; depth-first
    measured 1.1x-1.3x faster lattices on en and code for the large
    vocabularies, same ids). The arrays end ``n_labels`` spare cells past
    the last used one and past any ``base``.
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
    qt = 1
    labels = np.empty(n_labels, dtype=np.int64)
    lab_lo = np.empty(n_labels, dtype=np.int64)
    lab_hi = np.empty(n_labels, dtype=np.int64)
    next_free = 1
    multi_hint = 1
    used_max = 0
    while qt > 0:
        qt -= 1
        s = q_node[qt]
        lo = q_lo[qt]
        hi = q_hi[qt]
        d = q_depth[qt]
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
            while t + n_labels >= size:
                size = size * 2
                base = grow(base, size, 0)
                check = grow(check, size, -1)
                node_id = grow(node_id, size, -1)
                node_len = grow(node_len, size, 0)
                q_node = grow(q_node, size, 0)
                q_lo = grow(q_lo, size, 0)
                q_hi = grow(q_hi, size, 0)
                q_depth = grow(q_depth, size, 0)
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
        for kk in range(nl):
            k = nl - 1 - kk  # pushed last to first: the first label's subtree is built next
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
    # n_labels spare cells past the last used one (and past any base + n_labels - 1)
    max_base = 0
    for k in range(used_max + 1):
        if base[k] > max_base:
            max_base = base[k]
    end = max(used_max, max_base) + n_labels + 1
    if end > size:
        base = grow(base, end, 0)
        check = grow(check, end, -1)
        node_id = grow(node_id, end, -1)
        node_len = grow(node_len, end, 0)
    return base[:end].copy(), check[:end].copy(), node_id[:end].copy(), node_len[:end].copy()
