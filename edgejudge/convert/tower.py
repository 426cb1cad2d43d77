"""The CLIP vision tower's hyper-parameters: built-in towers, CLIP config files, resolution and checks.

``resolve_tower`` turns ``mm_vision_tower`` into hyper-parameters: a local directory (absolute or relative
to the checkpoint) with a CLIP ``config.json`` (``CLIPConfig`` with ``vision_config`` or a
``CLIPVisionConfig``; ``preprocessor_config.json`` mean/std when present), the built-in entry for
``openai/clip-vit-large-patch14-336`` (so the real judge converts offline), or a hub repo's config.
``check_vision`` validates them against the weight shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._fs import user_path
from ..errors import ConversionError
from .limits import quoted, read_json_file, shown
from .source import hub_file, looks_like_repo_id

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "BUILTIN_TOWERS",
    "VisionHParams",
    "vision_hparams_from_config",
    "resolve_tower",
    "check_vision",
    "bad",
    "positive_int",
    "positive_float",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: CLIPVisionConfig defaults of transformers (used for keys a CLIP config leaves out).
_CLIP_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "layer_norm_eps": 1e-5,
    "hidden_act": "quick_gelu",
    "projection_dim": 512,
}
_CLIP_L = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "layer_norm_eps": 1e-5,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
#: Vision configs known without a download: the towers LLaVA-1.5 (and so Prometheus-Vision) was built on.
BUILTIN_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {**_CLIP_L, "image_size": 336},
    "openai/clip-vit-large-patch14": {**_CLIP_L, "image_size": 224},
}


@dataclass(frozen=True)
class VisionHParams:
    """The CLIP vision tower."""

    hidden_size: int
    ffn_size: int
    n_layers: int
    n_heads: int
    image_size: int
    patch_size: int
    layer_norm_eps: float
    hidden_act: str
    projection_dim: int
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def bad(message: str, hint: str) -> ConversionError:
    return ConversionError(message, hint=hint)


#: integers are written as GGUF uint32/int32 values: a config value must fit.
_MAX_INT = 2**31 - 1
#: floats are written as float32.
_MAX_FLOAT = 3.4e38


def positive_int(cfg: Mapping[str, Any], key: str, where: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_INT:
        raise bad(
            f"{where}: {key} is missing or not a positive integer below 2^31 ({quoted(value)})",
            "fix the config.json",
        )
    return value


def positive_float(cfg: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    """A positive, finite number that fits a float32 (``default`` when the key is absent or null)."""
    value = cfg.get(key)
    if value is None and default is not None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= _MAX_FLOAT
    ):
        raise bad(
            f"{where}: {key} is missing or not a positive float32 number ({quoted(value)})",
            "fix the config.json",
        )
    return float(value)


def vision_hparams_from_config(cfg: Mapping[str, Any], where: str) -> VisionHParams:
    """VisionHParams from a CLIP config (``CLIPConfig`` with ``vision_config`` or a ``CLIPVisionConfig``)."""
    nested = cfg.get("vision_config")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else cfg
    merged = {**_CLIP_VISION_DEFAULTS, **{k: v for k, v in dict(inner).items() if v is not None}}
    act = merged.get("hidden_act")
    if act != "quick_gelu":
        raise bad(
            f"{where}: vision hidden_act {quoted(act)} is not supported", "LLaVA-1.5 towers use quick_gelu"
        )
    return VisionHParams(
        hidden_size=positive_int(merged, "hidden_size", where),
        ffn_size=positive_int(merged, "intermediate_size", where),
        n_layers=positive_int(merged, "num_hidden_layers", where),
        n_heads=positive_int(merged, "num_attention_heads", where),
        image_size=positive_int(merged, "image_size", where),
        patch_size=positive_int(merged, "patch_size", where),
        layer_norm_eps=positive_float(merged, "layer_norm_eps", where),
        hidden_act=act,
        projection_dim=positive_int(merged, "projection_dim", where),
    )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    data = read_json_file(path, what, hint="the file must be valid JSON")
    if not isinstance(data, dict):
        raise bad(f"{what} {path} is not a JSON object", "the file must be valid JSON")
    return data


def _triple(value: Any) -> tuple[float, float, float] | None:
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and all(abs(v) <= _MAX_FLOAT for v in value)
    ):
        return float(value[0]), float(value[1]), float(value[2])
    return None


def _with_preprocessor(vision: VisionHParams, directory: Path | None) -> VisionHParams:
    if directory is None or not _is_file(directory / "preprocessor_config.json"):
        return vision
    path = directory / "preprocessor_config.json"
    pre = _read_json(path, "preprocessor config")
    if pre.get("image_mean") is None and pre.get("image_std") is None:
        return vision
    mean, std = _triple(pre.get("image_mean")), _triple(pre.get("image_std"))
    if mean is None or std is None or not all(v > 0 for v in std):
        raise bad(
            f"{path}: image_mean/image_std must be lists of 3 finite numbers (std positive), not "
            f"{shown(pre.get('image_mean'))} / {shown(pre.get('image_std'))}",
            "fix preprocessor_config.json (CLIP uses mean 0.481,0.458,0.408 and std 0.269,0.261,0.276)",
        )
    return replace(vision, image_mean=mean, image_std=std)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long: not a directory
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_tower(
    config: Mapping[str, Any], root: Path
) -> tuple[str, VisionHParams, Path | None, str | None]:
    """(tower name, hparams, local tower dir or None, hub repo or None) for an original-layout config."""
    tower = config.get("mm_vision_tower") or config.get("vision_tower")
    if not isinstance(tower, str) or not tower.strip():
        raise bad(
            "config.json names no vision tower (mm_vision_tower is missing)",
            "set mm_vision_tower to a CLIP tower directory or hub id, e.g. openai/clip-vit-large-patch14-336",
        )
    candidate = user_path(tower, what="mm_vision_tower", error=ConversionError)
    candidate = candidate if candidate.is_absolute() else root / candidate
    if _is_dir(candidate):
        cfg_path = candidate / "config.json"
        if not _is_file(cfg_path):
            raise bad(
                f"vision config missing: tower directory {candidate} has no config.json",
                "put the CLIP tower's config.json (CLIPConfig or CLIPVisionConfig) in that directory",
            )
        cfg = _read_json(cfg_path, "vision tower config")
        vision = vision_hparams_from_config(cfg, f"vision config {cfg_path}")
        return tower, _with_preprocessor(vision, candidate), candidate.resolve(), None
    if tower in BUILTIN_TOWERS:
        return tower, vision_hparams_from_config(BUILTIN_TOWERS[tower], f"built-in {tower}"), None, tower
    if looks_like_repo_id(tower):
        cfg_path = hub_file(tower, "config.json", what="vision tower")
        vision = vision_hparams_from_config(
            _read_json(cfg_path, "vision tower config"), f"vision config {tower}"
        )
        return tower, _with_preprocessor(vision, cfg_path.parent), None, tower
    raise bad(
        f"vision config missing: mm_vision_tower {quoted(tower)} is neither a directory nor a hub repo id",
        "point mm_vision_tower at a local CLIP tower directory (absolute or relative to the checkpoint)",
    )


def check_vision(vision: VisionHParams, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    if vision.image_size % vision.patch_size:
        raise bad(
            f"{where}: image_size {vision.image_size} is not a multiple of patch_size {vision.patch_size}",
            "fix the vision config",
        )
    if vision.hidden_size % vision.n_heads:
        raise bad(f"{where}: hidden_size not divisible by num_attention_heads", "fix the vision config")
    if vision.ffn_size == vision.hidden_size:
        raise bad(
            f"{where}: intermediate_size equals hidden_size ({vision.ffn_size}); "
            "llama.cpp cannot tell fc1 from fc2",
            "towers with a square MLP are not supported",
        )
    d, p = vision.hidden_size, vision.patch_size
    want = {
        "embeddings.patch_embedding.weight": (d, 3, p, p),
        "embeddings.position_embedding.weight": (vision.n_patches + 1, d),
        "embeddings.class_embedding": (d,),
        "encoder.layers.0.mlp.fc1.weight": (vision.ffn_size, d),
    }
    for name, shape in want.items():
        got = shapes.get(name)
        if got is None:
            raise bad(f"vision tower weights lack {name}", "the tower weights are incomplete")
        if tuple(got) != shape:
            raise bad(
                f"vision config inconsistent with the weights: {where} implies {name} {shape}, "
                f"the weights have {tuple(got)}",
                "mm_vision_tower names a different CLIP tower than the weights in the checkpoint",
            )
