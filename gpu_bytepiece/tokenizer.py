"""The public tokenizer: BytePiece's API, plus batch calls returning flat arrays."""

from __future__ import annotations

import os
import secrets
import threading
from typing import Iterable, Sequence

import numba
import numpy as np

from . import config
from .backends import select_backend
from .backends.cpu import numba_threads
from .checks import check_alpha as _check_alpha
from .checks import check_flag as _check_flag
from .checks import check_ids as _check_ids
from .checks import check_int as _check_int
from .device import DeviceError
from .model import Model, ModelError, load_model, parse_pieces, save_model
from .text import iter_packed
from .trie import build_trie

__all__ = ["Tokenizer"]

_SPECIALS = ("<pad>", "<bos>", "<eos>")


_CONCURRENT_OK = None


def _concurrent_numba_ok() -> bool:
    """Whether parallel Numba functions may run from several threads at once:
    true for the OpenMP and TBB threading layers, not for ``workqueue``."""
    global _CONCURRENT_OK
    if _CONCURRENT_OK is None:
        try:
            from numba.np.ufunc import parallel

            parallel._launch_threads()
            _CONCURRENT_OK = numba.threading_layer() in ("omp", "tbb")
        except Exception:  # pragma: no cover - numba internals moved
            _CONCURRENT_OK = False
    return _CONCURRENT_OK


def _join_batches(results):
    """Flat ids and document offsets from per-batch results, in text order."""
    results = sorted(results, key=lambda r: r[0])
    id_parts, off_parts = [], [np.zeros(1, np.int64)]
    total = 0
    for _, ids, offs in results:
        id_parts.append(ids)
        off_parts.append(offs[1:] + total)
        total += int(offs[-1])
    ids = id_parts[0] if len(id_parts) == 1 else np.concatenate(id_parts) if id_parts else np.zeros(0, np.uint32)
    return ids, np.concatenate(off_parts)


class Tokenizer:
    """BytePiece's byte-level Unigram tokenizer, exact, on CPU or GPU.

    Parameters
    ----------
    model : str, path, dict or Model, optional
        A BytePiece model file (``.model`` JSON, ``.gz`` or ``.zip``), a
        decoded mapping ``{base64 piece: [id, text, count]}`` as BytePiece's
        ``Tokenizer`` takes, or a :class:`~gpu_bytepiece.model.Model`.
        ``None`` loads the bundled ``bytepiece.plus.40k``.
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}
        ``auto`` uses a CUDA GPU when one is usable and logs why not
        otherwise; ``cuda`` raises :class:`~gpu_bytepiece.device.DeviceError`
        when none is.
    seed : int, optional
        Seed of the sampling (``alpha >= 0``) random numbers. ``None`` draws
        one from the OS.

    Notes
    -----
    Sampling is reproducible: the random numbers are a pure function of
    (seed, call number, document index in the call, byte position, piece
    length), whatever the device, thread count or internal batch size. Each
    sampling call without ``seed=`` advances the call number, so repeated
    calls draw fresh samples (as BytePiece's do); ``set_seed`` restarts the
    sequence; a call given ``seed=`` is stateless.
    """

    def __init__(self, model=None, *, device: str = "auto", seed: int | None = None):
        if isinstance(model, Model):
            self._model = model
        elif isinstance(model, dict):
            self._model = parse_pieces(model)
        elif model is None or isinstance(model, (str, os.PathLike)):
            self._model = load_model(model)
        else:
            raise ModelError(f"model must be a path, a pieces dict or None, got {type(model).__name__}")
        m = self._model
        self.vocab_size = m.vocab_size
        self._scores = m.scores()
        self._trie = build_trie(m.pieces)
        self._id2piece = list(_SPECIALS) + list(m.pieces)
        self._piece2id = {p: i for i, p in enumerate(self._id2piece)}
        self._piece_bytes = np.frombuffer(b"".join(m.pieces), dtype=np.uint8)
        self._piece_off = np.zeros(self.vocab_size + 1, dtype=np.int64)
        np.cumsum([0, 0, 0] + [len(p) for p in m.pieces], out=self._piece_off[1:])
        self._backend = select_backend(device, self._trie, self._scores)
        self.set_seed(seed)

    # ------------------------------------------------------------------ info
    @property
    def device(self) -> str:
        """The backend in use: ``'cpu'`` or ``'cuda:N'``."""
        return self._backend.name

    @property
    def model(self) -> Model:
        return self._model

    def save(self, path) -> None:
        """Save the vocabulary in BytePiece's model format."""
        save_model(self._model, path)

    def set_seed(self, seed: int | None) -> None:
        """Restart the sampling random sequence from ``seed``."""
        if seed is None:
            seed = secrets.randbits(63)
        self._seed = _check_int("seed", seed)
        self._calls = 0

    # --------------------------------------------------------------- pieces
    def piece_to_id(self, piece) -> int:
        """Id of ``piece`` (bytes; ``'<pad>'``, ``'<bos>'``, ``'<eos>'`` for 0-2)."""
        try:
            return self._piece2id[piece]
        except KeyError:
            if isinstance(piece, str) and piece.encode() in self._piece2id:
                return self._piece2id[piece.encode()]
            raise KeyError(f"not a piece of this vocabulary: {piece!r}") from None

    def id_to_piece(self, i: int):
        """Piece of id ``i`` (bytes; a str for the specials 0-2)."""
        i = _check_int("id", i)
        if not 0 <= i < self.vocab_size:
            raise KeyError(f"id {i} outside 0..{self.vocab_size - 1}")
        return self._id2piece[i]

    def pieces_to_ids(self, pieces: Iterable) -> list:
        return [self.piece_to_id(p) for p in pieces]

    def ids_to_pieces(self, ids: Iterable) -> list:
        return [self.id_to_piece(i) for i in ids]

    # --------------------------------------------------------------- encode
    def _start_call(self, alpha, seed, add_bos=False, add_eos=False):
        """Check the arguments every encode call shares; the stream key of
        this call's samples (``None`` for the best path).

        Without ``seed`` the key is (the tokenizer's seed, the call number),
        and the call number advances.

        Raises
        ------
        ValueError
            ``alpha`` is not a finite real number.
        TypeError
            ``seed`` is not an int, ``add_bos``/``add_eos`` not a bool.
        """
        _check_flag("add_bos", add_bos)
        _check_flag("add_eos", add_eos)
        if seed is not None:
            seed = _check_int("seed", seed)
        if _check_alpha(alpha) < 0:
            return None
        if seed is None:
            stream = (self._seed * 0x100000001B3 + self._calls) & 0xFFFFFFFFFFFFFFFF
            self._calls += 1
            return stream
        return (int(seed) * 0x100000001B3 + 0xFFFFFFFF) & 0xFFFFFFFFFFFFFFFF

    def encode_to_numpy(self, texts, *, add_bos: bool = False, add_eos: bool = False,
                        alpha: float = -1, seed: int | None = None,
                        num_threads: int | None = None,
                        batch_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode many texts into flat arrays.

        Parameters
        ----------
        texts : str, bytes, sequence of str/bytes, or pyarrow string array
            A single str/bytes counts as one document.
        add_bos, add_eos : bool
            Put id 1 before / id 2 after each document.
        alpha : float
            ``< 0``: the best (Viterbi) segmentation; ``>= 0``: sample one.
        seed : int, optional
            Sampling seed for this call alone (see the class notes).
        num_threads : int, optional
            CPU threads (``-1``: all); default: Numba's current setting.
        batch_bytes : int, optional
            Internal batch size in UTF-8 bytes (bounds memory; does not
            change the output). Default ``config.BATCH_BYTES`` on the CPU,
            ``config.CUDA_BATCH_BYTES`` on a GPU.

        Returns
        -------
        ids : numpy.ndarray of uint32
        offsets : numpy.ndarray of int64, ``len(texts) + 1``
            Document ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``.
        """
        stream = self._start_call(alpha, seed, add_bos, add_eos)
        add_bos, add_eos, alpha = bool(add_bos), bool(add_eos), float(alpha)
        if batch_bytes is None:
            batch_bytes = config.CUDA_BATCH_BYTES if self.device.startswith("cuda") else config.BATCH_BYTES
        batch_bytes = _check_int("batch_bytes", batch_bytes, 1)
        if num_threads is not None:
            num_threads = _check_int("num_threads", num_threads)
        results = []  # (first document index, ids, offsets) per batch
        with numba_threads(num_threads):
            n_threads = numba.get_num_threads()
            if n_threads > 1 and self._backend.name == "cpu" and _concurrent_numba_ok():
                results = self._encode_batches_in_threads(texts, batch_bytes, n_threads, alpha, stream,
                                                          add_bos, add_eos)
            else:
                for first, data, doc_off in iter_packed(texts, batch_bytes):
                    ids, offs = self._backend.encode_packed(data, doc_off, float(alpha), add_bos, add_eos,
                                                            stream_key=stream, first_doc=first)
                    results.append((first, ids, offs))
        return _join_batches(results)

    def _encode_batches_in_threads(self, texts, batch_bytes, n_threads, alpha, stream, add_bos, add_eos):
        """CPU, several threads: each thread packs a small batch (Python, under
        the GIL) then tokenizes it with a one-thread lattice (Numba, GIL
        released), so packing and tokenizing overlap with exactly
        ``n_threads`` busy threads. A batch much larger than the others (one
        huge document) is tokenized with all threads.
        """
        small = min(batch_bytes, config.CPU_THREAD_BATCH_BYTES)
        batches = iter_packed(texts, small)
        lock = threading.Lock()
        results, errors = [], []

        def work():
            try:
                while not errors:
                    with lock:
                        item = next(batches, None)
                    if item is None:
                        return
                    first, data, doc_off = item
                    numba.set_num_threads(n_threads if len(data) > 4 * small else 1)
                    ids, offs = self._backend.encode_packed(data, doc_off, float(alpha), add_bos, add_eos,
                                                            stream_key=stream, first_doc=first)
                    results.append((first, ids, offs))
            except BaseException as e:  # re-raised in the calling thread
                errors.append(e)

        threads = [threading.Thread(target=work, name=f"gpu_bytepiece-{i}", daemon=True)
                   for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def encode_packed(self, data, offsets, *, add_bos: bool = False, add_eos: bool = False,
                      alpha: float = -1, sample_stream: int | None = None,
                      first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Encode an already packed batch: NFC UTF-8 ``data`` (uint8) + int64 ``offsets``.

        For pipelines that pack text themselves (see :func:`gpu_bytepiece.text.pack_texts`).
        Sampling keys are ``(sample_stream, first_index + i)`` for document
        ``i``; ``sample_stream`` defaults to the tokenizer's own sequence.
        """
        data = np.ascontiguousarray(data, dtype=np.uint8)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        n = len(offsets) - 1
        if n < 0 or offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
            raise ValueError("offsets must start at 0, end at len(data) and never decrease")
        first_index = _check_int("first_index", first_index, 0)
        if sample_stream is None:
            stream = self._start_call(alpha, None, add_bos, add_eos)
        else:
            sample_stream = _check_int("sample_stream", sample_stream) & 0xFFFFFFFFFFFFFFFF
            self._start_call(-1, None, add_bos, add_eos)
            stream = None if _check_alpha(alpha) < 0 else sample_stream
        add_bos, add_eos = bool(add_bos), bool(add_eos)
        return self._backend.encode_packed(data, offsets, float(alpha), add_bos, add_eos,
                                           stream_key=stream, first_doc=first_index)

    def encode_device(self, data, offsets, *, add_bos: bool = False, add_eos: bool = False,
                      alpha: float = -1, seed: int | None = None, output: str = "auto"):
        """Encode documents that are already on the GPU into ids on the GPU.

        The device twin of ``encode_to_numpy``: the same ids and offsets
        (sampling included: same seed, same call sequence), with no round
        trip of the text or the ids through the host. Needs
        ``device='cuda'`` or ``'cuda:N'``.

        Parameters
        ----------
        data : uint8 device array
            UTF-8 bytes of the documents, **already NFC-normalized** (the host
            path normalizes; the device path does not). A Numba device array or
            anything with ``__cuda_array_interface__`` (CuPy, PyTorch, ...).
        offsets : int64 device array, ``n_docs + 1``
            Document ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
        add_bos, add_eos, alpha, seed
            As ``encode_to_numpy``.
        output : {'auto', 'numba', 'cupy'}
            Kind of the returned arrays: ``auto`` gives CuPy arrays when
            ``data`` is a CuPy array, Numba device arrays otherwise (both views
            of the same device memory, no copy).

        Returns
        -------
        ids : uint32 device array
        offsets : int64 device array, ``n_docs + 1``
        """
        if not hasattr(self._backend, "encode_device"):
            raise DeviceError(f"encode_device needs a Tokenizer on a CUDA device (device='cuda'); "
                              f"this one runs on {self.device!r}")
        if output not in ("auto", "numba", "cupy"):
            raise ValueError(f"output must be 'auto', 'numba' or 'cupy', got {output!r}")
        stream = self._start_call(alpha, seed, add_bos, add_eos)
        add_bos, add_eos = bool(add_bos), bool(add_eos)
        return self._backend.encode_device(data, offsets, float(alpha), add_bos, add_eos,
                                           stream_key=stream, output=output)

    def encode_batch(self, texts, *, add_bos: bool = False, add_eos: bool = False,
                     alpha: float = -1, seed: int | None = None,
                     num_threads: int | None = None) -> list:
        """Encode many texts; a list of lists of ids (see ``encode_to_numpy``)."""
        ids, offsets = self.encode_to_numpy(texts, add_bos=add_bos, add_eos=add_eos, alpha=alpha,
                                            seed=seed, num_threads=num_threads)
        flat = ids.tolist()
        o = offsets.tolist()
        return [flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]

    def encode(self, text, add_bos: bool = False, add_eos: bool = False, alpha: float = -1,
               iter: bool = False, *, seed: int | None = None):
        """Encode one text (str or UTF-8 bytes) into a list of ids (BytePiece's ``encode``)."""
        if not isinstance(text, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"encode takes one str or bytes, got {type(text).__name__} (use encode_batch)")
        ids, _ = self.encode_to_numpy([text], add_bos=add_bos, add_eos=add_eos, alpha=alpha, seed=seed)
        out = ids.tolist()
        return out.__iter__() if iter else out

    def tokenize(self, text, alpha: float = -1, iter: bool = False, *, seed: int | None = None):
        """The pieces (bytes) of one text (BytePiece's ``tokenize``)."""
        pieces = [self._id2piece[i] for i in self.encode(text, alpha=alpha, seed=seed)]
        return pieces.__iter__() if iter else pieces

    # --------------------------------------------------------------- decode
    def decode_bytes(self, ids) -> bytes:
        """The concatenated bytes of the pieces (ids 0-2 are skipped)."""
        a = _check_ids(ids, self.vocab_size)
        a = a[a > 2]
        starts = self._piece_off[a]
        lens = self._piece_off[a + 1] - starts
        if a.size == 0:
            return b""
        cum = np.cumsum(lens)
        idx = np.arange(int(cum[-1]), dtype=np.int64) - np.repeat(cum - lens - starts, lens)
        return self._piece_bytes[idx].tobytes()

    def decode(self, ids, errors: str = "ignore") -> str:
        """Decode ids to text (BytePiece drops undecodable bytes: ``errors='ignore'``)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    def decode_batch(self, batch: Sequence, errors: str = "ignore") -> list:
        """Decode a list of id lists (or ``(ids, offsets)`` from ``encode_to_numpy``)."""
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], np.ndarray) \
                and isinstance(batch[1], np.ndarray) and batch[1].dtype == np.int64:
            ids, offsets = batch
            return [self.decode(ids[offsets[i]:offsets[i + 1]], errors) for i in range(len(offsets) - 1)]
        return [self.decode(ids, errors) for ids in batch]

    def __repr__(self) -> str:
        return f"Tokenizer({self._model.source!r}, vocab_size={self.vocab_size}, device={self.device!r})"
