"""Batch evaluation: a JSONL file of judging tasks in, an append-only JSONL file of verdicts out, resumable.

Owns: reading batch input rows (native and Perception-Collection/Bench fields), content-hash keys, resume,
the output row format, crash repair of the output file and the judging loop. Nothing here prints: progress
reaches the UI as ``BatchEvent`` values through ``on_event``.

Output semantics: the output file is append-only; each judged row is written (and fsync'd) as one line as
soon as it is done. When an id is judged again (changed inputs, ``retry_errors``), a new line is appended
and **the last line for an id wins**: readers must dedupe by id keeping the last (``read_results`` does).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._batch_rows import (
    BatchRow,
    base_row,
    error_row,
    image_digest,
    ok_row,
    read_input_rows,
    resolve_image,
    row_key,
    schedule,
)
from .engine.base import GenerationParams
from .errors import EdgeJudgeError, InputError

if TYPE_CHECKING:
    from .images import FittedImage
    from .judge import Judge, Task
    from .rubric import Rubric

__all__ = [
    "BatchEvent",
    "BatchSummary",
    "BatchRow",
    "EventFn",
    "run_batch",
    "read_results",
    "repair_output",
    "check_output",
    "settings_of",
]


@dataclass(frozen=True)
class BatchEvent:
    """Progress of a batch, for the UI.

    ``kind`` is one of ``"repaired"`` (a truncated last line was cut off the output: ``message``),
    ``"started"`` (``total`` rows in the input, ``skipped`` already done, ``todo`` to judge),
    ``"row_done"`` (``row`` the output row just written, ``status``, ``score``, ``done`` rows so far),
    ``"error"`` (an error row was written: ``message``, ``line``, ``row``) and ``"finished"`` (``summary``).
    """

    kind: str
    total: int = 0
    skipped: int = 0
    todo: int = 0
    done: int = 0
    row: Mapping[str, Any] | None = None
    status: str | None = None
    score: int | None = None
    message: str | None = None
    line: int | None = None
    summary: BatchSummary | None = None


EventFn = Callable[[BatchEvent], None]


@dataclass(frozen=True)
class BatchSummary:
    """What one ``run_batch`` call did.

    ``total`` rows in the input (after ``limit``), ``skipped`` already done by an earlier run, ``judged``
    rows written by this run (``ok`` + ``errors``), ``malformed`` of them bad JSON lines, ``remaining`` rows
    left when the run was stopped early (``stopped``). ``histogram`` counts this run's scores 1..5 (keys
    "1".."5"), ``mean_score`` their mean. ``repaired`` is the number of bytes of a truncated last line cut
    off the output before starting.
    """

    input: str
    output: str
    total: int
    skipped: int
    judged: int
    ok: int
    errors: int
    malformed: int
    remaining: int
    stopped: bool
    repaired: int
    elapsed_s: float
    histogram: dict[str, int] = field(default_factory=dict)
    mean_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def repair_output(path: str | Path) -> int:
    """Cut a truncated last line (a crash mid-write) off a JSONL file; return the bytes removed (0 if none).

    Only the bytes after the last newline are removed (``os.truncate``, one system call, then fsync), so
    every complete line stays. A missing file is fine (0).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb") as fh:
        block = 1 << 16
        end = size
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        keep = 0
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
    os.truncate(path, keep)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return size - keep


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a batch output file into ``{id: row}``, the LAST row for each id winning.

    Lines that are not JSON objects with an ``id`` (a truncated last line, hand edits) are ignored. A missing
    file gives an empty dict.
    """
    results: dict[str, dict[str, Any]] = {}
    try:
        fh = Path(path).open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return results
    with fh:
        for text in fh:
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                results[row["id"]] = row
    return results


def settings_of(judge: Judge, params: GenerationParams, samples: int) -> dict[str, Any]:
    """The settings that change a verdict; part of every row's key and written to every output row."""
    return {
        "model": judge.engine.model_name,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "samples": samples,
        "max_tokens": params.max_tokens,
        "repeat_penalty": params.repeat_penalty,
        "image_fit": judge.image_fit,
        "grammar": params.constrained,
    }


def check_output(input_path: str | Path, output_path: str | Path) -> None:
    """Fail early (before a model is loaded) unless ``output_path`` can be appended to: a file, not the
    input, in a folder that exists or can be made. Creates the folder if missing; a probe file made here is
    removed again, so a command that fails later (e.g. loading the model) leaves no empty output behind."""
    output_path = Path(output_path)
    if output_path.is_dir():
        raise InputError(
            f"the output path is a folder: {output_path}", hint="pass a file name, e.g. out.jsonl"
        )
    if output_path.resolve() == Path(input_path).resolve():
        raise InputError("the output file is the input file", hint="pass a different --output path")
    existed = output_path.exists()
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with output_path.open("ab"):
            pass
        if not existed:
            output_path.unlink()
    except OSError as err:
        raise InputError(
            f"cannot write the output {output_path}: {err.strerror or err}",
            hint="pass an --output path in a folder you can write to",
        ) from None


def run_batch(
    judge: Judge,
    input_path: str | Path,
    output_path: str | Path,
    *,
    image_root: str | Path | None = None,
    default_rubric: Rubric | str | None = None,
    limit: int | None = None,
    retry_errors: bool = False,
    samples: int = 1,
    params: GenerationParams | None = None,
    on_event: EventFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Judge every row of ``input_path`` not already done in ``output_path``; append the verdicts there.

    ``image_root`` resolves relative image paths (default: the input file's folder). ``default_rubric``
    serves rows without their own. ``limit`` keeps only the first N input rows. Rows whose key (id + hash
    of inputs and settings) has an ``ok`` row in the output are skipped; error rows too unless
    ``retry_errors``. Bad rows become ``error`` rows and the batch goes on. ``should_stop`` is checked
    between groups of rows: when it returns True the batch stops after the rows in flight (already written;
    up to the engine's ``max_parallel`` rows on one image are judged together, one row with a plain engine).
    Raises ``InputError`` only when the input file cannot be read or the output cannot be written.
    """
    started = time.perf_counter()
    input_path = Path(input_path)
    output_path = Path(output_path)
    root = (Path(image_root).expanduser() if image_root is not None else input_path.parent).absolute()
    params = params or GenerationParams()
    emit = on_event or (lambda event: None)
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}", hint="pass --samples 1 or more")
    check_output(input_path, output_path)
    repaired = repair_output(output_path)
    if repaired:
        emit(
            BatchEvent("repaired", message=f"cut a truncated last line ({repaired} bytes) off {output_path}")
        )
    previous = read_results(output_path)
    rows = read_input_rows(input_path, default_rubric=default_rubric, limit=limit)
    settings = settings_of(judge, params, samples)

    digests: dict[Path, str] = {}
    todo: list[tuple[BatchRow, str, str | None]] = []
    for row in rows:
        digest = _digest(row, root, digests)
        key = row_key(row, digest, settings)
        prev = previous.get(row.id)
        if prev is not None and prev.get("key") == key and (prev.get("status") == "ok" or not retry_errors):
            continue
        todo.append((row, key, digest))
    todo = schedule(todo, root)
    skipped = len(rows) - len(todo)
    emit(BatchEvent("started", total=len(rows), skipped=skipped, todo=len(todo)))

    ok = errors = malformed = done = 0
    scores: list[int] = []
    stopped = False
    group_size = max(1, int(getattr(judge.engine, "max_parallel", 1)))
    with output_path.open("ab") as out:
        for group in _groups(todo, group_size):
            if should_stop is not None and should_stop():
                stopped = True
                break
            results = _judge_rows(judge, group, root, settings, samples, params)
            for (row, _, _), result in zip(group, results, strict=True):
                line = (json.dumps(result, ensure_ascii=False) + "\n").encode("utf-8")
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
                done += 1
                if result["status"] == "ok":
                    ok += 1
                    if result["score"] is not None:
                        scores.append(int(result["score"]))
                else:
                    errors += 1
                    malformed += int(row.malformed)
                    emit(BatchEvent("error", row=result, message=result["error"], line=row.line, done=done))
                emit(
                    BatchEvent(
                        "row_done",
                        row=result,
                        status=result["status"],
                        score=result["score"],
                        done=done,
                        total=len(rows),
                        skipped=skipped,
                        todo=len(todo),
                        line=row.line,
                    )
                )

    histogram = {str(k): scores.count(k) for k in range(1, 6)}
    summary = BatchSummary(
        input=str(input_path),
        output=str(output_path),
        total=len(rows),
        skipped=skipped,
        judged=done,
        ok=ok,
        errors=errors,
        malformed=malformed,
        remaining=len(todo) - done,
        stopped=stopped,
        repaired=repaired,
        elapsed_s=round(time.perf_counter() - started, 3),
        histogram=histogram,
        mean_score=round(sum(scores) / len(scores), 4) if scores else None,
    )
    emit(BatchEvent("finished", summary=summary, total=len(rows), skipped=skipped, todo=len(todo), done=done))
    return summary


def _digest(row: BatchRow, root: Path, cache: dict[Path, str]) -> str | None:
    if row.image is None or row.problem is not None:
        return None
    path = resolve_image(row.image, root)
    if path not in cache:
        cache[path] = image_digest(path)
    return cache[path]


def _groups(
    todo: list[tuple[BatchRow, str, str | None]], size: int
) -> list[list[tuple[BatchRow, str, str | None]]]:
    """Consecutive judgeable rows on the same image, ``size`` at most (decoded as parallel sequences);
    rows with a problem, or without an image digest, stand alone."""
    groups: list[list[tuple[BatchRow, str, str | None]]] = []
    for item in todo:
        row, _key, digest = item
        last = groups[-1] if groups else None
        if (
            last is not None
            and len(last) < size
            and digest is not None
            and row.problem is None
            and last[0][2] == digest
            and last[0][0].problem is None
        ):
            last.append(item)
        else:
            groups.append([item])
    return groups


def _row_task(
    judge: Judge, row: BatchRow, root: Path, digest: str | None, fitted: dict[str, FittedImage]
) -> Task:
    """The judge's task for a row: its image read and fitted once per image file of a group (``fitted``
    by digest); a missing, unreadable or broken image is an error."""
    from .errors import InvalidImageError
    from .judge import Task

    assert row.image is not None and row.instruction is not None and row.response is not None
    assert row.rubric is not None
    image = fitted.get(digest) if digest is not None else None
    if image is None:
        path = resolve_image(row.image, root)
        try:
            data = path.read_bytes()
        except OSError as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or type(exc).__name__
            raise InvalidImageError(
                f"image {row.image}: {reason} (looked at {path})",
                hint="check the row's image path or pass --image-root DIR",
            ) from None
        image = judge.fit(data, name=row.image)
        if digest is not None:
            fitted[digest] = image
    return Task(image, row.instruction, row.response, row.rubric, row.reference, image_name=row.image)


def _judge_rows(
    judge: Judge,
    group: list[tuple[BatchRow, str, str | None]],
    root: Path,
    settings: dict[str, Any],
    samples: int,
    params: GenerationParams,
) -> list[dict[str, Any]]:
    """Judge a group of rows in one go; any EdgeJudgeError becomes that row's error row (never raised)."""
    began = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(group)
    tasks: list[Task] = []
    bases: list[tuple[int, dict[str, Any]]] = []
    fitted: dict[str, FittedImage] = {}
    for k, (row, key, digest) in enumerate(group):
        base = base_row(row, key, root, settings, judge.engine.image_size)
        if digest is not None and digest.startswith("sha256:"):
            base["image_sha256"] = digest.removeprefix("sha256:")
        if row.problem is not None:
            results[k] = error_row(base, row.problem, row.hint, began)
            continue
        try:
            tasks.append(_row_task(judge, row, root, digest, fitted))
        except EdgeJudgeError as err:
            results[k] = error_row(base, str(err), err.hint, began)
            continue
        bases.append((k, base))
    verdicts = judge.evaluate_tasks(tasks, samples=samples, params=params) if tasks else []
    for (k, base), verdict in zip(bases, verdicts, strict=True):
        if isinstance(verdict, EdgeJudgeError):
            results[k] = error_row(base, str(verdict), verdict.hint, began)
        else:
            results[k] = ok_row(base, verdict, began)
    return [r for r in results if r is not None]
