"""The CSV export of a batch (``edgejudge report OUT.jsonl --format csv``): one line per item × rule for a
policy log, one line per row for a plain log, for spreadsheets. Nothing here prints.

Policy logs (rule rows; ``batch.records``): ``POLICY_COLUMNS`` (the item's instruction and response last,
being the longest), then the input's pass-through fields (in the order they first appear). ``decision``
is the decision that stands (a person's override applied), ``computed_decision`` the one the rule rows
give, both ``incomplete`` for an item whose rules are not all judged yet (``PolicyItem.complete``: the
batch was cut short or is still running); ``severity`` the item's, ``rule_severity`` the rule's;
``rule_state`` the rule's state (pass, fail, uncertain or error) under the item's review band, so a
``p_pass`` inside the band reads "uncertain" whatever ``passed`` says. A row whose policy could not be
loaded is one line with ``rule_id`` "*" and its error. A mixed log (rows judged without a policy beside
rule rows, ``batch.records``) writes each plain row as one line too, in input order among the items: its
id, line, image, score, expected score, feedback, error, instruction and response in those columns, the
decision and rule columns empty, and its rubric in a ``rubric`` column after ``POLICY_COLUMNS`` (present
only in a mixed log's CSV).
Plain logs: ``PLAIN_COLUMNS``, then the pass-through fields. Rows are untrusted, so every text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe (``'``): a
spreadsheet then shows it as text instead of running it as a formula (CSV injection). Numbers are written
as numbers; nested values as JSON text. Written with Python's ``csv`` module (RFC 4180 quoting, CRLF line
ends), UTF-8 without a byte-order mark, atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._report_html import check_paths, number, text, write_page
from .errors import InputError

if TYPE_CHECKING:
    from .batch.records import PolicyLog
    from .batch.result import ResultRow

__all__ = [
    "POLICY_COLUMNS",
    "PLAIN_COLUMNS",
    "FORMULA_STARTS",
    "CsvSummary",
    "safe_cell",
    "csv_table",
    "write_csv",
]

POLICY_COLUMNS = (
    "id line image decision computed_decision overridden_by override_note override_at severity rule_id "
    "rule_title rule_severity score p_pass passed rule_state expected_score feedback error policy "
    "policy_version policy_sha256 judged_at instruction response"
).split()
PLAIN_COLUMNS = (
    "id line status image rubric score expected_score agreement feedback error instruction response "
    "reference model image_fit"
).split()
#: A text cell starting with one of these is prefixed with an apostrophe (a spreadsheet would run it).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class CsvSummary:
    """What ``write_csv`` wrote: ``kind`` "policy" or "plain", ``lines`` data lines (the header apart),
    ``items`` items (policy) or rows (plain), ``columns`` the header's length, ``bytes`` the file's size;
    ``plain_rows`` the rows of a mixed log judged without a policy (one line each in a policy CSV)."""

    output: str
    kind: str
    lines: int
    items: int
    columns: int
    bytes: int
    plain_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_cell(value: Any) -> str | int | float:
    """A cell's value: numbers as they are, booleans as ``true``/``false``, None as "", nested values as
    JSON text, and text guarded against formula injection (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and number(value) is not None:
        return value
    if isinstance(value, (dict, list, tuple)):
        try:
            value = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            pass
    cell = text(value)
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _extra_columns(rows: Iterable[ResultRow], taken: Sequence[str]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for name, _ in row.extra:
            if name not in taken:
                names.setdefault(name, None)
    return list(names)


def _extras(row: ResultRow, names: Sequence[str]) -> list[Any]:
    values = dict(row.extra)
    return [values.get(name) for name in names]


def _plain_line(row: ResultRow, extra: Sequence[str]) -> list[Any]:
    """A plain row of a mixed log as a line of the policy CSV (see the module docstring)."""
    values: dict[str, Any] = {
        "id": row.id,
        "line": row.line,
        "image": row.image,
        "score": row.score if row.ok else None,
        "expected_score": row.expected_score if row.ok else None,
        "feedback": row.feedback if row.ok else None,
        "error": None if row.ok else row.error or "unknown error",
        "instruction": row.instruction,
        "response": row.response,
    }
    return [*(values.get(name) for name in POLICY_COLUMNS), row.rubric, *_extras(row, extra)]


def _order(line: int | None, row_id: str) -> tuple[int, str]:
    """Input order: by line (lines last where unknown), then id."""
    return (line if line is not None else 1 << 62, row_id)


def _policy_table(log: PolicyLog) -> tuple[list[str], list[list[Any]], int, int]:
    from .batch.records import policy_items
    from .decision import INCOMPLETE

    items = policy_items(log.rows.values(), log.decisions, log.overrides)
    plain = [row for row in log.rows.values() if not row.rule_id]
    mixed = ["rubric"] if plain else []
    extra = _extra_columns([*(r for item in items for r in item.rules), *plain], [*POLICY_COLUMNS, *mixed])
    blocks: list[tuple[tuple[int, str], list[list[Any]]]] = [
        (_order(row.line, row.id), [_plain_line(row, extra)]) for row in plain
    ]
    for item in items:
        override = item.override
        computed = item.decision.decision if item.complete else INCOMPLETE
        lines: list[list[Any]] = []
        blocks.append((_order(item.line, item.id), lines))
        for row, result in zip(item.rules, item.outcomes, strict=False):
            policy = row.policy or {}
            lines.append(
                [
                    item.id,
                    row.line,
                    row.image,
                    item.final,
                    computed,
                    override.reviewer if override else None,
                    override.note if override else None,
                    override.at if override else None,
                    item.final_severity,
                    row.rule_id,
                    row.rule_title,
                    row.severity,
                    row.score if row.ok else None,
                    row.p_pass if row.ok else None,
                    row.passed if row.ok else None,
                    result.state,
                    row.expected_score if row.ok else None,
                    row.feedback if row.ok else None,
                    None if row.ok else row.error or "unknown error",
                    policy.get("name"),
                    policy.get("version"),
                    policy.get("sha256"),
                    row.judged_at,
                    row.instruction,
                    row.response,
                    *(None for _ in mixed),
                    *_extras(row, extra),
                ]
            )
    blocks.sort(key=lambda block: block[0])  # items first among equal keys (the sort is stable)
    table = [line for _, block in blocks for line in block]
    return [*POLICY_COLUMNS, *mixed, *extra], table, len(items), len(plain)


def _plain_table(rows: Sequence[ResultRow]) -> tuple[list[str], list[list[Any]], int, int]:
    ordered = sorted(rows, key=lambda r: _order(r.line, r.id))
    extra = _extra_columns(ordered, PLAIN_COLUMNS)
    lines = [[getattr(row, name) for name in PLAIN_COLUMNS] + _extras(row, extra) for row in ordered]
    return [*PLAIN_COLUMNS, *extra], lines, len(ordered), 0


def csv_table(log: PolicyLog) -> tuple[str, list[str], list[list[Any]], int, int]:
    """``(kind, header, lines, items, plain_rows)`` of a batch log, the values not yet made cells
    (``safe_cell``); ``plain_rows`` counts the plain rows of a mixed log (0 for a plain log)."""
    if any(row.rule_id for row in log.rows.values()):
        return ("policy", *_policy_table(log))
    return ("plain", *_plain_table(list(log.rows.values())))


def write_csv(results_path: str | Path, output_path: str | Path) -> CsvSummary:
    """Read a batch output file and write its CSV atomically (see the module docstring)."""
    from .batch.records import read_log

    results_path, output_path = Path(results_path), Path(output_path)
    check_paths(results_path, output_path, what="CSV file", example="out.csv")
    log = read_log(results_path)
    if not log.rows:
        raise InputError(
            f"no batch results in {results_path}",
            hint="run the batch first; the CSV export reads its output",
        )
    kind, header, lines, items, plain_rows = csv_table(log)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow([safe_cell(name) for name in header])
    writer.writerows([safe_cell(value) for value in line] for line in lines)
    data = buffer.getvalue().encode("utf-8")
    write_page(output_path, data, what="CSV file")
    return CsvSummary(str(output_path), kind, len(lines), items, len(header), len(data), plain_rows)
