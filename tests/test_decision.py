"""Decision logic on hand-made score distributions (pure, table-driven): ``p_pass``, a rule's outcome under
the review band, and an item's decision (violation > error > needs_review > compliant, worst severity)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from edgejudge.decision import (
    DECISIONS,
    DEFAULT_REVIEW_BAND,
    SEVERITIES,
    Decision,
    RuleOutcome,
    check_band,
    decide,
    outcome,
    p_pass,
    rule_outcome,
    worst_severity,
)
from edgejudge.errors import PolicyError
from edgejudge.policy import load_policy

NAN, INF = math.nan, math.inf
EVEN = {"1": 0.2, "2": 0.2, "3": 0.2, "4": 0.2, "5": 0.2}

# (case, score_probs, pass_at, score, expected p_pass)
P_PASS: list[tuple[str, dict[Any, Any] | None, int, int | None, float | None]] = [
    ("mass at 4 and 5", {"1": 0.1, "2": 0.1, "3": 0.2, "4": 0.3, "5": 0.3}, 4, 4, 0.6),
    ("even, pass_at 4", EVEN, 4, 3, 0.4),
    ("even, pass_at 1 is everything", EVEN, 1, 1, 1.0),
    ("even, pass_at 5", EVEN, 5, 5, 0.2),
    ("even, pass_at 3", EVEN, 3, 2, 0.6),
    ("integer keys", {4: 0.5, 5: 0.25, 1: 0.25}, 4, 4, 0.75),
    ("sums to 1 over the digits only", {"5": 1.0}, 4, 5, 1.0),
    ("renormalised: mass 0.5", {"1": 0.1, "4": 0.2, "5": 0.2}, 4, 4, 0.8),
    ("renormalised: tiny mass", {"2": 1e-9, "4": 3e-9}, 4, 4, 0.75),
    (
        "junk keys ignored",
        {"": 0.5, "34": 0.5, "x": 0.5, "0": 0.5, "6": 0.5, "4": 0.25, "1": 0.25},
        4,
        1,
        0.5,
    ),
    ("bool and float keys ignored", {True: 0.9, 4.0: 0.9, "4": 0.1, "2": 0.3}, 4, 2, 0.25),
    ("spaced key read", {" 4 ": 0.5, "2": 0.5}, 4, 2, 0.5),
    ("negative mass ignored", {"1": -5.0, "4": 0.5, "2": 0.5}, 4, 4, 0.5),
    ("NaN and infinite masses ignored", {"1": NAN, "2": INF, "5": 0.4, "3": 0.6}, 4, 3, 0.4),
    ("text mass ignored", {"1": "0.9", "5": 1.0}, 4, 5, 1.0),
    ("no mass at all: from the score", {"1": 0.0, "5": 0.0}, 4, 5, 1.0),
    ("only junk: from the score", {"9": 0.7}, 4, 2, 0.0),
    ("no distribution, score passes", None, 4, 4, 1.0),
    ("no distribution, score fails", None, 4, 3, 0.0),
    ("empty distribution, score passes", {}, 3, 3, 1.0),
    ("neither distribution nor score", None, 4, None, None),
    ("a distribution wins over a disagreeing score", {"2": 0.9, "5": 0.1}, 4, 5, 0.1),
]


@pytest.mark.parametrize(
    ("case", "probs", "pass_at", "score", "expected"), P_PASS, ids=[c[0] for c in P_PASS]
)
def test_p_pass(
    case: str, probs: dict[Any, Any] | None, pass_at: int, score: int | None, expected: float | None
) -> None:
    got = p_pass(probs, pass_at, score)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected), case
        assert 0.0 <= got <= 1.0


def test_p_pass_is_monotone_in_pass_at() -> None:
    probs = {"1": 0.05, "2": 0.15, "3": 0.3, "4": 0.3, "5": 0.2}
    values = [p_pass(probs, k) for k in range(1, 6)]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(1.0)


# (case, passed, p_pass, band, expected state)
OUTCOMES: list[tuple[str, bool | None, float | None, tuple[float, float], str]] = [
    ("confident pass", True, 0.95, DEFAULT_REVIEW_BAND, "pass"),
    ("confident fail", False, 0.05, DEFAULT_REVIEW_BAND, "fail"),
    ("exactly the top edge passes", True, 0.75, DEFAULT_REVIEW_BAND, "pass"),
    ("exactly the bottom edge fails", False, 0.25, DEFAULT_REVIEW_BAND, "fail"),
    ("just under the top edge", True, 0.7499, DEFAULT_REVIEW_BAND, "uncertain"),
    ("just over the bottom edge", False, 0.2501, DEFAULT_REVIEW_BAND, "uncertain"),
    ("the middle", True, 0.5, DEFAULT_REVIEW_BAND, "uncertain"),
    ("float noise at the edge counts as the edge", True, 0.7499999999, DEFAULT_REVIEW_BAND, "pass"),
    ("sampled pass, distribution says fail", True, 0.1, DEFAULT_REVIEW_BAND, "uncertain"),
    ("sampled fail, distribution says pass", False, 0.9, DEFAULT_REVIEW_BAND, "uncertain"),
    ("no score, confident distribution", None, 0.9, DEFAULT_REVIEW_BAND, "pass"),
    ("no score, failing distribution", None, 0.1, DEFAULT_REVIEW_BAND, "fail"),
    ("no p_pass is an error", True, None, DEFAULT_REVIEW_BAND, "error"),
    ("a narrow band", True, 0.6, (0.4, 0.6), "pass"),
    ("a point band", False, 0.5, (0.5, 0.5), "fail"),
    ("a point band, passing score", True, 0.5, (0.5, 0.5), "pass"),
    ("the widest band: only certainty passes", True, 0.99, (0.0, 1.0), "uncertain"),
    ("the widest band: certainty", True, 1.0, (0.0, 1.0), "pass"),
    ("the widest band: certain failure", False, 0.0, (0.0, 1.0), "fail"),
]


@pytest.mark.parametrize(("case", "passed", "prob", "band", "state"), OUTCOMES, ids=[c[0] for c in OUTCOMES])
def test_outcome(
    case: str, passed: bool | None, prob: float | None, band: tuple[float, float], state: str
) -> None:
    result = outcome("r", "major", passed, prob, band)
    assert result.state == state, case
    assert (result.rule_id, result.severity, result.passed) == ("r", "major", passed)
    if prob is not None:
        assert result.p_pass == round(prob, 6)


def test_rule_outcome_reads_the_rule() -> None:
    policy = load_policy("figure-grading")  # pass_at 3 for every rule
    rule = policy.rule("correctness")
    confident = rule_outcome(rule, 3, {"2": 0.1, "3": 0.6, "4": 0.3})
    assert (confident.state, confident.passed, confident.p_pass) == ("pass", True, 0.9)
    assert confident.severity == "major" and confident.rule_id == "correctness"
    torn = rule_outcome(rule, 2, {"2": 0.5, "3": 0.5})
    assert (torn.state, torn.passed, torn.p_pass) == ("uncertain", False, 0.5)
    assert rule_outcome(rule, 4, None).state == "pass"  # no distribution: the score decides
    failed = rule_outcome(rule, None, {"3": 0.9}, ok=False)
    assert (failed.state, failed.passed, failed.p_pass) == ("error", None, None)
    assert rule_outcome(rule, None, None).state == "error"
    assert rule_outcome(rule, 2, {"1": 0.5, "2": 0.5}, (0.0, 0.0)).state == "fail"


def _o(rule_id: str, state: str, severity: str = "major") -> RuleOutcome:
    prob = {"pass": 1.0, "fail": 0.0, "uncertain": 0.5, "error": None}[state]
    return RuleOutcome(rule_id, severity, state, None if prob is None else prob >= 0.5, prob)


# (case, outcomes, decision, severity, failed, uncertain, errors)
DECIDE: list[
    tuple[str, list[RuleOutcome], str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
] = [
    ("every rule passes", [_o("a", "pass"), _o("b", "pass")], "compliant", None, (), (), ()),
    (
        "one confident failure",
        [_o("a", "pass"), _o("b", "fail", "minor")],
        "violation",
        "minor",
        ("b",),
        (),
        (),
    ),
    (
        "the worst severity is named",
        [_o("a", "fail", "minor"), _o("b", "fail", "critical"), _o("c", "fail", "major")],
        "violation",
        "critical",
        ("a", "b", "c"),
        (),
        (),
    ),
    (
        "only failed rules count for the severity",
        [_o("a", "fail", "info"), _o("b", "uncertain", "critical"), _o("c", "error", "critical")],
        "violation",
        "info",
        ("a",),
        ("b",),
        ("c",),
    ),
    ("violation beats error", [_o("a", "error"), _o("b", "fail")], "violation", "major", ("b",), (), ("a",)),
    (
        "violation beats needs_review",
        [_o("a", "uncertain"), _o("b", "fail")],
        "violation",
        "major",
        ("b",),
        ("a",),
        (),
    ),
    ("error beats needs_review", [_o("a", "uncertain"), _o("b", "error")], "error", None, (), ("a",), ("b",)),
    (
        "needs_review beats compliant",
        [_o("a", "pass"), _o("b", "uncertain")],
        "needs_review",
        None,
        (),
        ("b",),
        (),
    ),
    ("an error alone", [_o("a", "pass"), _o("b", "error")], "error", None, (), (), ("b",)),
    ("no rules at all", [], "error", None, (), (), ()),
    (
        "rule ids keep the policy's order",
        [_o("z", "uncertain"), _o("m", "pass"), _o("a", "uncertain")],
        "needs_review",
        None,
        (),
        ("z", "a"),
        (),
    ),
]


@pytest.mark.parametrize(
    ("case", "outcomes", "decision", "severity", "failed", "uncertain", "errors"),
    DECIDE,
    ids=[c[0] for c in DECIDE],
)
def test_decide(
    case: str,
    outcomes: list[RuleOutcome],
    decision: str,
    severity: str | None,
    failed: tuple[str, ...],
    uncertain: tuple[str, ...],
    errors: tuple[str, ...],
) -> None:
    result = decide(outcomes)
    assert result == Decision(decision, severity, failed, uncertain, errors), case
    assert result.decision in DECISIONS
    assert result.to_dict() == {
        "decision": decision,
        "severity": severity,
        "failed": list(failed),
        "uncertain": list(uncertain),
        "errors": list(errors),
    }


def test_end_to_end_from_distributions() -> None:
    policy = load_policy("marketplace-listing")
    verdicts = {  # rule id -> (sampled score, distribution)
        "prohibited-items": (5, {"4": 0.2, "5": 0.8}),
        "accurate-description": (3, {"3": 0.6, "4": 0.4}),  # p_pass 0.4: uncertain
        "personal-data": (5, {"5": 1.0}),
        "violent-shocking": (5, {"5": 0.9, "4": 0.1}),
        "off-platform": (4, {"4": 0.7, "5": 0.2, "2": 0.1}),
        "image-quality": (3, {"3": 0.5, "2": 0.5}),  # pass_at 3: p_pass 0.5, uncertain
    }
    outcomes = [rule_outcome(policy.rule(rid), score, probs) for rid, (score, probs) in verdicts.items()]
    assert decide(outcomes) == Decision(
        "needs_review", None, (), ("accurate-description", "image-quality"), ()
    )
    verdicts["off-platform"] = (2, {"2": 0.8, "4": 0.2})  # a confident failure of a major rule
    outcomes = [rule_outcome(policy.rule(rid), score, probs) for rid, (score, probs) in verdicts.items()]
    result = decide(outcomes)
    assert (result.decision, result.severity, result.failed) == ("violation", "major", ("off-platform",))


WORST: list[tuple[list[str], str | None]] = [
    (["minor", "info", "major"], "major"),
    (["critical", "minor"], "critical"),
    (["info"], "info"),
    (["unknown", "minor"], "minor"),
    (["unknown"], None),
    ([], None),
]


@pytest.mark.parametrize(("severities", "worst"), WORST)
def test_worst_severity(severities: list[str], worst: str | None) -> None:
    assert worst_severity(severities) == worst


def test_severity_and_decision_vocabularies() -> None:
    assert SEVERITIES == ("info", "minor", "major", "critical")
    assert set(DECISIONS) == {"compliant", "violation", "needs_review", "error"}
    assert DEFAULT_REVIEW_BAND == (0.25, 0.75)


GOOD_BANDS: list[tuple[Any, tuple[float, float]]] = [
    ((0.25, 0.75), (0.25, 0.75)),
    ([0, 1], (0.0, 1.0)),
    (("0.1", "0.9"), (0.1, 0.9)),
    ((0.5, 0.5), (0.5, 0.5)),
]
BAD_BANDS: list[Any] = [
    (0.8, 0.2),
    (-0.1, 0.5),
    (0.5, 1.5),
    (NAN, 0.5),
    (0.5,),
    (0.1, 0.2, 0.3),
    (),
    "ab",
    None,
    5,
    ("low", "high"),
]


@pytest.mark.parametrize(("band", "expected"), GOOD_BANDS)
def test_check_band_accepts(band: Any, expected: tuple[float, float]) -> None:
    assert check_band(band) == expected


@pytest.mark.parametrize("band", BAD_BANDS, ids=[repr(b) for b in BAD_BANDS])
def test_check_band_refuses(band: Any) -> None:
    with pytest.raises(PolicyError) as info:
        check_band(band)
    assert "review band" in info.value.message
    assert info.value.hint and "LOW,HIGH" in info.value.hint
    assert info.value.about == ("review_band",)
    with pytest.raises(PolicyError):
        outcome("r", "minor", True, 0.5, band)
