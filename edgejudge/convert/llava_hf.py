"""Export an original LLaVA-1.5 checkpoint (Prometheus-Vision) in the hub's llava-hf layout, torch-free.

``export_llava_hf(src, outdir)`` writes ``outdir/<name>-llava-hf/``: the folder vLLM serves and
transformers' ``LlavaForConditionalGeneration`` / ``AutoProcessor`` load. It resolves ``src`` (local
directory or hub repo id), reads and validates the checkpoint with the GGUF converter's readers and checks
(:func:`~edgejudge.convert.hparams.plan_conversion`, the same errors), then streams every tensor, renamed
and with its dtype kept (:mod:`edgejudge.convert._llava_hf_tensors`), into sharded safetensors and writes
the configs (:mod:`edgejudge.convert._llava_hf_files`), tokenizer and raw-prompt chat template
(:mod:`edgejudge.convert._llava_hf_tokenizer`).

The folder appears complete or not at all: everything is written into a hidden sibling
(``.<folder>.<host>.<pid>.<tag>.partial``) that is renamed into place at the end. A non-empty folder is
refused unless ``overwrite`` is set, and even then only one holding a ``config.json`` (a model) is
replaced; the old one is moved aside first and put back if the rename fails. Siblings a killed run left
(owner dead) are removed by the next export into the same folder.

Progress reaches the caller through ``progress(stage, done, total)`` with the GGUF conversion's stages:
``STAGE_TEXT`` (bytes of the language-model tensors), ``STAGE_MMPROJ`` (bytes of the vision tower and
projector, the tensors an mmproj holds), ``STAGE_TENSORS`` (tensors written) and ``"downloading <repo>"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..judgefile import check_name, default_name
from . import (
    STAGE_MMPROJ,
    STAGE_TENSORS,
    STAGE_TEXT,
    ProgressFn,
    _check_disk,
    _failed,
    _hub_tower,
    _output_dir,
)
from .install import _host, _pid_alive
from .limits import shown

__all__ = ["LlavaHfResult", "export_llava_hf", "folder_name", "DEFAULT_SHARD_BYTES"]

#: the hub's default shard size (``save_pretrained(max_shard_size="5GB")``).
DEFAULT_SHARD_BYTES = 5 * 10**9
_SUFFIX = "-llava-hf"
_MARGIN = 16 * 2**20  # configs and tokenizer files
_PARTIAL = re.compile(
    r"^\.(?P<final>.+)\.(?P<host>[A-Za-z0-9-]{1,32})\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.(partial|old)$"
)


@dataclass(frozen=True)
class LlavaHfResult:
    """What ``export_llava_hf`` wrote. ``folder`` is absolute; ``source_bytes`` counts the tensors read."""

    folder: Path
    name: str
    n_tensors: int
    shards: tuple[str, ...]
    dtype: str
    image_token_id: int
    pad_token_id: int
    source_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["shards"] = list(self.shards)
        return data


def folder_name(name: str) -> str:
    """The export folder's name for model ``name``."""
    return name + _SUFFIX


def _state(folder: Path) -> str:
    """State: "absent" | "empty" | "model" (a folder with a config.json) | "other" (a non-empty folder)."""
    try:
        info = os.lstat(folder)
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    except OSError as err:
        raise ConversionError(
            f"cannot check the output folder {shown(str(folder))}: {err.strerror or err}",
            hint="choose another output directory",
            about="outdir",
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConversionError(
            f"the llava-hf folder would be {shown(str(folder))}, which is not a folder",
            hint="move it away, or choose another output directory or model name",
            about=("outdir", "name"),
        )
    try:
        entries = os.listdir(folder)
    except OSError as err:
        raise ConversionError(
            f"cannot read the output folder {shown(str(folder))}: {err.strerror or err}",
            hint="choose another output directory",
            about="outdir",
        ) from None
    if not entries:
        return "empty"
    return "model" if "config.json" in entries else "other"


def _check_folder(folder: Path, overwrite: bool) -> str:
    state = _state(folder)
    if state == "other":
        raise ConversionError(
            f"{shown(str(folder))} is a non-empty folder that holds no model (no config.json)",
            hint="move it away, or choose another output directory or model name",
            about=("outdir", "name"),
        )
    if state == "model" and not overwrite:
        raise ConversionError(
            f"{shown(str(folder))} already holds a model",
            hint="choose another output directory or model name, or replace it",
            about=("outdir", "name", "overwrite"),
        )
    return state


def _partial(out: Path, final: str, tag: str, kind: str = "partial") -> Path:
    return out / f".{final}.{_host()}.{os.getpid()}.{tag}.{kind}"


def _clean_stale(out: Path) -> None:
    """Remove the hidden siblings of exports whose process is gone (this host's only)."""
    try:
        entries = list(os.scandir(out))
    except OSError:
        return
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None or not match.group("final").endswith(_SUFFIX) or match.group("host") != _host():
            continue
        if _pid_alive(int(match.group("pid"))):
            continue
        if entry.name.endswith(".old") and not os.path.lexists(out / match.group("final")):
            try:  # killed after moving the old export aside: put it back
                os.rename(entry.path, out / match.group("final"))
            except OSError:
                pass
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


def _install(tmp: Path, folder: Path, tag: str) -> None:
    """Rename ``tmp`` onto ``folder``; a previous model there is moved aside first and put back if the
    rename fails, then removed."""
    old: Path | None = None
    if _state(folder) == "model":
        old = _partial(folder.parent, folder.name, tag, "old")
        os.rename(folder, old)
    try:
        os.replace(tmp, folder)  # an empty folder there is replaced too
    except BaseException:
        if old is not None:
            os.rename(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_llava_hf(
    src: str | Path,
    outdir: str | Path,
    *,
    name: str | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: ProgressFn | None = None,
) -> LlavaHfResult:
    """Export ``src`` into ``outdir/<name>-llava-hf/`` (see the module docstring). Raises
    ``EdgeJudgeError`` subclasses only."""
    from ._llava_hf_files import generation_config, model_config, processor_files
    from ._llava_hf_tensors import OutTensor, plan_tensors, write_shards
    from ._llava_hf_tokenizer import CHAT_TEMPLATE, read_source_tokenizer, tokenizer_files
    from .hparams import plan_conversion
    from .readers import open_checkpoint, open_tensor_dir
    from .source import resolve_source

    started = time.perf_counter()
    name = check_name(name if name is not None else default_name(src))
    if max_shard_bytes < 1:
        raise ConversionError(f"max_shard_bytes must be positive, not {max_shard_bytes}", hint="use 5e9")
    out = _output_dir(outdir)
    folder = out / folder_name(name)
    _check_folder(folder, overwrite)
    report: ProgressFn = progress or (lambda stage, done, total: None)
    directory = resolve_source(src, progress=progress)
    if folder == directory or folder in directory.parents:
        raise ConversionError(
            f"the llava-hf folder {folder} would replace the checkpoint being read",
            hint="choose another output directory or model name",
            about=("outdir", "name"),
        )
    tag = uuid.uuid4().hex[:8]
    tmp = _partial(out, folder.name, tag)
    created = not out.exists()
    try:
        with ExitStack() as stack:
            ckpt = stack.enter_context(open_checkpoint(directory))
            plan = plan_conversion(ckpt)
            if plan.layout != "original":
                raise ConversionError(
                    f"{directory} is already in the llava-hf layout ({plan.architecture})",
                    hint="serve that folder directly",
                )
            tower = ckpt
            if plan.tower_weights == "pending":
                tower_dir = plan.tower_dir or _hub_tower(str(plan.tower_repo), progress)
                tower = stack.enter_context(open_tensor_dir(tower_dir))
                plan = plan_conversion(ckpt, tower)
            tok = read_source_tokenizer(directory, plan.text.vocab_size)
            tensors, n_text = plan_tensors(plan, ckpt, tower, extra_rows=2)
            embed = next(t for t in tensors if t.name.endswith("embed_tokens.weight"))
            config = model_config(plan, tok, embed.dtype, ckpt.config)
            config["_name_or_path"] = name
            out.mkdir(parents=True, exist_ok=True)
            _clean_stale(out)
            _check_disk(out, sum(t.nbytes for t in tensors) + _MARGIN)
            tmp.mkdir()

            text_names = {t.name for t in tensors[:n_text]}
            totals = {
                STAGE_TEXT: sum(t.src_nbytes for t in tensors[:n_text]),
                STAGE_MMPROJ: sum(t.src_nbytes for t in tensors[n_text:]),
            }
            done = {STAGE_TEXT: 0, STAGE_MMPROJ: 0, STAGE_TENSORS: 0}
            report(STAGE_TEXT, 0, totals[STAGE_TEXT])
            report(STAGE_MMPROJ, 0, totals[STAGE_MMPROJ])

            def on_tensor(t: OutTensor) -> None:
                stage = STAGE_TEXT if t.name in text_names else STAGE_MMPROJ
                done[stage] += t.src_nbytes
                done[STAGE_TENSORS] += 1
                report(stage, done[stage], totals[stage])
                report(STAGE_TENSORS, done[STAGE_TENSORS], len(tensors))

            shards = write_shards(tmp, tensors, max_shard_bytes, on_tensor)
            _dump(tmp / "config.json", config)
            _dump(tmp / "generation_config.json", generation_config(tok))
            files = {**tokenizer_files(tok, plan.text.context_length), **processor_files(plan)}
            for fname, data in files.items():
                _dump(tmp / fname, data)
            (tmp / "tokenizer.model").write_bytes(tok.model_bytes)
            (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
        _install(tmp, folder, tag)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _failed(err, out if created else None, writing="the llava-hf folder", task="llava-hf export")
        raise
    return LlavaHfResult(
        folder=folder,
        name=name,
        n_tensors=len(tensors),
        shards=tuple(shards),
        dtype=embed.dtype,
        image_token_id=tok.image_id,
        pad_token_id=tok.pad_id,
        source_bytes=totals[STAGE_TEXT] + totals[STAGE_MMPROJ],
        seconds=time.perf_counter() - started,
    )
