"""The grade sheet and leaderboard sections of the HTML reports (``report``, ``compliance``). Nothing prints.

``views_html(rows, group_by, decisions)`` renders ``views.grade_sheet`` (by ``group_by``, default ``student``)
and ``views.leaderboard`` (by ``system``) as HTML sections (a policy log's ``decisions`` leave its incomplete
items out), or gives "" when no row carries the field, so a report
of rows without them is unchanged; ``rows_carrying(rows, field)`` counts the rows that carry a field (the
reports say so when a ``group_by`` field is carried by none). The views (numpy, scipy) are imported only when
a row carries a field. Every label is escaped: group and system values come from the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._report_html import esc

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .batch.records import DecisionRecord
    from .batch.result import ResultRow
    from .views import GradeSheet, Leaderboard

__all__ = ["views_html", "rows_carrying", "VIEWS_CSS", "DEFAULT_GROUP_FIELD", "SYSTEM_FIELD"]

DEFAULT_GROUP_FIELD = "student"
SYSTEM_FIELD = "system"
#: The sections' stylesheet (the compliance report's own stylesheet has it; the plain report adds it only
#: when it has a section, so its page is otherwise unchanged).
VIEWS_CSS = """
.views{padding:8px 28px}
.views table.grid{border-collapse:collapse;font-size:13px;margin:6px 0;background:var(--card)}
.views table.grid th,.views table.grid td{border:1px solid var(--line);padding:3px 8px;text-align:left}
"""


def _mean(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def grade_sheet_html(sheet: GradeSheet) -> str:
    """The grade sheet as a section: group × column means, the passes of rule columns, the total."""
    head = "".join(f"<th>{esc(c)}</th>" for c in sheet.columns)
    body = []
    for row in sheet.rows:
        cells = []
        for column in sheet.columns:
            passed = row.passed.get(column)
            extra = f' <small class="muted">{passed} passed</small>' if passed is not None else ""
            cells.append(f"<td>{_mean(row.scores.get(column))}{extra}</td>")
        body.append(
            f"<tr><td>{esc(row.group)}</td><td>{row.n_items}</td>{''.join(cells)}<td><b>{_mean(row.total)}</b></td></tr>"
        )
    left = (
        f" {sheet.left_out} rows left out (errors, no score or no usable {esc(sheet.field)}"
        + (f"; the rules of {sheet.incomplete} incomplete items" if sheet.incomplete else "")
        + ")."
        if sheet.left_out
        else ""
    )
    return (
        f'<section class="views" id="grade-sheet"><h2>Grade sheet by {esc(sheet.field)}</h2>'
        f'<table class="grid"><thead><tr><th>{esc(sheet.field)}</th><th>items</th>{head}<th>total</th></tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="muted">Mean score (1–5) per column; total: the mean of the row\'s column means.'
        f"{left}</p></section>"
    )


def leaderboard_html(board: Leaderboard) -> str:
    """The leaderboard as a section: per system mean and interval, and the pairwise win-rate matrix."""
    pct = f"{board.confidence * 100:g}%"
    rows = "".join(
        f"<tr><td>{k}</td><td>{esc(s.system)}</td><td>{s.n}</td><td><b>{s.mean:.2f}</b></td>"
        f"<td>{s.ci_low:.2f} – {s.ci_high:.2f}</td></tr>"
        for k, s in enumerate(board.systems, 1)
    )
    names = [s.system for s in board.systems]
    matrix = []
    for a in names:
        cells = []
        for b in names:
            rate = board.win(a, b) if a != b else None
            if rate is None:
                cells.append('<td class="muted">–</td>')
            else:
                title = f"{rate.wins} wins, {rate.losses} losses, {rate.ties} ties over {rate.n} shared items"
                cells.append(
                    f'<td title="{esc(title)}">{rate.rate * 100:.0f}% <small>n={rate.n}</small></td>'
                )
        matrix.append(f"<tr><th>{esc(a)}</th>{''.join(cells)}</tr>")
    left = (
        f" {board.left_out} rows left out"
        + (f" (the rules of {board.incomplete} incomplete items among them)" if board.incomplete else "")
        + "."
        if board.left_out
        else ""
    )
    return (
        f'<section class="views" id="leaderboard"><h2>Leaderboard by {esc(board.field)}</h2>'
        f'<table class="grid"><thead><tr><th>#</th><th>{esc(board.field)}</th><th>n</th><th>mean</th>'
        f"<th>{pct} interval</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<p class="muted">Interval: bootstrap (BCa; percentile where BCa is undefined), {board.resamples} '
        f"resamples, seed {board.seed}.{left}</p>"
        f'<h3>Win rate (row against column)</h3><table class="grid" id="win-rates"><thead><tr><th></th>'
        f"{''.join(f'<th>{esc(n)}</th>' for n in names)}</tr></thead><tbody>{''.join(matrix)}</tbody></table>"
        '<p class="muted">(wins + ties / 2) / items both systems were judged on.</p></section>'
    )


def rows_carrying(rows: Iterable[ResultRow], field: str) -> int:
    """How many of ``rows`` carry the pass-through ``field`` (whatever its value)."""
    return sum(1 for row in rows if any(name == field for name, _ in row.extra))


def views_html(
    rows: Iterable[ResultRow],
    group_by: str | None = None,
    decisions: Mapping[str, DecisionRecord] | None = None,
) -> str:
    """The grade sheet (rows carrying ``group_by``, default ``student``) and leaderboard (rows carrying
    ``system``) sections, or "" when no row carries either field; ``decisions`` as ``views.grade_sheet``
    takes them."""
    records = list(rows)
    field = group_by or DEFAULT_GROUP_FIELD
    want_sheet, want_board = rows_carrying(records, field) > 0, rows_carrying(records, SYSTEM_FIELD) > 0
    if not want_sheet and not want_board:
        return ""
    from .views import grade_sheet, leaderboard

    sheet = grade_sheet(records, field, decisions=decisions) if want_sheet else None
    board = leaderboard(records, SYSTEM_FIELD, decisions=decisions) if want_board else None
    return (grade_sheet_html(sheet) if sheet else "") + (leaderboard_html(board) if board else "")
