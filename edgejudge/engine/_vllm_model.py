"""What ``VllmEngine`` knows of the judge it serves besides the vocabulary: the local llava-hf folder (when
``model`` names one), the judge's identity and the image geometry.

- ``local_folder``: ``model`` as a local llava-hf folder (it holds ``config.json``), else None;
- ``model_identity``: the name verdicts and resume keys carry, the same on every machine (never a path of
  one machine's file system): the local folder's name when ``model`` is one; else the served model's name
  when the server was given one (``--served-model-name``), or the last part of the path (or hub
  repository) the server was started on;
- ``image_geometry``: the image size and prompt positions of one image, from the folder's config (checked
  against the server's count) or, without a folder, derived from the server's count with LLaVA-1.5's
  14-pixel patches (and said in a warning).
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath

from ..errors import EngineError
from ._http import HttpClient
from ._vllm_vocab import ServedModel, image_tokens

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGE_TOKEN",
    "LLAVA_HF_HINT",
    "PATCH_SIZE",
    "image_geometry",
    "local_folder",
    "model_identity",
]

#: LLaVA-1.5's tower input (CLIP ViT-L/14-336) and patch side: the image size of a served model whose
#: llava-hf folder is not at hand is derived from the server's image token count with it.
DEFAULT_IMAGE_SIZE = 336
PATCH_SIZE = 14
IMAGE_TOKEN = "<image>"
LLAVA_HF_HINT = "export the checkpoint in the llava-hf layout (convert.llava_hf) and serve that folder"


def local_folder(model: str | None) -> Path | None:
    """``model`` as a local llava-hf folder, or None (a served model's name)."""
    if model is None:
        return None
    path = Path(model).expanduser()
    return path if (path / "config.json").is_file() else None


def model_identity(served: ServedModel, folder: Path | None) -> str:
    """The judge's name in verdicts and resume keys (the module docstring's rule)."""
    if folder is not None:
        return folder.resolve().name
    if served.name != served.root:  # the server was given a name of its own
        return served.name
    return PurePosixPath(served.root).name or served.name


def _folder_image_size(folder: Path) -> tuple[int, int]:
    """(image size, patch size) from a llava-hf folder's ``config.json``."""
    try:
        vision = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vision_config"]
        return int(vision["image_size"]), int(vision["patch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EngineError(
            f"{folder / 'config.json'} has no vision_config with image_size and patch_size",
            hint="give the folder of a llava-hf export: " + LLAVA_HF_HINT,
        ) from None


def image_geometry(
    client: HttpClient, model: str, image_id: int, folder: Path | None
) -> tuple[int, int, list[str]]:
    """(image size, prompt positions of one image, warnings) for the served ``model`` (module docstring)."""
    if folder is not None:
        size, patch = _folder_image_size(folder)
        expected = (size // patch) ** 2
    else:
        size, expected = DEFAULT_IMAGE_SIZE, 0
    n = image_tokens(client, model, image_id, IMAGE_TOKEN, size)
    if folder is not None:
        if n != expected:
            raise EngineError(
                f"{client.url} gives an image {n} prompt positions, the folder's config {expected}",
                hint="start the server on that folder, with --chat-template-content-format string",
            )
        return size, n, []
    side = math.isqrt(n)
    if side * side == n:
        size = side * PATCH_SIZE
    warning = (
        f"image size {size} assumed from the server's {n} image tokens (LLaVA-1.5's "
        f"{PATCH_SIZE}-pixel patches); name the model's llava-hf folder to read it from its config"
    )
    return size, n, [warning]
