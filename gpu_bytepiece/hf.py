"""Hugging Face export and import: ``tokenizer.json`` that gives BytePiece's ids.

A BytePiece model is exactly this ``tokenizers`` pipeline:

- normalizer ``NFC``;
- pre-tokenizer ``Sequence[Split(Regex(".*\\n+|.+"), "isolated"),
  ByteLevel(add_prefix_space=False, use_regex=False)]``: BytePiece's
  segments, then each byte spelled as one character of GPT-2's byte-to-unicode
  alphabet;
- model ``Unigram`` over the pieces spelled in that alphabet, scored
  ``log(count) - log(total)`` (float64), ``<pad>``/``<bos>``/``<eos>`` first
  (ids 0-2) with a score no path ever takes;
- decoder ``ByteLevel``.

The special tokens of a :class:`~gpu_bytepiece.Tokenizer` become added tokens
that are *not* flagged special in ``tokenizer.json`` (``tokenizers`` then
always matches them, as ``allowed_special="all"`` does), and are listed as
extra special tokens in ``tokenizer_config.json`` (so ``transformers`` skips
them with ``skip_special_tokens=True``). BytePiece's ``<pad>``/``<bos>``/``<eos>``
are never matched in text: they are not added tokens of ``tokenizer.json``,
and ``tokenizer_config.json`` sets ``split_special_tokens: true``, so the
added tokens ``transformers`` makes of them are not matched either. A text
holding the literal ``<eos>`` gets BytePiece's ids everywhere.

This module does not import ``tokenizers`` or ``transformers``: it writes and
reads their JSON.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache

import numpy as np

from .files import write_atomic
from .model import DEFAULT_MODEL_NAME, Model, ModelError, load_model, parse_pieces, save_model
from .specials import RESERVED

__all__ = ["SEGMENT_PATTERN", "MODEL_FILE", "piece_to_hf", "hf_to_piece", "tokenizer_json",
           "save_pretrained", "load_pretrained"]

#: BytePiece's tokenizing segments: a line with its run of newlines.
SEGMENT_PATTERN = ".*\n+|.+"

#: The BytePiece model file save_pretrained writes beside tokenizer.json.
MODEL_FILE = "bytepiece.model"

#: Unigram score of <pad>/<bos>/<eos> in tokenizer.json: finite (JSON has no
#: -inf) and low enough that no path takes them (every byte is a piece).
RESERVED_SCORE = -1e9


# ---------------------------------------------------------- exact scores
# tokenizers reads tokenizer.json with serde_json's default float parser,
# which is not correctly rounded: the integer significand (digits past u64
# dropped) converted to f64, then one multiply or divide by a power of ten.
# Python's shortest repr of a score is read back one ulp off for about a
# quarter of BytePiece's scores, and an ulp decides ties between paths.
# So each score is written as a decimal that serde_json reads as exactly
# that float64, and read back here the way serde_json reads it.

_NUMBER = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$")
_U64 = (1 << 64) - 1


def serde_f64(text: str) -> float:
    """The float64 serde_json (as ``tokenizers`` uses it) reads from a JSON number."""
    m = _NUMBER.match(text)
    if m is None:
        raise ValueError(f"not a JSON number: {text!r}")
    sign, int_part, frac_part, exp_part = m.groups()
    significand, exponent, overflow = 0, int(exp_part or 0), False
    for d in int_part:
        if overflow or significand * 10 + int(d) > _U64:
            overflow = True
            exponent += 1
        else:
            significand = significand * 10 + int(d)
    for d in frac_part or "":
        if overflow or significand * 10 + int(d) > _U64:
            overflow = True
        else:
            significand = significand * 10 + int(d)
            exponent -= 1
    f = float(significand)
    while True:
        if abs(exponent) <= 308:
            f = f * float(f"1e{exponent}") if exponent >= 0 else f / float(f"1e{-exponent}")
            break
        if f == 0.0 or exponent > 0:
            break
        f /= 1e308
        exponent += 308
    return -f if sign else f


def hf_float_text(x: float) -> str:
    """A JSON number that ``tokenizers`` reads as exactly ``x`` (the shortest repr when it does)."""
    text = repr(float(x))
    if serde_f64(text) == x:
        return text
    sign = "-" if x < 0 else ""
    for digits in (17, 18, 19):
        mantissa, exp = f"{abs(x):.{digits - 1}e}".split("e")
        d, exp = int(mantissa.replace(".", "")), int(exp) - (digits - 1)
        for delta in sorted(range(-64, 65), key=abs):
            text = f"{sign}{d + delta}e{exp}"
            if serde_f64(text) == x:
                return text
    raise ValueError(f"no JSON number reads as {x!r} in serde_json")  # pragma: no cover


@lru_cache(maxsize=1)
def _byte_alphabet() -> tuple[tuple, dict]:
    """GPT-2's byte-to-unicode table: (char of each byte, byte of each char)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = {}
    n = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    table = tuple(chars[b] for b in range(256))
    return table, {c: b for b, c in enumerate(table)}


def piece_to_hf(piece: bytes) -> str:
    """A piece as ``tokenizers``' ByteLevel spells it (one character per byte)."""
    table = _byte_alphabet()[0]
    return "".join(table[b] for b in piece)


def hf_to_piece(token: str) -> bytes:
    """The bytes of a ByteLevel-spelled token; ``KeyError`` for a character outside the alphabet."""
    inverse = _byte_alphabet()[1]
    return bytes(inverse[c] for c in token)


def _added_token(content: str, i: int, special: bool) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def tokenizer_json(model: Model, special_tokens=(), scores=None) -> dict:
    """The ``tokenizer.json`` object of ``model`` (+ ``special_tokens`` from ``model.vocab_size``).

    ``scores``: the Unigram scores by id (default ``model.scores()``).
    """
    scores = model.scores() if scores is None else scores
    vocab = [[name, RESERVED_SCORE] for name in RESERVED]
    vocab += [[piece_to_hf(p), float(s)] for p, s in zip(model.pieces, scores[3:].tolist())]
    base = model.vocab_size
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(t, base + k, False) for k, t in enumerate(special_tokens)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SEGMENT_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "Unigram", "unk_id": None, "vocab": vocab, "byte_fallback": False},
    }


def tokenizer_config(model: Model, special_tokens=()) -> dict:
    """``tokenizer_config.json``: PreTrainedTokenizerFast, BytePiece's reserved ids, the specials."""
    base = model.vocab_size
    decoder = {str(i): _added_token(t, i, True) for i, t in enumerate(RESERVED)}
    decoder.update({str(base + k): _added_token(t, base + k, False) for k, t in enumerate(special_tokens)})
    for v in decoder.values():
        del v["id"]
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "extra_special_tokens": list(special_tokens),
        "additional_special_tokens": list(special_tokens),
        "added_tokens_decoder": decoder,
        # <pad>/<bos>/<eos> are ids BytePiece inserts, never text it matches
        "split_special_tokens": True,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 62,
    }


def dumps_tokenizer_json(obj: dict) -> str:
    """``tokenizer.json`` text whose Unigram scores ``tokenizers`` reads exactly."""
    vocab = obj["model"]["vocab"]
    text = json.dumps({**obj, "model": {**obj["model"], "vocab": []}}, ensure_ascii=False, indent=2)
    rows = ",\n".join(f"      [{json.dumps(p, ensure_ascii=False)}, {hf_float_text(v)}]" for p, v in vocab)
    head, sep, tail = text.partition('"vocab": []')
    assert sep, "vocab placeholder"
    return head + '"vocab": [\n' + rows + "\n    ]" + tail


def _write_json(path: str, obj, exact_vocab: bool = False) -> None:
    text = dumps_tokenizer_json(obj) if exact_vocab else json.dumps(obj, ensure_ascii=False, indent=2)
    write_atomic(path, (text + "\n").encode("utf-8"))


def save_pretrained(model: Model, directory, special_tokens=(), scores=None) -> list:
    """Write ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``
    and the BytePiece model (``bytepiece.model``; ``special_tokens.json`` when
    there are specials) into ``directory`` (created if needed). Returns the paths."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    special_tokens = list(special_tokens)
    files = {
        "tokenizer.json": tokenizer_json(model, special_tokens, scores),
        "tokenizer_config.json": tokenizer_config(model, special_tokens),
        "special_tokens_map.json": {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>",
                                    "additional_special_tokens": special_tokens},
    }
    paths = []
    for name, obj in files.items():
        paths.append(os.path.join(directory, name))
        _write_json(paths[-1], obj, exact_vocab=name == "tokenizer.json")
    paths.append(os.path.join(directory, MODEL_FILE))
    save_model(model, paths[-1])
    return paths


# ------------------------------------------------------------------ import

class ScoredModel(Model):
    """A vocabulary read from ``tokenizer.json``: its scores are the file's.

    ``counts`` are recovered from the scores (exact when the file was
    written from integer counts holding a count of 1, as BytePiece's are);
    when the recovered counts do not give back the very same scores, the
    tokenizer still uses the file's scores, and only ``save`` writes the
    nearest counts.
    """

    def __init__(self, pieces, counts, source, log_probs):
        super().__init__(pieces=pieces, counts=counts, source=source)
        object.__setattr__(self, "log_probs", log_probs)

    def scores(self) -> np.ndarray:
        out = np.full(self.vocab_size, -np.inf, dtype=np.float64)
        out[3:] = self.log_probs
        return out


def _what(obj) -> str:
    if not isinstance(obj, dict):
        return repr(obj)
    return str(obj.get("type", "?"))


def _refuse(path: str, why: str) -> ModelError:
    return ModelError(f"{path}: not a BytePiece tokenizer.json ({why}); gpu-bytepiece reads only the "
                      "byte-level Unigram tokenizer.json that `gpu-bytepiece export` writes")


def model_from_tokenizer_json(obj: dict, path: str = "tokenizer.json") -> tuple[Model, list]:
    """``(model, special_tokens)`` from a ``tokenizer.json`` object of exactly the exported shape.

    Anything else raises :class:`~gpu_bytepiece.model.ModelError` saying what it is.
    """
    if not isinstance(obj, dict) or "model" not in obj:
        raise _refuse(path, "no 'model' entry")
    m = obj["model"]
    if not isinstance(m, dict) or m.get("type") != "Unigram":
        kind = m.get("type") if isinstance(m, dict) else None
        if kind is None and isinstance(m, dict):
            kind = "BPE" if "merges" in m else "WordPiece" if "continuing_subword_prefix" in m else "unknown"
        raise _refuse(path, f"its model is {kind}, not Unigram")
    if m.get("byte_fallback"):
        raise _refuse(path, "a Unigram with byte_fallback (a SentencePiece-style model)")
    if obj.get("normalizer") != {"type": "NFC"}:
        raise _refuse(path, f"its normalizer is {_what(obj.get('normalizer'))}, not NFC alone")
    pre = obj.get("pre_tokenizer")
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    ok = (isinstance(steps, list) and len(steps) == 2
          and steps[0].get("type") == "Split" and steps[0].get("pattern") == {"Regex": SEGMENT_PATTERN}
          and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
          and steps[1].get("type") == "ByteLevel" and not steps[1].get("add_prefix_space")
          and not steps[1].get("use_regex"))
    if not ok:
        shown = [_what(s) for s in steps] if isinstance(steps, list) else _what(pre)
        raise _refuse(path, f"its pre-tokenizer is {shown}, not Split(BytePiece's segments) + ByteLevel "
                            "without prefix space or regex")
    if _what(obj.get("decoder")) != "ByteLevel":
        raise _refuse(path, f"its decoder is {_what(obj.get('decoder'))}, not ByteLevel")
    if obj.get("post_processor") is not None:
        raise _refuse(path, f"it has a post-processor ({_what(obj['post_processor'])})")
    vocab = m.get("vocab")
    if not isinstance(vocab, list) or len(vocab) < 259 or [v[0] for v in vocab[:3]] != list(RESERVED):
        raise _refuse(path, "its vocabulary does not start with <pad>, <bos>, <eos>")
    try:
        pieces = [hf_to_piece(v[0]) for v in vocab[3:]]
    except KeyError as e:
        raise _refuse(path, f"piece with the character {e.args[0]!r} outside the byte-level alphabet") from None
    log_probs = np.array([v[1] for v in vocab[3:]], dtype=np.float64)
    if not np.isfinite(log_probs).all():
        raise _refuse(path, "a score is not finite")
    specials = []
    for k, t in enumerate(sorted(obj.get("added_tokens") or [], key=lambda t: t["id"])):
        if t["id"] != len(vocab) + k or t.get("special") or t.get("normalized") or t.get("lstrip") \
                or t.get("rstrip") or t.get("single_word"):
            raise _refuse(path, f"added token {t.get('content')!r} (id {t['id']}) is not a plain token after "
                                "the vocabulary")
        specials.append(t["content"])
    # counts: the scores scaled so that the rarest piece counts 1
    counts = np.rint(np.exp(log_probs - log_probs.min())).astype(np.int64)
    counts = np.maximum(counts, 1)
    obj_pieces = {p: [i + 3, "", int(c)] for i, (p, c) in enumerate(zip(pieces, counts.tolist()))}
    if len(obj_pieces) != len(pieces):
        raise _refuse(path, "two vocabulary entries spell the same bytes")
    model = parse_pieces(obj_pieces, source=path)
    if not np.array_equal(model.scores()[3:], log_probs):
        model = ScoredModel(model.pieces, model.counts, path, log_probs)
    return model, specials


def load_pretrained(directory) -> tuple[Model, list]:
    """``(model, special_tokens)`` from a directory written by :func:`save_pretrained`.

    The BytePiece model file wins when present (``bytepiece.model``, or the
    bundled model's name), with the specials of ``tokenizer.json``;
    otherwise the ``tokenizer.json`` alone, if it has exactly the exported shape.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ModelError(f"{directory}: not a directory (from_pretrained reads a local directory; "
                         "gpu-bytepiece never downloads)")
    tj_path = os.path.join(directory, "tokenizer.json")
    tj = None
    if os.path.exists(tj_path):
        with open(tj_path, encoding="utf-8") as f:
            try:
                tj = json.load(f, parse_float=serde_f64)  # the scores tokenizers uses
            except ValueError as e:
                raise ModelError(f"{tj_path}: not valid JSON ({e})") from None
    for name in (MODEL_FILE, DEFAULT_MODEL_NAME):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            model = load_model(path)
            specials = []
            if tj is not None:
                from_json, specials = model_from_tokenizer_json(tj, tj_path)
                if from_json.pieces != model.pieces:
                    raise ModelError(f"{directory}: {name} and tokenizer.json hold different vocabularies")
            return model, specials
    if tj is None:
        raise ModelError(f"{directory}: neither {MODEL_FILE} nor tokenizer.json is there")
    return model_from_tokenizer_json(tj, tj_path)
