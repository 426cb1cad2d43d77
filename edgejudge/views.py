"""Grading and leaderboard views of batch results: a grade sheet (group × rule or rubric, mean scores) and a
leaderboard (per system the mean score with a bootstrap interval, and pairwise win rates). Pure.

Both read ``ResultRow`` records (a plain batch's rows or a policy batch's rule rows, last-wins applied, as
``read_result_rows``/``records.read_log`` give them) and group them by a pass-through field of the input
rows (``ResultRow.extra``: ``student``, ``system``, or any other):

- A row counts when it is ``ok``, has a ``score`` in 1..5, a group value that is short text (at most
  ``MAX_LABEL`` characters, no control characters) or a finite number (written as text), and a column
  (its ``rule_id``, else its ``rubric``, else ``"score"``) that is short text too (no C0/C1 control
  characters, so a label is safe to print on a terminal). Every other row is left
  out and counted (``left_out``): rows come from files anyone can edit. Rule rows go through
  ``records.policy_items`` first, so the rules of an older version of a row's policy are left out as the
  compliance report leaves them out. Given the log's ``decisions`` (``records.read_log(...).decisions``),
  the policy of each item is chosen as the report chooses it, and the rule rows of an incomplete item
  (``PolicyItem.complete`` false: the batch has not judged all its rules yet) are left out too, counted
  in ``left_out`` and, per item, in ``incomplete``; without ``decisions`` every item's rules count.
- **Grade sheet**: one ``GradeRow`` per group (sorted by name): the number of items (distinct row ids),
  the mean score per column (``None`` where the group has no score), ``total`` = the mean over the row's
  column means, and for rule columns the number of rule rows that passed (``passed`` true).
- **Leaderboard**: per system the mean over its counted rows, with a ``confidence`` (95%) bootstrap
  interval from ``scipy.stats.bootstrap`` (BCa, ``resamples`` resamples,
  ``rng=numpy.random.default_rng(seed)`` for every system, so the same rows give the same intervals); where
  BCa is undefined (a system with all scores equal) or too costly (over ``BCA_MAX_ROWS`` rows) the
  percentile interval, and a system with one row or one value gets the point itself.
  Systems best first (mean, then interval low end, then name). Pairwise wins compare systems on the items
  both judged: an item is (``image_sha256`` or ``image``, ``instruction``, ``rule_id`` or ``rubric``), a
  system's score on an item the mean of its rows for it; the higher score wins, equal scores tie, and
  ``rate`` = (wins + ties / 2) / n. Only pairs with a shared item are listed (both orders).

Every number in the results is finite (no NaN), and ``to_dict`` gives JSON-safe values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from .batch.records import policy_items
from .batch.result import ResultRow
from .errors import InputError

if TYPE_CHECKING:
    from .batch.records import DecisionRecord

__all__ = [
    "MAX_LABEL",
    "BCA_MAX_ROWS",
    "GradeRow",
    "GradeSheet",
    "SystemScore",
    "WinRate",
    "Leaderboard",
    "grade_sheet",
    "leaderboard",
    "group_value",
]

#: The longest group value or column name a view takes (longer ones are not labels: the row is left out).
MAX_LABEL = 200
#: BCa's jackknife costs n² for n rows: a system with more rows gets the percentile interval (at that size
#: the two agree to a few thousandths of a point on 1-5 scores).
BCA_MAX_ROWS = 5000
_PLAIN_COLUMN = "score"


@dataclass(frozen=True)
class GradeRow:
    """One group of a grade sheet: ``scores`` maps each column of the sheet to the group's mean score
    there (``None``: no score), ``total`` is the mean of those means, ``passed`` counts the group's rule
    rows that passed, per rule column (empty for plain rows)."""

    group: str
    n_items: int
    scores: dict[str, float | None]
    total: float | None
    passed: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "n_items": self.n_items,
            "scores": dict(self.scores),
            "total": self.total,
            "passed": dict(self.passed),
        }


@dataclass(frozen=True)
class GradeSheet:
    """Groups × columns (rule ids, then rubric names, in the order they first appear); ``left_out``
    counts the rows that were not used, ``incomplete`` the incomplete items among them (see the module
    docstring)."""

    field: str
    columns: tuple[str, ...]
    rows: tuple[GradeRow, ...]
    left_out: int = 0
    incomplete: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "columns": list(self.columns),
            "rows": [row.to_dict() for row in self.rows],
            "left_out": self.left_out,
            "incomplete": self.incomplete,
        }


@dataclass(frozen=True)
class SystemScore:
    """A system's mean score over its ``n`` counted rows and the bootstrap interval of that mean."""

    system: str
    n: int
    mean: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "n": self.n,
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
        }


@dataclass(frozen=True)
class WinRate:
    """``a`` against ``b`` on the ``n`` items both judged: ``rate`` = (wins + ties / 2) / n."""

    a: str
    b: str
    wins: int
    losses: int
    ties: int
    n: int
    rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "n": self.n,
            "rate": self.rate,
        }


@dataclass(frozen=True)
class Leaderboard:
    """Systems best first, the pairwise win rates (both orders of every pair with a shared item), and how
    the intervals were drawn (``resamples``, ``seed``, ``confidence``); ``left_out`` and ``incomplete`` as in
    ``GradeSheet``."""

    field: str
    systems: tuple[SystemScore, ...]
    wins: tuple[WinRate, ...]
    resamples: int
    seed: int
    confidence: float = 0.95
    left_out: int = 0
    incomplete: int = 0

    def win(self, a: str, b: str) -> WinRate | None:
        """``a`` against ``b``, or None when they share no item."""
        for rate in self.wins:
            if rate.a == a and rate.b == b:
                return rate
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "systems": [s.to_dict() for s in self.systems],
            "wins": [w.to_dict() for w in self.wins],
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "interval": f"bootstrap BCa (percentile where BCa is undefined or over {BCA_MAX_ROWS} rows)",
            "left_out": self.left_out,
            "incomplete": self.incomplete,
        }


def _label(value: Any) -> str | None:
    """``value`` as a label: short text without control characters, or a finite number; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**18 else None
    elif isinstance(value, float):
        text = (str(int(value)) if value.is_integer() else repr(value)) if math.isfinite(value) else None
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if not text or len(text) > MAX_LABEL or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        return None
    return text


def group_value(row: ResultRow, field: str) -> str | None:
    """The row's value of the pass-through ``field`` as a label, or None (absent, or not a label)."""
    for name, value in row.extra:
        if name == field:
            return _label(value)
    return None


@dataclass(frozen=True)
class _Counted:
    row: ResultRow
    group: str
    column: str
    score: int


@dataclass(frozen=True)
class _Used:
    rows: list[_Counted]
    left_out: int
    incomplete: int
    carried: bool  # an ok row carries the field


def _counted(rows: Iterable[ResultRow], field: str, decisions: Mapping[str, DecisionRecord] | None) -> _Used:
    """The rows a view uses, how many were left out (and how many incomplete items), and whether an ok
    row carries ``field``."""
    plain: list[ResultRow] = []
    rule_rows: list[ResultRow] = []
    for row in rows:
        (rule_rows if row.rule_id else plain).append(row)
    items = policy_items(rule_rows, decisions)
    incomplete = [item for item in items if decisions is not None and not item.complete]
    current = [r for item in items if decisions is None or item.complete for r in item.rules]
    left_out = len(rule_rows) - len(current)
    used: list[_Counted] = []
    carried = any(r.ok and group_value(r, field) is not None for item in incomplete for r in item.rules)
    for row in (*current, *plain):
        group = group_value(row, field)
        carried = carried or (row.ok and group is not None)
        column = _label(row.rule_id) if row.rule_id else (_label(row.rubric) if row.rubric else _PLAIN_COLUMN)
        score = row.score
        if not row.ok or group is None or column is None or score is None or not 1 <= score <= 5:
            left_out += 1
            continue
        used.append(_Counted(row, group, column, score))
    return _Used(used, left_out, len(incomplete), carried)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def grade_sheet(
    rows: Iterable[ResultRow],
    field: str = "student",
    *,
    decisions: Mapping[str, DecisionRecord] | None = None,
) -> GradeSheet | None:
    """The grade sheet of ``rows`` grouped by ``field`` (see the module docstring; ``decisions``: the log's
    latest decision record per id, so incomplete items are left out); None when no ok row carries the
    field."""
    counted = _counted(rows, field, decisions)
    if not counted.carried:
        return None
    used = counted.rows
    rule_columns: dict[str, None] = {}
    plain_columns: dict[str, None] = {}
    for c in used:
        (rule_columns if c.row.rule_id else plain_columns).setdefault(c.column, None)
    columns = tuple(rule_columns) + tuple(k for k in plain_columns if k not in rule_columns)
    by_group: dict[str, list[_Counted]] = {}
    for c in used:
        by_group.setdefault(c.group, []).append(c)
    sheet_rows = []
    for group in sorted(by_group, key=lambda g: (g.casefold(), g)):
        members = by_group[group]
        scores: dict[str, float | None] = {}
        for column in columns:
            values = [float(c.score) for c in members if c.column == column]
            scores[column] = _mean(values) if values else None
        present = [v for v in scores.values() if v is not None]
        passed = {
            column: sum(1 for c in members if c.column == column and c.row.rule_id and c.row.passed is True)
            for column in rule_columns
        }
        sheet_rows.append(
            GradeRow(
                group=group,
                n_items=len({c.row.id for c in members}),
                scores=scores,
                total=_mean(present) if present else None,
                passed=passed,
            )
        )
    return GradeSheet(
        field=field,
        columns=columns,
        rows=tuple(sheet_rows),
        left_out=counted.left_out,
        incomplete=counted.incomplete,
    )


def _interval(values: np.ndarray, resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    mean = float(values.mean())
    if len(values) < 2 or bool(np.all(values == values[0])):
        return mean, mean
    batch = max(1, 4_000_000 // len(values))  # bounds the memory of one batch of resamples
    methods = ("BCa", "percentile") if len(values) <= BCA_MAX_ROWS else ("percentile",)
    for method in methods:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # a degenerate BCa warns and gives NaN: the percentile follows (nothing else is hidden)
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=resamples,
                batch=batch,
                vectorized=True,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return min(low, mean), max(high, mean)
    return mean, mean  # pragma: no cover - the percentile interval of finite values is finite


def leaderboard(
    rows: Iterable[ResultRow],
    field: str = "system",
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    decisions: Mapping[str, DecisionRecord] | None = None,
) -> Leaderboard | None:
    """The leaderboard of ``rows`` by ``field`` (see the module docstring; ``decisions`` as in
    ``grade_sheet``); None when no ok row carries the field. ``InputError`` when ``resamples`` is below 1
    or ``confidence`` not strictly between 0 and 1."""
    if resamples < 1:
        raise InputError(
            f"the leaderboard needs at least 1 bootstrap resample, got {resamples}",
            hint="use 2000 resamples",
            about="resamples",
        )
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be between 0 and 1, got {confidence}", hint="use 0.95")
    counted = _counted(rows, field, decisions)
    if not counted.carried:
        return None
    used = counted.rows
    by_system: dict[str, list[_Counted]] = {}
    for c in used:
        by_system.setdefault(c.group, []).append(c)
    scores = []
    for system, members in by_system.items():
        values = np.array([c.score for c in members], dtype=float)
        low, high = _interval(values, resamples, seed, confidence)
        scores.append(SystemScore(system, len(values), float(values.mean()), low, high))
    scores.sort(key=lambda s: (-s.mean, -s.ci_low, s.system))
    items: dict[str, dict[tuple[str, str, str], list[int]]] = {}
    for c in used:
        row = c.row
        item = (row.image_sha256 or row.image or "", row.instruction or "", c.column)
        items.setdefault(c.group, {}).setdefault(item, []).append(c.score)
    means = {s: {item: _mean([float(v) for v in vs]) for item, vs in per.items()} for s, per in items.items()}
    wins: list[WinRate] = []
    order = [s.system for s in scores]
    for a in order:
        for b in order:
            if a == b:
                continue
            shared = means[a].keys() & means[b].keys()
            if not shared:
                continue
            won = sum(1 for item in shared if means[a][item] > means[b][item])
            lost = sum(1 for item in shared if means[a][item] < means[b][item])
            tied = len(shared) - won - lost
            wins.append(WinRate(a, b, won, lost, tied, len(shared), (won + tied / 2) / len(shared)))
    return Leaderboard(
        field=field,
        systems=tuple(scores),
        wins=tuple(wins),
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        left_out=counted.left_out,
        incomplete=counted.incomplete,
    )
