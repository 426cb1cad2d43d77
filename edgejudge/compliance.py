"""The compliance report of a policy batch: ONE self-contained HTML page a moderator can hand on.

Owns turning a policy log (``batch.records.read_log``: rule rows, decision, run and override records) into a
page: a summary (items, the count of each decision that stands, overrides, and per rule the failures by
severity), one card per item (the image as judged, the decision — an overridden one shown as such, with the
computed decision beside it —, the severity, a table of the rules with score, ``p_pass``, passed and state,
each rule's feedback as the evidence, the instruction and the response), filters (decision, rule, severity and
a search over id, response and feedback; ``#decision=violation`` in the URL applies on load), a print
stylesheet (controls hidden, cards kept whole, evidence expanded) and an audit block (``_compliance_audit``:
the edgejudge version, model and projector files with their sha256, the policies, the prompt template's
sha256, the settings, the input file's sha256, start and end; what an older log lacks reads "not recorded").
The grade sheet and leaderboard sections (``_report_views``) follow when the rows carry their fields.

Items come from ``records.policy_items`` (the decision recomputed from the rule rows, the override that
applies to those results). An incomplete item (the batch has not judged every rule of it yet: cut short by a
kill, or read while its batch runs) is its own category, ``incomplete``: counted apart in the summary, a value
of the decision filter, its badge, never a decision its partial rules would give. A row whose policy could not
be loaded is an item of one rule row with ``rule_id`` "*" (``records.POLICY_ERROR_RULE``): its card shows the
error, and it counts as an error (it names no rule of the filter or of the failures table). Rows are
untrusted: every text is escaped (``_report_html.esc``), and values of the wrong type are shown as text or
"not recorded", never an error. Images follow the plain report's image-root rules
(``_report_html.Thumbnails``). Nothing here prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compliance_assets import COMPLIANCE_CSS, COMPLIANCE_SCRIPT
from ._compliance_audit import audit_html
from ._report_assets import CSS
from ._report_html import HEAD_CSP, Thumbnails, esc, number, text
from ._report_views import rows_carrying, views_html
from .batch.records import POLICY_ERROR_RULE
from .decision import DECISIONS, INCOMPLETE, SEVERITIES

if TYPE_CHECKING:
    from .batch.records import PolicyItem, PolicyLog
    from .batch.result import ResultRow
    from .decision import RuleOutcome

__all__ = [
    "ComplianceSummary",
    "render_compliance",
    "decision_text",
    "DEFAULT_TITLE",
    "CATEGORIES",
    "INCOMPLETE_WHY",
]

DEFAULT_TITLE = "edgejudge compliance report"
#: What the report sorts an item into: the decisions, then the items not judged on every rule yet.
CATEGORIES = (*DECISIONS, INCOMPLETE)
#: Why an item is incomplete and what to do about it (said by the report page, the report command, review).
INCOMPLETE_WHY = "the batch has not judged every rule yet; run it again"
_LABELS = {
    "compliant": "compliant",
    "violation": "violation",
    "needs_review": "needs review",
    "error": "error",
    "incomplete": "incomplete",
}


@dataclass(frozen=True)
class ComplianceSummary:
    """What the compliance report holds: ``items`` cards (one per input row judged against a policy) from
    ``rule_rows`` rule rows; the count of each decision that stands (overrides applied) and of the
    ``incomplete`` items (not every rule judged yet); ``overridden`` items with a person's decision;
    ``other_rows`` rows of the log judged without a policy (not shown); ``runs`` run records in the audit
    block; ``group_rows`` the rows carrying the grade sheet's ``group_by`` field when one is given;
    images as in ``report.ReportSummary``."""

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
    incomplete: int = 0
    group_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "compliance", **asdict(self)}


def decision_text(item: PolicyItem) -> str:
    """The decision that stands, in words: "violation (overridden by ana, 2026-12-02: note; computed:
    needs_review)" for an overridden item, "incomplete: …" (``INCOMPLETE_WHY``) for an incomplete one,
    else the computed decision."""
    override = item.override
    if override is None:
        if not item.complete:
            return f"{INCOMPLETE}: {INCOMPLETE_WHY}"
        return item.decision.decision
    by = ", ".join(part for part in (override.reviewer, override.at[:10]) if part) or "a reviewer"
    note = f": {override.note}" if override.note else ""
    return f"{override.decision} (overridden by {by}{note}; computed: {item.decision.decision})"


def _fmt(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None else "–"


def _passed(value: bool | None) -> str:
    return "yes" if value is True else "no" if value is False else "–"


def _rule_name(row: ResultRow) -> tuple[str, str]:
    """A rule row's id and title as the card shows them ("*" is the whole policy, which could not load)."""
    if row.rule_id == POLICY_ERROR_RULE:
        return "the policy", "could not be loaded: no rule was judged"
    return text(row.rule_id), text(row.rule_title or "")


def _rule_rows_html(item: PolicyItem) -> str:
    cells = []
    for row, result in zip(item.rules, item.outcomes, strict=False):
        score = row.score if row.ok else None
        name, title = _rule_name(row)
        cells.append(
            f'<tr class="st-{esc(result.state)}"><td class="rule">{esc(name)}'
            f"<small>{esc(title)}</small></td><td>{esc(row.severity or '–')}</td>"
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
        name, title = _rule_name(row)
        parts.append(f'<div class="field ev"><h4>{esc(name)} · {esc(title)}</h4>{body}</div>')
    summary = "<summary>evidence: the judge's feedback per rule</summary>"
    return f'<details class="evidence">{summary}{"".join(parts)}</details>'


def _field(label: str, value: Any, *, cls: str = "") -> str:
    if value is None or value == "":
        return ""
    return f'<div class="field {cls}"><h4>{esc(label)}</h4><p>{esc(value)}</p></div>'


def _not_passing(outcomes: Sequence[RuleOutcome]) -> list[RuleOutcome]:
    return [o for o in outcomes if o.state != "pass"]


def _category(item: PolicyItem) -> str:
    """The category an item is counted, filtered and badged under (``CATEGORIES``)."""
    return item.final if item.final in CATEGORIES else "error"


def _card(item: PolicyItem, thumb: str | None, why: str) -> str:
    first = item.first
    final = _category(item)
    severity = item.final_severity
    bad = [o for o in _not_passing(item.outcomes) if o.rule_id != POLICY_ERROR_RULE]  # "*" is no rule
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
            if rule == POLICY_ERROR_RULE:  # no rule of the policy: counted among the items' errors
                continue
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
    counts = {d: sum(1 for i in items if _category(i) == d) for d in CATEGORIES}
    overridden = sum(1 for i in items if i.override is not None)
    rule_rows = sum(1 for r in log.rows.values() if r.rule_id)
    listed = [d for d in CATEGORIES if d != INCOMPLETE or counts[d]]  # a complete log has no such tile
    tiles = [("items", len(items))] + [(_LABELS[d], counts[d]) for d in listed] + [("overridden", overridden)]
    rule_ids: dict[str, None] = {}
    for item in items:
        for row in item.rules:
            if row.rule_id != POLICY_ERROR_RULE:
                rule_ids.setdefault(text(row.rule_id), None)
    incomplete_note = (
        f'<p class="incomplete-note" id="incomplete-note">{counts[INCOMPLETE]} item(s) incomplete: '
        f"{esc(INCOMPLETE_WHY)} (their decision is not known until every rule is judged).</p>"
        if counts[INCOMPLETE]
        else ""
    )
    controls = (
        '<nav class="filters controls" id="filters">'
        + _select("decision", "Decision", [(d, _LABELS[d]) for d in CATEGORIES])
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
    }</section>{incomplete_note}
<section class="rulesum"><h2>Failures per rule and severity</h2>{_rule_table(items)}</section>
{views_html(log.rows.values(), group_by, log.decisions)}
{controls}
<main id="cards">{"".join(cards)}</main>
{audit_html(log, items)}
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
        incomplete=counts[INCOMPLETE],
        group_rows=rows_carrying(log.rows.values(), group_by) if group_by else None,
    )
    return page, summary
