"""Hand-made policy logs for the compliance report and CSV tests, written in the documented record format
(``batch/records.py``): rule rows through ``ResultRow(...).to_dict()``, decision, run and override records
through their classes, one JSON object a line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgejudge.batch.records import DecisionRecord, OverrideRecord, RunRecord, rules_key
from edgejudge.batch.result import ResultRow
from edgejudge.decision import decide, outcome
from edgejudge.images import synthetic_image

POLICY = {"name": "marketplace-listing", "version": "1.2", "sha256": "ab" * 32}
RULES = (
    ("prohibited-items", "Prohibited items", "critical"),
    ("misleading-claims", "Misleading claims", "major"),
    ("personal-data", "Personal data", "minor"),
)
XSS = '<script>document.body.setAttribute("data-pwned","1")</script><img src=x onerror="alert(1)">'


def probs_for(p_pass: float) -> dict[str, float]:
    """A score distribution whose mass at 4 and 5 (pass_at 4) is ``p_pass``."""
    return {
        "1": 0.0,
        "2": round(1 - p_pass, 6),
        "3": 0.0,
        "4": round(p_pass / 2, 6),
        "5": round(p_pass / 2, 6),
    }


def rule_row(
    item: str,
    line: int,
    rule: tuple[str, str, str],
    p_pass: float | None,
    *,
    image: str = "house.png",
    feedback: str = "Looks fine.",
    judged_at: str = "2026-12-02T01:00:00Z",
    extra: Sequence[tuple[str, Any]] = (),
    response: str = "A red bicycle, barely used.",
    policy: Mapping[str, str] = POLICY,
    image_size: int = 336,
) -> dict[str, Any]:
    rule_id, title, severity = rule
    key = hashlib.sha256(f"{item}/{rule_id}".encode()).hexdigest()
    common: dict[str, Any] = {
        "id": item,
        "line": line,
        "key": key,
        "image_size": image_size,
        "settings": {"model": "tiny", "image_fit": "crop"},
        "image": image,
        "instruction": "A listing photo for a second-hand marketplace",
        "response": response,
        "rubric": f"{policy['name']}/{rule_id}",
        "model": "tiny",
        "image_fit": "crop",
        "extra": tuple(extra),
        "policy": dict(policy),
        "rule_id": rule_id,
        "rule_title": title,
        "severity": severity,
        "pass_at": 4,
        "judged_at": judged_at,
    }
    if p_pass is None:
        row = ResultRow(status="error", error="the model stopped early", hint="raise --max-tokens", **common)
    else:
        score = 5 if p_pass >= 0.5 else 2
        row = ResultRow(
            status="ok",
            score=score,
            expected_score=3.5,
            score_probs=probs_for(p_pass),
            feedback=feedback,
            passed=score >= 4,
            p_pass=p_pass,
            **common,
        )
    return row.to_dict()


def decision_record(
    rows: Iterable[Mapping[str, Any]],
    *,
    policy: Mapping[str, str] = POLICY,
    decided_at: str = "2026-12-02T01:00:05Z",
) -> dict[str, Any]:
    """The decision record the batch writes once every rule row of an item is in (it makes the item
    complete: its ``key`` is ``rules_key`` of the rows' keys)."""
    rows = list(rows)
    records = [ResultRow.from_dict(r) for r in rows]
    outcomes = [outcome(r.rule_id or "", r.severity or "major", r.passed, r.p_pass) for r in records]
    return DecisionRecord(
        id=records[0].id,
        line=records[0].line or 0,
        key=rules_key(r.key for r in records),
        policy=dict(policy),
        decision=decide(outcomes),
        rules=tuple(r.rule_id or "" for r in records),
        decided_at=decided_at,
    ).to_dict()


def run_record(started: str = "2026-12-02T00:59:00Z") -> dict[str, Any]:
    return RunRecord(
        started_at=started,
        edgejudge="0.1.0",
        model={"name": "prometheus-vision-7b", "file": "judge.gguf", "sha256": "11" * 32},
        mmproj={"file": "judge-mmproj.gguf", "sha256": "22" * 32},
        policies=(dict(POLICY),),
        template_sha256="33" * 32,
        input={"file": "in.jsonl", "sha256": "44" * 32},
        settings={"temperature": 0.0, "max_tokens": 64, "seed": 7},
    ).to_dict()


def write_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def policy_log(work_dir: Path, *, run: bool = True, extra_rows: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Five items: clean (compliant), bad (violation, critical), unsure (needs_review, then overridden
    to violation by ana), broken (an error row), hostile (script tags in id and feedback; compliant)."""
    synthetic_image(96, seed=3).save(work_dir / "house.png")
    p, m, d = RULES
    items = {
        "clean": [rule_row("clean", 1, r, 0.95) for r in RULES],
        "bad": [
            rule_row("bad", 2, p, 0.05, feedback="A replica handgun is offered for sale."),
            rule_row("bad", 2, m, 0.9),
            rule_row("bad", 2, d, 0.92),
        ],
        "unsure": [
            rule_row("unsure", 3, p, 0.97),
            rule_row("unsure", 3, m, 0.5, feedback="The 'like new' claim is hard to check."),
            rule_row("unsure", 3, d, 0.9),
        ],
        "broken": [
            rule_row("broken", 4, p, 0.9),
            rule_row("broken", 4, m, None),
            rule_row("broken", 4, d, 0.9),
        ],
        '"><script>x</script>': [
            rule_row('"><script>x</script>', 5, r, 0.9, feedback=XSS, response='=HYPERLINK("http://x")')
            for r in RULES
        ],
    }
    lines: list[Mapping[str, Any]] = [run_record()] if run else []
    for rows in items.values():
        lines.extend(rows)
        lines.append(decision_record(rows))
    lines.extend(extra_rows)
    path = write_lines(work_dir / "out.jsonl", lines)
    unsure = [ResultRow.from_dict(r) for r in items["unsure"]]
    key = rules_key(r.key for r in unsure)
    override = OverrideRecord(
        id="unsure",
        line=3,
        key=key,
        decision="violation",
        severity="major",
        previous="needs_review",
        reviewer="ana",
        at="2026-12-02T02:10:00Z",
        note="claim is false",
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(override.to_dict()) + "\n")
    return path
