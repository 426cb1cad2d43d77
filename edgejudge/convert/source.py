"""Where a checkpoint comes from: a local directory or a Hugging Face hub repo id.

``resolve_source`` turns the ``SRC`` argument of ``edgejudge convert`` into a local directory, downloading
only what the converter reads (configs, tokenizer, weight shards) with ``huggingface_hub.snapshot_download``
into the hub cache. ``hub_file`` / ``hub_snapshot`` serve the vision-tower resolution in ``hparams``.
Offline (``HF_HUB_OFFLINE=1``) only what is already cached is used; anything else is a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._fs import user_path
from ..errors import ConversionError, ModelNotFoundError
from .limits import shown

__all__ = ["CHECKPOINT_PATTERNS", "looks_like_repo_id", "resolve_source", "hub_file", "hub_snapshot"]

#: What ``snapshot_download`` fetches for a LLaVA checkpoint (no training args, images or optimizer states).
CHECKPOINT_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: (stage text, done, total) — the same shape as ``edgejudge.convert.ProgressFn``.
_Progress = Callable[[str, int, int], None]


def looks_like_repo_id(value: str) -> bool:
    """True for ``owner/name`` strings (what the hub accepts as a repo id)."""
    return bool(_REPO_ID.match(value)) and ".." not in value


def resolve_source(
    src: str | Path, *, progress: _Progress | None = None, revision: str | None = None
) -> Path:
    """A local checkpoint directory for ``src`` (a directory path, or a hub repo id to download at
    ``revision``: a branch, tag or commit hash; None = the default branch). A local directory ignores it."""
    path = user_path(src, what="checkpoint", error=ModelNotFoundError)
    try:
        is_dir, exists = path.is_dir(), path.exists()
        if is_dir:
            return path.resolve()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise ModelNotFoundError(
            f"checkpoint directory {shown(str(src))} cannot be used ({exc})", hint="check the path"
        ) from None
    if exists:
        raise ModelNotFoundError(
            f"{src} is a file, not a checkpoint directory",
            hint="pass the directory that holds config.json and the weight shards",
        )
    text = str(src)
    if not looks_like_repo_id(text):
        raise ModelNotFoundError(
            f"checkpoint directory {shown(text)} does not exist",
            hint="pass a local checkpoint directory or a hub repo id "
            "such as prometheus-eval/prometheus-vision-7b-v1.0",
        )
    return hub_snapshot(text, CHECKPOINT_PATTERNS, progress=progress, what="checkpoint", revision=revision)


def _tqdm_class(progress: _Progress, stage: str) -> Any:
    """A tqdm subclass that forwards byte counts to ``progress`` and prints nothing."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open("/dev/null", "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            progress(stage, int(self.n), int(self.total or 0))
            return result

        def close(self) -> None:
            handle = self.fp
            super().close()
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - closing /dev/null cannot matter
                pass

    return _Forward


def _hub_error(repo_id: str, err: Exception, what: str) -> Exception:
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(err, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return ModelNotFoundError(
            f"{what} {repo_id} is not in the local hub cache and the hub cannot be reached (offline)",
            hint="download it on a connected machine (unset HF_HUB_OFFLINE) or pass a local directory",
        )
    if isinstance(err, GatedRepoError):
        return ModelNotFoundError(
            f"{what} {repo_id} is gated on the hub", hint="accept its licence on huggingface.co and log in"
        )
    if isinstance(err, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{what} {repo_id} was not found on the hub",
            hint="check the repo id, or pass a local checkpoint directory",
        )
    return ModelNotFoundError(
        f"could not download {what} {repo_id}: {err}",
        hint="check the network (or HF_HUB_OFFLINE) and retry; or pass a local directory",
    )


def hub_snapshot(
    repo_id: str,
    patterns: tuple[str, ...],
    *,
    progress: _Progress | None = None,
    what: str = "repo",
    revision: str | None = None,
) -> Path:
    """Download (or reuse from the cache) the files of ``repo_id`` at ``revision`` matching ``patterns``."""
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = {"allow_patterns": list(patterns), "revision": revision}
    if progress is not None:
        kwargs["tqdm_class"] = _tqdm_class(progress, f"downloading {repo_id}")
    label = repo_id if revision is None else f"{repo_id}@{revision}"
    try:
        return Path(snapshot_download(repo_id, **kwargs))
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one clear error
        raise _hub_error(label, err, what) from err


def hub_file(repo_id: str, filename: str, *, what: str = "repo") -> Path:
    """One file of ``repo_id`` (from the cache when present)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one clear error
        if isinstance(err, EntryNotFoundError) and not isinstance(err, LocalEntryNotFoundError):
            raise ConversionError(
                f"{what} {repo_id} has no {filename}",
                hint="point mm_vision_tower at a CLIP tower directory with a config.json",
            ) from err
        raise _hub_error(repo_id, err, what) from err
