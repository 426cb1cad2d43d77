"""Installing and checking judge models, the operations on a pair's files:

- ``convert_checkpoint``: the public ``edgejudge.convert_checkpoint``, the converter
  (:func:`edgejudge.convert.convert_checkpoint`) for the installed runtime: without a ``cls_position`` it
  asks the cached runtime probe (:func:`edgejudge.probe.runtime_cls_position`) where libmtmd puts CLIP's
  class token (the converter itself never runs the probe);
- ``pull_model`` (download → convert → quantize → sha256 → registry), ``register_pair`` (hash and register
  a pair on disk: ``convert --register``), ``add_model`` (``models add``: a pair converted elsewhere or
  earlier), ``remove_model`` (unregister, optionally delete the files no other entry uses);
- ``verify_model``: sha256 against the registry + the pair's GGUF metadata (read with
  :func:`edgejudge.judgefile.read_metadata`, the CLS stamp judged by :func:`edgejudge.judgefile.check_cls`).

Library code: nothing prints; progress reaches the UI as ``progress(stage, done, total)`` calls.
Downloads go through huggingface-hub (resumable: interrupted files are kept as ``.incomplete`` and
continued); conversion is atomic (``convert_checkpoint`` writes temporaries and moves the complete pair
into place; a failure leaves the previously installed files as they were).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from ._fs import user_path
from .errors import CLSOrderMismatchError, EdgeJudgeError, ModelNotFoundError
from .judgefile import (
    DEFAULT_MMPROJ_QUANT,
    DEFAULT_QUANT,
    MMPROJ_QUANTS,
    TEXT_QUANTS,
    check_cls,
    normalize_quant,
    read_metadata,
)
from .registry import (
    InstalledModel,
    find_installed,
    installed_for,
    known_models,
    make_entry,
    register,
    resolve_model,
    split_name,
    unregister,
)

if TYPE_CHECKING:
    from .convert import ConvertResult, ProgressFn

__all__ = [
    "PullResult",
    "VerifyReport",
    "convert_checkpoint",
    "pull_model",
    "register_pair",
    "add_model",
    "remove_model",
    "verify_model",
    "installed_for",
]


@dataclass(frozen=True)
class PullResult:
    """What ``pull_model`` did: the registered entry, whether it was already there, where it came from."""

    entry: InstalledModel
    already_installed: bool
    source_dir: str
    seconds: float = 0.0


@dataclass(frozen=True)
class VerifyReport:
    """The checks of one installed model. ``status`` is ``ok``, ``missing``, ``modified``, ``invalid`` or
    ``unhashed`` (registered without sha256s); ``problems`` says what is wrong, ``notes`` what is worth
    knowing; ``metadata`` holds the GGUF facts read."""

    key: str
    status: str
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "unhashed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.key,
            "status": self.status,
            "ok": self.ok,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "metadata": self.metadata,
        }


# ---------------------------------------------------------------------------------------------- convert
def convert_checkpoint(
    src: str | Path,
    outdir: str | Path,
    *,
    name: str | None = None,
    quant: str = DEFAULT_QUANT,
    mmproj_quant: str = DEFAULT_MMPROJ_QUANT,
    progress: ProgressFn | None = None,
    cls_position: str | Callable[[], str] | None = None,
) -> ConvertResult:
    """Convert ``src`` into ``outdir/<name>-<QUANT>.gguf`` + ``outdir/mmproj-<name>-<QUANT>.gguf`` for the
    installed llama.cpp (see :func:`edgejudge.convert.convert_checkpoint` for everything else).

    ``cls_position`` None asks the cached runtime probe where the installed libmtmd puts CLIP's class
    token (a second or two the first time on a runtime); "first" / "last" write for that order instead.
    Raises ``EdgeJudgeError`` subclasses only."""
    from .convert import convert_checkpoint as convert
    from .probe import runtime_cls_position

    return convert(
        src,
        outdir,
        name=name,
        quant=quant,
        mmproj_quant=mmproj_quant,
        progress=progress,
        cls_position=runtime_cls_position if cls_position is None else cls_position,
    )


# ------------------------------------------------------------------------------------------------- pull
def _source_for(name: str, source: str | None) -> tuple[str, str]:
    """(source to convert from, human description) for a pull."""
    if source:
        return source, source
    known = known_models()
    if name not in known:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not in the manifest of known judges ({', '.join(known)})",
            hint="pull a known judge, or give a checkpoint directory or hub repo as its source",
            about="source",
        )
    entry = known[name]
    return entry.repo, f"{entry.repo}@{entry.revision}"


def _download(repo: str, revision: str, progress: ProgressFn | None) -> Path:
    """The checkpoint of a known judge at ``revision`` ("main" = the default branch), via the hub cache."""
    from .convert.source import resolve_source

    return resolve_source(repo, progress=progress, revision=None if revision == "main" else revision)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long: not a local directory (resolve_source says why)
        return False


def pull_model(
    name: str,
    *,
    quant: str | None = None,
    mmproj_quant: str = DEFAULT_MMPROJ_QUANT,
    source: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PullResult:
    """Install judge ``name``: download (or use ``source``: a local checkpoint dir or hub repo id),
    convert + quantize into ``config.models_dir()``, hash, register. Already installed (files present)
    → returned as is unless ``force``."""
    import time

    name, name_quant = split_name(name)
    known = known_models().get(name)
    quant = normalize_quant(
        quant or name_quant or (known.default_quant if known else DEFAULT_QUANT), TEXT_QUANTS
    )
    mmproj_quant = normalize_quant(mmproj_quant, MMPROJ_QUANTS)
    existing = find_installed(f"{name}:{quant}")
    if existing is not None and existing.present and not force:
        return PullResult(entry=existing, already_installed=True, source_dir=existing.source)
    src, described = _source_for(name, source)
    start = time.perf_counter()
    local = user_path(src, what="checkpoint", error=ModelNotFoundError)
    if _is_dir(local):
        src_dir = local.resolve()
    elif known is not None and source is None:
        src_dir = _download(known.repo, known.revision, progress)
    else:
        from .convert.source import resolve_source

        src_dir = resolve_source(src, progress=progress)
    outdir = config.models_dir()
    result = convert_checkpoint(
        src_dir, outdir, name=name, quant=quant, mmproj_quant=mmproj_quant, progress=progress
    )
    entry = register_pair(result, source=described, progress=progress)
    return PullResult(
        entry=entry, already_installed=False, source_dir=str(src_dir), seconds=time.perf_counter() - start
    )


# -------------------------------------------------------------------------------------- register, remove
def register_pair(
    result: ConvertResult, *, source: str, progress: ProgressFn | None = None
) -> InstalledModel:
    """Hash and register a converted pair under its name and quant (``edgejudge convert --register``);
    replaces an entry of the same name and quant."""
    entry = make_entry(
        result.name, result.text_model, result.mmproj, source=source, progress=progress, quant=result.quant
    )
    register(entry)
    return entry


def add_model(
    text_model: str | Path,
    name: str,
    *,
    mmproj: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> InstalledModel:
    """Register an existing GGUF pair (converted elsewhere or earlier) as ``name`` (``models add``): the
    text model's path as typed, its projector given or found beside it; quant read, sizes and sha256s
    measured."""
    path = user_path(text_model, what="model file", error=ModelNotFoundError)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}", hint="check the path")
    text, proj = resolve_model(str(path), mmproj=mmproj)
    entry = make_entry(name, text, proj, source=f"added from {text}", progress=progress)
    register(entry)
    return entry


def remove_model(value: str, *, delete_files: bool = False) -> tuple[InstalledModel, ...]:
    """Unregister the entries ``value`` (``name`` or ``name:QUANT``) names (the default too, when it named
    one); with ``delete_files`` also delete their files, except a file another entry still uses (one
    mmproj may serve several quantizations). Returns the removed entries."""
    gone, kept = unregister(value)
    if delete_files:
        still_used = {p for m in kept.models for p in m.paths}
        for entry in gone:
            for path in entry.paths:
                if path not in still_used:
                    path.unlink(missing_ok=True)
    return gone


# ----------------------------------------------------------------------------------------------- verify
def _check_pair(text: Path, mmproj: Path) -> tuple[list[str], list[str], dict[str, Any]]:
    from .probe import runtime_cls_position

    problems: list[str] = []
    notes: list[str] = []
    hint = "re-convert or re-download it"
    tmeta = read_metadata(text, hint=hint)
    pmeta = read_metadata(mmproj, hint=hint)
    facts: dict[str, Any] = {
        "text_architecture": tmeta.get("general.architecture"),
        "mmproj_architecture": pmeta.get("general.architecture"),
        "n_embd": tmeta.get("llama.embedding_length"),
        "n_layers": tmeta.get("llama.block_count"),
        "projector_type": pmeta.get("clip.projector_type"),
        "image_size": pmeta.get("clip.vision.image_size"),
        "cls_position": pmeta.cls_position,
    }
    if facts["text_architecture"] != "llama":
        problems.append(f"text model architecture is {facts['text_architecture']!r}, expected 'llama'")
    if facts["mmproj_architecture"] != "clip":
        problems.append(f"mmproj architecture is {facts['mmproj_architecture']!r}, expected 'clip'")
    if not pmeta.get("clip.has_vision_encoder"):
        problems.append("mmproj has no vision encoder (clip.has_vision_encoder is not true)")
    if facts["projector_type"] != "mlp":
        problems.append(f"mmproj projector type is {facts['projector_type']!r}, expected 'mlp'")
    proj = pmeta.tensors.get("mm.2.weight")
    if proj is not None and facts["n_embd"] is not None:
        facts["projector_width"] = proj[-1]
        if proj[-1] != facts["n_embd"]:
            problems.append(f"projector output width {proj[-1]} != text embedding width {facts['n_embd']}")

    def runtime() -> str:
        facts["runtime_cls_position"] = runtime_cls_position()
        return str(facts["runtime_cls_position"])

    try:
        notes += check_cls(pmeta.cls_position, runtime)
    except CLSOrderMismatchError as err:
        problems.append(str(err))
    except EdgeJudgeError as err:
        notes.append(f"CLS self-test unavailable: {err}")
    return problems, notes, facts


def verify_model(entry: InstalledModel, *, progress: ProgressFn | None = None) -> VerifyReport:
    """Re-hash both files against the registry and check their GGUF metadata."""
    from .registry import sha256_file

    missing = [str(p) for p in entry.paths if not p.is_file()]
    if missing:
        return VerifyReport(entry.key, "missing", problems=tuple(f"file missing: {p}" for p in missing))
    problems: list[str] = []
    status = "ok"
    if not (entry.text_sha256 and entry.mmproj_sha256):
        status = "unhashed"
    else:
        for label, path, want in (
            ("text model", entry.paths[0], entry.text_sha256),
            ("mmproj", entry.paths[1], entry.mmproj_sha256),
        ):
            got = sha256_file(path, progress)
            if got != want:
                problems.append(f"{label} sha256 {got[:12]}… differs from the recorded {want[:12]}…")
                status = "modified"
    more, notes, facts = _check_pair(*entry.paths)
    if more:
        problems += more
        status = "invalid" if status in ("ok", "unhashed") else status
    return VerifyReport(entry.key, status, problems=tuple(problems), notes=tuple(notes), metadata=facts)
