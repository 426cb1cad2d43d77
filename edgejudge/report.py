"""The HTML report of a batch: ONE self-contained file (inline CSS, JS and images) for people.

Owns turning batch output rows into a page for moderators and teachers: a summary, the score distribution
(inline SVG), one card per row (the image as the judge saw it, the score, the probability of each score,
the expected score, the feedback, the inputs and the rubric; error rows shown distinctly) and a score
filter (small inline script; ``#filter=4,5`` or ``#filter=error`` in the URL applies one on load). Every
piece of user or model text is HTML-escaped; a Content-Security-Policy forbids any network access. Nothing
here prints.

A log with rule rows of a policy batch gets the compliance report instead (``write_report`` hands it to
``edgejudge.compliance``); rows carrying ``student`` (or the ``group_by`` field) or ``system`` add the
grade sheet and leaderboard sections (``_report_views``), and a page without them is what it always was.
The escaping, thumbnail and output-file helpers both pages share live in ``_report_html``.

Rows are untrusted (a results file may come from anyone): each is read with ``ResultRow.from_dict``, the
batch package's tolerant reader, so a field of the wrong type (a score that is a string, feedback that is a
list, a huge or negative ``image_size``, lone surrogates, missing keys) is shown as text or left out, never
an error (an ``image`` that is not a string names no file to embed); a row that is not a JSON object is
skipped and counted. Images are
embedded only from under the image root (``image_root``, else the results file's folder; symlinks
resolved) unless ``embed_outside_root`` is set, so a shared report cannot carry pictures from anywhere on
the machine; the others get a placeholder saying why. Thumbnails are fitted at the row's ``image_size``
clamped to ``MAX_THUMBNAIL_FIT`` whatever the row says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._report_assets import CSS, SCRIPT
from ._report_html import HEAD_CSP, MAX_THUMBNAIL_FIT, THUMBNAIL_SIDE, Thumbnails, check_paths, write_page
from ._report_html import esc as _e
from ._report_html import number as _number
from ._report_html import text as _text
from ._report_views import VIEWS_CSS, rows_carrying, views_html
from .errors import InputError

if TYPE_CHECKING:
    from .batch.result import ResultRow
    from .compliance import ComplianceSummary

__all__ = [
    "ReportSummary",
    "render_report",
    "write_report",
    "DEFAULT_TITLE",
    "MAX_THUMBNAIL_FIT",
    "THUMBNAIL_SIDE",
]

DEFAULT_TITLE = "edgejudge report"


@dataclass(frozen=True)
class ReportSummary:
    """What ``write_report`` wrote: ``rows`` cards (``ok`` + ``errors``), ``images_missing`` of them without
    a thumbnail (no image, image not found, unreadable, or outside the image root), ``images_outside_root``
    of those because the image lies outside the image root, ``skipped`` input rows that were not JSON
    objects, ``bytes`` the size of the HTML file, ``group_rows`` the rows carrying the grade sheet's
    ``group_by`` field when one is given."""

    output: str
    rows: int
    ok: int
    errors: int
    images_missing: int
    mean_score: float | None
    bytes: int
    images_outside_root: int = 0
    skipped: int = 0
    group_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(row: ResultRow) -> int | None:
    score = row.score
    return score if score is not None and 1 <= score <= 5 else None


def _score_class(row: ResultRow) -> str:
    if not row.ok:
        return "error"
    score = _score(row)
    return str(score) if score is not None else "none"


def _prob_bars(row: ResultRow) -> str:
    probs = row.score_probs
    if probs is None:
        return '<p class="muted">no score distribution</p>'
    lines = []
    for k in range(1, 6):
        p = _number(probs.get(str(k))) or 0.0
        chosen = " chosen" if _score(row) == k else ""
        lines.append(
            f'<div class="prob{chosen}"><span class="k">{k}</span>'
            f'<span class="track"><span class="fill s{k}" style="width:{max(0.0, min(p, 1.0)) * 100:.1f}%">'
            f'</span></span><span class="pct">{p * 100:.1f}%</span></div>'
        )
    return '<div class="probs" aria-label="probability of each score">' + "".join(lines) + "</div>"


def _field(label: str, value: Any, *, cls: str = "") -> str:
    if value is None or value == "":
        return ""
    return f'<div class="field {cls}"><h4>{_e(label)}</h4><p>{_e(value)}</p></div>'


def _card(row: ResultRow, thumb: str | None, why: str) -> str:
    cls = _score_class(row)
    score = row.score
    expected = _number(row.expected_score)
    image_html = (
        f'<img class="thumb" src="{_e(thumb)}" alt="{_e(row.image)} as judged">'
        if thumb
        else f'<div class="thumb missing">{_e(why)}<br><small>{_e(row.image)}</small></div>'
        if row.image
        else f'<div class="thumb missing">{_e(why)}</div>'
    )
    head = (
        f'<header><span class="rid">{_e(row.id)}</span>'
        f'<span class="badge b{cls}">{_e(score) if cls not in ("error", "none") else _e(cls)}</span></header>'
    )
    if row.ok:
        body = (
            f'<p class="expected">score <b>{_e(score if score is not None else "?")}</b> / 5'
            + (f" · expected {expected:.2f}" if expected is not None else "")
            + "</p>"
            + _prob_bars(row)
            + _field("Feedback", row.feedback, cls="feedback")
        )
    else:
        body = _field("Error", row.error or "unknown error", cls="errmsg") + _field("Hint", row.hint)
    reference = row.reference
    model_line = f"{_text(row.model or '?')} · image fit {_text(row.image_fit or '?')}"
    details = (
        _field("Instruction", row.instruction)
        + _field("Response", row.response)
        + _field("Reference answer", reference if reference else "(none given)")
        + _field("Rubric", f"{_text(row.rubric or '?')}: {_text(row.criteria or '')}")
        + _field("Image", row.image)
        + _field("Model", model_line)
    )
    return (
        f'<article class="card c{cls}" data-score="{_e(cls)}" data-id="{_e(row.id)}">'
        f'{image_html}<div class="body">{head}{body}'
        f"<details><summary>inputs and rubric</summary>{details}</details></div></article>"
    )


def _chart(counts: dict[int, int], errors: int) -> str:
    bars = [(str(k), counts.get(k, 0), f"s{k}") for k in range(1, 6)] + [("err", errors, "serr")]
    top = max((n for _, n, _ in bars), default=0) or 1
    width, height, gap = 56, 140, 14
    parts = [
        f'<svg class="chart" role="img" aria-label="score distribution" viewBox="0 0 '
        f'{len(bars) * (width + gap) + gap} {height + 40}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, n, cls) in enumerate(bars):
        h = round(n / top * height)
        x = gap + i * (width + gap)
        parts.append(
            f'<rect class="{cls}" x="{x}" y="{height - h + 14}" width="{width}" height="{h}" rx="4"></rect>'
            f'<text x="{x + width / 2}" y="{height - h + 10}" text-anchor="middle">{n}</text>'
            f'<text x="{x + width / 2}" y="{height + 32}" text-anchor="middle" class="lab">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _line_of(row: ResultRow) -> int:
    return row.line if row.line is not None else 1 << 62


def render_report(
    rows: Iterable[Any],
    *,
    title: str = DEFAULT_TITLE,
    source: str = "",
    image_root: str | Path | None = None,
    results_dir: str | Path = ".",
    embed_outside_root: bool = False,
    group_by: str | None = None,
) -> tuple[str, ReportSummary]:
    """The report page for batch output rows (``ResultRow`` records or JSON objects; deduped by the caller;
    shown in input-line order), with the grade sheet (rows carrying ``group_by``, default ``student``) and
    leaderboard (rows carrying ``system``) sections when rows carry those fields.

    Never raises on row contents: rows that are neither are skipped (``summary.skipped``)."""
    from .batch.result import ResultRow

    given = list(rows)
    records = [
        row if isinstance(row, ResultRow) else ResultRow.from_dict(row)
        for row in given
        if isinstance(row, (ResultRow, Mapping))
    ]
    ordered = sorted(records, key=_line_of)
    thumbs = Thumbnails(
        Path(image_root) if image_root is not None else None,
        Path(results_dir),
        embed_outside_root=embed_outside_root,
    )
    cards, missing, outside = [], 0, 0
    counts = {k: 0 for k in range(1, 6)}
    expected: list[float] = []
    for row in ordered:
        thumb, why = thumbs.uri(row)
        missing += thumb is None
        outside += why == "outside the image root"
        cards.append(_card(row, thumb, why))
        score = _score(row)
        if row.ok and score is not None:
            counts[score] += 1
        value = _number(row.expected_score)
        if row.ok and value is not None:
            expected.append(value)
    ok = sum(1 for r in ordered if r.ok)
    errors = len(ordered) - ok
    scored = sum(counts.values())
    mean = sum(k * n for k, n in counts.items()) / scored if scored else None
    mean_expected = math.fsum(expected) / len(expected) if expected else None
    if mean_expected is not None and not math.isfinite(mean_expected):
        mean_expected = None
    models = sorted({_text(r.model) for r in ordered if r.model})
    tiles = [
        ("rows", str(len(ordered))),
        ("judged", str(ok)),
        ("errors", str(errors)),
        ("mean score", f"{mean:.2f}" if mean is not None else "–"),
        ("mean expected", f"{mean_expected:.2f}" if mean_expected is not None else "–"),
    ]
    buttons = (
        [("all", "All")]
        + [(str(k), f"Score {k}") for k in range(1, 6)]
        + [("none", "No score"), ("error", "Errors")]
    )
    views = views_html(ordered, group_by)
    style = CSS + VIEWS_CSS if views else CSS
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{HEAD_CSP}
<title>{_e(title)}</title><style>{style}</style></head>
<body><header class="top"><h1>{_e(title)}</h1>
<p class="muted">{_e(source)} · model {_e(", ".join(models) or "?")} · generated \
{_e(time.strftime("%Y-%m-%d %H:%M"))} by edgejudge</p></header>
<section class="summary" id="summary">{
        "".join(f'<div class="tile"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in tiles)
    }</section>
<section class="dist"><h2>Score distribution</h2>{_chart(counts, errors)}</section>{views}
<nav class="filters" id="filters">{
        "".join(f'<button type="button" data-filter="{f}">{_e(label)}</button>' for f, label in buttons)
    }
<span id="shown-count" class="muted"></span></nav>
<main id="cards">{"".join(cards)}</main>
<script>{SCRIPT}</script></body></html>
"""
    summary = ReportSummary(
        output="",
        rows=len(ordered),
        ok=ok,
        errors=errors,
        images_missing=missing,
        mean_score=round(mean, 4) if mean is not None else None,
        bytes=len(page.encode("utf-8")),
        images_outside_root=outside,
        skipped=len(given) - len(records),
        group_rows=rows_carrying(ordered, group_by) if group_by else None,
    )
    return page, summary


def write_report(
    results_path: str | Path,
    output_path: str | Path,
    *,
    image_root: str | Path | None = None,
    title: str | None = None,
    embed_outside_root: bool = False,
    group_by: str | None = None,
) -> ReportSummary | ComplianceSummary:
    """Read a batch output file (last row per id wins) and write the report atomically (tmp + rename): the
    compliance report (``edgejudge.compliance``) when the file holds rule rows of a policy batch, else the
    plain report.

    Images are embedded from under ``image_root`` (default: the results file's folder) only, unless
    ``embed_outside_root``. ``group_by`` names the field of the grade sheet (default ``student``)."""
    from .batch.records import read_log

    results_path = Path(results_path)
    output_path = Path(output_path)
    check_paths(results_path, output_path)
    log = read_log(results_path)
    if not log.rows:
        raise InputError(
            f"no batch results in {results_path}",
            hint="run the batch first; the report reads its output",
        )
    options: dict[str, Any] = {
        "source": results_path.name,
        "image_root": image_root,
        "results_dir": results_path.parent,
        "embed_outside_root": embed_outside_root,
        "group_by": group_by,
    }
    if any(row.rule_id for row in log.rows.values()):
        from .compliance import render_compliance

        page, compliance = render_compliance(log, title=title, **options)
        write_page(output_path, page.encode("utf-8"))
        return replace(compliance, output=str(output_path))
    page, summary = render_report(log.rows.values(), title=title or DEFAULT_TITLE, **options)
    write_page(output_path, page.encode("utf-8"))  # mode 0o644: a page to share, as before
    return replace(summary, output=str(output_path))
