"""Convert a LLaVA-1.5 checkpoint (Prometheus-Vision) to a GGUF text model + mmproj, torch-free, streaming.

``convert_checkpoint(src, outdir)`` resolves ``src`` (local directory or hub repo id), reads and validates
the checkpoint (``hparams``), checks the output directory and free disk space before writing anything,
streams both F16 GGUFs to temporary names in ``outdir``, quantizes them with llama.cpp when asked, and only
when both are complete moves them onto ``<name>-<QUANT>.gguf`` and ``mmproj-<name>-<QUANT>.gguf``
(:mod:`edgejudge.convert.install`). The file names, the quantization vocabulary, the name rule and the CLS
stamp are the pair contract's (:mod:`edgejudge.judgefile`). A failed or interrupted conversion leaves
every file that existed before exactly as it was and removes only its own temporaries; a final name taken
by a folder is refused before any work; temporaries a killed run left
(``.<final>.<host>.<pid>.<tag>.<kind>.partial``, owner dead) are removed by the next conversion into the
same folder.

Progress reaches the caller through ``progress(stage, done, total)`` with these stages:
``STAGE_TEXT`` / ``STAGE_MMPROJ`` (bytes of source tensors), ``STAGE_TENSORS`` (tensors written, both files),
``STAGE_QUANT_TEXT`` / ``STAGE_QUANT_MMPROJ`` (0/1 then 1/1), ``STAGE_SELFTEST`` (0/1 then 1/1, when the
runtime's CLS order is asked for) and ``"downloading <repo>"`` (bytes) for hub sources.

The converter never runs the runtime probe: the caller says where the installed libmtmd puts CLIP's class
token (``cls_position``: "first", "last", or a function returning it, asked once the checkpoint is known to
be valid). ``edgejudge.convert_checkpoint`` (:func:`edgejudge.install.convert_checkpoint`) is this
function with the cached probe (:func:`edgejudge.probe.runtime_cls_position`) as that function.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._fs import user_path
from ..errors import ConversionError, EdgeJudgeError, InputError
from ..judgefile import (
    DEFAULT_MMPROJ_QUANT,
    DEFAULT_QUANT,
    MMPROJ_QUANTS,
    TEXT_QUANTS,
    check_cls_value,
    check_name,
    default_name,
    normalize_quant,
    pair_names,
    size_ratio,
)
from .install import check_destination, clean_stale, install_pair, temp_path
from .limits import shown

__all__ = [
    "ProgressFn",
    "ConvertResult",
    "convert_checkpoint",
    "STAGE_TEXT",
    "STAGE_MMPROJ",
    "STAGE_TENSORS",
    "STAGE_QUANT_TEXT",
    "STAGE_QUANT_MMPROJ",
    "STAGE_SELFTEST",
]

ProgressFn = Callable[[str, int, int], None]

STAGE_TEXT = "text model"
STAGE_MMPROJ = "mmproj"
STAGE_TENSORS = "tensors"
STAGE_QUANT_TEXT = "quantizing text model"
STAGE_QUANT_MMPROJ = "quantizing mmproj"
STAGE_SELFTEST = "CLS self-test"

_TOWER_CONFIGS = ("config.json", "preprocessor_config.json")
_KV_MARGIN = 32 * 1024 * 1024  # metadata, vocabulary, alignment padding


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert_checkpoint`` wrote. Paths are absolute; ``source_bytes`` counts converted tensors."""

    text_model: Path
    mmproj: Path
    name: str
    quant: str
    mmproj_quant: str
    cls_position: str
    n_tensors: int
    source_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text_model"] = str(self.text_model)
        data["mmproj"] = str(self.mmproj)
        return data


def _output_dir(outdir: str | Path) -> Path:
    """``outdir`` as typed (``~`` expanded), made absolute; an unusable path is a ConversionError."""
    path = user_path(outdir, what="output directory", error=ConversionError)
    try:
        return path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop, a name too long
        raise ConversionError(
            f"output directory {shown(str(outdir))} cannot be used ({err})",
            hint="choose another output directory",
            about="outdir",
        ) from None


def _prepare_outdir(outdir: Path, tag: str) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = temp_path(outdir, "edgejudge-probe", "probe", tag)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConversionError(
            f"output directory {outdir} is not writable ({err.strerror or err})",
            hint="choose another output directory or fix its permissions",
            about="outdir",
        ) from None


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # not ours to worry about (e.g. someone put a folder there); clean_stale retries later


def _estimate_bytes(jobs: list[Any], quant: str) -> int:
    f16 = sum(j.nbytes for j in jobs) + _KV_MARGIN
    if quant == "F16":
        return f16
    matrices = sum(j.nbytes for j in jobs if len(j.shape) > 1)
    return f16 + int(matrices * size_ratio(quant)) + (f16 - matrices)


def _check_disk(outdir: Path, need: int) -> None:
    free = shutil.disk_usage(outdir).free
    if free < need:
        raise ConversionError(
            f"not enough disk space in {outdir}: the conversion needs about {need / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free",
            hint="free some space or choose another output directory",
            about="outdir",
        )


def _failed(err: BaseException, created: Path | None, *, writing: str, task: str) -> None:
    """After a failed conversion (its temp files removed): remove the output folder ``created`` if it is
    still empty, then return for the caller to re-raise ``err`` when it is an ``EdgeJudgeError`` or not an
    ``Exception`` (Ctrl-C), else raise it as a ``ConversionError`` (an ``OSError``: ``writing`` failed, naming
    the file; anything else: a bug in ``task``)."""
    if created is not None:
        try:
            created.rmdir()  # only if still empty
        except OSError:
            pass
    if isinstance(err, EdgeJudgeError) or not isinstance(err, Exception):
        return
    if isinstance(err, OSError):
        where = f" ({shown(str(err.filename))})" if err.filename else ""
        raise ConversionError(
            f"writing {writing} failed: {err.strerror or err}{where}",
            hint="check the output directory and disk",
        ) from err
    raise ConversionError(
        f"{task} failed: {type(err).__name__}: {shown(str(err))}",
        hint="this is a bug in edgejudge; report it with the checkpoint's config.json",
    ) from err


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
    """Convert ``src`` into ``outdir/<name>-<QUANT>.gguf`` + ``outdir/mmproj-<name>-<QUANT>.gguf``.

    ``cls_position`` is where the target runtime puts CLIP's class token: "first" writes the standard
    position table, "last" the rotated one; a function is asked once the checkpoint is read and valid
    (progress stage ``STAGE_SELFTEST``). It is required (InputError without it): use
    ``edgejudge.convert_checkpoint`` to have the installed runtime's order measured. Raises
    ``EdgeJudgeError`` subclasses only.
    """
    from .hparams import plan_conversion
    from .mmproj_writer import mmproj_jobs, write_mmproj_gguf
    from .quantize import quantize_gguf
    from .readers import open_checkpoint, open_tensor_dir
    from .source import resolve_source
    from .stream import TensorJob
    from .text_writer import text_jobs, write_text_gguf

    started = time.perf_counter()
    quant = normalize_quant(quant, TEXT_QUANTS)
    mmproj_quant = normalize_quant(mmproj_quant, MMPROJ_QUANTS)
    if isinstance(cls_position, str):
        check_cls_value(cls_position)
    name = check_name(name if name is not None else default_name(src))
    if cls_position is None:
        raise InputError(
            "no cls_position given: the converter must know where the target runtime puts CLIP's class token",
            hint="give cls_position 'first' or 'last', or use edgejudge.convert_checkpoint, which asks the "
            "runtime",
        )
    out = _output_dir(outdir)
    report: ProgressFn = progress or (lambda stage, done, total: None)
    text_name, mm_name = pair_names(name, quant, mmproj_quant)
    check_destination(out / text_name, "text model")  # before any work: a folder there is refused
    check_destination(out / mm_name, "mmproj")

    directory = resolve_source(src, progress=progress)
    created = not out.exists()
    tag = uuid.uuid4().hex[:8]
    _prepare_outdir(out, tag)
    clean_stale(out)
    tmp = {
        "t16": temp_path(out, text_name, "f16", tag),
        "tq": temp_path(out, text_name, "quant", tag),
        "m16": temp_path(out, mm_name, "f16", tag),
        "mq": temp_path(out, mm_name, "quant", tag),
    }
    try:
        with ExitStack() as stack:
            ckpt = stack.enter_context(open_checkpoint(directory))
            plan = plan_conversion(ckpt)
            tower = ckpt
            if plan.tower_weights == "pending":
                tower_dir = plan.tower_dir or _hub_tower(str(plan.tower_repo), progress)
                tower = stack.enter_context(open_tensor_dir(tower_dir))
                plan = plan_conversion(ckpt, tower)
            if callable(cls_position):
                report(STAGE_SELFTEST, 0, 1)
                position = check_cls_value(cls_position())
                report(STAGE_SELFTEST, 1, 1)
            else:
                position = cls_position
            tjobs = text_jobs(plan, ckpt)
            mjobs = mmproj_jobs(plan, ckpt, tower, position)
            _check_disk(out, _estimate_bytes(tjobs, quant) + _estimate_bytes(mjobs, mmproj_quant))

            n_total = len(tjobs) + len(mjobs)
            done = {"tensors": 0, STAGE_TEXT: 0, STAGE_MMPROJ: 0}
            totals = {
                STAGE_TEXT: sum(j.src_nbytes for j in tjobs),
                STAGE_MMPROJ: sum(j.src_nbytes for j in mjobs),
            }

            def on_tensor(stage: str) -> Callable[[TensorJob], None]:
                def callback(job: TensorJob) -> None:
                    done[stage] += job.src_nbytes
                    done["tensors"] += 1
                    report(stage, done[stage], totals[stage])
                    report(STAGE_TENSORS, done["tensors"], n_total)

                return callback

            report(STAGE_TEXT, 0, totals[STAGE_TEXT])
            write_text_gguf(tmp["t16"], plan, ckpt, tjobs, name=name, on_tensor=on_tensor(STAGE_TEXT))
            report(STAGE_MMPROJ, 0, totals[STAGE_MMPROJ])
            write_mmproj_gguf(
                tmp["m16"],
                plan,
                mjobs,
                name=name,
                cls_position=position,
                on_tensor=on_tensor(STAGE_MMPROJ),
            )
        text_tmp = _finish_quant(tmp["t16"], tmp["tq"], quant, STAGE_QUANT_TEXT, report, quantize_gguf)
        mm_tmp = _finish_quant(tmp["m16"], tmp["mq"], mmproj_quant, STAGE_QUANT_MMPROJ, report, quantize_gguf)
        install_pair([(text_tmp, out / text_name, "text model"), (mm_tmp, out / mm_name, "mmproj")], tag)
    except BaseException as err:
        for path in tmp.values():
            _remove_quietly(path)
        _failed(err, out if created else None, writing="the GGUF files", task="conversion")
        raise
    return ConvertResult(
        text_model=out / text_name,
        mmproj=out / mm_name,
        name=name,
        quant=quant,
        mmproj_quant=mmproj_quant,
        cls_position=position,
        n_tensors=n_total,
        source_bytes=totals[STAGE_TEXT] + totals[STAGE_MMPROJ],
        seconds=time.perf_counter() - started,
    )


def _hub_tower(repo: str, progress: ProgressFn | None) -> Path:
    """A hub CLIP tower's files: safetensors when the repo has them, else its pytorch_model.bin."""
    from .source import hub_snapshot

    path = hub_snapshot(repo, (*_TOWER_CONFIGS, "*.safetensors"), progress=progress, what="vision tower")
    if not any(path.glob("*.safetensors")):
        path = hub_snapshot(
            repo, (*_TOWER_CONFIGS, "pytorch_model.bin"), progress=progress, what="vision tower"
        )
    return path


def _finish_quant(
    f16: Path, target: Path, quant: str, stage: str, report: ProgressFn, quantize: Callable[..., None]
) -> Path:
    if quant == "F16":
        return f16
    report(stage, 0, 1)
    quantize(f16, target, quant)
    f16.unlink()
    report(stage, 1, 1)
    return target
