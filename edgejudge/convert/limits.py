"""The converter's bounds on what an input file may make it allocate, and its bounded JSON reader.

One home for every limit the checkpoint readers apply to untrusted files (a hostile ``config.json``,
safetensors header, zip member or pickle must fail with a ``ConversionError`` naming the file, never
with gigabytes of memory or an exception from deep inside the standard library):

- JSON files the converter reads (``config.json``, index files, tokenizer and preprocessor configs) are
  regular files of at most :data:`MAX_JSON_BYTES`, nested at most ``_jsonl.MAX_DEPTH`` levels, with no
  integer literal over Python's digit limit (:func:`read_json_file`).
- Tensor shapes: at most :data:`MAX_DIMS` dimensions, each at most :data:`MAX_DIM`, and the product of
  the dimensions (a zero counted as one, so an empty tensor cannot hide a huge one) at most
  :data:`MAX_ELEMENTS` (:func:`check_shape`).
- Pickles, zip members and safetensors headers: the ``MAX_*`` constants below, applied by
  :mod:`edgejudge.convert.torchzip` and :mod:`edgejudge.convert.readers`.

:func:`shown` makes a name or value from a file safe and short for a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._fs import read_regular
from .._jsonl import loads_line
from ..errors import ConversionError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_ST_HEADER",
    "MAX_PICKLE_BYTES",
    "MAX_PICKLE_OPS",
    "MAX_PICKLE_PROTOCOL",
    "MAX_PICKLE_INT_BITS",
    "MAX_SMALL_MEMBER",
    "MAX_ZIP_MEMBERS",
    "MAX_ZIP_DIRECTORY",
    "MAX_TOKENIZER_BYTES",
    "MAX_DIMS",
    "MAX_DIM",
    "MAX_ELEMENTS",
    "shown",
    "quoted",
    "check_shape",
    "read_json_file",
]

#: config.json, index files, tokenizer configs: real ones are a few KB (a 70B index: ~100 KB).
MAX_JSON_BYTES = 16 * 2**20
#: safetensors JSON header: a shard of thousands of tensors has a ~1 MB header.
MAX_ST_HEADER = 8 * 2**20
#: ``data.pkl`` of a torch zip: a 13B state dict's pickle is well under 1 MB.
MAX_PICKLE_BYTES = 8 * 2**20
#: pickle opcodes (a state dict needs ~20 per tensor).
MAX_PICKLE_OPS = 2**20
#: highest pickle protocol accepted (torch.save writes 2; 5 is Python's newest).
MAX_PICKLE_PROTOCOL = 5
#: bits of an integer in the pickle (element counts and offsets fit in 64).
MAX_PICKLE_INT_BITS = 128
#: every non-tensor zip member read whole (``byteorder``, ``version``): they hold a word.
MAX_SMALL_MEMBER = 4096
#: members of one torch zip (one per storage; a real shard has hundreds).
MAX_ZIP_MEMBERS = 2**18
#: bytes of a zip's central directory (read whole by ``zipfile``; ~100 bytes per member).
MAX_ZIP_DIRECTORY = 64 * 2**20
#: ``tokenizer.model`` (LLaMA's is 500 KB; a 256K-token vocabulary is ~4 MB).
MAX_TOKENIZER_BYTES = 64 * 2**20
#: tensor dimensions (LLaVA's tensors have at most 4).
MAX_DIMS = 16
#: one dimension / one stride.
MAX_DIM = 2**40
#: product of a shape's dimensions (zeros counted as one): fits any index numpy computes.
MAX_ELEMENTS = 2**48

_SHOWN_CHARS = 120


def shown(value: Any, limit: int = _SHOWN_CHARS) -> str:
    """``value`` for a message: strings as they are (non-printable characters and lone surrogates
    escaped), anything else as its repr; cut to ``limit`` characters."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit + 1])
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int over the digit limit, a pathological container
            text = f"<{type(value).__name__}>"
        text = shown(text, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: Any, limit: int = _SHOWN_CHARS) -> str:
    """Like ``repr(value)`` (strings in quotes), but safe and short as :func:`shown`."""
    return f"'{shown(value, limit)}'" if isinstance(value, str) else shown(value, limit)


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    """``shape`` as a tuple of ints within the limits of the module docstring; else ConversionError
    (``where`` names the file and tensor)."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise ConversionError(f"{where}: shape {shown(shape)} is not a list of integers", hint=_REDOWNLOAD)
    if len(shape) > MAX_DIMS:
        raise ConversionError(
            f"{where}: {len(shape)} dimensions (limit {MAX_DIMS})", hint="this is not a model weight"
        )
    if any(d < 0 for d in shape):
        raise ConversionError(f"{where}: negative dimension in shape {shown(shape)}", hint=_REDOWNLOAD)
    total = 1
    for d in shape:
        if d > MAX_DIM:
            raise ConversionError(f"{where}: dimension {d} is too large (limit 2^40)", hint=_REDOWNLOAD)
        total *= max(d, 1)
    if total > MAX_ELEMENTS:
        raise ConversionError(
            f"{where}: shape {shown(shape)} is too large (over 2^48 elements)", hint=_REDOWNLOAD
        )
    return tuple(shape)


_REDOWNLOAD = "the file is corrupt or crafted; re-download it"


def read_json_file(path: Path, what: str, *, hint: str | None = None) -> Any:
    """The JSON value of ``path`` (a regular file of at most MAX_JSON_BYTES, valid UTF-8, depth and digit
    limits of ``_jsonl``); every problem is one ConversionError naming the file."""
    fix = hint or f"repair or re-download {path.name}"
    label = path.name if what == path.name else f"{what} {path.name}"
    data = read_regular(path, label=str(path), what=what, max_bytes=MAX_JSON_BYTES, error=ConversionError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConversionError(
            f"{label} is not UTF-8 text (invalid byte at offset {exc.start})", hint=fix
        ) from None
    result = loads_line(text.removeprefix("\ufeff"))
    if result.problem is not None:
        raise ConversionError(f"{label} is not valid JSON: {result.problem}", hint=fix)
    return result.value
