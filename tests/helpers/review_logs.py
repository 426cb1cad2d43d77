"""Hand-written policy logs for the review tests, in the documented record format (``batch/records.py``):
rule rows through ``ResultRow(...).to_dict()`` and decision records through ``DecisionRecord``, one JSON
object a line, beside a real image file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgejudge.images import synthetic_image

from . import compliance_logs

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
    """A rule row of ``compliance_logs.rule_row`` with this log's policy, image and texts."""
    return compliance_logs.rule_row(
        item,
        line,
        rule,
        p_pass,
        image="listing.png",
        feedback=f"Feedback on {rule[0]} for {item}.",
        judged_at="2026-12-02T01:00:00+00:00",
        response=f"Item {item}: a red bicycle, barely used.",
        policy=POLICY,
        image_size=64,
    )


def decision_record(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return compliance_logs.decision_record(rows, policy=POLICY, decided_at="2026-12-02T01:00:05+00:00")


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
