"""The grade sheet and the leaderboard (edgejudge.views): table-driven, on hand-made result rows."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from edgejudge.batch.records import DecisionRecord, policy_items, rules_key
from edgejudge.batch.result import ResultRow
from edgejudge.errors import InputError
from edgejudge.views import grade_sheet, leaderboard

SHA = "a" * 64
POLICY = {"name": "grading", "version": "1", "sha256": "b" * 64}


def row(
    id: str,
    score: int | None,
    *,
    status: str = "ok",
    rule: str | None = None,
    rubric: str | None = "helpfulness",
    passed: bool | None = None,
    image: str = "cat.png",
    instruction: str = "What is this?",
    policy: dict[str, str] | None = None,
    judged_at: str = "2026-12-02T00:00:00Z",
    **extra: Any,
) -> ResultRow:
    data: dict[str, Any] = {
        "id": id,
        "line": int("".join(ch for ch in id if ch.isdigit()) or 0),
        "status": status,
        "score": score,
        "key": "c" * 64,
        "image": image,
        "image_sha256": None,
        "instruction": instruction,
        "rubric": rubric,
        "settings": {},
    }
    if rule is not None:
        data.update(
            policy=policy or POLICY,
            rule_id=rule,
            severity="major",
            pass_at=4,
            passed=passed,
            p_pass=0.9 if passed else 0.1,
            judged_at=judged_at,
        )
    data.update(extra)
    return ResultRow.from_dict(data)


def finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    return True


# ---------------------------------------------------------------------------------------------- grade sheet

GRADE_CASES = [
    pytest.param(
        [
            row("r1", 5, rule="correct", passed=True, student="ana"),
            row("r1", 3, rule="figure", passed=False, student="ana"),
            row("r2", 4, rule="correct", passed=True, student="ana"),
            row("r2", 4, rule="figure", passed=True, student="ana"),
            row("r3", 2, rule="correct", passed=False, student="ben"),
            row("r3", 1, rule="figure", passed=False, student="ben"),
        ],
        ("correct", "figure"),
        {
            "ana": (2, {"correct": 4.5, "figure": 3.5}, 4.0, {"correct": 2, "figure": 1}),
            "ben": (1, {"correct": 2.0, "figure": 1.0}, 1.5, {"correct": 0, "figure": 0}),
        },
        0,
        id="rule rows: mean per rule, total over the rule means, passes counted",
    ),
    pytest.param(
        [
            row("r1", 4, student="ana"),
            row("r2", 2, student="ana", rubric="accuracy"),
            row("r3", 5, student="ben"),
        ],
        ("helpfulness", "accuracy"),
        {
            "ana": (2, {"helpfulness": 4.0, "accuracy": 2.0}, 3.0, {}),
            "ben": (1, {"helpfulness": 5.0, "accuracy": None}, 5.0, {}),
        },
        0,
        id="plain rows: rubric columns, a missing column is None and not in the total",
    ),
    pytest.param(
        [
            row("r1", 4, student="ana"),
            row("r2", None, student="ana"),
            row("r3", 5, status="error", student="ana"),
            row("r4", 3),
            row("r5", 9, student="ana"),
            row("r6", 2, student=["not", "a", "label"]),
            row("r7", 2, student="x" * 500),
            row("r8", 2, student="bad\nname"),
            row("r9", 3, student=12),
        ],
        ("helpfulness",),
        {"12": (1, {"helpfulness": 3.0}, 3.0, {}), "ana": (1, {"helpfulness": 4.0}, 4.0, {})},
        7,
        id="error, unscored, out-of-range, fieldless and non-label rows left out and counted",
    ),
    pytest.param(
        [row("r1", 3, student="zoe"), row("r2", 3, student="Ana"), row("r3", 3, student="bob")],
        ("helpfulness",),
        {
            "Ana": (1, {"helpfulness": 3.0}, 3.0, {}),
            "bob": (1, {"helpfulness": 3.0}, 3.0, {}),
            "zoe": (1, {"helpfulness": 3.0}, 3.0, {}),
        },  # fmt: skip
        0,
        id="groups sorted by name, case-insensitively",
    ),
    pytest.param(
        [
            row(
                "r1",
                2,
                rule="old",
                passed=False,
                student="ana",
                judged_at="2026-12-01T00:00:00Z",
                policy={**POLICY, "sha256": "d" * 64},
            ),  # fmt: skip
            row("r1", 5, rule="correct", passed=True, student="ana", judged_at="2026-12-02T00:00:00Z"),
        ],
        ("correct",),
        {"ana": (1, {"correct": 5.0}, 5.0, {"correct": 1})},
        1,
        id="rules of an older version of the policy are left out",
    ),
]


@pytest.mark.parametrize(("rows", "columns", "expected", "left_out"), GRADE_CASES)
def test_grade_sheet(rows: list[ResultRow], columns: tuple[str, ...], expected: dict, left_out: int) -> None:
    sheet = grade_sheet(rows, "student")
    assert sheet is not None
    assert sheet.columns == columns
    assert [r.group for r in sheet.rows] == list(expected)
    for grade in sheet.rows:
        n_items, scores, total, passed = expected[grade.group]
        assert (grade.n_items, grade.scores, grade.total, grade.passed) == (n_items, scores, total, passed)
    assert sheet.left_out == left_out
    data = sheet.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["columns"] == list(columns)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [row("r1", 4)],
        [row("r1", 4, status="error", student="ana")],
        [row("r1", 4, student={"nested": 1})],
    ],
    ids=["no rows", "no field", "only an error row carries it", "not a label"],
)
def test_views_are_none_without_the_field(rows: list[ResultRow]) -> None:
    assert grade_sheet(rows, "student") is None
    assert leaderboard(rows, "student") is None


def test_grade_sheet_any_field() -> None:
    sheet = grade_sheet([row("r1", 4, cohort="2026"), row("r2", 2, cohort=2027)], "cohort")
    assert sheet is not None and [r.group for r in sheet.rows] == ["2026", "2027"]
    assert sheet.field == "cohort"


# ---------------------------------------------------------------------------------------------- leaderboard


def system_rows(system: str, scores: list[int], *, start: int = 0) -> list[ResultRow]:
    return [row(f"{system}{k}", s, image=f"img{k + start}.png", system=system) for k, s in enumerate(scores)]


WIN_CASES = [
    pytest.param(
        system_rows("a", [5, 4, 3, 2]) + system_rows("b", [4, 4, 4, 4]),
        {("a", "b"): (1, 2, 1, 4, 0.375), ("b", "a"): (2, 1, 1, 4, 0.625)},
        id="wins, losses and ties on shared items, both orders",
    ),
    pytest.param(
        system_rows("a", [3, 3]) + system_rows("b", [3, 3]),
        {("a", "b"): (0, 0, 2, 2, 0.5), ("b", "a"): (0, 0, 2, 2, 0.5)},
        id="all ties",
    ),
    pytest.param(
        system_rows("a", [5]) + system_rows("b", [1]),
        {("a", "b"): (1, 0, 0, 1, 1.0), ("b", "a"): (0, 1, 0, 1, 0.0)},
        id="one item",
    ),
    pytest.param(
        system_rows("a", [5, 5]) + system_rows("b", [1, 1], start=2),
        {},
        id="no shared item: no pair",
    ),
    pytest.param(
        system_rows("a", [5, 1]) + [row("b0", 3, image="img0.png", system="b")],
        {("a", "b"): (1, 0, 0, 1, 1.0), ("b", "a"): (0, 1, 0, 1, 0.0)},
        id="only the items both judged",
    ),
    pytest.param(
        system_rows("a", [5, 1]) + [row("b0", 3, image="img0.png", instruction="other", system="b")],
        {},
        id="another instruction is another item",
    ),
    pytest.param(
        [row("a0", 4, system="a"), row("a1", 2, system="a"), row("b0", 3, system="b")],
        {("a", "b"): (0, 0, 1, 1, 0.5), ("b", "a"): (0, 0, 1, 1, 0.5)},
        id="a system's rows on one item are averaged",
    ),
]


@pytest.mark.parametrize(("rows", "expected"), WIN_CASES)
def test_win_rates(rows: list[ResultRow], expected: dict) -> None:
    board = leaderboard(rows, resamples=200)
    assert board is not None
    got = {(w.a, w.b): (w.wins, w.losses, w.ties, w.n, w.rate) for w in board.wins}
    assert got == expected
    for (a, b), values in expected.items():
        win = board.win(a, b)
        assert win is not None and (win.wins, win.losses, win.ties, win.n, win.rate) == values


def test_rule_rows_are_items_per_rule() -> None:
    rows = [
        row("a1", 5, rule="r1", passed=True, system="a"),
        row("a1", 2, rule="r2", passed=False, system="a"),
        row("b1", 3, rule="r1", passed=False, system="b"),
        row("b1", 3, rule="r2", passed=False, system="b"),
    ]
    board = leaderboard(rows, resamples=200)
    assert board is not None
    assert board.win("a", "b") is not None
    assert (board.win("a", "b").wins, board.win("a", "b").losses, board.win("a", "b").n) == (1, 1, 2)  # type: ignore[union-attr]
    assert [(s.system, s.n, s.mean) for s in board.systems] == [("a", 2, 3.5), ("b", 2, 3.0)]


SCORE_CASES = [
    pytest.param(system_rows("solo", [4, 2, 5, 3, 3, 4]), {"solo": (6, 3.5)}, id="single system"),
    pytest.param(system_rows("one", [4]), {"one": (1, 4.0)}, id="one row: the point itself"),
    pytest.param(system_rows("flat", [3, 3, 3]), {"flat": (3, 3.0)}, id="constant scores: the point"),
    pytest.param(
        system_rows("lo", [1, 2, 2, 1]) + system_rows("hi", [5, 4, 5, 4]) + system_rows("mid", [3, 3, 4, 2]),
        {"hi": (4, 4.5), "mid": (4, 3.0), "lo": (4, 1.5)},
        id="best first",
    ),
]


@pytest.mark.parametrize(("rows", "expected"), SCORE_CASES)
def test_system_scores(rows: list[ResultRow], expected: dict) -> None:
    board = leaderboard(rows, resamples=500, seed=3)
    assert board is not None
    assert [s.system for s in board.systems] == list(expected)
    for s in board.systems:
        assert (s.n, s.mean) == expected[s.system]
        assert s.ci_low <= s.mean <= s.ci_high
        assert 1 <= s.ci_low and s.ci_high <= 5
        if len({r.score for r in rows if dict(r.extra)["system"] == s.system}) == 1:
            assert s.ci_low == s.ci_high == s.mean
    data = board.to_dict()
    assert finite_everywhere(data)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert (data["resamples"], data["seed"], data["confidence"]) == (500, 3, 0.95)


def test_intervals_are_seeded_and_deterministic() -> None:
    rows = system_rows("a", [1, 5, 2, 4, 3, 5, 1, 4]) + system_rows("b", [3, 3, 4, 2, 3, 4, 3, 2])
    first = leaderboard(rows, resamples=1000, seed=7)
    again = leaderboard(list(reversed(rows)), resamples=1000, seed=7)
    other = leaderboard(rows, resamples=1000, seed=8)
    assert first is not None and again is not None and other is not None
    assert first.systems == again.systems
    assert first.to_dict() != other.to_dict()
    spread = first.systems[0]
    assert spread.ci_low < spread.mean < spread.ci_high  # a real interval for varied scores


def test_leaderboard_counts_what_it_leaves_out() -> None:
    rows = system_rows("a", [4, 5]) + [
        row("e1", None, status="error", system="a"),
        row("e2", None, system="b"),
        row("e3", 3),
    ]
    board = leaderboard(rows, resamples=100)
    assert board is not None
    assert [s.system for s in board.systems] == ["a"]
    assert board.left_out == 3


@pytest.mark.parametrize(
    ("kwargs", "words"), [({"resamples": 0}, "resample"), ({"confidence": 1.0}, "confidence")]
)
def test_leaderboard_refuses_bad_parameters(kwargs: dict, words: str) -> None:
    with pytest.raises(InputError, match=words):
        leaderboard(system_rows("a", [3, 4]), **kwargs)


def test_a_large_system_gets_the_percentile_interval_quickly() -> None:
    from edgejudge.views import BCA_MAX_ROWS

    scores = [1 + (k * 7) % 5 for k in range(BCA_MAX_ROWS + 1)]  # mean 3, every score equally often
    board = leaderboard(system_rows("big", scores), resamples=500)
    assert board is not None
    (big,) = board.systems
    assert big.n == BCA_MAX_ROWS + 1 and big.ci_low < big.mean < big.ci_high
    assert big.ci_high - big.ci_low < 0.15  # ~4 standard errors of a mean of 5001 scores spread 1..5


@pytest.mark.parametrize("name", ["esc\x1b[2J", "csi\x9b2J", "del\x7f", "tab\tname"])
def test_labels_with_control_characters_are_left_out(name: str) -> None:
    rows = [row("r1", 4, system="ok"), row("r2", 3, system=name), row("r3", 2, system="ok", rule=name)]
    board = leaderboard(rows, resamples=100)
    assert board is not None and [s.system for s in board.systems] == ["ok"] and board.left_out == 2


def test_the_bootstrap_raises_no_deprecation_warning() -> None:
    """The interval passes ``rng=`` (scipy >= 1.15; ``random_state`` is deprecated) and hides only the
    degenerate-BCa warning, so a deprecation is seen, never a silent TypeError on the day it is removed."""
    import warnings

    rows = system_rows("a", [1, 2, 3, 4, 5, 4]) + system_rows("b", [3, 3, 3, 3], start=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning the views let through fails the test
        board = leaderboard(rows, resamples=200, seed=3)
    assert board is not None and [s.system for s in board.systems] == ["a", "b"]
    low, high = board.systems[0].ci_low, board.systems[0].ci_high
    assert low < board.systems[0].mean < high


# ------------------------------------------------------------------------------------ incomplete items


def decided(rows: list[ResultRow], at: str = "2026-12-02T01:00:00Z") -> DecisionRecord:
    """The decision record the batch writes once every rule of an item is in (its key: the rule rows')."""
    item = policy_items(rows)[0]
    return DecisionRecord(
        id=item.id,
        line=item.line,
        key=rules_key(r.key for r in rows),
        policy=POLICY,
        decision=item.decision,
        rules=tuple(r.rule_id or "" for r in rows),
        decided_at=at,
    )


CRITERIA = ("correct", "figure", "units")
ANN = [row("r1", 4, rule=rule, passed=True, student="ann", system="a") for rule in CRITERIA]
BEN = [row("r2", 2, rule="correct", passed=False, student="ben", system="b")]  # 1 of 3 criteria so far
INCOMPLETE_CASES = [
    pytest.param({"r1": decided(ANN)}, ["ann"], 1, 1, id="no decision record yet"),
    pytest.param(
        {"r1": decided(ANN), "r2": decided([*BEN, row("r2", 2, rule="figure", passed=False, student="ben")])},
        ["ann"],
        1,
        1,
        id="a decision on other rule rows",
    ),
    pytest.param(None, ["ann", "ben"], 0, 0, id="rows only: every item counts"),
]


@pytest.mark.parametrize(("decisions", "groups", "left_out", "incomplete"), INCOMPLETE_CASES)
def test_incomplete_items_are_left_out(
    decisions: dict[str, DecisionRecord] | None, groups: list[str], left_out: int, incomplete: int
) -> None:
    """A student graded on 1 of 3 criteria (the batch stopped) gets no total: the item is incomplete."""
    sheet = grade_sheet([*ANN, *BEN], "student", decisions=decisions)
    assert sheet is not None
    assert [r.group for r in sheet.rows] == groups
    assert (sheet.left_out, sheet.incomplete) == (left_out, incomplete)
    assert sheet.rows[0].total == 4.0 and sheet.to_dict()["incomplete"] == incomplete
    board = leaderboard([*ANN, *BEN], "system", resamples=50, decisions=decisions)
    assert board is not None
    assert [s.system for s in board.systems] == (["a", "b"] if decisions is None else ["a"])
    assert (board.left_out, board.incomplete) == (left_out, incomplete)


def test_only_incomplete_items_still_give_a_view_that_says_so() -> None:
    sheet = grade_sheet(BEN, "student", decisions={})
    assert sheet is not None and sheet.rows == () and (sheet.left_out, sheet.incomplete) == (1, 1)


def test_the_decided_policy_is_the_one_counted() -> None:
    """Decided under policy A, then one rule row of policy B judged later and the item decided again under
    A: the view counts A's rules, as the compliance report does."""
    other = {"name": "other", "version": "1", "sha256": "d" * 64}
    stray = row(
        "r1", 1, rule="b-only", passed=False, student="ann", policy=other, judged_at="2026-12-02T02:00:00Z"
    )
    sheet = grade_sheet([*ANN, stray], "student", decisions={"r1": decided(ANN, at="2026-12-02T03:00:00Z")})
    assert sheet is not None and sheet.columns == CRITERIA and sheet.rows[0].total == 4.0
    assert (sheet.left_out, sheet.incomplete) == (1, 0)
