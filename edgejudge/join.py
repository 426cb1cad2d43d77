"""Pairing judge scores with gold scores by row id (what ``edgejudge metrics`` computes agreement on).

Owns how two JSONL files line up:

- A row's id follows THE batch id rule (``edgejudge.batch.rows.id_of``): the id field as text (for ``id``,
  ``question_id`` when there is no ``id``), ``line-N`` for a row without one, so a batch output joins its
  own input. A row whose id is neither text nor an integer is a reported problem, not a row.
- Predictions: the last row of an id wins (``edgejudge batch`` appends a retried row after its failed one).
  Gold: the first row wins and later duplicates are reported, as the batch judges only the first row of an
  id in its input.
- Failed predictions (``status`` error, or no numeric score), rows in only one file and gold rows without a
  gold score are counted, never silently dropped.
- A policy batch's log holds records beside its rows (decision, run and override records:
  ``batch.result.is_log_record``): they are not rows and are passed over. Its rows are rule rows (one per
  item and rule, ``rule_id`` set), which have no one score per id: predictions holding rule rows are
  refused (``InputError``; such results are grouped by a field of their rows, or read as a report).

``join_rows`` pairs the bytes a caller read (the CLI reads ``-`` as stdin); ``join_scores`` reads two files,
which must be regular files of at most ``MAX_FILE_BYTES`` (``_fs``: never a hang on a FIFO or a device).
Every line goes through ``_jsonl``, so a hostile line (not JSON, nested too deep, a huge integer, not
UTF-8) is one reported problem and the next line goes on. The statistics themselves are
``metrics.agreement_metrics``; nothing here prints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _fs, _jsonl
from .errors import InputError

__all__ = [
    "MAX_FILE_BYTES",
    "Joined",
    "KeyedRows",
    "keyed_rows",
    "read_keyed_rows",
    "pair_scores",
    "join_rows",
    "join_scores",
]

#: The largest JSONL file read whole (predictions or gold).
MAX_FILE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class KeyedRows:
    """The rows of one JSONL file by id, and its lines with problems (``problems``: "file:N: why");
    ``rule_rows`` of its rows are a policy batch's rule rows, ``name`` names the file."""

    rows: dict[str, dict[str, Any]]
    problems: tuple[str, ...]
    rule_rows: int = 0
    name: str = ""


@dataclass(frozen=True)
class Joined:
    """Matched (pred, gold) pairs and what did not match, with counts for the report."""

    ids: tuple[str, ...]
    pred: tuple[float, ...]
    gold: tuple[float, ...]
    pred_rows: int
    gold_rows: int
    unmatched_pred: int
    unmatched_gold: int
    failed_pred: int
    missing_gold: int
    malformed_lines: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """The row counts as plain JSON values (``malformed_lines`` as a count)."""
        return {
            "pred_rows": self.pred_rows,
            "gold_rows": self.gold_rows,
            "unmatched_pred": self.unmatched_pred,
            "unmatched_gold": self.unmatched_gold,
            "failed_pred": self.failed_pred,
            "missing_gold": self.missing_gold,
            "malformed_lines": len(self.malformed_lines),
        }


def keyed_rows(data: bytes, *, name: str, id_field: str = "id", first_wins: bool = False) -> KeyedRows:
    """``{id: row}`` of the JSONL bytes ``data`` (a file called ``name`` in problems); see the module
    docstring for which row of an id wins (``first_wins`` for gold files)."""
    from .batch.result import is_log_record
    from .batch.rows import id_of

    rows: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    rule_rows = 0
    for n, line, replaced in _jsonl.split_lines(data):
        if replaced:  # ids and scores of such a line cannot be trusted: reported, not joined
            bad.append(f"{name}:{n}: not valid UTF-8 (undecodable bytes in the line)")
            continue
        decoded = _jsonl.loads_line(line)
        if decoded.problem is not None:
            bad.append(f"{name}:{n}: {decoded.problem}")
            continue
        row = decoded.value
        if not isinstance(row, dict):
            bad.append(f"{name}:{n}: not a JSON object")
            continue
        if is_log_record(row):  # a policy log's decision, run or override record: not a row
            continue
        rule = row.get("rule_id")
        rule_rows += isinstance(rule, str) and bool(rule)
        key = id_of(row, n, id_field)
        if key is None:
            bad.append(f"{name}:{n}: {id_field} must be a string or an integer")
            continue
        if key in rows and first_wins:
            bad.append(f"{name}:{n}: duplicate {id_field} {key!r} ignored (its first row is used)")
            continue
        rows[key] = row
    return KeyedRows(rows, tuple(bad), rule_rows, name)


def read_keyed_rows(
    path: str | os.PathLike[str], *, id_field: str = "id", first_wins: bool = False
) -> KeyedRows:
    """``keyed_rows`` of a JSONL file (``~`` expanded; a regular file of at most ``MAX_FILE_BYTES``).

    Raises ``InputError`` when the file cannot be read (missing, a folder, FIFO or device, too large)."""
    label = os.fspath(path)
    data = _fs.read_regular(
        _fs.user_path(label, what="file"), label=label, what="file", max_bytes=MAX_FILE_BYTES
    )
    return keyed_rows(data, name=Path(label).name, id_field=id_field, first_wins=first_wins)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def pair_scores(preds: KeyedRows, golds: KeyedRows, *, pred_field: str = "score", gold_field: str) -> Joined:
    """Pair the scores of rows with the same id; count everything that does not pair up. ``InputError``
    when the predictions are a policy batch's rule rows (see the module docstring)."""
    if preds.rule_rows:
        raise InputError(
            f"{preds.name or 'the predictions'} holds policy results ({preds.rule_rows} rule rows: one per "
            "item and rule), not one score per id to compare with gold scores",
            hint="read policy results as a compliance report, or group them by a field of their input rows",
            about="by",
        )
    gold_rows = golds.rows
    ids: list[str] = []
    xs: list[float] = []
    ys: list[float] = []
    failed = missing = 0
    for key, row in preds.rows.items():
        x = _number(row.get(pred_field))
        if row.get("status") == "error" or x is None:
            failed += 1  # counted whether or not the id is in the gold file
            continue
        if key not in gold_rows:
            continue
        y = _number(gold_rows[key].get(gold_field))
        if y is None:
            missing += 1
            continue
        ids.append(key)
        xs.append(x)
        ys.append(y)
    return Joined(
        ids=tuple(ids),
        pred=tuple(xs),
        gold=tuple(ys),
        pred_rows=len(preds.rows),
        gold_rows=len(gold_rows),
        unmatched_pred=sum(1 for k in preds.rows if k not in gold_rows),
        unmatched_gold=sum(1 for k in gold_rows if k not in preds.rows),
        failed_pred=failed,
        missing_gold=missing,
        malformed_lines=preds.problems + golds.problems,
    )


def join_rows(
    pred_data: bytes,
    gold_data: bytes,
    *,
    gold_field: str,
    pred_field: str = "score",
    id_field: str = "id",
    pred_name: str = "predictions",
    gold_name: str = "gold",
) -> Joined:
    """Pair the scores of the JSONL bytes ``pred_data`` and ``gold_data`` by id (``keyed_rows`` of each,
    the gold file's first row of an id winning, then ``pair_scores``); ``*_name`` names them in problems."""
    preds = keyed_rows(pred_data, name=pred_name, id_field=id_field)
    golds = keyed_rows(gold_data, name=gold_name, id_field=id_field, first_wins=True)
    return pair_scores(preds, golds, pred_field=pred_field, gold_field=gold_field)


def join_scores(
    pred_path: str | os.PathLike[str],
    gold_path: str | os.PathLike[str],
    *,
    gold_field: str,
    pred_field: str = "score",
    id_field: str = "id",
) -> Joined:
    """Read both files and pair their scores by id (``read_keyed_rows`` + ``pair_scores``)."""
    preds = read_keyed_rows(pred_path, id_field=id_field)
    golds = read_keyed_rows(gold_path, id_field=id_field, first_wins=True)
    return pair_scores(preds, golds, pred_field=pred_field, gold_field=gold_field)
