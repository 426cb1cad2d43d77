"""Installing and checking judge models: ``pull_model`` (download → convert → quantize → sha256 → registry)
and ``verify_model`` (sha256 against the registry + GGUF metadata checks with ``gguf.GGUFReader``).

Library code: nothing prints; progress reaches the UI as ``progress(stage, done, total)`` calls.
Downloads go through huggingface-hub (resumable: interrupted files are kept as ``.incomplete`` and
continued); conversion is atomic (``convert_checkpoint`` writes temporaries and moves the complete pair
into place; a failure leaves the previously installed files as they were).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from ._fs import user_path
from .errors import EdgeJudgeError, InputError, ModelNotFoundError
from .registry import (
    InstalledModel,
    find_installed,
    known_models,
    load_registry,
    make_entry,
    register,
    split_name,
)

if TYPE_CHECKING:
    from .convert import ProgressFn

__all__ = ["PullResult", "VerifyReport", "pull_model", "verify_model", "gguf_metadata", "installed_for"]


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


# ------------------------------------------------------------------------------------------------- pull
def _source_for(name: str, source: str | None) -> tuple[str, str]:
    """(source to convert from, human description) for a pull."""
    if source:
        return source, source
    known = known_models()
    if name not in known:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not in the manifest of known judges ({', '.join(known)})",
            hint="pull a known judge, or give a checkpoint directory or hub repo with --source",
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
    mmproj_quant: str = "F16",
    source: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PullResult:
    """Install judge ``name``: download (or use ``source``: a local checkpoint dir or hub repo id),
    convert + quantize into ``config.models_dir()``, hash, register. Already installed (files present)
    → returned as is unless ``force``."""
    import time

    from .convert import MMPROJ_QUANTS, TEXT_QUANTS, convert_checkpoint, normalize_quant

    name, name_quant = split_name(name)
    known = known_models().get(name)
    quant = normalize_quant(quant or name_quant or (known.default_quant if known else "Q4_K_M"), TEXT_QUANTS)
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
    entry = make_entry(
        name, result.text_model, result.mmproj, source=described, progress=progress, quant=result.quant
    )
    register(entry)
    return PullResult(
        entry=entry, already_installed=False, source_dir=str(src_dir), seconds=time.perf_counter() - start
    )


# ----------------------------------------------------------------------------------------------- verify
def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The scalar/string metadata of a GGUF file plus ``tensors`` {name: shape in GGUF (ne) order}."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 - gguf raises assorted errors on garbage
        raise InputError(
            f"{path} is not a readable GGUF file ({err})", hint="re-convert or re-download it"
        ) from None
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("tokenizer.ggml.") or not fld.types:
            continue
        if fld.types[0] == GGUFValueType.ARRAY and len(fld.data) > 16:
            continue
        try:
            meta[key] = fld.contents()
        except Exception:  # noqa: BLE001 - skip exotic fields
            continue
    meta["tensors"] = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    return meta


def _check_pair(text: Path, mmproj: Path) -> tuple[list[str], list[str], dict[str, Any]]:
    problems: list[str] = []
    notes: list[str] = []
    tmeta = gguf_metadata(text)
    pmeta = gguf_metadata(mmproj)
    facts: dict[str, Any] = {
        "text_architecture": tmeta.get("general.architecture"),
        "mmproj_architecture": pmeta.get("general.architecture"),
        "n_embd": tmeta.get("llama.embedding_length"),
        "n_layers": tmeta.get("llama.block_count"),
        "projector_type": pmeta.get("clip.projector_type"),
        "image_size": pmeta.get("clip.vision.image_size"),
        "cls_position": pmeta.get("edgejudge.clip.cls_position"),
    }
    if facts["text_architecture"] != "llama":
        problems.append(f"text model architecture is {facts['text_architecture']!r}, expected 'llama'")
    if facts["mmproj_architecture"] != "clip":
        problems.append(f"mmproj architecture is {facts['mmproj_architecture']!r}, expected 'clip'")
    if not pmeta.get("clip.has_vision_encoder"):
        problems.append("mmproj has no vision encoder (clip.has_vision_encoder is not true)")
    if facts["projector_type"] != "mlp":
        problems.append(f"mmproj projector type is {facts['projector_type']!r}, expected 'mlp'")
    proj = pmeta["tensors"].get("mm.2.weight")
    if proj is not None and facts["n_embd"] is not None:
        facts["projector_width"] = proj[-1]
        if proj[-1] != facts["n_embd"]:
            problems.append(f"projector output width {proj[-1]} != text embedding width {facts['n_embd']}")
    if facts["cls_position"] is None:
        notes.append("mmproj was not converted by edgejudge: its image features are off on this llama.cpp")
    else:
        try:
            from .probe import runtime_cls_position

            runtime = runtime_cls_position()
            facts["runtime_cls_position"] = runtime
            if runtime != facts["cls_position"]:
                problems.append(
                    f"mmproj was converted for CLS {facts['cls_position']}, "
                    f"but this llama.cpp puts it {runtime}"
                )
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


def installed_for(value: str | None) -> list[InstalledModel]:
    """The registry entries ``value`` (``name`` or ``name:QUANT``) names, all when None."""
    reg = load_registry()
    if value is None:
        return list(reg.models)
    name, quant = split_name(value)
    entries = [m for m in reg.models if m.name == name and (quant is None or m.quant.upper() == quant)]
    if not entries:
        raise ModelNotFoundError(f"model {value!r} is not installed", hint="see `edgejudge models list`")
    return entries
