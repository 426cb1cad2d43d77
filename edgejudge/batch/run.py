"""Batch evaluation: a JSONL file of judging tasks in, an append-only JSONL file of verdicts out, resumable.

Owns the judging loop: ``run_batch`` (resume by content-hash key, rows sharing an image judged together,
each verdict written and fsync'd as soon as it is done), its ``BatchEvent`` progress values and the
``BatchSummary``. Input rows, keys and the output row format are ``batch.rows``; the batch log on disk (what
counts as one, the lock, repair, last-row-wins reading) is ``batch.log``, with the rules in its docstring.
Both are re-exported here. Nothing here prints: progress reaches the UI as ``BatchEvent`` values through
``on_event``.

An input with no rows creates no output file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fs, _jsonl
from .._fs import FileStamp
from ..engine.base import GenerationParams
from ..errors import EdgeJudgeError
from ..settings import check as check_setting
from .log import (
    MAX_OUTPUT_BYTES,
    OutputLock,
    check_output,
    open_output,
    output_state,
    read_results,
    repair_locked,
    repair_output,
    scan_output,
    write_all,
)
from .result import ResultRow, base_row, error_row, is_batch_row, ok_row
from .rows import BatchRow, image_digest, read_input_rows, resolve_image, row_key, schedule

if TYPE_CHECKING:
    from ..images import FittedImage
    from ..judge import Judge, Task
    from ..rubric import Rubric

__all__ = [
    "BatchEvent",
    "BatchSummary",
    "BatchRow",
    "ResultRow",
    "EventFn",
    "OutputLock",
    "MAX_OUTPUT_BYTES",
    "run_batch",
    "read_results",
    "repair_output",
    "check_output",
    "is_batch_row",
    "settings_of",
]


@dataclass(frozen=True)
class BatchEvent:
    """Progress of a batch, for the UI.

    ``kind`` is one of ``"repaired"`` (a truncated last line was cut off the output, or a missing final
    newline added: ``message``), ``"ignored"`` (complete lines of the output that are not batch rows are
    ignored: ``message``, ``line`` the first of them), ``"started"`` (``total`` rows in the input,
    ``skipped`` already done, ``todo`` to judge),
    ``"row_done"`` (``row`` the output row just written, ``status``, ``score``, ``done`` rows so far),
    ``"error"`` (an error row was written: ``message``, ``line``, ``row``) and ``"finished"`` (``summary``).
    """

    kind: str
    total: int = 0
    skipped: int = 0
    todo: int = 0
    done: int = 0
    row: ResultRow | None = None
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
    off the output before starting. ``ignored_lines`` counts complete lines of the output that are not
    batch rows (ignored by resume and ``read_results``); ``warned`` the rows written with input warnings
    (text replaced: invalid UTF-8, lone surrogates).
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
    ignored_lines: int = 0
    warned: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_of(judge: Judge, params: GenerationParams, samples: int) -> dict[str, Any]:
    """The settings that change a verdict (``Judge.settings``: the same object as a verdict's); part of
    every row's key and written to every output row."""
    return judge.settings(params, samples)


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
    lock: OutputLock | None = None,
) -> BatchSummary:
    """Judge every row of ``input_path`` not already done in ``output_path``; append the verdicts there.

    ``image_root`` resolves relative image paths (default: the input file's folder). ``default_rubric``
    serves rows without their own. ``limit`` keeps only the first N input rows. Rows whose key (id + hash
    of inputs and settings) has an ``ok`` row in the output are skipped; error rows too unless
    ``retry_errors``. Bad rows become ``error`` rows and the batch goes on. ``should_stop`` is checked
    between groups of rows: when it returns True the batch stops after the rows in flight (already written;
    up to the engine's ``max_parallel`` rows on one image are judged together, one row with a plain engine).
    The whole run holds the output's lock (``lock`` when the caller already holds it, else taken here).
    Paths expand ``~``. An input with no rows to judge creates no output file.
    Raises ``InputError`` only when ``samples`` is out of the setting's bounds, the input file cannot be
    read, or the output is not an edgejudge batch log, cannot be written or is being written by another run.
    """
    output = _fs.user_path(output_path, what="output path")
    held = lock is not None and lock.covers(output)
    with nullcontext() if held else OutputLock(output):
        return _run_locked(
            judge, input_path, output, image_root, default_rubric, limit, retry_errors, samples, params,
            on_event, should_stop,
        )  # fmt: skip


def _run_locked(
    judge: Judge,
    input_path: str | Path,
    output_path: Path,
    image_root: str | Path | None,
    default_rubric: Rubric | str | None,
    limit: int | None,
    retry_errors: bool,
    samples: int,
    params: GenerationParams | None,
    on_event: EventFn | None,
    should_stop: Callable[[], bool] | None,
) -> BatchSummary:
    started = time.perf_counter()
    input_path = _fs.user_path(input_path, what="input path")
    root = (
        _fs.user_path(image_root, what="image root") if image_root is not None else input_path.parent
    ).absolute()
    params = params or GenerationParams()
    emit = on_event or (lambda event: None)
    check_setting("samples", samples)  # the one bound (1..MAX_SAMPLES) and message of the setting
    info = output_state(input_path, output_path)
    fd: int | None = None
    try:
        repaired = ignored = 0
        previous: dict[str, dict[str, Any]] = {}
        if info is not None:
            fd = open_output(output_path, create=False)
            info = os.fstat(fd)
            if info.st_size > 0:
                scan = scan_output(output_path, str(output_path))
                repaired, message = repair_locked(output_path, fd, scan, info)
                if message:
                    emit(BatchEvent("repaired", message=message))
                previous, ignored = scan.rows, scan.foreign
                if ignored:
                    emit(
                        BatchEvent(
                            "ignored",
                            line=scan.first_foreign,
                            message=f"{ignored} line(s) of {output_path} are not batch rows and were ignored "
                            f"(first: {scan.problem})",
                        )
                    )
        rows = read_input_rows(input_path, default_rubric=default_rubric, limit=limit)
        return _judge_all(
            judge, rows, input_path, output_path, fd, root, previous, retry_errors, samples, params, emit,
            should_stop, started, repaired, ignored,
        )  # fmt: skip
    finally:
        if fd is not None:
            os.close(fd)


def _judge_all(
    judge: Judge,
    rows: list[BatchRow],
    input_path: Path,
    output_path: Path,
    fd: int | None,
    root: Path,
    previous: dict[str, dict[str, Any]],
    retry_errors: bool,
    samples: int,
    params: GenerationParams,
    emit: EventFn,
    should_stop: Callable[[], bool] | None,
    started: float,
    repaired: int,
    ignored: int,
) -> BatchSummary:
    settings = settings_of(judge, params, samples)
    digests: dict[Path, tuple[str, FileStamp | None]] = {}
    todo: list[tuple[BatchRow, str, str | None]] = []
    for row in rows:
        digest = _digest(row, root, digests)[0]
        key = row_key(row, digest, settings)
        prev = previous.get(row.id)
        if prev is not None and prev.get("key") == key and (prev.get("status") == "ok" or not retry_errors):
            continue
        todo.append((row, key, digest))
    todo = schedule(todo, root)
    skipped = len(rows) - len(todo)
    emit(BatchEvent("started", total=len(rows), skipped=skipped, todo=len(todo)))

    ok = errors = malformed = done = warned = 0
    scores: list[int] = []
    stopped = False
    group_size = judge.engine.max_parallel
    created: int | None = None
    try:
        for group in _groups(todo, group_size):
            if should_stop is not None and should_stop():
                stopped = True
                break
            results = _judge_rows(judge, group, root, settings, samples, params, digests)
            if fd is None:  # the output is made only when there is a row to write
                fd = created = open_output(output_path, create=True)
            for (row, _, _), result in zip(group, results, strict=True):
                write_all(fd, _jsonl.dumps_line(result.to_dict()))
                os.fsync(fd)
                done += 1
                warned += int(bool(result.warnings))
                if result.ok:
                    ok += 1
                    if result.score is not None:
                        scores.append(result.score)
                else:
                    errors += 1
                    malformed += int(row.malformed)
                    emit(BatchEvent("error", row=result, message=result.error, line=row.line, done=done))
                emit(
                    BatchEvent(
                        "row_done",
                        row=result,
                        status=result.status,
                        score=result.score,
                        done=done,
                        total=len(rows),
                        skipped=skipped,
                        todo=len(todo),
                        line=row.line,
                    )
                )
    finally:
        if created is not None:
            os.close(created)

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
        ignored_lines=ignored,
        warned=warned,
    )
    emit(BatchEvent("finished", summary=summary, total=len(rows), skipped=skipped, todo=len(todo), done=done))
    return summary


def _digest(
    row: BatchRow, root: Path, cache: dict[Path, tuple[str, FileStamp | None]]
) -> tuple[str | None, FileStamp | None]:
    """The row's image digest and file stamp: each image file hashed once per run (``cache`` by path)."""
    if row.image is None or row.problem is not None:
        return None, None
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
    judge: Judge,
    row: BatchRow,
    root: Path,
    digest: str | None,
    stamp: FileStamp | None,
    fitted: dict[str, FittedImage],
) -> Task:
    """The judge's task for a row: its image read, decoded and fitted once per image file of a group
    (``fitted`` by digest) and not hashed again when the read's stamp equals the ``stamp`` from hashing (the
    same version of the file, unchanged from the hash's open to the read's last byte). Otherwise (a file
    written just before it was hashed, while it was hashed, since, or while it is read) the bytes read are
    hashed and must be the ones the key was made from. A missing, unreadable or broken image is an error."""
    from ..errors import InvalidImageError
    from ..images import MAX_FILE_BYTES
    from ..judge import Task

    assert row.image is not None and row.instruction is not None and row.response is not None
    assert row.rubric is not None
    image = fitted.get(digest) if digest is not None else None
    if image is None:
        path = resolve_image(row.image, root)
        data, now = _fs.read_stamped(
            path,
            label=f"{row.image} (looked at {path})",
            what="image",
            max_bytes=MAX_FILE_BYTES,
            error=InvalidImageError,
        )
        if (stamp is None or now != stamp) and _file_sha(data, digest) not in (None, digest):
            raise InvalidImageError(
                f"image {row.image} changed while the batch was running (looked at {path})",
                hint="run the batch again: the row is judged with the new image",
            )
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
    digests: dict[Path, tuple[str, FileStamp | None]],
) -> list[ResultRow]:
    """Judge a group of rows in one go; any EdgeJudgeError becomes that row's error row (never raised)."""
    began = time.perf_counter()
    results: list[ResultRow | None] = [None] * len(group)
    tasks: list[Task] = []
    bases: list[tuple[int, ResultRow]] = []
    fitted: dict[str, FittedImage] = {}
    for k, (row, key, digest) in enumerate(group):
        sha = digest.removeprefix("sha256:") if digest is not None and digest.startswith("sha256:") else None
        base = base_row(row, key, root, settings, judge.engine.image_size, image_sha256=sha)
        if row.problem is not None:
            results[k] = error_row(base, row.problem, row.hint, began)
            continue
        try:
            tasks.append(_row_task(judge, row, root, digest, _digest(row, root, digests)[1], fitted))
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


def _file_sha(data: bytes, digest: str | None) -> str | None:
    """``sha256:<hex>`` of ``data`` when ``digest`` is such a hash (else None: nothing to compare)."""
    if digest is None or not digest.startswith("sha256:"):
        return None
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
