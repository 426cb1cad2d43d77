"""Human review of a policy log: which items a moderator looks at, the override records they make, and
appending those records to the log safely (``edgejudge review`` is the terminal walk; this is its library).

- ``review_queue(path)``: the ``policy_items`` of a policy batch's log (``records.read_log``) to review:
  those whose decision is ``needs_review`` and that carry no override made on the same results (a
  re-judged item has new results, so an older override does not hide it); with ``include_all`` every item.
  An incomplete item (``PolicyItem.complete`` false: the batch has not judged all its rules yet) is never
  reviewed, its decision is not known: the queue counts it apart (``ReviewQueue.incomplete``).
  A log without rule rows is not a policy log: ``InputError``.
- ``make_override(item, decision, …)``: the ``OverrideRecord`` of a person's decision on an item:
  ``previous`` is the decision the rules add up to, ``key`` the item's key (``records.rules_key`` of its
  rule rows: the override applies to exactly these results), ``at`` from ``records.utc_now``; a violation
  names a severity (by default the worst severity among the item's uncertain rules, else its failed
  rules, else all its rules: ``default_severity``).
- ``append_override(path, record)``: one record appended as one whole line (``_jsonl.dumps_line``, written
  with ``batch.log.write_all`` and fsync'd) under the batch output lock (``batch.lock.OutputLock``: the same
  one-writer rule as a batch, so a batch running on the file is a clear error, not a torn line), after
  the checks a batch makes before appending (``batch.log``: a regular file that is an edgejudge batch log;
  a row cut short by a crash is repaired first, as a batch would).
- ``find_items(queue, ids)``: the queue's items by id (a script's decisions name them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import _fs, _jsonl
from .batch.lock import OutputLock
from .batch.log import open_output, output_state, repair_locked, scan_output, write_all
from .batch.records import OVERRIDE_DECISIONS, OverrideRecord, PolicyItem, policy_items, read_log, utc_now
from .decision import SEVERITIES, worst_severity
from .errors import InputError, OutputBusyError

__all__ = [
    "MAX_NOTE",
    "MAX_REVIEWER",
    "ReviewQueue",
    "review_queue",
    "default_severity",
    "make_override",
    "append_override",
    "find_items",
]

#: The longest note (characters) an override keeps; the longest reviewer name.
MAX_NOTE = 4000
MAX_REVIEWER = 200


@dataclass(frozen=True)
class ReviewQueue:
    """The items of a policy log to review (input order), out of ``total`` items; ``already`` items
    needing review were skipped because they carry an override made on the same results; ``incomplete``
    the ids of items left out because the batch has not judged every rule of them yet."""

    path: Path
    items: tuple[PolicyItem, ...]
    total: int
    already: int
    needs_review: int
    incomplete: tuple[str, ...] = ()


def review_queue(path: str | Path, *, include_all: bool = False) -> ReviewQueue:
    """The items of the policy log ``path`` to review (see the module docstring)."""
    log_path = _fs.user_path(path, what="results path")
    if not log_path.exists():
        raise InputError(
            f"no such results file: {log_path}", hint="pass the output of a batch run with a policy"
        )
    log = read_log(log_path)
    items = policy_items(log.rows.values(), log.decisions, log.overrides)
    if not items:
        plain = sum(1 for row in log.rows.values() if not row.rule_id)
        what = (
            f"its {plain} result row(s) were judged without a policy" if plain else "it holds no result rows"
        )
        raise InputError(
            f"{log_path} is not a policy log: {what}",
            hint="review reads the output of a batch run with a policy",
        )
    complete = [item for item in items if item.complete]
    incomplete = tuple(item.id for item in items if not item.complete)
    waiting = [item for item in complete if item.decision.decision == "needs_review"]
    already = sum(1 for item in waiting if item.override is not None)
    chosen = complete if include_all else [item for item in waiting if item.override is None]
    return ReviewQueue(log_path, tuple(chosen), len(items), already, len(waiting), incomplete)


def default_severity(item: PolicyItem) -> str:
    """The severity a violation of ``item`` names unless the person gives one: the worst among its
    uncertain rules, else its failed rules, else all its rules, else ``major``."""
    for states in (("uncertain",), ("fail",), ("uncertain", "fail", "pass", "error")):
        worst = worst_severity([o.severity for o in item.outcomes if o.state in states])
        if worst is not None:
            return worst
    return "major"


def _clean(text: str, what: str, limit: int) -> str:
    value = text.strip()
    if len(value) > limit:
        raise InputError(
            f"the {what} is {len(value)} characters long", hint=f"keep it under {limit} characters"
        )
    return value


def make_override(
    item: PolicyItem,
    decision: str,
    *,
    reviewer: str,
    note: str = "",
    severity: str | None = None,
    at: datetime | None = None,
) -> OverrideRecord:
    """A person's decision on ``item`` as an ``OverrideRecord`` (see the module docstring). ``decision``:
    one of ``OVERRIDE_DECISIONS``; ``severity`` only with a violation. ``InputError`` for a decision or
    severity that is not one of the known ones, an empty reviewer, a note or name over its length."""
    if decision not in OVERRIDE_DECISIONS:
        raise InputError(
            f"unknown decision {decision!r}", hint=f"use one of: {', '.join(OVERRIDE_DECISIONS)}"
        )
    if severity is not None and decision != "violation":
        raise InputError("a severity goes with a violation only", hint="leave the severity out")
    if decision == "violation":
        severity = severity or default_severity(item)
        if severity not in SEVERITIES:
            raise InputError(f"unknown severity {severity!r}", hint=f"use one of: {', '.join(SEVERITIES)}")
    name = _clean(reviewer, "reviewer name", MAX_REVIEWER)
    if not name or any(ord(c) < 32 for c in name):
        raise InputError(
            "the reviewer needs a name on one line", hint="give the reviewer's name", about="reviewer"
        )
    stamp = utc_now(at)
    return OverrideRecord(
        id=item.id,
        line=item.line,
        key=item.key,
        decision=decision,
        previous=item.decision.decision,
        reviewer=name,
        at=stamp,
        note=_clean(note, "note", MAX_NOTE),
        severity=severity,
    )


def append_override(path: str | Path, record: OverrideRecord, *, lock: OutputLock | None = None) -> None:
    """Append ``record`` to the batch log ``path`` as one whole line, fsync'd, under the output's lock
    (``lock`` when the caller holds it, else taken here). ``OutputBusyError`` when another edgejudge is
    writing the file; ``InputError`` when the file is missing, empty or not an edgejudge batch log (left
    as it was), or cannot be written."""
    output = _fs.user_path(path, what="results path")
    if lock is not None and lock.covers(output):
        _append_locked(output, record)
        return
    own = OutputLock(output)
    try:
        own.acquire()
    except OutputBusyError as err:  # a batch is writing the file: say what to do as a reviewer
        raise OutputBusyError(
            err.message,
            hint="wait for that batch to finish, then review again (decisions saved so far are kept)",
            about=err.about,
        ) from None
    try:
        _append_locked(output, record)
    finally:
        own.release()


def _append_locked(output: Path, record: OverrideRecord) -> None:
    info = output_state(None, output)
    if info is None or info.st_size == 0:
        raise InputError(
            f"{output} is not an edgejudge batch log (it is {'missing' if info is None else 'empty'})",
            hint="review the output of a batch run with a policy",
        )
    fd = open_output(output, create=False)
    try:
        now = os.fstat(fd)
        repair_locked(output, fd, scan_output(output, str(output)), now)  # refuses what is not a batch log
        write_all(fd, _jsonl.dumps_line(record.to_dict()))
        os.fsync(fd)
    finally:
        os.close(fd)


def find_items(queue: ReviewQueue, ids: Sequence[str]) -> dict[str, PolicyItem]:
    """The queue's items by id for the ids asked; ``InputError`` naming the first id that is not one."""
    by_id = {item.id: item for item in queue.items}
    for row_id in ids:
        if row_id in queue.incomplete:
            raise InputError(
                f"{queue.path}: item {row_id!r} is incomplete (the batch has not judged every rule yet)",
                hint="run the batch again to judge its missing rules, then review it",
            )
        if row_id not in by_id:
            raise InputError(
                f"{queue.path} has no item {row_id!r} to review",
                hint="name the item by its id in the log",
            )
    return {row_id: by_id[row_id] for row_id in ids}
