"""Projector (mmproj) files: finding one next to a text model, reading the metadata the engine needs, and
the CLS-position compatibility check against the installed libmtmd.

edgejudge's converter records ``edgejudge.clip.cls_position`` ("first" | "last"): where the runtime it
converted for puts CLIP's class token ("last" ⇒ the position table was rotated by one row to compensate).
A file recorded for one behaviour must not silently run on the other; a file converted elsewhere (no key)
runs, with a warning, because llama.cpp 0.3.36's CLS-last ordering perturbs its image features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CLSOrderMismatchError, EngineError, ModelNotFoundError

__all__ = [
    "CLS_KEY",
    "MmprojInfo",
    "find_mmproj",
    "check_text_model_name",
    "read_mmproj_info",
    "check_cls_position",
    "NO_CLS_KEY_WARNING",
]

CLS_KEY = "edgejudge.clip.cls_position"
_QUANT_SUFFIX = re.compile(r"-(F32|F16|BF16|Q\d+(?:_[A-Z0-9]+)*|IQ\d+(?:_[A-Z0-9]+)*)$", re.IGNORECASE)
_MMPROJ_PREFERENCE = ("F16", "Q8_0", "F32", "BF16")

NO_CLS_KEY_WARNING = (
    "this projector was converted elsewhere (no edgejudge CLS-position metadata): the installed llama.cpp "
    "places CLIP's class token last, so its image features are known to be off; re-convert the checkpoint "
    "with `edgejudge convert` for exact image features"
)


def check_text_model_name(model_path: Path) -> None:
    """ModelNotFoundError when the "model" is named like a projector (the two files mixed up)."""
    if model_path.name.lower().startswith("mmproj-"):
        raise ModelNotFoundError(
            f"{model_path.name} is a vision projector, not the text model",
            hint=f"pass the text model ({model_path.name[len('mmproj-') :]}) as the model; "
            "its projector is found beside it",
        )


def find_mmproj(model_path: str | Path) -> Path:
    """``<dir>/<name>-<QUANT>.gguf`` → ``<dir>/mmproj-<name>-<QUANT>.gguf`` (F16 preferred, then Q8_0)."""
    model_path = Path(model_path)
    check_text_model_name(model_path)
    name = _QUANT_SUFFIX.sub("", model_path.stem)
    prefix = f"mmproj-{name}"
    candidates = [
        c
        for c in model_path.parent.glob(f"{prefix}*.gguf")
        if c.stem == prefix or (c.stem.startswith(prefix + "-") and _QUANT_SUFFIX.sub("", c.stem) == prefix)
    ]
    if not candidates:
        raise ModelNotFoundError(
            f"no vision projector found next to {model_path.name} (looked for {prefix}-<QUANT>.gguf)",
            hint="pass the projector file with --mmproj / mmproj_path=",
        )

    def rank(path: Path) -> tuple[int, str]:
        quant = path.stem[len(prefix) + 1 :].upper()
        order = _MMPROJ_PREFERENCE.index(quant) if quant in _MMPROJ_PREFERENCE else len(_MMPROJ_PREFERENCE)
        return order, path.name

    return min(candidates, key=rank)


@dataclass(frozen=True)
class MmprojInfo:
    """The mmproj metadata the engine needs (read with gguf.GGUFReader, fields only)."""

    image_size: int
    patch_size: int
    cls_position: str | None

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def read_mmproj_info(path: Path) -> MmprojInfo:
    """Read image size, patch size and the CLS-position key; EngineError if it is not a projector."""
    import gguf

    try:
        fields = gguf.GGUFReader(str(path), "r").fields

        def get(key: str) -> object | None:
            field = fields.get(key)
            return None if field is None else field.contents()

        image_size, patch_size, cls = (
            get("clip.vision.image_size"),
            get("clip.vision.patch_size"),
            get(CLS_KEY),
        )
    except (ValueError, OSError, IndexError, KeyError, TypeError) as err:
        raise EngineError(
            f"cannot read {path.name} as a GGUF projector: {err}", hint="pass an mmproj .gguf file"
        ) from None
    if not isinstance(image_size, int) or not isinstance(patch_size, int) or patch_size <= 0:
        raise EngineError(
            f"{path.name} is not a vision projector (no clip.vision.image_size/patch_size)",
            hint="pass the mmproj-*.gguf file converted with the text model",
        )
    return MmprojInfo(image_size, patch_size, str(cls) if cls is not None else None)


def check_cls_position(info: MmprojInfo) -> list[str]:
    """Warnings for a projector without the key; CLSOrderMismatchError when it contradicts the runtime."""
    if info.cls_position is None:
        return [NO_CLS_KEY_WARNING]
    from ..probe import runtime_cls_position

    runtime = runtime_cls_position()
    if info.cls_position != runtime:
        raise CLSOrderMismatchError(
            f"the projector was converted for a llama.cpp that puts CLIP's class token {info.cls_position}, "
            f"but the installed llama.cpp puts it {runtime}",
            hint="re-convert the checkpoint with this edgejudge and llama.cpp (edgejudge convert ...)",
        )
    return []
