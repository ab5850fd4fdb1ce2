"""The public tokenizer: BytePiece's API, plus batch calls returning flat arrays."""

from __future__ import annotations

import functools
import os
import secrets
from typing import Iterable, Sequence

import numpy as np

from . import config, jit_cache
from .backends import select_backend
from .backends.cpu import concurrent_numba_ok, numba_thread_count, numba_threads, reuse_scratch
from .backends.layout import put_specials
from .checks import check_alpha as _check_alpha
from .checks import check_flag as _check_flag
from .checks import check_ids as _check_ids
from .checks import check_int as _check_int
from .device import DeviceError
from .model import Model, ModelError, load_model, parse_pieces, save_model
from .offsets import token_spans
from .specials import SpecialTokens
from .text import iter_packed
from .trie import cached_trie

__all__ = ["Tokenizer"]

_SPECIALS = ("<pad>", "<bos>", "<eos>")




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
    special_tokens : list of str, optional
        Special tokens (e.g. ``["<|endoftext|>"]``), given the ids
        ``model.vocab_size, model.vocab_size + 1, ...`` in order
        (``vocab_size`` counts them). The text holds them only where
        ``allowed_special`` says so (see :mod:`gpu_bytepiece.specials`).

    Notes
    -----
    Sampling is reproducible: the random numbers are a pure function of
    (seed, call number, document index in the call, byte position, piece
    length), whatever the device, thread count or internal batch size. Each
    sampling call without ``seed=`` advances the call number, so repeated
    calls draw fresh samples (as BytePiece's do); ``set_seed`` restarts the
    sequence; a call given ``seed=`` is stateless.
    """

    def __init__(self, model=None, *, special_tokens=None, device: str = "auto", seed: int | None = None):
        if isinstance(model, Model):
            self._model = model
        elif isinstance(model, dict):
            self._model = parse_pieces(model)
        elif model is None or isinstance(model, (str, os.PathLike)):
            self._model = load_model(model, cache=True)
        else:
            raise ModelError(f"model must be a path, a pieces dict or None, got {type(model).__name__}")
        m = self._model
        self.vocab_size = m.vocab_size
        self._scores = m.scores()
        self._trie = cached_trie(m.pieces)
        self._id2piece = list(_SPECIALS) + list(m.pieces)
        self._piece_bytes = np.frombuffer(b"".join(m.pieces), dtype=np.uint8)
        self._piece_off = np.zeros(self.vocab_size + 1, dtype=np.int64)
        np.cumsum([0, 0, 0] + [len(p) for p in m.pieces], out=self._piece_off[1:])
        self._add_special_tokens(special_tokens)
        self._backend = select_backend(device, self._trie, self._scores)
        if not getattr(self._backend, "ahead_of_time", False):
            jit_cache.announce("the tokenizer", "cpu_fallback/tokenize")
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
    @functools.cached_property
    def _piece2id(self) -> dict:
        """Piece (bytes; a str for a special token) -> id, built on first use."""
        out = {p: i for i, p in enumerate(self._id2piece[:len(_SPECIALS) + len(self._model.pieces)])}
        out.update(self._specials.ids)
        return out

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
                        batch_bytes: int | None = None,
                        allowed_special=frozenset(), disallowed_special="all",
                        return_spans: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
        allowed_special : set of str or "all"
            Special tokens matched in the text and emitted as their ids.
        disallowed_special : set of str or "all"
            Special tokens that make the call raise ``ValueError`` when a text
            holds one (default: every special not allowed); ``()`` encodes
            them as ordinary text.
        return_spans : bool
            Also return each token's byte ``[start, end)`` in its document's
            NFC UTF-8 (see :mod:`gpu_bytepiece.offsets`).

        Returns
        -------
        ids : numpy.ndarray of uint32
        offsets : numpy.ndarray of int64, ``len(texts) + 1``
            Document ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``.
        spans : numpy.ndarray of int64, ``(len(ids), 2)``
            Only with ``return_spans=True``.

        Notes
        -----
        With allowed specials, each run of text between them is tokenized
        (and sampled) as a document of its own.
        """
        add_bos, add_eos = _check_flag("add_bos", add_bos), _check_flag("add_eos", add_eos)
        kw = dict(alpha=alpha, seed=seed, num_threads=num_threads, batch_bytes=batch_bytes)
        allowed, disallowed = self._specials.resolve(allowed_special, disallowed_special)
        if disallowed:
            texts = self._specials.check(texts, disallowed)
        if allowed:
            parts, plan = self._specials.split(texts, allowed)
            ids, offsets = plan.join(*self._encode_texts(parts, add_bos=False, add_eos=False, **kw),
                                     add_bos, add_eos)
            put_specials(ids, offsets, add_bos, add_eos)
        else:
            ids, offsets = self._encode_texts(texts, add_bos=add_bos, add_eos=add_eos, **kw)
        if return_spans:
            return ids, offsets, token_spans(ids, offsets, self._piece_len)
        return ids, offsets

    def _encode_texts(self, texts, *, add_bos, add_eos, alpha, seed, num_threads, batch_bytes):
        """``encode_to_numpy`` of texts that hold no special token."""
        stream = self._start_call(alpha, seed, add_bos, add_eos)
        alpha = float(alpha)
        if batch_bytes is None:
            batch_bytes = config.CUDA_BATCH_BYTES if self.device.startswith("cuda") else config.BATCH_BYTES
        batch_bytes = _check_int("batch_bytes", batch_bytes, 1)
        if num_threads is not None:
            num_threads = _check_int("num_threads", num_threads)
        results = []  # (first document index, ids, offsets) per batch
        # one short text is one chunk of work: no threads (none are even started, and
        # with gpu_bytepiece.aot's drivers Numba is not even imported)
        one_short = (isinstance(texts, (list, tuple)) and len(texts) == 1
                     and isinstance(texts[0], (str, bytes)) and len(texts[0]) < config.CPU_MIN_CHUNK_BYTES // 4)
        with numba_threads(num_threads):
            n_threads = 1 if one_short or self._backend.name != "cpu" else numba_thread_count()
            if n_threads > 1 and concurrent_numba_ok():
                results = self._backend.encode_texts_in_threads(texts, batch_bytes, n_threads, alpha, stream,
                                                                add_bos, add_eos)
            else:
                with reuse_scratch():  # the CPU backend's batches share one id scratch
                    for first, data, doc_off in iter_packed(texts, batch_bytes):
                        ids, offs = self._backend.encode_packed(data, doc_off, float(alpha), add_bos, add_eos,
                                                                stream_key=stream, first_doc=first)
                        results.append((first, ids, offs))
        return _join_batches(results)

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
                     num_threads: int | None = None,
                     allowed_special=frozenset(), disallowed_special="all") -> list:
        """Encode many texts; a list of lists of ids (see ``encode_to_numpy``)."""
        ids, offsets = self.encode_to_numpy(texts, add_bos=add_bos, add_eos=add_eos, alpha=alpha,
                                            seed=seed, num_threads=num_threads,
                                            allowed_special=allowed_special,
                                            disallowed_special=disallowed_special)
        flat = ids.tolist()
        o = offsets.tolist()
        return [flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]

    def encode(self, text, add_bos: bool = False, add_eos: bool = False, alpha: float = -1,
               iter: bool = False, *, seed: int | None = None,
               allowed_special=frozenset(), disallowed_special="all"):
        """Encode one text (str or UTF-8 bytes) into a list of ids (BytePiece's ``encode``)."""
        if not isinstance(text, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"encode takes one str or bytes, got {type(text).__name__} (use encode_batch)")
        ids, _ = self.encode_to_numpy([text], add_bos=add_bos, add_eos=add_eos, alpha=alpha, seed=seed,
                                      allowed_special=allowed_special, disallowed_special=disallowed_special)
        out = ids.tolist()
        return out.__iter__() if iter else out

    def tokenize(self, text, alpha: float = -1, iter: bool = False, *, seed: int | None = None,
                 allowed_special=frozenset(), disallowed_special="all"):
        """The pieces (bytes; a str for a special token) of one text (BytePiece's ``tokenize``)."""
        pieces = [self._id2piece[i] for i in self.encode(text, alpha=alpha, seed=seed,
                                                         allowed_special=allowed_special,
                                                         disallowed_special=disallowed_special)]
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

    # ------------------------------------ specials, offsets, Hugging Face (issue 10)
    def _add_special_tokens(self, special_tokens) -> None:
        self._specials = SpecialTokens(special_tokens, self.vocab_size)
        extra = [t.encode("utf-8") for t in self._specials.tokens]
        self.vocab_size += len(extra)
        self._id2piece.extend(self._specials.tokens)
        if extra:
            self._piece_bytes = np.concatenate([self._piece_bytes, np.frombuffer(b"".join(extra), np.uint8)])
            off = np.cumsum([len(b) for b in extra]) + self._piece_off[-1]
            self._piece_off = np.concatenate([self._piece_off, off])
        self._piece_len = np.diff(self._piece_off)

    @property
    def special_tokens(self) -> tuple:
        """The special tokens, in id order (ids from ``model.vocab_size``)."""
        return self._specials.tokens

    pad_id = 0  #: BytePiece's ``<pad>``
    bos_id = 1  #: BytePiece's ``<bos>`` (``add_bos``)
    eos_id = 2  #: BytePiece's ``<eos>`` (``add_eos``)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict:
        """``{token: id}`` with pieces spelled as Hugging Face's ByteLevel does
        (the exported ``tokenizer.json``'s spelling); specials as they are."""
        from .hf import piece_to_hf

        return {p if isinstance(p, str) else piece_to_hf(p): i for i, p in enumerate(self._id2piece)}

    def encode_with_offsets(self, text: str, *, add_bos: bool = False, add_eos: bool = False,
                            allowed_special=frozenset(), disallowed_special="all") -> tuple[list, list]:
        """Ids of one ``str`` and each token's character ``(start, end)`` in it.

        Agrees with Hugging Face's ``return_offsets_mapping`` on the exported
        tokenizer; a token inside a character gets that whole character (see
        :mod:`gpu_bytepiece.offsets` for the rules).
        """
        from .offsets import char_offsets

        if not isinstance(text, str):
            raise TypeError(f"encode_with_offsets takes one str, got {type(text).__name__}")
        ids, offsets, spans = self.encode_to_numpy([text], add_bos=add_bos, add_eos=add_eos,
                                                   allowed_special=allowed_special,
                                                   disallowed_special=disallowed_special, return_spans=True)
        allowed, _ = self._specials.resolve(allowed_special, disallowed_special)
        return ids.tolist(), char_offsets(text, self._specials.runs(text, allowed), spans)

    def decode_stream(self, errors: str = "ignore"):
        """A :class:`~gpu_bytepiece.decode_stream.DecodeStream` over this tokenizer."""
        from .decode_stream import DecodeStream

        return DecodeStream(self, errors)

    def save_pretrained(self, directory) -> list:
        """Write a Hugging Face tokenizer directory (``tokenizer.json``,
        ``tokenizer_config.json``, ``special_tokens_map.json``) plus the
        BytePiece model; ``transformers.AutoTokenizer.from_pretrained`` and
        ``tokenizers.Tokenizer.from_file`` give this tokenizer's ids
        (``allowed_special="all"``). Returns the files written."""
        from .hf import save_pretrained

        return save_pretrained(self._model, directory, self.special_tokens, self._scores)

    @classmethod
    def from_pretrained(cls, directory, **kwargs) -> "Tokenizer":
        """A tokenizer from a directory ``save_pretrained`` wrote (its model
        file, or a ``tokenizer.json`` of exactly that shape; any other
        ``tokenizer.json`` raises :class:`~gpu_bytepiece.model.ModelError`).
        ``kwargs`` go to the constructor (``device``, ``seed``)."""
        from .hf import load_pretrained

        model, specials = load_pretrained(directory)
        kwargs.setdefault("special_tokens", specials)
        return cls(model, **kwargs)

    def __repr__(self) -> str:
        return f"Tokenizer({self._model.source!r}, vocab_size={self.vocab_size}, device={self.device!r})"
