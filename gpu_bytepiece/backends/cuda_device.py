"""The CUDA backend's device-input path: text already on the GPU, ids left there.

``encode_device`` takes UTF-8 bytes and int64 document offsets that are
already on the GPU and returns device arrays: the ids and offsets that
``encode_packed`` returns on the host, with no round trip of the text or
the ids. The host steps of ``encode_packed`` run on the device here, with
the device twins of ``backends.layout`` (``kernels.layout``) and the
prefix sums of ``kernels.scan``: segmentation, sampling keys, chunking,
long-segment selection and the output layout. Only scalars cross to the
host (document span, segment and long segment counts, chunk cuts when
chunked, the id total), each a sync.
"""

from __future__ import annotations

import numpy as np

from .. import config
from ..core.rng import stream_root
from ._cuda_common import BYTES_PER_BYTE, BYTES_PER_SEGMENT, CUDABase

__all__ = ["DeviceInput", "as_device_array"]


def as_device_array(obj, dtype, what="array"):
    """A 1-d C-contiguous Numba device array viewing ``obj`` (no copy).

    ``obj`` is a Numba device array or anything with
    ``__cuda_array_interface__`` (CuPy, PyTorch, ...) of exactly ``dtype``.
    """
    from numba import cuda

    if getattr(obj, "__cuda_ndarray__", False):
        arr = obj
    elif hasattr(obj, "__cuda_array_interface__") and hasattr(cuda, "as_cuda_array"):
        arr = cuda.as_cuda_array(obj)
    else:
        raise TypeError(f"{what} must be a CUDA device array (Numba device array, CuPy, or anything with "
                        f"__cuda_array_interface__), got {type(obj).__name__}; host data goes through "
                        "Tokenizer.encode_to_numpy")
    if len(arr.shape) != 1 or np.dtype(arr.dtype) != np.dtype(dtype):
        raise TypeError(f"{what} must be a 1-d {np.dtype(dtype).name} device array, "
                        f"got shape {tuple(arr.shape)} and dtype {arr.dtype}")
    if not arr.is_c_contiguous():
        raise TypeError(f"{what} must be contiguous")
    return arr


class DeviceInput(CUDABase):
    """``encode_device`` on the resources of ``CUDABase``; ``backends.cuda.CUDABackend`` adds the host path."""

    def _read(self, arr, i, st):
        """``int(arr[i])`` (waits for ``st``)."""
        h = arr[i:i + 1].copy_to_host(stream=st)
        st.synchronize()
        return int(h[0])

    def _tile_offsets(self, x, name, st):
        """Tile size and exclusive tile offsets (``n_tiles + 1`` cells, the last the total) of ``x``."""
        from ..kernels import scan as ks

        tpb, tile, n_tiles, blocks = ks.tile_plan(x.shape[0])
        # always the largest size, so that the buffer is never replaced while a scan may still read it
        sums = self._pool.get(name, max(n_tiles, int(config.CUDA_SCAN_MAX_TILES)) + 1, np.int64)[:n_tiles + 1]
        if n_tiles:
            ks.tile_sums[blocks, tpb, st](x, tile, sums)
        ks.scan_in_place[1, tpb, st](sums, n_tiles)
        return tile, sums, n_tiles, tpb, blocks

    def _scan(self, x, out, name, st):
        """``out[i] = x[:i].sum()`` for ``i <= len(x)`` on the device."""
        from ..kernels import scan as ks

        tile, sums, n_tiles, tpb, blocks = self._tile_offsets(x, name, st)
        ks.scan_tiles[blocks, tpb, st](x, tile, sums, out)

    def encode_device(self, data, doc_offsets, alpha=-1.0, add_bos=False, add_eos=False, *,
                      stream_key=None, first_doc=0, output="auto"):
        """Encode text that is already on the GPU; results stay there.

        Parameters
        ----------
        data : uint8 device array
            NFC-normalized UTF-8 (the caller's responsibility: no
            normalization happens on the device), any object with
            ``__cuda_array_interface__`` or a Numba device array.
        doc_offsets : int64 device array, ``n_docs + 1``
            Document ``d`` is ``data[doc_offsets[d]:doc_offsets[d + 1]]``;
            non-decreasing, within ``data`` (``doc_offsets[0]`` may be > 0).
        alpha : float
            ``< 0``: best path; ``>= 0``: sample.
        add_bos, add_eos : bool
        stream_key : int, optional
            Sampling: document ``d``'s key is
            ``core.rng.document_keys(stream_key, first_doc + d)``, computed
            on the device; ``None`` for the best path.
        first_doc : int
        output : {'auto', 'numba', 'cupy'}
            Kind of the returned arrays: ``auto`` gives CuPy arrays when
            ``data`` is a CuPy array, Numba device arrays otherwise (both
            views of the same device memory, no copy).

        Returns
        -------
        ids : uint32 device array
        offsets : int64 device array, ``n_docs + 1``
            As ``encode_packed`` returns them on the host.

        Only scalars cross to the host (document span, segment and long
        segment counts, chunk cuts when chunked, the id total), each a sync.
        """
        ids, offsets = self._encode_device(data, doc_offsets, float(alpha), add_bos, add_eos, stream_key, first_doc)
        if output == "cupy" or (output == "auto" and type(data).__module__.split(".")[0] == "cupy"):
            import cupy

            return cupy.asarray(ids), cupy.asarray(offsets)
        return ids, offsets

    def _encode_device(self, data, doc_offsets, alpha, add_bos, add_eos, stream_key, first_doc):
        """``encode_device`` with Numba device arrays out."""
        from ..kernels import layout as kl
        from ..kernels import scan as ks

        cuda = self._cuda
        d_data = as_device_array(data, np.uint8, "data")
        d_off = as_device_array(doc_offsets, np.int64, "doc_offsets")
        n_docs = d_off.shape[0] - 1
        if n_docs < 0:
            raise ValueError("doc_offsets must have at least one element")
        extra = int(add_bos) + int(add_eos)
        use_keys = stream_key is not None
        with self._lock, self._device():
            st = self._stream
            pool = self._pool
            if n_docs == 0:
                return cuda.device_array(0, dtype=np.uint32), cuda.to_device(np.zeros(1, dtype=np.int64))
            a0 = self._read(d_off, 0, st)
            a1 = self._read(d_off, n_docs, st)
            if not 0 <= a0 <= a1 <= d_data.shape[0]:
                raise ValueError(f"doc_offsets span [{a0}, {a1}) is not within data (length {d_data.shape[0]})")
            n = a1 - a0
            view = d_data[a0:a1]
            # sampling keys, per document (twin of core.rng.document_keys)
            d_keys = pool.get("dv_keys", n_docs, np.uint64)
            if use_keys:
                kl.document_keys[*self._grid(n_docs), st](stream_root(int(stream_key)), np.int64(first_doc), d_keys)
            # segmentation (twin of cpu_fallback.find_segments)
            n_seg = 0
            if n:
                flags = pool.get("dv_flags", n, np.uint8)
                kl.newline_ends[*self._grid(n), st](view, flags)
                kl.document_ends[*self._grid(n_docs), st](d_off, flags)
                tile, sums, n_tiles, tpb, blocks = self._tile_offsets(flags, "dv_sums", st)
                n_seg = self._read(sums, n_tiles, st)
            seg_end = pool.get("dv_seg_end", n_seg, np.int64)
            seg_start = pool.get("dv_seg_start", n_seg, np.int64)
            seg_doc = pool.get("dv_seg_doc", n_seg, np.int64)
            seg_key = pool.get("dv_seg_key", n_seg, np.uint64)
            seg_pos = pool.get("dv_seg_pos", n_seg, np.int64)
            counts = pool.get("dv_counts", n_seg, np.int64)
            out = pool.get("dv_out", n, np.uint32)
            if n_seg:
                ks.compact_tiles[blocks, tpb, st](flags, tile, sums, 1, seg_end)
                kl.segment_starts[*self._grid(n_seg), st](seg_end, 0, seg_start)
                kl.segment_docs[*self._grid(n_seg), st](seg_start, d_off, d_keys, int(use_keys),
                                                       seg_doc, seg_key, seg_pos)
                scores_d, alpha_d = self._scores_for(alpha)
                chunks = self._device_chunks(seg_end, n, n_seg, st)
                # chunk buffers at their largest size up front: never replaced under a running kernel
                m_max = max(k1 - k0 for k0, k1, _, _ in chunks)
                nb_max = max(c1 - c0 for _, _, c0, c1 in chunks)
                for name, size, dt in (("dv_c_start", m_max, np.int64), ("dv_c_end", m_max, np.int64),
                                       ("dv_lflags", m_max, np.uint8), ("dv_order", m_max, np.int64),
                                       ("best0", nb_max + m_max, np.float64),
                                       ("back0", nb_max + m_max, np.int64)):
                    pool.get(name, size, dt)
                for k0, k1, c0, c1 in chunks:
                    self._device_chunk(view, seg_start, seg_end, seg_key, seg_pos, k0, k1, c0, c1,
                                       n_seg, out, counts, scores_d, alpha_d, st)
            # layout (twin of layout.segment_layout / put_specials)
            cum = pool.get("dv_cum", n_seg + 1, np.int64)
            self._scan(counts, cum, "dv_sums", st)
            tokens = pool.get("dv_tokens", n_docs, np.int64)
            kl.document_tokens[*self._grid(n_docs), st](d_off, seg_end, cum, extra, tokens)
            offsets = cuda.device_array(n_docs + 1, dtype=np.int64)
            self._scan(tokens, offsets, "dv_sums", st)
            total = self._read(offsets, n_docs, st)
            ids = cuda.device_array(total, dtype=np.uint32)
            if n_seg:
                dest = pool.get("dv_dest", n_seg, np.int64)
                kl.segment_dest[*self._grid(n_seg), st](cum, seg_doc, extra, int(add_bos), dest)
                blocks, tpb = self._launch(n_seg * self._k.tokenize.SCATTER_LANES)
                self._scatter_kernel[blocks, tpb, st](out, seg_start, counts, dest, ids)
            if extra:
                kl.put_specials[*self._grid(n_docs), st](offsets, int(add_bos), int(add_eos), ids)
            st.synchronize()
        return ids, offsets

    def _device_chunks(self, seg_end, n, n_seg, st):
        """``(k0, k1, c0, c1)``: segments and bytes of each chunk of device input."""
        from ..kernels import layout as kl

        if n * BYTES_PER_BYTE + n_seg * BYTES_PER_SEGMENT <= int(config.MAX_DEVICE_BYTES):
            return [(0, n_seg, 0, n)]
        step = max(1, int(config.MAX_DEVICE_BYTES) // (BYTES_PER_BYTE + BYTES_PER_SEGMENT))
        n_cuts = -(-n // step)
        cuts = self._pool.get("dv_cuts", n_cuts, np.int64)
        byte_cuts = self._pool.get("dv_byte_cuts", n_cuts, np.int64)
        kl.chunk_cuts[*self._grid(n_cuts), st](seg_end, step, cuts, byte_cuts)
        h_cuts = cuts.copy_to_host(stream=st)
        h_bytes = byte_cuts.copy_to_host(stream=st)
        st.synchronize()
        chunks = []
        k0 = c0 = 0
        for k1, c1 in zip(h_cuts.tolist(), h_bytes.tolist()):
            if k1 > k0:
                chunks.append((k0, k1, c0, c1))
                k0, c0 = k1, c1
        return chunks

    def _device_chunk(self, view, seg_start, seg_end, seg_key, seg_pos, k0, k1, c0, c1,
                      n_seg, out, counts, scores_d, alpha_d, st):
        """The lattice of segments ``k0:k1`` (bytes ``c0:c1`` of ``view``) of device input."""
        from ..kernels import layout as kl
        from ..kernels import scan as ks

        pool = self._pool
        m = k1 - k0
        nb = c1 - c0
        if k0 == 0 and k1 == n_seg and c0 == 0:
            c_start, c_end = seg_start, seg_end
        else:
            c_start = pool.get("dv_c_start", m, np.int64)
            c_end = pool.get("dv_c_end", m, np.int64)
            kl.rebase[*self._grid(m), st](seg_start, k0, c0, c_start)
            kl.rebase[*self._grid(m), st](seg_end, k0, c0, c_end)
        plan = self._long_plan()
        # long segments first, then the others in text order (no length sort on the device)
        thr = plan[0] if plan is not None else np.iinfo(np.int64).max
        lflags = pool.get("dv_lflags", m, np.uint8)
        kl.long_flags[*self._grid(m), st](c_start, c_end, thr, lflags)
        tile, sums, n_tiles, tpb, blocks = self._tile_offsets(lflags, "dv_lsums", st)
        order = pool.get("dv_order", m, np.int64)
        ks.partition_tiles[blocks, tpb, st](lflags, tile, sums, order)
        n_long = self._read(sums, n_tiles, st)
        best = pool.get("best0", nb + m, np.float64)
        back = pool.get("back0", nb + m, np.int64)
        self._run_lattice(view[c0:c1], c_start, c_end, seg_key[k0:k1], seg_pos[k0:k1], order[n_long:],
                          order[:n_long], scores_d, alpha_d, best, back, out[c0:c1],
                          counts[k0:k1], st, self._slots[0].aux, plan)
