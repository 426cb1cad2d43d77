"""Decisions: what a policy's rule verdicts mean, and what they add up to for one item. Pure.

``p_pass`` is the probability mass at or above a rule's ``pass_at`` in the score distribution; ``outcome``
turns it (with ``passed``, the verdict's own score against ``pass_at``) into a rule's state under the
review band: ``pass`` or ``fail`` with confidence, ``uncertain`` strictly inside the band, ``error`` with no
verdict; ``decide`` gives an item's decision: ``violation`` (a rule failed with confidence, the worst
severity named) before ``error`` (a rule could not be judged) before ``needs_review`` (a rule is
uncertain) before ``compliant``. Severities rank ``info < minor < major < critical``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import PolicyError


class _Rule(Protocol):
    """What ``rule_outcome`` reads of a ``policy.Rule`` (a Protocol: ``policy`` imports this module)."""

    @property
    def id(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def pass_at(self) -> int: ...


__all__ = [
    "RuleOutcome",
    "Decision",
    "SEVERITIES",
    "DECISIONS",
    "DEFAULT_REVIEW_BAND",
    "INCOMPLETE",
    "check_band",
    "p_pass",
    "outcome",
    "rule_outcome",
    "decide",
    "worst_severity",
]

#: Severities from the mildest to the worst (a violation names the worst of its failed rules).
SEVERITIES = ("info", "minor", "major", "critical")
#: An item's decisions, in the order a report lists them.
DECISIONS = ("compliant", "violation", "needs_review", "error")
#: What a report shows for an item whose rules are not all judged yet (a batch cut short or still running).
INCOMPLETE = "incomplete"
#: ``p_pass`` strictly inside this band is uncertain: a person should look (``decide``: needs_review).
DEFAULT_REVIEW_BAND = (0.25, 0.75)


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule's verdict means under a review band: ``state`` is ``pass`` or ``fail`` (with
    confidence), ``uncertain`` (``p_pass`` inside the band) or ``error`` (no verdict)."""

    rule_id: str
    severity: str
    state: str
    passed: bool | None
    p_pass: float | None


@dataclass(frozen=True)
class Decision:
    """One item's decision. ``decision`` is one of ``DECISIONS``; ``severity`` the worst severity among
    the rules failed with confidence (None unless a violation); ``failed``, ``uncertain`` and ``errors``
    the rule ids in each state, in policy order."""

    decision: str
    severity: str | None = None
    failed: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "severity": self.severity,
            "failed": list(self.failed),
            "uncertain": list(self.uncertain),
            "errors": list(self.errors),
        }


def check_band(band: Sequence[float]) -> tuple[float, float]:
    """The review band as ``(low, high)``; ``PolicyError`` unless 0 <= low <= high <= 1."""
    try:
        low, high = (float(band[0]), float(band[1]))
        if len(band) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise PolicyError(
            f"the review band must be two numbers, got {band!r}",
            hint="give it as LOW,HIGH, e.g. 0.25,0.75",
            about="review_band",
        ) from None
    if not (0.0 <= low <= high <= 1.0):
        raise PolicyError(
            f"the review band {low:g},{high:g} is not within 0..1 with low <= high",
            hint="give it as LOW,HIGH with 0 <= LOW <= HIGH <= 1, e.g. 0.25,0.75",
            about="review_band",
        )
    return low, high


def _score_key(key: Any) -> int | None:
    """A distribution's key as a score 1..5 (``3`` or ``"3"``), None for anything else (``""``, ``"34"``)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if 1 <= key <= 5 else None
    if isinstance(key, str) and len(key.strip()) == 1 and key.strip() in "12345":
        return int(key.strip())
    return None


def _mass(value: Any) -> float | None:
    """A probability as a finite float >= 0, None for anything else (negative, NaN, infinite, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    prob = float(value)
    return prob if math.isfinite(prob) and prob >= 0 else None


def p_pass(score_probs: Mapping[Any, float] | None, pass_at: int, score: int | None = None) -> float | None:
    """The probability that the score is at least ``pass_at``: the mass of the digits ``pass_at``..5 in
    the score distribution (renormalised over 1..5). Without a distribution, 1.0 or 0.0 from ``score``;
    None when there is neither."""
    if score_probs:
        mass: dict[int, float] = {}
        for key, value in score_probs.items():
            digit, prob = _score_key(key), _mass(value)
            if digit is not None and prob is not None:
                mass[digit] = mass.get(digit, 0.0) + prob
        total = sum(mass.values())
        if total > 0:
            return min(1.0, max(0.0, sum(v for k, v in mass.items() if k >= pass_at) / total))
    if score is None:
        return None
    return 1.0 if score >= pass_at else 0.0


def outcome(
    rule_id: str,
    severity: str,
    passed: bool | None,
    prob: float | None,
    band: Sequence[float] = DEFAULT_REVIEW_BAND,
) -> RuleOutcome:
    """A rule's outcome from its ``passed`` (score >= pass_at) and ``p_pass`` under ``band``: ``pass`` at
    or above the band's top, ``fail`` at or below its bottom, ``uncertain`` strictly inside it (or when
    the score and its distribution disagree, as a sampled score may), ``error`` without ``p_pass``."""
    low, high = check_band(band)
    # the state is that of the rounded p_pass the outcome records, so a decision recomputed from a
    # written row (batch.records) is the one made when it was judged
    prob = None if prob is None else round(prob, 6)
    if prob is None:
        state = "error"
    elif prob >= high and passed is not False:
        state = "pass"
    elif prob <= low and passed is not True:
        state = "fail"
    else:
        state = "uncertain"
    return RuleOutcome(rule_id, severity, state, passed, prob)


def rule_outcome(
    rule: _Rule,
    score: int | None,
    score_probs: Mapping[Any, float] | None,
    band: Sequence[float] = DEFAULT_REVIEW_BAND,
    *,
    ok: bool = True,
) -> RuleOutcome:
    """``outcome`` of one rule's verdict (``score``, ``score_probs``); ``ok`` False: it has none."""
    prob = p_pass(score_probs, rule.pass_at, score) if ok else None
    passed = None if score is None or not ok else score >= rule.pass_at
    return outcome(rule.id, rule.severity, passed, prob, band)


def worst_severity(severities: Sequence[str]) -> str | None:
    """The worst of ``severities`` (``SEVERITIES`` order); None for none."""
    ranked = [s for s in severities if s in SEVERITIES]
    return max(ranked, key=SEVERITIES.index) if ranked else None


def decide(outcomes: Sequence[RuleOutcome]) -> Decision:
    """An item's decision from its rules' outcomes: ``violation`` (any rule failed with confidence; the
    worst severity among them named) before ``error`` (a rule could not be judged) before ``needs_review``
    (a rule is uncertain) before ``compliant`` (every rule passed with confidence). No rules: ``error``."""
    failed = tuple(o.rule_id for o in outcomes if o.state == "fail")
    uncertain = tuple(o.rule_id for o in outcomes if o.state == "uncertain")
    errors = tuple(o.rule_id for o in outcomes if o.state == "error")
    if failed:
        severity = worst_severity([o.severity for o in outcomes if o.state == "fail"])
        return Decision("violation", severity, failed, uncertain, errors)
    if errors or not outcomes:
        return Decision("error", None, failed, uncertain, errors)
    if uncertain:
        return Decision("needs_review", None, failed, uncertain, errors)
    return Decision("compliant")
