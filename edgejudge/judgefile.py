"""The on-disk judge pair: the one contract every writer and reader of the two GGUF files agrees on.

A judge is two files in one folder: the text model ``<name>-<QUANT>.gguf`` and its vision projector
``mmproj-<name>-<QUANT>.gguf``. This module owns, once:

- the **quantization vocabulary**: ``QUANTS`` (canonical name, llama.cpp ftype = GGUF ``general.file_type``,
  bits per weight for the disk estimate, whether offered for the text model / the projector), the lists
  derived from it (``TEXT_QUANTS``, ``MMPROJ_QUANTS``), the preference orders (which installed quant wins,
  which projector beside a text model is chosen) and ``normalize_quant``. Adding a quantization type is
  one row in ``QUANTS``;
- the **model-name rule** (``check_name``, ``default_name``) and the **file names** (``pair_names``,
  ``find_mmproj``, ``check_text_model_name``, ``is_projector_name``);
- the **CLS-position stamp**: ``CLS_KEY`` ("first" | "last", where the runtime the projector was converted
  for puts CLIP's class token) and the compatibility rule ``check_cls``: a stamped projector must match
  the runtime's CLS order (else ``CLSOrderMismatchError``); an unstamped one (converted elsewhere) runs,
  with ``NO_CLS_KEY_WARNING``. The runtime's order is the caller's to supply (``edgejudge.probe``
  measures it): nothing here touches the native runtime;
- THE GGUF metadata reader, ``read_metadata`` → ``GGUFMetadata`` (scalar fields, tensor shapes, the quant
  and CLS stamp they imply), used by the registry, install, doctor and the engine alike.

Imports only ``errors`` and (lazily) the pure-Python ``gguf`` reader: never engine, convert, native or
registry, which all import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CLSOrderMismatchError, EdgeJudgeError, InputError, ModelNotFoundError

__all__ = [
    "Quant",
    "open_gguf",
    "QUANTS",
    "TEXT_QUANTS",
    "MMPROJ_QUANTS",
    "DEFAULT_QUANT",
    "DEFAULT_MMPROJ_QUANT",
    "QUANT_PREFERENCE",
    "MMPROJ_PREFERENCE",
    "normalize_quant",
    "quant_info",
    "quant_of_file_type",
    "size_ratio",
    "check_name",
    "default_name",
    "MMPROJ_PREFIX",
    "pair_names",
    "is_projector_name",
    "check_text_model_name",
    "find_mmproj",
    "CLS_KEY",
    "CLS_POSITIONS",
    "NO_CLS_KEY_WARNING",
    "check_cls_value",
    "check_cls",
    "GGUFMetadata",
    "read_metadata",
]


# ------------------------------------------------------------------------------------- quantizations
@dataclass(frozen=True)
class Quant:
    """One quantization type: ``ftype`` is llama.cpp's ``llama_ftype``, which is also what a GGUF records
    as ``general.file_type``; ``bits`` an upper estimate of bits per weight of a quantized matrix."""

    name: str
    ftype: int
    bits: float
    text: bool = True
    mmproj: bool = False


#: The quantizations edgejudge writes, in the order they are offered (text model: all; projector: some).
QUANTS: tuple[Quant, ...] = (
    Quant("F16", 1, 16.0, text=True, mmproj=True),
    Quant("Q8_0", 7, 8.5, text=True, mmproj=True),
    Quant("Q5_K_M", 17, 6.0),
    Quant("Q4_K_M", 15, 5.2),
)
TEXT_QUANTS: tuple[str, ...] = tuple(q.name for q in QUANTS if q.text)
MMPROJ_QUANTS: tuple[str, ...] = tuple(q.name for q in QUANTS if q.mmproj)
DEFAULT_QUANT = "Q4_K_M"
DEFAULT_MMPROJ_QUANT = "F16"
#: When a name has several quantizations installed and none is asked for, the first of these wins.
QUANT_PREFERENCE: tuple[str, ...] = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
#: Which projector beside a text model is chosen when several are there.
MMPROJ_PREFERENCE: tuple[str, ...] = ("F16", "Q8_0", "F32", "BF16")
#: ``general.file_type`` values of files converted elsewhere (named when read, never written here).
_FOREIGN_FILE_TYPES = {0: "F32", 2: "Q4_0", 18: "Q6_K", 32: "BF16"}


def quant_info(name: str) -> Quant:
    """The ``Quant`` row of the canonical ``name`` (KeyError for a name outside ``QUANTS``)."""
    for quant in QUANTS:
        if quant.name == name:
            return quant
    raise KeyError(name)


def size_ratio(quant: str) -> float:
    """Upper estimate of (quantized bytes / F16 bytes) for matrices, used by the disk-space check."""
    return quant_info(quant).bits / 16


def quant_of_file_type(file_type: int) -> str | None:
    """The quant name a GGUF's ``general.file_type`` stands for, or None when unknown."""
    for quant in QUANTS:
        if quant.ftype == file_type:
            return quant.name
    return _FOREIGN_FILE_TYPES.get(file_type)


def normalize_quant(value: str, allowed: tuple[str, ...] | list[str]) -> str:
    """The canonical (upper-case) spelling of ``value`` if it is one of ``allowed``; else InputError."""
    canon = str(value).strip().upper()
    if canon in allowed:
        return canon
    raise InputError(
        f"unknown quantization {value!r}; choose one of: {', '.join(allowed)}",
        hint=f"quantization names are case-insensitive, e.g. {allowed[-1].lower()}",
    )


# ------------------------------------------------------------------------------------- names and files
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MMPROJ_PREFIX = "mmproj-"
_QUANT_SUFFIX = re.compile(r"-(F32|F16|BF16|Q\d+(?:_[A-Z0-9]+)*|IQ\d+(?:_[A-Z0-9]+)*)$", re.IGNORECASE)


def check_name(name: str) -> str:
    """``name`` when it is a valid model name (letters, digits, '.', '_', '-'; no path parts); else
    InputError."""
    if not name or not _NAME.fullmatch(name):
        raise InputError(
            f"invalid model name {name!r}",
            hint="use letters, digits, '.', '_' and '-' (no slashes or spaces)",
        )
    return name


def default_name(src: str | Path) -> str:
    """The model name a source (checkpoint folder or hub repo id) gets when none is given."""
    raw = Path(str(src).rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"


def pair_names(name: str, quant: str, mmproj_quant: str) -> tuple[str, str]:
    """The two file names: ``<name>-<QUANT>.gguf`` and ``mmproj-<name>-<MMPROJ_QUANT>.gguf``."""
    return f"{name}-{quant}.gguf", f"{MMPROJ_PREFIX}{name}-{mmproj_quant}.gguf"


def is_projector_name(path: str | Path) -> bool:
    """Whether a file is named like a projector (``mmproj-…``)."""
    return Path(path).name.lower().startswith(MMPROJ_PREFIX)


def check_text_model_name(model_path: Path) -> None:
    """ModelNotFoundError when the "model" is named like a projector (the two files mixed up)."""
    if is_projector_name(model_path):
        raise ModelNotFoundError(
            f"{model_path.name} is a vision projector, not the text model",
            hint=f"pass the text model ({model_path.name[len(MMPROJ_PREFIX) :]}) as the model; "
            "its projector is found beside it",
        )


def find_mmproj(model_path: str | Path) -> Path:
    """``<dir>/<name>-<QUANT>.gguf`` → ``<dir>/mmproj-<name>-<QUANT>.gguf`` (F16 preferred, then Q8_0)."""
    model_path = Path(model_path)
    check_text_model_name(model_path)
    name = _QUANT_SUFFIX.sub("", model_path.stem)
    prefix = f"{MMPROJ_PREFIX}{name}"
    candidates = [
        c
        for c in model_path.parent.glob(f"{prefix}*.gguf")
        if c.stem == prefix or (c.stem.startswith(prefix + "-") and _QUANT_SUFFIX.sub("", c.stem) == prefix)
    ]
    if not candidates:
        raise ModelNotFoundError(
            f"no vision projector found next to {model_path.name} (looked for {prefix}-<QUANT>.gguf)",
            hint="name the projector (mmproj) file explicitly",
            about="mmproj",
        )

    def rank(path: Path) -> tuple[int, str]:
        quant = path.stem[len(prefix) + 1 :].upper()
        order = MMPROJ_PREFERENCE.index(quant) if quant in MMPROJ_PREFERENCE else len(MMPROJ_PREFERENCE)
        return order, path.name

    return min(candidates, key=rank)


# ------------------------------------------------------------------------------------- CLS position
CLS_KEY = "edgejudge.clip.cls_position"
CLS_POSITIONS = ("first", "last")
NO_CLS_KEY_WARNING = (
    "this projector was not converted by edgejudge (converted elsewhere: it records no CLS position): the "
    "installed llama.cpp places CLIP's class token last, so its image features are known to be off; "
    "re-convert the checkpoint with `edgejudge convert` for exact image features"
)


def check_cls_value(value: str) -> str:
    """``value`` when it is a CLS position ("first" | "last"); else InputError (whoever gave it: a caller or
    a function asked for the runtime's order, so the hint only says what the value means)."""
    if value not in CLS_POSITIONS:
        raise InputError(
            f"cls_position must be 'first' or 'last', not {value!r}",
            hint="cls_position is where the runtime puts CLIP's class token: 'first' or 'last'",
        )
    return value


def check_cls(stamped: str | None, runtime: str | Callable[[], str]) -> list[str]:
    """The compatibility rule of a projector stamped ``stamped`` (None: no stamp) on a runtime that puts
    CLS ``runtime`` (a value, or a function asked only when the projector is stamped).

    Unstamped: runs, with ``[NO_CLS_KEY_WARNING]``. Stamped and equal: ``[]``. Stamped otherwise:
    ``CLSOrderMismatchError`` (its image features would be shifted by one position)."""
    if stamped is None:
        return [NO_CLS_KEY_WARNING]
    actual = runtime() if callable(runtime) else runtime
    if stamped != actual:
        raise CLSOrderMismatchError(
            f"the projector was converted for a llama.cpp that puts CLIP's class token {stamped}, "
            f"but the installed llama.cpp puts it {actual}",
            hint="re-convert the checkpoint with this edgejudge and llama.cpp (edgejudge convert ...)",
        )
    return []


# ------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class GGUFMetadata:
    """What a GGUF file says about itself: its scalar/string fields (tokenizer tables and arrays longer
    than 16 left out) and every tensor's shape in GGUF (``ne``) order."""

    path: Path
    fields: Mapping[str, Any] = field(default_factory=dict)
    tensors: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def architecture(self) -> str | None:
        value = self.fields.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def quant(self) -> str | None:
        """The quant ``general.file_type`` names (None when absent or unknown)."""
        value = self.fields.get("general.file_type")
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return quant_of_file_type(value)

    @property
    def cls_position(self) -> str | None:
        """The CLS-position stamp (``CLS_KEY``) as text, None when the file has none."""
        value = self.fields.get(CLS_KEY)
        return None if value is None else str(value)

    def quant_or_name(self) -> str:
        """The quant from the metadata, else the file name's last ``-`` part, else ``unknown``."""
        if self.quant is not None:
            return self.quant
        stem = self.path.stem
        return stem.rsplit("-", 1)[-1].upper() if "-" in stem else "unknown"


def open_gguf(path: str | Path, *, error: type[EdgeJudgeError], hint: str) -> Any:
    """THE way edgejudge opens a GGUF file (a memory-mapped ``gguf.GGUFReader``): a file that is not a GGUF
    (or is cut short) is one ``error`` naming it, with ``hint``."""
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path), "r")
    except Exception as err:  # noqa: BLE001 - gguf raises ValueError/struct/index errors on garbage
        raise error(f"{path} is not a GGUF file ({err})", hint=hint) from None


def read_metadata(
    path: str | Path,
    *,
    error: type[EdgeJudgeError] = InputError,
    hint: str = "pass a .gguf file written by llama.cpp",
) -> GGUFMetadata:
    """Read the metadata of the GGUF ``path`` (fields and tensor infos only: no tensor data is loaded).

    A file that is not a GGUF (or is cut short) is one ``error`` naming it, with ``hint``."""
    from gguf import GGUFValueType

    reader = open_gguf(path, error=error, hint=hint)
    fields: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("tokenizer.ggml.") or not fld.types:
            continue
        if fld.types[0] == GGUFValueType.ARRAY and len(fld.data) > 16:
            continue
        try:
            fields[key] = fld.contents()
        except Exception:  # noqa: BLE001 - an exotic field is skipped, not fatal
            continue
    tensors = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    return GGUFMetadata(Path(path), fields, tensors)
