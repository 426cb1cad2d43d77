"""The registry file, ``<models_dir>/registry.json``: its records and how it is read and written.

One entry per installed (name, quant) pair (``InstalledModel``: text/mmproj paths, sha256s, sizes, source,
conversion time) plus the stored default model (``Registry``). Reading checks every field's type (a
damaged file is one ``RegistryError`` naming it); writing is atomic (``_fs.atomic_write``: tmp + rename);
``update_registry`` runs a read-modify-write cycle under the registry's lock file
(:mod:`edgejudge._registry_lock`) so concurrent commands lose no update. What the entries mean (names,
lookups, resolving what a user typed) is :mod:`edgejudge.registry`'s, which re-exports these names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import config
from ._fs import atomic_write
from ._registry_lock import locked
from .errors import RegistryError

__all__ = [
    "InstalledModel",
    "Registry",
    "REGISTRY_FILE",
    "LOCK_FILE",
    "MAX_REGISTRY_BYTES",
    "registry_path",
    "load_registry",
    "save_registry",
    "update_registry",
]

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
REGISTRY_VERSION = 1


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
        atomic_write(path, (json.dumps(registry.to_dict(), indent=2) + "\n").encode("utf-8"), mode=0o600)
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
