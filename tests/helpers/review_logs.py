"""Hand-written policy logs for the review tests, in the documented record format (``batch/records.py``):
rule rows through ``ResultRow(...).to_dict()`` and decision records through ``DecisionRecord``, one JSON
object a line, beside a real image file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgejudge.batch.records import DecisionRecord, rules_key
from edgejudge.batch.result import ResultRow
from edgejudge.decision import decide, outcome
from edgejudge.images import synthetic_image

POLICY = {"name": "marketplace-listing", "version": "1.0", "sha256": "cd" * 32}
#: (rule id, title, severity)
RULES = (
    ("prohibited-items", "Prohibited items", "critical"),
    ("misleading-claims", "Misleading claims", "major"),
    ("personal-data", "Personal data", "minor"),
)
#: item id -> p_pass per rule (None: an error row)
ITEMS: dict[str, tuple[float | None, ...]] = {
    "clean": (0.95, 0.9, 0.97),  # compliant
    "unsure-1": (0.96, 0.5, 0.9),  # needs_review (misleading-claims uncertain: major)
    "bad": (0.05, 0.9, 0.9),  # violation (critical)
    "unsure-2": (0.6, 0.9, 0.4),  # needs_review (prohibited-items and personal-data uncertain: critical)
}


def rule_row(item: str, line: int, rule: tuple[str, str, str], p_pass: float | None) -> dict[str, Any]:
    rule_id, title, severity = rule
    common: dict[str, Any] = {
        "id": item,
        "line": line,
        "key": hashlib.sha256(f"{item}/{rule_id}".encode()).hexdigest(),
        "image_size": 64,
        "settings": {"model": "tiny", "image_fit": "crop"},
        "image": "listing.png",
        "instruction": "A listing photo for a second-hand marketplace",
        "response": f"Item {item}: a red bicycle, barely used.",
        "rubric": f"{POLICY['name']}/{rule_id}",
        "model": "tiny",
        "image_fit": "crop",
        "policy": dict(POLICY),
        "rule_id": rule_id,
        "rule_title": title,
        "severity": severity,
        "pass_at": 4,
        "judged_at": "2026-12-02T01:00:00+00:00",
    }
    if p_pass is None:
        return ResultRow(status="error", error="the model stopped early", **common).to_dict()
    score = 5 if p_pass >= 0.5 else 2
    probs = {
        "1": 0.0,
        "2": round(1 - p_pass, 6),
        "3": 0.0,
        "4": round(p_pass / 2, 6),
        "5": round(p_pass / 2, 6),
    }
    return ResultRow(
        status="ok",
        score=score,
        score_probs=probs,
        feedback=f"Feedback on {rule_id} for {item}.",
        passed=score >= 4,
        p_pass=p_pass,
        **common,
    ).to_dict()


def decision_record(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    records = [ResultRow.from_dict(r) for r in rows]
    outcomes = [outcome(r.rule_id or "", r.severity or "major", r.passed, r.p_pass) for r in records]
    return DecisionRecord(
        id=records[0].id,
        line=records[0].line or 0,
        key=rules_key(r.key for r in records),
        policy=dict(POLICY),
        decision=decide(outcomes),
        rules=tuple(r.rule_id or "" for r in records),
        decided_at="2026-12-02T01:00:05+00:00",
    ).to_dict()


def policy_log(folder: Path, items: Mapping[str, tuple[float | None, ...]] = ITEMS) -> Path:
    """``folder/out.jsonl``: the rule rows and the decision record of each item, and ``listing.png``."""
    synthetic_image(64, seed=4).save(folder / "listing.png")
    lines: list[Mapping[str, Any]] = []
    for line, (item, probs) in enumerate(items.items(), start=1):
        rows = [rule_row(item, line, rule, p) for rule, p in zip(RULES, probs, strict=True)]
        lines += [*rows, decision_record(rows)]
    path = folder / "out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


__all__ = ["POLICY", "RULES", "ITEMS", "rule_row", "decision_record", "policy_log"]
