"""Batch evaluation: a JSONL file of judging tasks in, an append-only JSONL file of verdicts out, resumable.

Owns the judging loop: ``run_batch`` (resume by content-hash key, rows sharing an image judged together,
each verdict written and fsync'd as soon as its group is done: at most ``max_parallel`` results, a
policy row's rules cut into such chunks), its ``BatchEvent`` progress values and the
``BatchSummary``. Input rows, keys and the output row format are ``batch.rows``; the batch log on disk (what
counts as one, the lock, repair, last-row-wins reading) is ``batch.log``, with the rules in its docstring.
Both are re-exported here. Judging one group of jobs is ``batch.judging``; the policy side (rows judged
against a policy, one job per rule, decision and run records) is ``batch.policy_run``. Nothing here
prints: progress reaches the UI as ``BatchEvent`` values through ``on_event``.

An input with no rows creates no output file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fs, _jsonl
from ..decision import DECISIONS, DEFAULT_REVIEW_BAND
from ..engine.base import GenerationParams
from ..settings import check as check_setting
from .flow import Flow
from .judging import Digests, digest_of, groups, judge_jobs
from .keep import check_keep
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
from .policy_run import Decisions, Job, jobs_of, row_policies, run_record
from .records import DecisionRecord, utc_now
from .result import ResultRow, is_batch_row, record_key
from .rows import BatchRow, read_input_rows, schedule
from .shard import in_shard, parse_shard

if TYPE_CHECKING:
    from ..engine.base import ServerStats
    from ..judge import Judge
    from ..policy import Policy
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
    ignored: ``message``, ``line`` the first of them), ``"started"`` (``total`` results the input asks
    for: one per plain row, one per (row, rule) of a policy row; ``skipped`` already done, ``todo`` to
    judge), ``"row_done"`` (``row`` the output row just written, a rule row with its ``rule_id``;
    ``status``, ``score``, ``done`` results so far), ``"error"`` (an error row was written: ``message``,
    ``line``, ``row``), ``"decision"`` (a decision record was written: ``decision``, ``message`` the
    decision, ``line``) and ``"finished"`` (``summary``). ``servers`` is the engine's servers' state when
    the event was made (``Engine.servers``: empty for an in-process engine).
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
    decision: DecisionRecord | None = None
    rows: int = 0
    servers: tuple[ServerStats, ...] = ()


EventFn = Callable[[BatchEvent], None]


@dataclass(frozen=True)
class BatchSummary:
    """What one ``run_batch`` call did.

    ``total`` rows in the input (after ``limit``); ``results`` the results they ask for (one per plain row,
    one per (row, rule) of a policy row); ``skipped`` results already done by an earlier run, ``judged``
    results written by this run (``ok`` + ``errors``), ``malformed`` of them from bad JSON lines,
    ``remaining`` left when the run was stopped early (``stopped``). ``decisions`` counts the decisions of
    the policy rows whose rules are all judged (now or before; a row whose own policy could not be loaded
    is an ``error``), by decision; empty without policy rows; ``incomplete`` the policy rows whose rules
    are not all in the log when the run ends (a stopped run; rerun to judge the rest). ``histogram``
    counts this run's scores 1..5 (keys "1".."5"), ``mean_score`` their mean. ``repaired`` is the number
    of bytes of a truncated last line cut off the output before starting. ``ignored_lines`` counts complete
    lines of the output that are not batch rows (ignored by resume and ``read_results``); ``warned`` the
    rows written with input warnings (text replaced: invalid UTF-8, lone surrogates).
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
    results: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    incomplete: int = 0
    shard: list[int] | None = None
    servers: list[dict[str, Any]] = field(default_factory=list)

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
    policy: Policy | str | Path | None = None,
    review_band: Sequence[float] = DEFAULT_REVIEW_BAND,
    keep: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
) -> BatchSummary:
    """Judge every row of ``input_path`` not already done in ``output_path``; append the verdicts there.

    ``image_root`` resolves relative image paths (default: the input file's folder). ``default_rubric``
    serves rows without their own. ``limit`` keeps only the first N input rows. Rows whose key (id + hash
    of inputs and settings) has an ``ok`` row in the output are skipped; error rows too unless
    ``retry_errors``. Bad rows become ``error`` rows and the batch goes on. ``should_stop`` is checked
    between groups: when it returns True the batch stops after the results in flight (already written; up
    to the engine's ``max_parallel`` results on one image are judged together, a policy row's rules in
    chunks of that many, one result at a time with a plain engine).
    The whole run holds the output's lock (``lock`` when the caller already holds it, else taken here).
    Paths expand ``~``. An input with no rows to judge creates no output file.

    ``policy`` (a ``Policy``, a built-in name or a policy file) judges every row against its rules, and a
    row's own ``policy`` field judges that row against its own (``batch.policy_run``): one rule row per
    (row, rule), resumed per (row, rule), a ``DecisionRecord`` per row once its rules are all in the log
    (their states read with ``review_band``; also for rules written by an earlier, killed run), and a
    ``RunRecord`` when a policy run has anything to judge. A row whose own policy cannot be loaded is one
    error rule row (``rule_id`` "*") with its decision ``error``.
    ``keep`` names more input fields to copy into the output rows (``batch.keep``: not a field edgejudge
    writes or reads itself). ``shard`` (K, N) keeps only the rows of shard K of N (``batch.shard``: by id,
    after ``limit``); the summary counts those rows only.
    An engine serving several calls at once (``Engine.concurrency`` > 1: servers) gets that many groups
    in flight, each written when it is done (so the log's order is the order they finish); when one fails
    (every server down) the groups already judged are written and the error is raised: rerun to resume.
    Raises ``InputError`` only when ``samples`` is out of the setting's bounds, ``keep`` names a field
    edgejudge uses, the input file cannot be read, or the output is not an edgejudge batch log, cannot be
    written or is being written by another run (``OutputBusyError``); ``PolicyError`` when ``policy`` or
    ``review_band`` cannot be used (before anything is read).
    """
    from ..decision import check_band
    from ..policy_judge import as_policy

    band = check_band(review_band)
    kept = check_keep(keep)
    run_policy = as_policy(policy) if policy is not None else None
    output = _fs.user_path(output_path, what="output path")
    held = lock is not None and lock.covers(output)
    run = _Run(
        judge, _fs.user_path(input_path, what="input path"), output, retry_errors, samples,
        params or GenerationParams(), on_event or (lambda event: None), should_stop, run_policy, band, kept,
        None if shard is None else parse_shard(f"{shard[0]}/{shard[1]}"),
    )  # fmt: skip
    with nullcontext() if held else OutputLock(output):
        return _run_locked(run, image_root, default_rubric, limit)


@dataclass(frozen=True)
class _Run:
    """What one ``run_batch`` call was asked to do."""

    judge: Judge
    input_path: Path
    output_path: Path
    retry_errors: bool
    samples: int
    params: GenerationParams
    emit: EventFn
    should_stop: Callable[[], bool] | None
    policy: Policy | None
    band: tuple[float, float]
    keep: tuple[str, ...]
    shard: tuple[int, int] | None


def _run_locked(
    run: _Run, image_root: str | Path | None, default_rubric: Rubric | str | None, limit: int | None
) -> BatchSummary:
    started = time.perf_counter()
    started_at = utc_now()
    input_path, output_path, emit = run.input_path, run.output_path, run.emit
    root = (
        _fs.user_path(image_root, what="image root") if image_root is not None else input_path.parent
    ).absolute()
    check_setting("samples", run.samples)  # the one bound (1..MAX_SAMPLES) and message of the setting
    info = output_state(input_path, output_path)
    fd: int | None = None
    try:
        repaired = ignored = 0
        previous: dict[str, dict[str, Any]] = {}
        latest: dict[str, DecisionRecord] = {}
        if info is not None:
            fd = open_output(output_path, create=False)
            info = os.fstat(fd)
            if info.st_size > 0:
                scan = scan_output(output_path, str(output_path))
                repaired, message = repair_locked(output_path, fd, scan, info)
                if message:
                    emit(BatchEvent("repaired", message=message))
                previous, ignored = scan.rows, scan.foreign
                latest = {
                    r["id"]: DecisionRecord.from_dict(r) for r in scan.records if r.get("kind") == "decision"
                }
                if ignored:
                    emit(
                        BatchEvent(
                            "ignored",
                            line=scan.first_foreign,
                            message=f"{ignored} line(s) of {output_path} are not batch rows and were ignored "
                            f"(first: {scan.problem})",
                        )
                    )
        rows = read_input_rows(
            input_path, default_rubric=default_rubric, limit=limit, policy_run=run.policy is not None,
            keep=run.keep,
        )  # fmt: skip
        rows = [row for row in rows if in_shard(row.id, run.shard)]
        out = _Output(output_path, fd)
        try:
            return _judge_all(run, rows, out, root, previous, latest, started, started_at, repaired, ignored)
        finally:
            out.close()
    finally:
        if fd is not None:
            os.close(fd)


class _Output:
    """The output's descriptor: the one opened for the repair, or one made when the first line is due."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd
        self._created: int | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.fd is None:  # the output is made only when there is a line to write
            self.fd = self._created = open_output(self.path, create=True)
        write_all(self.fd, _jsonl.dumps_line(record))
        os.fsync(self.fd)

    def close(self) -> None:
        if self._created is not None:
            os.close(self._created)
            self._created = None


def _plan(
    run: _Run,
    rows: list[BatchRow],
    root: Path,
    previous: dict[str, dict[str, Any]],
    digests: Digests,
    decisions: Decisions,
    settings: dict[str, Any],
) -> tuple[list[Job], int, list[Policy]]:
    """(the jobs to judge, the results the input asks for, the policies in use).

    The rows with something to judge are ordered by ``rows.schedule`` (rows sharing an image together);
    a row's jobs stay together, in policy order."""
    with_policy, policies = row_policies(rows, run.policy, run.input_path.parent)
    pending: list[tuple[BatchRow, str, str | None]] = []
    row_jobs: dict[str, list[Job]] = {}
    results = 0
    for index, (row, policy) in enumerate(with_policy):
        digest = digest_of(row, root, digests)[0]
        jobs = jobs_of(row, policy, digest, settings)
        results += len(jobs)
        if any(job.rule_id is not None for job in jobs):
            decisions.expect(row.id, jobs)
        todo = []
        for job in jobs:
            prev = previous.get(record_key({"id": row.id, "rule_id": job.rule_id}))
            if prev is not None and prev.get("key") == job.key:
                if prev.get("status") == "ok" or not run.retry_errors:
                    if job.rule_id is not None:
                        decisions.seen(ResultRow.from_dict(prev))
                    continue
            todo.append(job)
        if todo:
            pending.append((row, str(index), digest))
            row_jobs[str(index)] = todo
    ordered = [job for _, index, _ in schedule(pending, root) for job in row_jobs[index]]
    return ordered, results, policies


def _judge_all(
    run: _Run,
    rows: list[BatchRow],
    out: _Output,
    root: Path,
    previous: dict[str, dict[str, Any]],
    latest: dict[str, DecisionRecord],
    started: float,
    started_at: str,
    repaired: int,
    ignored: int,
) -> BatchSummary:
    judge, emit = run.judge, run.emit
    settings = settings_of(judge, run.params, run.samples)
    digests: Digests = {}
    newest: dict[str, str] = {}  # id -> the newest judged_at of its rule rows in the log (any policy)
    for prev in previous.values():
        stamp = prev.get("judged_at")
        if prev.get("rule_id") and isinstance(stamp, str) and stamp > newest.get(str(prev.get("id")), ""):
            newest[str(prev.get("id"))] = stamp
    decisions = Decisions(run.band, latest, newest)
    todo, results, policies = _plan(run, rows, root, previous, digests, decisions, settings)
    skipped = results - len(todo)
    emit(BatchEvent("started", total=results, skipped=skipped, todo=len(todo), rows=len(rows)))
    if any(job.rule_id is not None for job in todo):
        out.write(
            run_record(
                judge.engine, run.input_path, policies, settings, run.band, started_at, run.shard
            ).to_dict()
        )
    _decide(decisions, [row.id for row in rows], out, emit)  # rows whose rules were all judged before

    ok = errors = malformed = done = warned = 0
    scores: list[int] = []
    engine = judge.engine
    flow: Flow[list[Job], list[ResultRow]] = Flow(
        groups(todo, engine.max_parallel), engine.concurrency, run.should_stop
    )
    for group, judged in flow.judged(
        lambda group: judge_jobs(judge, group, root, settings, run.samples, run.params, digests, run.band)
    ):
        for job, result in zip(group, judged, strict=True):
            out.write(result.to_dict())
            done += 1
            warned += int(bool(result.warnings))
            if result.rule_id is not None:
                decisions.seen(result)
            if result.ok:
                ok += 1
                if result.score is not None:
                    scores.append(result.score)
            else:
                errors += 1
                malformed += int(job.row.malformed)
                emit(BatchEvent("error", row=result, message=result.error, line=job.row.line, done=done))
            emit(
                BatchEvent(
                    "row_done", row=result, status=result.status, score=result.score, done=done,
                    total=results, skipped=skipped, todo=len(todo), line=job.row.line,
                    servers=judge.engine.servers,
                )
            )  # fmt: skip
        _decide(decisions, [job.row.id for job in group], out, emit)
    stopped = flow.stopped

    histogram = {str(k): scores.count(k) for k in range(1, 6)}
    counts = decisions.counts()
    summary = BatchSummary(
        input=str(run.input_path),
        output=str(run.output_path),
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
        results=results,
        decisions={k: counts[k] for k in DECISIONS if k in counts},
        incomplete=decisions.incomplete(),
        shard=list(run.shard) if run.shard is not None else None,
        servers=[asdict(stats) for stats in judge.engine.servers],
    )
    emit(BatchEvent("finished", summary=summary, total=results, skipped=skipped, todo=len(todo), done=done))
    return summary


def _decide(decisions: Decisions, row_ids: list[str], out: _Output, emit: EventFn) -> None:
    """Append the decision records now due for ``row_ids`` (``Decisions.due``), each with its event."""
    for record in decisions.due(row_ids):
        out.write(record.to_dict())
        emit(BatchEvent("decision", decision=record, message=record.decision.decision, line=record.line))
