"""The compliance report of a policy batch: ONE self-contained HTML page a moderator can hand on.

Owns turning a policy log (``batch.records.read_log``: rule rows, decision, run and override records) into a
page: a summary (items, the count of each decision that stands, overrides, and per rule the failures by
severity), one card per item (the image as judged, the decision — an overridden one shown as such, with the
computed decision beside it —, the severity, a table of the rules with score, ``p_pass``, passed and state,
each rule's feedback as the evidence, the instruction and the response), filters (decision, rule, severity
and a search over id, response and feedback; ``#decision=violation`` in the URL applies on load), a print
stylesheet (controls hidden, cards kept whole, evidence expanded) and an audit block (per run record: the
edgejudge version, model and projector files with their sha256, the policies, the prompt template's sha256,
the settings, the input file's sha256, start and end; what an older log lacks reads "not recorded"). The
grade sheet and leaderboard sections (``_report_views``) follow when the rows carry their fields.

Items come from ``records.policy_items`` (the decision recomputed from the rule rows, the override that
applies to those results). Rows are untrusted: every text is escaped (``_report_html.esc``), and values of
the wrong type are shown as text or "not recorded", never an error. Images follow the plain report's
image-root rules (``_report_html.Thumbnails``). Nothing here prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compliance_assets import COMPLIANCE_CSS, COMPLIANCE_SCRIPT
from ._report_assets import CSS
from ._report_html import HEAD_CSP, Thumbnails, esc, number, text
from ._report_views import views_html
from .decision import DECISIONS, SEVERITIES

if TYPE_CHECKING:
    from .batch.records import PolicyItem, PolicyLog, RunRecord
    from .batch.result import ResultRow
    from .decision import RuleOutcome

__all__ = ["ComplianceSummary", "render_compliance", "decision_text", "DEFAULT_TITLE"]

DEFAULT_TITLE = "edgejudge compliance report"
_NOT_RECORDED = '<span class="nr">not recorded</span>'
_LABELS = {
    "compliant": "compliant",
    "violation": "violation",
    "needs_review": "needs review",
    "error": "error",
}


@dataclass(frozen=True)
class ComplianceSummary:
    """What the compliance report holds: ``items`` cards (one per input row judged against a policy) from
    ``rule_rows`` rule rows; the count of each decision that stands (overrides applied); ``overridden``
    items with a person's decision; ``other_rows`` rows of the log that are not rule rows (not shown);
    ``runs`` run records in the audit block; images as in ``report.ReportSummary``."""

    output: str
    items: int
    rule_rows: int
    compliant: int
    violation: int
    needs_review: int
    error: int
    overridden: int
    images_missing: int
    bytes: int
    images_outside_root: int = 0
    other_rows: int = 0
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "compliance", **asdict(self)}


def decision_text(item: PolicyItem) -> str:
    """The decision that stands, in words: "violation (overridden by ana, 2026-12-02: note; computed:
    needs_review)" for an overridden item, else the computed decision."""
    override = item.override
    if override is None:
        return item.decision.decision
    by = ", ".join(part for part in (override.reviewer, override.at[:10]) if part) or "a reviewer"
    note = f": {override.note}" if override.note else ""
    return f"{override.decision} (overridden by {by}{note}; computed: {item.decision.decision})"


def _value(value: Any) -> str:
    """A recorded value escaped, or "not recorded" for nothing (None, "", an empty mapping or list)."""
    if value is None or value == "" or (isinstance(value, (Mapping, list, tuple)) and not value):
        return _NOT_RECORDED
    return esc(value)


def _setting(value: Any) -> str:
    """A setting's value as JSON writes it (``null``, ``true``, ``0.9``); text as it is."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return text(value)


def _fmt(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "–"


def _passed(value: bool | None) -> str:
    return "yes" if value is True else "no" if value is False else "–"


def _rule_rows_html(item: PolicyItem) -> str:
    cells = []
    for row, result in zip(item.rules, item.outcomes, strict=False):
        score = row.score if row.ok else None
        cells.append(
            f'<tr class="st-{esc(result.state)}"><td class="rule">{esc(row.rule_id)}'
            f"<small>{esc(row.rule_title)}</small></td><td>{esc(row.severity or '–')}</td>"
            f"<td>{esc(score if score is not None else '–')}</td><td>{_fmt(number(row.p_pass))}</td>"
            f"<td>{_passed(row.passed if row.ok else None)}</td><td>{esc(result.state)}</td></tr>"
        )
    return (
        '<table class="rules"><thead><tr><th>rule</th><th>severity</th><th>score</th><th>p_pass</th>'
        f"<th>passed</th><th>state</th></tr></thead><tbody>{''.join(cells)}</tbody></table>"
    )


def _evidence(item: PolicyItem) -> str:
    parts = []
    for row in item.rules:
        if row.ok:
            body = f'<p class="searchable">{esc(row.feedback or "(no feedback)")}</p>'
        else:
            hint = f'<p class="muted">{esc(row.hint)}</p>' if row.hint else ""
            body = f'<p class="errmsg searchable">{esc(row.error or "unknown error")}</p>{hint}'
        parts.append(
            f'<div class="field ev"><h4>{esc(row.rule_id)} · {esc(row.rule_title or "")}</h4>{body}</div>'
        )
    summary = "<summary>evidence: the judge's feedback per rule</summary>"
    return f'<details class="evidence">{summary}{"".join(parts)}</details>'


def _field(label: str, value: Any, *, cls: str = "") -> str:
    if value is None or value == "":
        return ""
    return f'<div class="field {cls}"><h4>{esc(label)}</h4><p>{esc(value)}</p></div>'


def _not_passing(outcomes: Sequence[RuleOutcome]) -> list[RuleOutcome]:
    return [o for o in outcomes if o.state != "pass"]


def _card(item: PolicyItem, thumb: str | None, why: str) -> str:
    first = item.first
    final = item.final if item.final in DECISIONS else "error"
    severity = item.final_severity
    bad = _not_passing(item.outcomes)
    rules_attr = json.dumps([o.rule_id for o in bad], ensure_ascii=True)
    found = {o.severity for o in bad} | {severity}
    severities = [s for s in SEVERITIES if s in found]
    image_html = (
        f'<img class="thumb" src="{esc(thumb)}" alt="{esc(first.image)} as judged">'
        if thumb
        else f'<div class="thumb missing">{esc(why)}<br><small>{esc(first.image)}</small></div>'
    )
    overridden = " overridden" if item.override is not None else ""
    policy = item.policy
    policy_line = " ".join(text(policy.get(k)) for k in ("name", "version") if policy.get(k))
    details = (
        _field("Reference answer", first.reference if first.reference else "(none given)")
        + _field("Image", first.image)
        + _field("Model", f"{text(first.model or '?')} · image fit {text(first.image_fit or '?')}")
        + _field("Policy", f"{policy_line or '?'} · sha256 {text(policy.get('sha256') or '?')}")
    )
    return (
        f'<article class="card d-{final}{overridden}" data-decision="{final}" data-rules="{esc(rules_attr)}" '
        f'data-severities="{" ".join(severities)}" data-id="{esc(item.id)}">{image_html}<div class="body">'
        f'<header><span class="rid searchable">{esc(item.id)}</span>'
        f'<span class="badge bd-{final}">{esc(_LABELS[final])}</span></header>'
        f'<p class="decision">decision: <b>{esc(decision_text(item))}</b>'
        f" · severity: <b>{esc(severity or '–')}</b></p>"
        f"{_rule_rows_html(item)}{_evidence(item)}"
        f"{_field('Instruction', first.instruction)}"
        f"{_field('Response', first.response, cls='searchable-field')}"
        f"<details><summary>inputs and policy</summary>{details}</details></div></article>"
    )


def _rule_table(items: Sequence[PolicyItem]) -> str:
    order: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    other: dict[tuple[str, str], int] = {}
    for item in items:
        for row, result in zip(item.rules, item.outcomes, strict=False):
            rule = result.rule_id
            order.setdefault(rule, text(row.rule_title))
            if result.state == "fail":
                counts[rule, result.severity] = counts.get((rule, result.severity), 0) + 1
            other[rule, result.state] = other.get((rule, result.state), 0) + 1
    head = "".join(f"<th>{s}</th>" for s in SEVERITIES)
    body = []
    for rule, title in order.items():
        cells = "".join(f"<td>{counts.get((rule, s), 0) or ''}</td>" for s in SEVERITIES)
        body.append(
            f"<tr><td>{esc(rule)}</td><td>{esc(title)}</td>{cells}"
            + "".join(f"<td>{other.get((rule, state), 0)}</td>" for state in ("uncertain", "error", "pass"))
            + "</tr>"
        )
    return (
        '<table class="grid" id="rule-failures"><thead><tr><th>rule</th><th>title</th>'
        f"{head}<th>uncertain</th><th>errors</th><th>passed</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        '<p class="muted">Failures (a rule failed with confidence) per rule, in the column of the rule\'s '
        "severity; uncertain: p_pass inside the review band.</p>"
    )


def _end_of(rows: Sequence[ResultRow], start: str, until: str | None) -> str | None:
    times = [
        r.judged_at
        for r in rows
        if r.judged_at and r.judged_at >= start and (until is None or r.judged_at < until)
    ]
    return max(times) if times else None


def _run_html(
    run: RunRecord | None, number_: int, end: str | None, policies: Sequence[Mapping[str, Any]]
) -> str:
    def get(mapping: Mapping[str, Any], key: str) -> Any:
        return mapping.get(key) if isinstance(mapping, Mapping) else None

    model = run.model if run else {}
    mmproj = run.mmproj if run else {}
    source = run.input if run else {}
    used = run.policies if run and run.policies else policies
    policy_lines = "<br>".join(
        f"{_value(get(p, 'name'))} version {_value(get(p, 'version'))} · sha256 {_value(get(p, 'sha256'))}"
        for p in used
    )
    settings = run.settings if run else {}
    settings_html = (
        "<br>".join(f"{esc(k)} = {esc(_setting(v))}" for k, v in settings.items())
        if settings
        else _NOT_RECORDED
    )
    band = f"{run.review_band[0]:g}–{run.review_band[1]:g}" if run else None
    fields = [
        ("edgejudge version", _value(run.edgejudge if run else None)),
        ("model", f"{_value(get(model, 'name'))} · file {_value(get(model, 'file'))}"),
        ("model sha256", _value(get(model, "sha256"))),
        ("projector (mmproj)", _value(get(mmproj, "file"))),
        ("projector sha256", _value(get(mmproj, "sha256"))),
        ("policies", policy_lines or _NOT_RECORDED),
        ("prompt template sha256", _value(run.template_sha256 if run else None)),
        ("settings", settings_html),
        ("review band (p_pass)", _value(band)),
        ("input file", _value(get(source, "file"))),
        ("input sha256", _value(get(source, "sha256"))),
        ("started", _value(run.started_at if run else None)),
        ("ended (latest judgment)", _value(end)),
    ]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in fields)
    title = f"Run {number_}" if run else "Run (no run record in this log: written by an older edgejudge)"
    return f'<div class="run"><h3>{esc(title)}</h3><table class="audit-table">{rows}</table></div>'


def _audit(log: PolicyLog, items: Sequence[PolicyItem]) -> str:
    rows = [r for r in log.rows.values() if r.rule_id]
    seen: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for item in items:
        seen.setdefault(tuple(text(item.policy.get(k)) for k in ("name", "version", "sha256")), item.policy)
    policies = list(seen.values())
    runs = sorted(log.runs, key=lambda r: r.started_at)
    if not runs:
        blocks = [_run_html(None, 0, _end_of(rows, "", None), policies)]
    else:
        blocks = []
        for k, run in enumerate(runs):
            until = runs[k + 1].started_at if k + 1 < len(runs) else None
            blocks.append(_run_html(run, k + 1, _end_of(rows, run.started_at if k else "", until), policies))
    from . import __version__

    return (
        '<section class="audit" id="audit"><h2>Audit trail</h2>'
        f'<p class="muted">Report written by edgejudge {esc(__version__)} on '
        f"{esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}; {len(runs)} run record(s) in the log.</p>"
        f"{''.join(blocks)}</section>"
    )


def _select(name: str, label: str, options: Sequence[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(t)}</option>' for v, t in options)
    return (
        f'<label>{esc(label)} <select id="f-{name}" data-key="{name}">'
        f'<option value="">all</option>{opts}</select></label>'
    )


def render_compliance(
    log: PolicyLog,
    *,
    title: str | None = None,
    source: str = "",
    image_root: str | Path | None = None,
    results_dir: str | Path = ".",
    embed_outside_root: bool = False,
    group_by: str | None = None,
) -> tuple[str, ComplianceSummary]:
    """The compliance page of a policy log and what it holds. Never raises on the log's contents."""
    from .batch.records import policy_items

    title = title or DEFAULT_TITLE
    items = policy_items(log.rows.values(), log.decisions, log.overrides)
    thumbs = Thumbnails(
        Path(image_root) if image_root is not None else None,
        Path(results_dir),
        embed_outside_root=embed_outside_root,
    )
    cards, missing, outside = [], 0, 0
    for item in items:
        thumb, why = thumbs.uri(item.first)
        missing += thumb is None
        outside += why == "outside the image root"
        cards.append(_card(item, thumb, why))
    counts = {
        d: sum(1 for i in items if (i.final if i.final in DECISIONS else "error") == d) for d in DECISIONS
    }
    overridden = sum(1 for i in items if i.override is not None)
    rule_rows = sum(1 for r in log.rows.values() if r.rule_id)
    tiles = (
        [("items", len(items))] + [(_LABELS[d], counts[d]) for d in DECISIONS] + [("overridden", overridden)]
    )
    rule_ids: dict[str, None] = {}
    for item in items:
        for row in item.rules:
            rule_ids.setdefault(text(row.rule_id), None)
    controls = (
        '<nav class="filters controls" id="filters">'
        + _select("decision", "Decision", [(d, _LABELS[d]) for d in DECISIONS])
        + _select("rule", "Rule not passed", [(r, r) for r in rule_ids])
        + _select("severity", "Severity", [(s, s) for s in SEVERITIES])
        + '<label>Search <input type="search" id="f-q" data-key="q" '
        'placeholder="id, response, feedback"></label>'
        '<button type="button" id="f-clear">Clear</button><span id="shown-count" class="muted"></span></nav>'
    )
    names = sorted(
        {" ".join(text(i.policy.get(k)) for k in ("name", "version") if i.policy.get(k)) for i in items}
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{HEAD_CSP}
<title>{esc(title)}</title><style>{CSS}{COMPLIANCE_CSS}</style></head>
<body class="compliance"><header class="top"><h1>{esc(title)}</h1>
<p class="muted">{esc(source)} · policy {esc(", ".join(n for n in names if n) or "?")} · generated \
{esc(time.strftime("%Y-%m-%d %H:%M"))} by edgejudge</p></header>
<section class="summary" id="summary">{
        "".join(
            f'<div class="tile t-{esc(k.replace(" ", "_"))}"><b>{v}</b><span>{esc(k)}</span></div>'
            for k, v in tiles
        )
    }</section>
<section class="rulesum"><h2>Failures per rule and severity</h2>{_rule_table(items)}</section>
{views_html(log.rows.values(), group_by)}
{controls}
<main id="cards">{"".join(cards)}</main>
{_audit(log, items)}
<script>{COMPLIANCE_SCRIPT}</script></body></html>
"""
    summary = ComplianceSummary(
        output="",
        items=len(items),
        rule_rows=rule_rows,
        compliant=counts["compliant"],
        violation=counts["violation"],
        needs_review=counts["needs_review"],
        error=counts["error"],
        overridden=overridden,
        images_missing=missing,
        bytes=len(page.encode("utf-8")),
        images_outside_root=outside,
        other_rows=len(log.rows) - rule_rows,
        runs=len(log.runs),
    )
    return page, summary
