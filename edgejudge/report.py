"""The HTML report of a batch: ONE self-contained file (inline CSS, JS and images) for people.

Owns turning batch output rows into a page for moderators and teachers: a summary, the score distribution
(inline SVG), one card per row (the image as the judge saw it, the score, the probability of each score,
the expected score, the feedback, the inputs and the rubric; error rows shown distinctly) and a score
filter (small inline script; ``#filter=4,5`` or ``#filter=error`` in the URL applies one on load). Every
piece of user or model text is HTML-escaped; a Content-Security-Policy forbids any network access. Nothing
here prints.

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

import html
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _fs
from ._report_assets import CSS, SCRIPT
from .errors import EdgeJudgeError, InputError

if TYPE_CHECKING:
    from .batch.result import ResultRow

__all__ = ["ReportSummary", "render_report", "write_report", "DEFAULT_TITLE", "MAX_THUMBNAIL_FIT"]

DEFAULT_TITLE = "edgejudge report"
THUMBNAIL_SIDE = 224
MAX_THUMBNAIL_FIT = 1024  # a row's image_size above this is fitted at this size (the look is the same)
_DEFAULT_FIT_SIZE = 336  # a row without a usable image_size: the vision tower's usual size
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ReportSummary:
    """What ``write_report`` wrote: ``rows`` cards (``ok`` + ``errors``), ``images_missing`` of them without
    a thumbnail (no image, image not found, unreadable, or outside the image root), ``images_outside_root``
    of those because the image lies outside the image root, ``skipped`` input rows that were not JSON
    objects, ``bytes`` the size of the HTML file."""

    output: str
    rows: int
    ok: int
    errors: int
    images_missing: int
    mean_score: float | None
    bytes: int
    images_outside_root: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    """Any row value as text, never raising (huge ints, deep nesting), lone surrogates replaced."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:  # noqa: BLE001 - ValueError (int over 4300 digits), RecursionError, ...
            text = f"<{type(value).__name__} value>"
    return _SURROGATES.sub("\ufffd", text)


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _score(row: ResultRow) -> int | None:
    score = row.score
    return score if score is not None and 1 <= score <= 5 else None


def _user_path(text: Any) -> Path | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return _fs.user_path(text, what="image path")
    except EdgeJudgeError:
        return None


def _real(path: Path) -> Path | None:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


class _Thumbnails:
    """Data URIs of the images as judged (fitted with each row's size and fit), cached per file; only
    files under the image root (symlinks resolved) unless ``embed_outside_root``."""

    def __init__(self, image_root: Path | None, results_dir: Path, *, embed_outside_root: bool) -> None:
        self.image_root = image_root
        self.results_dir = results_dir
        self.root = _real(image_root if image_root is not None else results_dir)
        self.embed_outside_root = embed_outside_root
        self.cache: dict[tuple[str, int, str], str | None] = {}

    def candidates(self, row: ResultRow) -> list[Path]:
        name, recorded = _user_path(row.image), _user_path(row.image_path)
        paths: list[Path] = []
        if name is not None and name.is_absolute():
            paths.append(name)
        elif name is not None and self.image_root is not None:
            paths.append(self.image_root / name)
        if recorded is not None:
            paths.append(recorded)
        if name is not None and not name.is_absolute():
            paths.append(self.results_dir / name)
        return paths

    def inside(self, real: Path) -> bool:
        return self.embed_outside_root or (self.root is not None and real.is_relative_to(self.root))

    def uri(self, row: ResultRow) -> tuple[str | None, str]:
        """``(data URI, "")`` or ``(None, why)`` with why "no image", "image not found", "image
        unreadable" or "outside the image root"."""
        from .images import FIT_MODES, prepare_image, thumbnail_data_uri

        raw_size, raw_fit = row.image_size, row.image_fit
        size = raw_size if raw_size is not None and 1 <= raw_size else _DEFAULT_FIT_SIZE
        size = min(size, MAX_THUMBNAIL_FIT)
        fit = raw_fit if raw_fit in FIT_MODES else FIT_MODES[0]
        paths = self.candidates(row)
        why = "no image" if not paths and not row.image else "image not found"
        for path in paths:
            real = _real(path)
            if real is None:
                continue
            if not self.inside(real):
                why = "outside the image root"
                continue
            key = (str(real), size, fit)
            if key not in self.cache:
                try:  # the resolved path: what was checked is what is opened
                    self.cache[key] = thumbnail_data_uri(prepare_image(real, size, fit).image, THUMBNAIL_SIDE)
                except (EdgeJudgeError, OSError):
                    self.cache[key] = None
            if self.cache[key] is not None:
                return self.cache[key], ""
            if os.path.lexists(real):
                why = "image unreadable"
        return None, why


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
) -> tuple[str, ReportSummary]:
    """The report page for batch output rows (``ResultRow`` records or JSON objects; deduped by the caller;
    shown in input-line order).

    Never raises on row contents: rows that are neither are skipped (``summary.skipped``)."""
    from .batch.result import ResultRow

    given = list(rows)
    records = [
        row if isinstance(row, ResultRow) else ResultRow.from_dict(row)
        for row in given
        if isinstance(row, (ResultRow, Mapping))
    ]
    ordered = sorted(records, key=_line_of)
    thumbs = _Thumbnails(
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
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body><header class="top"><h1>{_e(title)}</h1>
<p class="muted">{_e(source)} · model {_e(", ".join(models) or "?")} · generated \
{_e(time.strftime("%Y-%m-%d %H:%M"))} by edgejudge</p></header>
<section class="summary" id="summary">{
        "".join(f'<div class="tile"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in tiles)
    }</section>
<section class="dist"><h2>Score distribution</h2>{_chart(counts, errors)}</section>
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
    )
    return page, summary


def write_report(
    results_path: str | Path,
    output_path: str | Path,
    *,
    image_root: str | Path | None = None,
    title: str | None = None,
    embed_outside_root: bool = False,
) -> ReportSummary:
    """Read a batch output file (last row per id wins) and write the report atomically (tmp + rename).

    Images are embedded from under ``image_root`` (default: the results file's folder) only, unless
    ``embed_outside_root``."""
    from .batch import read_results

    results_path = Path(results_path)
    output_path = Path(output_path)
    fd, _ = _fs.open_regular(  # not found / a folder / a device such as /dev/null: say which
        results_path,
        label=str(results_path),
        what="results file",
        max_bytes=None,
        error=InputError,
    )
    os.close(fd)
    if output_path.is_dir():
        raise InputError(
            f"the report path is a folder: {output_path}",
            hint="pass a file name, e.g. report.html",
            about="output",
        )
    if _fs.same_file(output_path, results_path) or _real(output_path) == _real(results_path):
        raise InputError(
            "the report would overwrite the results file",
            hint="write the report to another file, e.g. report.html",
            about="output",
        )
    rows = list(read_results(results_path).values())
    if not rows:
        raise InputError(
            f"no batch results in {results_path}",
            hint="run the batch first; the report reads its output",
        )
    page, summary = render_report(
        rows,
        title=title or DEFAULT_TITLE,
        source=results_path.name,
        image_root=image_root,
        results_dir=results_path.parent,
        embed_outside_root=embed_outside_root,
    )
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        _fs.atomic_write(output_path, page.encode("utf-8"), mode=0o644)  # a page to share, as before
    except OSError as err:
        raise InputError(
            f"cannot write the report {output_path}: {err.strerror or err}",
            hint="write the report into a folder you can write to",
            about="output",
        ) from None
    return ReportSummary(**{**summary.to_dict(), "output": str(output_path)})
