"""The audit block of the compliance report (``edgejudge.compliance``): what a reader needs to trust or redo
a policy run. Nothing here prints.

``audit_html(log, items)`` gives one section with a block per run record of the log (sorted by start): the
edgejudge version, model and projector files with their sha256 (marked "registry record" when the run took
the registry's recorded hash rather than hashing the file), the policies, the prompt template's sha256,
the settings, the review band, the input file's sha256, the start and the end (the latest ``judged_at`` of
the rule rows before the next run started). A log without run records (written by an older edgejudge) gets
one block whose fields read "not recorded", with the policies taken from the items. Records come from files
anyone can edit: every value is escaped (``_report_html.esc``) and a missing or mistyped one reads "not
recorded".
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._report_html import esc, text

if TYPE_CHECKING:
    from .batch.records import PolicyItem, PolicyLog, RunRecord
    from .batch.result import ResultRow

__all__ = ["audit_html", "NOT_RECORDED"]

NOT_RECORDED = '<span class="nr">not recorded</span>'


def _value(value: Any) -> str:
    """A recorded value escaped, or "not recorded" for nothing (None, "", an empty mapping or list)."""
    if value is None or value == "" or (isinstance(value, (Mapping, list, tuple)) and not value):
        return NOT_RECORDED
    return esc(value)


def _setting(value: Any) -> str:
    """A setting's value as JSON writes it (``null``, ``true``, ``0.9``); text as it is."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return text(value)


#: How the audit names where a model file's sha256 came from (``RunRecord.model["sha256_from"]``).
_HASH_FROM = {"registry": "registry record", "file": "file hashed by the run"}


def _file_hash(mapping: Any) -> str:
    """A model or projector file's sha256, marked "(registry record)" when the run took the hash the
    registry recorded for a file of that size instead of hashing the file."""
    if not isinstance(mapping, Mapping):
        return NOT_RECORDED
    value = _value(mapping.get("sha256"))
    source = mapping.get("sha256_from")
    origin = _HASH_FROM.get(source) if isinstance(source, str) and value != NOT_RECORDED else None
    return f'{value} <small class="muted">({origin})</small>' if origin else value


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
        else NOT_RECORDED
    )
    band = f"{run.review_band[0]:g}–{run.review_band[1]:g}" if run else None
    fields = [
        ("edgejudge version", _value(run.edgejudge if run else None)),
        ("model", f"{_value(get(model, 'name'))} · file {_value(get(model, 'file'))}"),
        ("model sha256", _file_hash(model)),
        ("projector (mmproj)", _value(get(mmproj, "file"))),
        ("projector sha256", _file_hash(mmproj)),
        ("policies", policy_lines or NOT_RECORDED),
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


def audit_html(log: PolicyLog, items: Sequence[PolicyItem]) -> str:
    """The audit section of the compliance page of ``log`` (see the module docstring)."""
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
