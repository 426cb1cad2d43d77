"""Model names → files: the manifest of known judges, the registry of installed GGUF pairs, sha256 checks.

Two small data files:

- the **manifest** of known judges (``edgejudge/data/models.toml``, package data; ``models/manifest.toml``
  in the source tree links to it): hub repo, revision, vision tower, licence, expected sizes;
- the **registry** of installed models, ``<models_dir>/registry.json``: one entry per (name, quant) with
  the text/mmproj paths, sha256s, sizes, source and conversion time, plus the stored default model.
  Written atomically (``_fs.atomic_write``: tmp + rename); read-modify-write cycles hold a lock file
  (``update_registry``) so concurrent commands lose no update.

``resolve_model`` turns what a user typed (a ``.gguf`` path, ``name``, ``name:QUANT``, or nothing = the
default) into the (text model, mmproj) pair. Pulling and verifying live in ``edgejudge.install``. Nothing
here prints: progress goes through callbacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from . import config
from ._fs import atomic_write, user_path
from ._registry_lock import locked
from .errors import InputError, ModelNotFoundError, RegistryError

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
    "find_installed",
    "resolve_model",
    "sha256_file",
    "gguf_quant",
    "make_entry",
    "split_name",
]

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
REGISTRY_VERSION = 1
#: When a name has several quantizations installed and none is asked for, the first of these wins.
QUANT_PREFERENCE = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
_FILE_TYPES = {0: "F32", 1: "F16", 7: "Q8_0", 15: "Q4_K_M", 17: "Q5_K_M", 32: "BF16", 2: "Q4_0", 18: "Q6_K"}

ProgressFn = Callable[[str, int, int], None]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the converter's rule for model names


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
    default_quant: str = "Q4_K_M"
    source_bytes: int = 0
    n_layers: int = 0
    n_embd: int = 0
    gguf_bytes: Mapping[str, int] = field(default_factory=dict)
    mmproj_bytes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InstalledModel:
    """One installed GGUF pair as recorded in the registry (paths absolute)."""

    name: str
    quant: str
    text_model: str
    mmproj: str
    mmproj_quant: str = ""
    text_sha256: str = ""
    mmproj_sha256: str = ""
    text_bytes: int = 0
    mmproj_bytes: int = 0
    source: str = ""
    converted_at: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}"

    @property
    def paths(self) -> tuple[Path, Path]:
        return Path(self.text_model), Path(self.mmproj)

    @property
    def present(self) -> bool:
        return all(p.is_file() for p in self.paths)

    @property
    def total_bytes(self) -> int:
        return self.text_bytes + self.mmproj_bytes


@dataclass(frozen=True)
class Registry:
    """The installed models and the stored default (``name`` or ``name:QUANT``)."""

    models: tuple[InstalledModel, ...] = ()
    default: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REGISTRY_VERSION,
            "default": self.default,
            "models": [asdict(m) for m in self.models],
        }


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
def registry_path() -> Path:
    return config.models_dir() / REGISTRY_FILE


#: The largest registry file read (an entry is ~1 KB; this is thousands of models).
MAX_REGISTRY_BYTES = 16 * 2**20
_REQUIRED = ("name", "quant", "text_model", "mmproj")


def _entry(value: Any, where: str) -> InstalledModel:
    """One registry entry, every field checked for its type (wrong types never reach the callers)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    known = {f.name: f.type for f in fields(InstalledModel)}
    values: dict[str, Any] = {}
    for key, item in value.items():
        kind = known.get(key)
        if kind is None:
            continue  # a field a later edgejudge may add
        if kind == "int":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < 2**63:
                raise ValueError(f"{where}.{key} must be a byte count, got {item!r:.40}")
        elif not isinstance(item, str):
            raise ValueError(f"{where}.{key} must be text, got {type(item).__name__}")
        values[key] = item
    for key in _REQUIRED:
        if not values.get(key):
            raise ValueError(f"{where} has no {key!r}")
    return InstalledModel(**values)


def _parse_registry(text: str) -> Registry:
    from ._jsonl import loads_line

    decoded = loads_line(text)
    if decoded.problem is not None:
        raise ValueError(decoded.problem)
    data = decoded.value
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ValueError(f"'models' must be a list, got {type(entries).__name__}")
    models = tuple(_entry(m, f"models[{i}]") for i, m in enumerate(entries))
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ValueError(f"'default' must be a model name, got {type(default).__name__}")
    return Registry(models=models, default=default)


def load_registry() -> Registry:
    """The registry of installed models (empty when none was written yet).

    Anything wrong with the file (not a regular file, too large, not UTF-8, not JSON, nested too deep,
    a field of the wrong type) is a ``RegistryError`` naming the file and the problem."""
    from ._fs import read_regular

    path = registry_path()
    if not os.path.lexists(path):
        return Registry()
    hint = "fix or delete the file, then re-add models with `edgejudge models add`"
    data = read_regular(path, what="the model registry", max_bytes=MAX_REGISTRY_BYTES, error=RegistryError)
    try:
        return _parse_registry(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RegistryError(
            f"the model registry {path} is unreadable (not UTF-8: byte {err.start})", hint=hint
        ) from None
    except (ValueError, TypeError) as err:
        raise RegistryError(f"the model registry {path} is unreadable ({err})", hint=hint) from None


def save_registry(registry: Registry) -> None:
    """Write the registry atomically (``_fs.atomic_write``: tmp file in the same directory + rename)."""
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(registry.to_dict(), indent=2) + "\n").encode("utf-8"))
    except OSError as err:
        raise RegistryError(
            f"cannot write the model registry {path}: {err.strerror or err}",
            hint="check permissions, or point EDGEJUDGE_MODELS_DIR to a writable directory",
        ) from None


def update_registry(change: Callable[[Registry], Registry]) -> Registry:
    """Read, ``change`` and write the registry under a lock file (concurrent commands lose no update)."""
    with locked(registry_path().with_name(LOCK_FILE)):
        new = change(load_registry())
        save_registry(new)
    return new


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
    name, quant = split_name(value)
    matches = [m for m in reg.models if m.name == name and (quant is None or m.quant.upper() == quant)]
    if not matches:
        return None
    rank = {q: i for i, q in enumerate(QUANT_PREFERENCE)}
    return min(matches, key=lambda m: rank.get(m.quant.upper(), len(rank)))


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
        cmd = f"edgejudge models pull {name}" + (f" --quant {quant}" if quant else "")
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


def _mmproj_beside(text: Path) -> Path:
    from .engine.llama import find_mmproj

    return Path(find_mmproj(text))


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
                hint="pass --model NAME|PATH, set one with `edgejudge models default NAME`, "
                "or install the judge with `edgejudge models pull prometheus-vision-7b`",
            )
    if _looks_like_path(value, reg):
        text = user_path(value, what="model file", error=ModelNotFoundError)
        if text.is_dir():
            ggufs = sorted(p for p in text.glob("*.gguf") if not p.name.startswith("mmproj-"))
            if len(ggufs) != 1:
                raise ModelNotFoundError(
                    f"{text} holds {len(ggufs)} text models, expected one",
                    hint="pass the path of the text .gguf file itself",
                )
            text = ggufs[0]
        if not text.is_file():
            raise ModelNotFoundError(
                f"model file not found: {text}",
                hint="check the path, or use a name from `edgejudge models list`",
            )
        text = text.resolve()
        if mmproj:
            proj = user_path(mmproj, what="mmproj file", error=ModelNotFoundError)
        else:
            proj = _mmproj_beside(text)
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
                hint=f"re-install it with `edgejudge models pull {entry.name} --quant {entry.quant}` "
                "or re-register it with `edgejudge models add`",
            )
    if not proj.is_file():
        raise ModelNotFoundError(
            f"projector (mmproj) file not found: {proj}", hint="pass --mmproj PATH to the mmproj-*.gguf file"
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
    """The quantization of a GGUF file from ``general.file_type`` (e.g. ``Q4_K_M``), or the file name."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError/struct errors on garbage
        raise InputError(
            f"{path} is not a GGUF file ({err})", hint="pass a .gguf file written by llama.cpp"
        ) from None
    fld = reader.fields.get("general.file_type")
    if fld is not None:
        value = int(fld.contents())
        if value in _FILE_TYPES:
            return _FILE_TYPES[value]
    stem = Path(path).stem
    return stem.rsplit("-", 1)[-1].upper() if "-" in stem else "unknown"


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
    if not _NAME.fullmatch(name):
        raise InputError(
            f"invalid model name {name!r}",
            hint="use letters, digits, '.', '_' and '-' (no slashes or spaces)",
        )
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
