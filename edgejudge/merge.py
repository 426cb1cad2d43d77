"""Joining batch logs: ``edgejudge merge OUT1.jsonl OUT2.jsonl … --output ALL.jsonl``.

The logs of a sharded sweep (``batch --shard K/N`` on N machines, each with its own output), or of runs
split by hand, become one batch log that ``report``, ``metrics``, ``review`` and resume read like any other.

Rules (``plan_merge`` applies them, ``write_merge`` writes the result):

- Each input is read as the batch log readers read it (``batch.log.scan_output``: the last line for a
  result key wins inside a file; a result key is ``batch.result.record_key``, (id, rule_id) for the rule
  rows of a policy run). Only batch rows and policy records are carried over; every other complete line,
  and a last line cut short (normal for a killed run), is skipped and counted (``malformed``). An input
  that is not empty and holds no batch row is refused: it is not a batch log.
- Across inputs (in the order given) the last row for a result key wins, except that an ``ok`` row is
  never replaced by an ``error`` row, whatever the order.
- A **conflict** is a result key whose rows in two inputs disagree: different ``key`` hashes (the row
  was judged from other inputs or settings) or, both ``ok``, different scores. Conflicts are listed
  (``MergePlan.conflicts``); the rule above still picks the row written, unless the caller is strict.
- Policy records: every **run** record (the audit trail of each shard's run) comes first, in the order
  they started; the result rows follow in input order (line, then the order read); then the **decision**
  records: for each id the one whose rules key matches the merged rule rows (the latest such; else the
  latest) comes last, so readers take it as the id's decision; then the **override** records of
  ``edgejudge review`` in the order they were made (``at``), so the latest one stands. Identical records
  are written once.
- The output is written atomically (``_fs.atomic_write``) under the output's batch lock, never as a
  partial file; it is refused when it is one of the inputs, or exists and may not be replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import _fs, _jsonl
from .batch.lock import OutputLock
from .batch.log import scan_output
from .batch.records import rules_key
from .batch.result import is_batch_row, record_key
from .errors import InputError

__all__ = ["Conflict", "MergeInput", "MergePlan", "plan_merge", "write_merge", "merge_logs", "check_target"]


@dataclass(frozen=True)
class Conflict:
    """One result key whose rows in two inputs disagree: ``kinds`` holds ``"key"`` (different ``key``
    hashes) and/or ``"score"`` (both ok, different scores); ``files``, ``keys``, ``scores`` and
    ``statuses`` are (the earlier input's, the later input's); ``kept`` the file whose row was written."""

    id: str
    rule_id: str | None
    kinds: tuple[str, ...]
    files: tuple[str, str]
    keys: tuple[str, str]
    scores: tuple[int | None, int | None]
    statuses: tuple[str, str]
    kept: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "kinds": list(self.kinds),
            "files": list(self.files),
            "keys": list(self.keys),
            "scores": list(self.scores),
            "statuses": list(self.statuses),
            "kept": self.kept,
        }

    def describe(self) -> str:
        """One line for people: what differs, where, and which row was kept."""
        what = f"{self.id!r}" + (f" rule {self.rule_id!r}" if self.rule_id else "")
        parts = []
        if "key" in self.kinds:
            parts.append("judged from other inputs or settings (different keys)")
        if "score" in self.kinds:
            parts.append(f"scores {self.scores[0]} and {self.scores[1]}")
        return f"{what}: {', '.join(parts)} in {self.files[0]} and {self.files[1]}; kept {self.kept}'s"


@dataclass(frozen=True)
class MergeInput:
    """What one input log gave: its result rows (after its own last-wins), its policy records, and the
    lines skipped (``malformed``: complete lines that are not batch rows, and a last line cut short)."""

    file: str
    rows: int
    records: int
    malformed: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows, "records": self.records, "malformed": self.malformed}


@dataclass(frozen=True)
class MergePlan:
    """The merged log before it is written: ``lines`` the JSON objects in the order they will be written,
    ``rows`` (``ok`` + ``errors``) the result rows among them, ``records`` the policy records by kind."""

    inputs: tuple[MergeInput, ...]
    lines: tuple[dict[str, Any], ...]
    rows: int
    ok: int
    errors: int
    records: dict[str, int]
    conflicts: tuple[Conflict, ...] = field(default=())

    @property
    def malformed(self) -> int:
        return sum(item.malformed for item in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [item.to_dict() for item in self.inputs],
            "rows": self.rows,
            "ok": self.ok,
            "errors": self.errors,
            "records": dict(self.records),
            "malformed": self.malformed,
            "conflicts": len(self.conflicts),
            "conflict_list": [c.to_dict() for c in self.conflicts],
        }


def _paths(inputs: Sequence[str | Path]) -> list[Path]:
    if not inputs:
        raise InputError("no batch logs to merge", hint="name the output files of the runs to merge")
    paths = [_fs.user_path(p, what="input path") for p in inputs]
    for i, path in enumerate(paths):
        for other in paths[:i]:
            if other == path or (path.exists() and other.exists() and _fs.same_file(other, path)):
                raise InputError(f"{path} is given twice", hint="name each batch log once")
    return paths


def check_target(inputs: Sequence[str | Path], output: str | Path, *, overwrite: bool = False) -> Path:
    """The output path, checked before anything is read: not one of the inputs (any name of the same
    file), not a folder or other non-regular file, and not an existing file unless ``overwrite``."""
    target = _fs.user_path(output, what="output path")
    for path in _paths(inputs):
        if path == target or (target.exists() and path.exists() and _fs.same_file(path, target)):
            raise InputError(
                f"the output {target} is one of the logs being merged",
                hint="write the merged log to a new file",
                about="output",
            )
    if target.is_dir():
        raise InputError(f"the output path is a folder: {target}", hint="pass a file name", about="output")
    if os.path.lexists(target):
        if not target.is_file():
            raise InputError(f"the output is not a regular file: {target}", hint="pass a file name",
                             about="output")  # fmt: skip
        if not overwrite:
            raise InputError(
                f"the output {target} already exists",
                hint="write to a new file, or allow replacing it",
                about=("output", "overwrite"),
            )
    return target


def _read(path: Path) -> tuple[MergeInput, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    label = str(path)
    scan = scan_output(path, label, "batch log")  # a missing file, a folder, a FIFO: InputError naming it
    size = path.stat().st_size
    if size and scan.batch_rows == 0 and not (scan.tail == "cut" and scan.foreign == 0):
        raise InputError(
            f"{label} is not an edgejudge batch log ({scan.problem or 'no line is a batch row'})",
            hint="merge the output files of edgejudge batch runs",
        )
    rows = {key: row for key, row in scan.rows.items() if is_batch_row(row)}
    malformed = scan.foreign + (1 if scan.tail in ("cut", "bad") else 0)
    item = MergeInput(label, len(rows), len(scan.records), malformed)
    return item, rows, list(scan.records)


def _conflict(old: dict[str, Any], new: dict[str, Any], files: tuple[str, str], kept: str) -> Conflict | None:
    kinds = []
    if old.get("key") != new.get("key"):
        kinds.append("key")
    if old.get("status") == "ok" and new.get("status") == "ok" and old.get("score") != new.get("score"):
        kinds.append("score")
    if not kinds:
        return None
    rule = new.get("rule_id")
    return Conflict(
        id=str(new.get("id")),
        rule_id=rule if isinstance(rule, str) and rule else None,
        kinds=tuple(kinds),
        files=files,
        keys=(str(old.get("key")), str(new.get("key"))),
        scores=(_score(old), _score(new)),
        statuses=(str(old.get("status")), str(new.get("status"))),
        kept=kept,
    )


def _score(row: dict[str, Any]) -> int | None:
    score = row.get("score")
    return score if type(score) is int else None


def plan_merge(inputs: Sequence[str | Path]) -> MergePlan:
    """Read ``inputs`` and join them (see the module docstring); nothing is written.

    Raises ``InputError`` when no input is given, one is given twice, cannot be read (missing, not a
    regular file, too large) or is not a batch log."""
    items: list[MergeInput] = []
    winners: dict[str, tuple[dict[str, Any], str]] = {}
    order: dict[str, int] = {}
    conflicts: list[Conflict] = []
    records: list[dict[str, Any]] = []
    for path in _paths(inputs):
        item, rows, found = _read(path)
        items.append(item)
        records.extend(found)
        for key, row in rows.items():
            order.setdefault(key, len(order))
            held = winners.get(key)
            if held is None:
                winners[key] = (row, item.file)
                continue
            old, old_file = held
            keep_old = old.get("status") == "ok" and row.get("status") != "ok"
            kept = old_file if keep_old else item.file
            found_conflict = _conflict(old, row, (old_file, item.file), kept)
            if found_conflict is not None:
                conflicts.append(found_conflict)
            if not keep_old:
                winners[key] = (row, item.file)
    rows_out = sorted(winners, key=lambda k: (winners[k][0]["line"], order[k]))
    result_rows = [winners[k][0] for k in rows_out]
    runs, decisions, overrides = _records(records, {k: v[0] for k, v in winners.items()})
    ok = sum(1 for row in result_rows if row.get("status") == "ok")
    lines = (*runs, *result_rows, *decisions, *overrides)
    counts = {"run": len(runs), "decision": len(decisions), "override": len(overrides)}
    return MergePlan(
        tuple(items), lines, len(result_rows), ok, len(result_rows) - ok, counts, tuple(conflicts)
    )


def _unique(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for record in records:
        text = json.dumps(record, sort_keys=True, ensure_ascii=True)
        if text not in seen:
            seen.add(text)
            out.append(record)
    return out


def _stamp(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    return value if isinstance(value, str) else ""


def _records(
    records: list[dict[str, Any]], rows: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(run records, decision records, override records) in the order they are written."""
    unique = _unique(records)
    runs = sorted((r for r in unique if r["kind"] == "run"), key=lambda r: _stamp(r, "started_at"))
    overrides = sorted((r for r in unique if r["kind"] == "override"), key=lambda r: _stamp(r, "at"))
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in unique:
        if record["kind"] == "decision":
            by_id.setdefault(record["id"], []).append(record)
    decisions: list[dict[str, Any]] = []
    for row_id, found in by_id.items():
        found.sort(key=lambda r: _stamp(r, "decided_at"))
        matching = [r for r in found if _matches(r, row_id, rows)]
        chosen = matching[-1] if matching else found[-1]
        decisions.extend(r for r in found if r is not chosen)
        decisions.append(chosen)
    return runs, decisions, overrides


def _matches(record: dict[str, Any], row_id: str, rows: dict[str, dict[str, Any]]) -> bool:
    """True when the decision ``record`` was made on exactly the merged rule rows of ``row_id``."""
    rules = record.get("rules")
    if not isinstance(rules, list) or not rules or not all(isinstance(r, str) for r in rules):
        return False
    keys = []
    for rule in rules:
        row = rows.get(record_key({"id": row_id, "rule_id": rule}))
        if row is None:
            return False
        keys.append(str(row.get("key")))
    return record.get("key") == rules_key(keys)


def write_merge(plan: MergePlan, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``plan`` to ``output`` atomically, under the output's batch lock (a batch writing it makes
    this an ``OutputBusyError``); ``check_target``'s rules on an existing output apply again under the
    lock. Returns the path written."""
    target = _fs.user_path(output, what="output path")
    with OutputLock(target):
        if os.path.lexists(target) and not overwrite:
            raise InputError(f"the output {target} already exists", hint="write to a new file, or allow "
                             "replacing it", about=("output", "overwrite"))  # fmt: skip

        def write(handle: BinaryIO) -> None:
            for line in plan.lines:
                handle.write(_jsonl.dumps_line(line))

        _fs.write_user_file(target, write, what="the output", about="output")
    return target


def merge_logs(
    inputs: Sequence[str | Path], output: str | Path, *, overwrite: bool = False, strict: bool = False
) -> MergePlan:
    """``check_target``, ``plan_merge`` and ``write_merge`` in one call. With ``strict`` a conflict is an
    ``InputError`` and nothing is written."""
    check_target(inputs, output, overwrite=overwrite)
    plan = plan_merge(inputs)
    if strict and plan.conflicts:
        raise conflict_error(plan)
    write_merge(plan, output, overwrite=overwrite)
    return plan


def conflict_error(plan: MergePlan) -> InputError:
    """The error of a strict merge with conflicts (the first one named)."""
    first = plan.conflicts[0].describe()
    return InputError(
        f"{len(plan.conflicts)} conflict(s) between the logs (first: {first}); nothing was written",
        hint="merge only the shards of one run (same input and settings), or merge without the strict "
        "check (the last row is then kept, an ok row over an error row)",
    )
