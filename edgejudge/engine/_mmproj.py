"""The engine's view of a projector (mmproj) file: the facts it needs (image and patch size, CLS stamp) and
the warnings or refusal the pair contract implies.

The contract itself (file names, ``CLS_KEY``, the compatibility rule, the GGUF metadata reader) lives in
:mod:`edgejudge.judgefile`; this module only reads through it with the engine's error class. The runtime's
CLS order comes from the caller (``runtime_cls``: a known value or a function returning it); the engine
passes the cached runtime probe (``edgejudge.probe.runtime_cls_position``) unless it was given one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError, ModelNotFoundError
from ..judgefile import (
    CLS_KEY,
    NO_CLS_KEY_WARNING,
    check_cls,
    check_text_model_name,
    find_mmproj,
    read_metadata,
)

__all__ = [
    "CLS_KEY",
    "MmprojInfo",
    "find_mmproj",
    "check_text_model_name",
    "read_mmproj_info",
    "resolve_pair",
    "check_cls_position",
    "NO_CLS_KEY_WARNING",
]


@dataclass(frozen=True)
class MmprojInfo:
    """The mmproj metadata the engine needs (read with :func:`edgejudge.judgefile.read_metadata`)."""

    image_size: int
    patch_size: int
    cls_position: str | None

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def resolve_pair(model_path: str | Path, mmproj_path: str | Path | None) -> tuple[Path, Path]:
    """The judge pair's two files: ``model_path`` (a text-model GGUF, not a projector) and ``mmproj_path``,
    by default the projector found beside it (``find_mmproj``); ModelNotFoundError when one is missing."""
    model = Path(model_path)
    if not model.is_file():
        raise ModelNotFoundError(
            f"model file not found: {model}", hint="pass the path of the text-model .gguf"
        )
    check_text_model_name(model)
    mmproj = Path(mmproj_path) if mmproj_path is not None else find_mmproj(model)
    if not mmproj.is_file():
        raise ModelNotFoundError(
            f"projector file not found: {mmproj}", hint="pass the path of the mmproj .gguf"
        )
    return model, mmproj


def read_mmproj_info(path: Path) -> MmprojInfo:
    """Read image size, patch size and the CLS-position stamp; EngineError if it is not a projector."""
    meta = read_metadata(path, error=EngineError, hint="pass an mmproj .gguf file")
    image_size, patch_size = meta.get("clip.vision.image_size"), meta.get("clip.vision.patch_size")
    if not isinstance(image_size, int) or not isinstance(patch_size, int) or patch_size <= 0:
        raise EngineError(
            f"{path.name} is not a vision projector (no clip.vision.image_size/patch_size)",
            hint="pass the mmproj-*.gguf file converted with the text model",
        )
    return MmprojInfo(image_size, patch_size, meta.cls_position)


def check_cls_position(info: MmprojInfo, runtime_cls: str | Callable[[], str]) -> list[str]:
    """Warnings for a projector without the stamp; CLSOrderMismatchError when it contradicts the runtime
    (``runtime_cls``: the runtime's order, or a function asked only when the projector is stamped)."""
    return check_cls(info.cls_position, runtime_cls)
