"""Model names → files: the manifest of known judges, the registry of installed GGUF pairs, sha256 checks.

Two small data files:

- the **manifest** of known judges (``edgejudge/data/models.toml``, package data; ``models/manifest.toml``
  in the source tree links to it): hub repo, revision, vision tower, licence, expected sizes;
- the **registry** of installed models, ``<models_dir>/registry.json``: one entry per (name, quant) with
  the text/mmproj paths, sha256s, sizes, source and conversion time, plus the stored default model. The
  file's records, reading and atomic writing live in :mod:`edgejudge._registry_file` (re-exported here);
  every change here is one ``update_registry`` cycle under its lock file, so concurrent commands lose no
  update (``register``, ``set_default``, ``unregister``).

``resolve_model`` turns what a user typed (a ``.gguf`` path, ``name``, ``name:QUANT``, or nothing = the
default) into the (text model, mmproj) pair; ``models_overview`` is the known and installed models as plain
data. File names, the name rule and quant names are the pair contract's (:mod:`edgejudge.judgefile`).
Pulling, adding, verifying and removing files live in ``edgejudge.install``. Nothing here prints: progress
goes through callbacks.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from . import config
from ._fs import user_path
from ._registry_file import (
    InstalledModel,
    Registry,
    load_registry,
    registry_path,
    save_registry,
    update_registry,
)
from .errors import ModelNotFoundError
from .judgefile import (
    DEFAULT_QUANT,
    QUANT_PREFERENCE,
    check_name,
    find_mmproj,
    is_projector_name,
    read_metadata,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "KnownModel",
    "InstalledModel",
    "Registry",
    "QUANT_PREFERENCE",
    "known_models",
    "registry_path",
    "load_registry",
    "save_registry",
    "update_registry",
    "register",
    "set_default",
    "unregister",
    "find_installed",
    "installed_for",
    "resolve_model",
    "models_overview",
    "sha256_file",
    "gguf_quant",
    "make_entry",
    "split_name",
]

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class KnownModel:
    """A judge edgejudge knows how to fetch and convert (one ``[models.<name>]`` entry of the manifest)."""

    name: str
    repo: str
    revision: str
    vision_tower: str
    license: str
    description: str = ""
    parameters: str = ""
    default_quant: str = DEFAULT_QUANT
    source_bytes: int = 0
    n_layers: int = 0
    n_embd: int = 0
    gguf_bytes: Mapping[str, int] = field(default_factory=dict)
    mmproj_bytes: Mapping[str, int] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------- manifest
def known_models() -> dict[str, KnownModel]:
    """The manifest of known judges, by name."""
    text = resources.files("edgejudge").joinpath("data").joinpath("models.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    out: dict[str, KnownModel] = {}
    for name, entry in data.get("models", {}).items():
        out[name] = KnownModel(name=name, **entry)
    return out


# -------------------------------------------------------------------------------------------- registry
def register(entry: InstalledModel) -> Registry:
    """Add or replace (same name and quant) an installed model; returns the new registry."""

    def add(reg: Registry) -> Registry:
        models = tuple(m for m in reg.models if m.key != entry.key) + (entry,)
        return replace(reg, models=tuple(sorted(models, key=lambda m: (m.name, m.quant))))

    return update_registry(add)


def split_name(value: str) -> tuple[str, str | None]:
    """``name:QUANT`` → (name, canonical QUANT); ``name`` → (name, None)."""
    name, sep, quant = value.partition(":")
    return name.strip(), (quant.strip().upper() if sep and quant.strip() else None)


def find_installed(value: str, registry: Registry | None = None) -> InstalledModel | None:
    """The installed entry for ``name`` or ``name:QUANT`` (preferring QUANT_PREFERENCE order), or None."""
    reg = registry or load_registry()
    matches = _matching(value, reg)
    if not matches:
        return None
    rank = {q: i for i, q in enumerate(QUANT_PREFERENCE)}
    return min(matches, key=lambda m: rank.get(m.quant.upper(), len(rank)))


def _matching(value: str, reg: Registry) -> list[InstalledModel]:
    name, quant = split_name(value)
    return [m for m in reg.models if m.name == name and (quant is None or m.quant.upper() == quant)]


def installed_for(value: str | None, registry: Registry | None = None) -> list[InstalledModel]:
    """The registry entries ``value`` (``name`` or ``name:QUANT``) names, all when None; ModelNotFoundError
    when it names none."""
    reg = registry or load_registry()
    if value is None:
        return list(reg.models)
    entries = _matching(value, reg)
    if not entries:
        raise ModelNotFoundError(f"model {value!r} is not installed", hint="see `edgejudge models list`")
    return entries


def unregister(value: str) -> tuple[tuple[InstalledModel, ...], Registry]:
    """Remove every entry ``value`` (``name`` or ``name:QUANT``) names, and the stored default when it
    named one of them; ModelNotFoundError when none is installed. Returns (removed entries, new registry),
    decided and written in one locked cycle."""
    gone: list[InstalledModel] = []

    def drop(reg: Registry) -> Registry:
        gone[:] = installed_for(value, reg)
        keys = {m.key for m in gone}
        names = {m.name for m in gone}
        default = None if reg.default in keys or reg.default in names else reg.default
        return replace(reg, models=tuple(m for m in reg.models if m.key not in keys), default=default)

    new = update_registry(drop)
    return tuple(gone), new


def set_default(value: str) -> InstalledModel:
    """Store ``name``/``name:QUANT`` as the default model; it must be installed."""
    chosen: list[InstalledModel] = []

    def choose(reg: Registry) -> Registry:
        entry = find_installed(value, reg)
        if entry is None:
            raise _not_installed(value, reg)
        chosen.append(entry)
        return replace(reg, default=value)

    update_registry(choose)
    return chosen[0]


def _not_installed(value: str, reg: Registry) -> ModelNotFoundError:
    name, quant = split_name(value)
    known = known_models()
    if name in known:
        cmd = f"edgejudge models pull {name}" + (f":{quant}" if quant else "")  # name:QUANT, no flag
        return ModelNotFoundError(f"model {value!r} is not installed", hint=f"install it with `{cmd}`")
    installed = ", ".join(m.key for m in reg.models) or "none"
    return ModelNotFoundError(
        f"no model named {value!r} (installed: {installed})",
        hint="see `edgejudge models list`, or pass the path of a .gguf text model",
    )


# ---------------------------------------------------------------------------------------------- resolve
def _looks_like_path(value: str, reg: Registry) -> bool:
    """A path when it says so (``.gguf``, a separator); a bare word is a registered name first."""
    if value.lower().endswith(".gguf") or os.sep in value or "/" in value:
        return True
    return find_installed(value, reg) is None and Path(value).exists()


def resolve_model(name_or_path: str | None, *, mmproj: str | Path | None = None) -> tuple[Path, Path]:
    """(text model, mmproj) for a ``.gguf`` path, a registered ``name``/``name:QUANT``, or the default.

    The default is ``EDGEJUDGE_DEFAULT_MODEL``, else the stored default (``edgejudge models default``),
    else the only installed model. An explicit ``mmproj`` overrides the one found for the model.
    """
    value = name_or_path or config.default_model()
    reg = load_registry()
    if not value:
        value = reg.default
    if not value:
        present = [m for m in reg.models if m.present]
        if len(present) == 1:
            value = present[0].key
        else:
            raise ModelNotFoundError(
                "no model given and no default model set"
                + (f" ({len(present)} installed)" if present else " (none installed)"),
                hint="name a model (a registered name or a .gguf path), set a default with "
                "`edgejudge models default NAME`, "
                "or install the judge with `edgejudge models pull prometheus-vision-7b`",
                about="model",
            )
    if _looks_like_path(value, reg):
        text = user_path(value, what="model file", error=ModelNotFoundError)
        if text.is_dir():
            ggufs = sorted(p for p in text.glob("*.gguf") if not is_projector_name(p))
            if len(ggufs) != 1:
                raise ModelNotFoundError(
                    f"{text} holds {len(ggufs)} text models, expected one",
                    hint="pass the path of the text .gguf file itself",
                    about="model",
                )
            text = ggufs[0]
        if not text.is_file():
            raise ModelNotFoundError(
                f"model file not found: {text}",
                hint="check the path, or use a name from `edgejudge models list`",
                about="model",
            )
        text = text.resolve()
        if mmproj:
            proj = user_path(mmproj, what="mmproj file", error=ModelNotFoundError)
        else:
            proj = find_mmproj(text)
    else:
        entry = find_installed(value, reg)
        if entry is None:
            raise _not_installed(value, reg)
        text, proj = entry.paths
        if mmproj:
            proj = user_path(mmproj, what="mmproj file", error=ModelNotFoundError)
        if not text.is_file():
            raise ModelNotFoundError(
                f"the files of model {entry.key} are missing: {text}",
                hint=f"re-install it with `edgejudge models pull {entry.key}` "
                "or re-register it with `edgejudge models add`",
            )
    if not proj.is_file():
        raise ModelNotFoundError(
            f"projector (mmproj) file not found: {proj}",
            hint="name the mmproj-*.gguf file of this model",
            about="mmproj",
        )
    return text, proj.resolve()


# ---------------------------------------------------------------------------------------------- hashing
def sha256_file(path: str | Path, progress: ProgressFn | None = None, *, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in chunks (``progress("hashing <name>", done, total)`` per chunk)."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(f"hashing {path.name}", done, total)
    return digest.hexdigest()


def gguf_quant(path: str | Path) -> str:
    """The quantization of a GGUF file from ``general.file_type`` (e.g. ``Q4_K_M``), or the file name;
    InputError when it is not a GGUF file."""
    return read_metadata(path).quant_or_name()


def make_entry(
    name: str,
    text: str | Path,
    mmproj: str | Path,
    *,
    source: str = "",
    hash_files: bool = True,
    progress: ProgressFn | None = None,
    quant: str | None = None,
) -> InstalledModel:
    """A registry entry for an existing GGUF pair (quant read from the file, sizes and sha256 measured)."""
    text_p = user_path(text, what="text model", error=ModelNotFoundError).resolve()
    proj_p = user_path(mmproj, what="mmproj", error=ModelNotFoundError).resolve()
    for label, p in (("text model", text_p), ("mmproj", proj_p)):
        if not p.is_file():
            raise ModelNotFoundError(f"{label} file not found: {p}", hint="check the path")
    check_name(name)
    return InstalledModel(
        name=name,
        quant=(quant or gguf_quant(text_p)).upper(),
        mmproj_quant=gguf_quant(proj_p).upper(),
        text_model=str(text_p),
        mmproj=str(proj_p),
        text_sha256=sha256_file(text_p, progress) if hash_files else "",
        mmproj_sha256=sha256_file(proj_p, progress) if hash_files else "",
        text_bytes=text_p.stat().st_size,
        mmproj_bytes=proj_p.stat().st_size,
        source=source,
        converted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# ---------------------------------------------------------------------------------------------- overview
def models_overview() -> dict[str, Any]:
    """Known and installed models as plain data (``edgejudge models list --json``): ``default``,
    ``installed`` (one dict per entry, with whether its files are present) and ``known`` (the manifest,
    with the quantizations of each that are installed)."""
    reg = load_registry()
    known = known_models()
    installed = [
        {
            "name": m.name,
            "quant": m.quant,
            "mmproj_quant": m.mmproj_quant,
            "key": m.key,
            "text_model": m.text_model,
            "mmproj": m.mmproj,
            "bytes": m.total_bytes,
            "present": m.present,
            "sha256": "recorded" if m.text_sha256 and m.mmproj_sha256 else "none",
            "text_sha256": m.text_sha256,
            "mmproj_sha256": m.mmproj_sha256,
            "source": m.source,
            "converted_at": m.converted_at,
            "known": m.name in known,
            "default": reg.default in (m.name, m.key),
        }
        for m in reg.models
    ]
    catalog = [
        {
            "name": k.name,
            "repo": k.repo,
            "revision": k.revision,
            "vision_tower": k.vision_tower,
            "license": k.license,
            "description": k.description,
            "source_bytes": k.source_bytes,
            "gguf_bytes": dict(k.gguf_bytes),
            "mmproj_bytes": dict(k.mmproj_bytes),
            "installed": sorted(m.quant for m in reg.models if m.name == k.name),
        }
        for k in known.values()
    ]
    return {"default": reg.default, "installed": installed, "known": catalog}
