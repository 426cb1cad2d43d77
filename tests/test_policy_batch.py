"""``run_batch(policy=...)`` and ``edgejudge batch --policy`` on the fake engine: rule rows, decision and run
records, resume per (row, rule), rows naming their own policy, bad rows, pass-through fields, and an old
plain output resuming unchanged. (The tiny real model: ``test_policy_batch_tiny.py``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.policies import listing_policy
from typer.testing import CliRunner

from edgejudge.batch import run_batch
from edgejudge.batch.records import outcome_of, policy_items, read_log, rules_key
from edgejudge.batch.result import ResultRow, record_key
from edgejudge.cli import app
from edgejudge.decision import decide
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.policy import load_policy

POLICY = listing_policy("shop", "1", "A small listing policy.")
RULES = ["accurate", "safe", "honest"]


class CountingFake(FakeEngine):
    """A fake that declares ``max_parallel`` sequences and records the size of each generate_many call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[int] = []

    def generate_many(self, requests):  # type: ignore[no-untyped-def]
        self.calls.append(len(requests))
        return super().generate_many(requests)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def data(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(48, seed=2).save(work_dir / "b.png")
    (work_dir / "shop.toml").write_text(POLICY, encoding="utf-8")
    return work_dir


def items(data: Path) -> list[dict[str, Any]]:
    return [
        {"id": "i1", "image": "a.png", "response": "A red bike, barely used.", "student": "ann"},
        {"id": "i2", "image": "a.png", "instruction": "Sell my bike.", "response": "Bike.", "system": "m1"},
        {"id": "i3", "image": "b.png", "response": "A lamp.", "reference": "A desk lamp.", "url": "u3"},
    ]


def key(row_id: str, rule: str) -> str:
    """The log key of the rule row (``row_id``, ``rule``)."""
    return record_key({"id": row_id, "rule_id": rule})


def check_log(out: Path, ids: list[str], rules: list[str], others: tuple[str, ...] = ()) -> None:
    """Every (row, rule) has one current rule row, and each row's latest decision record is the one
    ``decide`` gives from those rows (with their keys); ``others``: more items of the log (not checked)."""
    log = read_log(out)
    for row_id in ids:
        rows = [log.rows[key(row_id, rule)] for rule in rules]
        assert all(r.rule_id == rule for r, rule in zip(rows, rules, strict=True))
        assert all(r.judged_at and r.judged_at.endswith("+00:00") for r in rows)
        record = log.decisions[row_id]
        assert record.key == rules_key(r.key for r in rows)
        assert record.decision == decide([outcome_of(r, record.review_band) for r in rows])
        assert record.rules == tuple(rules)
    found = policy_items(log.rows.values(), log.decisions, log.overrides)
    assert {item.id for item in found} == {*ids, *others}
    for item in found:
        assert item.decision == log.decisions[item.id].decision and item.complete


def test_a_policy_batch_writes_rule_rows_decisions_and_a_run_record(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    engine = CountingFake(max_parallel=8)
    events: list[Any] = []
    summary = run_batch(Judge(engine), inp, out, policy=data / "shop.toml", on_event=events.append)
    assert (summary.total, summary.results, summary.judged, summary.ok, summary.errors) == (3, 9, 9, 9, 0)
    assert sum(summary.decisions.values()) == 3
    written = lines(out)
    assert written[0]["kind"] == "run" and written[0]["policies"] == [
        load_policy(data / "shop.toml").identity()
    ]
    rule_rows = [ResultRow.from_dict(r) for r in written if r.get("rule_id")]
    assert [(r.id, r.rule_id) for r in rule_rows] == [(i, rule) for i in ("i1", "i2", "i3") for rule in RULES]
    assert len({r.key for r in rule_rows}) == 9
    for row in rule_rows:
        rule = load_policy(data / "shop.toml").rule(row.rule_id or "")
        assert (row.severity, row.pass_at, row.rule_title) == (rule.severity, rule.pass_at, rule.title)
        assert row.passed == (row.score is not None and row.score >= rule.pass_at)
        assert row.p_pass is not None and row.rule_state in ("pass", "fail", "uncertain")
        assert row.criteria == rule.rubric.criteria
        assert row.policy == {
            "name": "shop",
            "version": "1",
            "sha256": load_policy(data / "shop.toml").sha256,
        }
    # the instruction: the row's own for i2, the policy's for the others
    assert {r.instruction for r in rule_rows if r.id == "i2"} == {"Sell my bike."}
    assert {r.instruction for r in rule_rows if r.id != "i2"} == {
        "A listing photo for a second-hand marketplace."
    }
    # pass-through: student and system when present, nothing else unless kept
    by_id = {r["id"]: r for r in written if r.get("rule_id") == "accurate"}
    assert by_id["i1"]["student"] == "ann" and "student" not in by_id["i2"]
    assert by_id["i2"]["system"] == "m1" and "url" not in by_id["i3"]
    # the rules of a row are decoded together, with the next row on the same image: a.png 6, b.png 3
    assert engine.calls == [6, 3]
    check_log(out, ["i1", "i2", "i3"], RULES)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("decision") == 3
    assert kinds.count("row_done") == 9 and events[0].total == 9 and events[0].rows == 3
    decided = [e.decision.id for e in events if e.kind == "decision"]
    assert decided == ["i1", "i2", "i3"]

    again = run_batch(Judge(CountingFake(max_parallel=8)), inp, out, policy=data / "shop.toml")
    assert (again.skipped, again.judged) == (9, 0) and again.decisions == summary.decisions
    assert lines(out) == written  # nothing judged, no second run record, no repeated decision


def test_resume_judges_only_the_missing_rule_rows_and_then_decides(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    full = lines(out)
    # as if killed after i1's rules and i2's first rule: no decisions yet
    kept = [r for r in full if r.get("kind") == "run" or (r.get("rule_id") and r["id"] == "i1")]
    kept += [r for r in full if r["id"] == "i2" and r.get("rule_id") == "accurate"]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    engine = FakeEngine()
    summary = run_batch(Judge(engine), inp, out, policy=data / "shop.toml")
    assert (summary.skipped, summary.judged) == (4, 5) and len(engine.history) == 5
    after = lines(out)
    assert [r["kind"] for r in after[len(kept) :] if r.get("kind")][0] == "run"
    judged_now = [(r["id"], r["rule_id"]) for r in after[len(kept) :] if r.get("rule_id")]
    assert judged_now == [
        ("i2", "safe"),
        ("i2", "honest"),
        ("i3", "accurate"),
        ("i3", "safe"),
        ("i3", "honest"),
    ]
    check_log(out, ["i1", "i2", "i3"], RULES)
    # i1's decision is written even though none of its rules was judged by this run
    assert [r["id"] for r in after if r.get("kind") == "decision"] == ["i1", "i2", "i3"]


def test_decisions_are_written_when_only_they_are_missing(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    rows_only = [r for r in lines(out) if not r.get("kind")]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows_only), encoding="utf-8")
    summary = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    assert summary.judged == 0 and sum(summary.decisions.values()) == 3
    added = lines(out)[len(rows_only) :]
    assert [r["kind"] for r in added] == ["decision"] * 3  # nothing judged: no run record
    check_log(out, ["i1", "i2", "i3"], RULES)


def test_a_changed_rule_judges_only_that_rule_again(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    policy = data / "shop.toml"
    policy.write_text(POLICY.replace('severity = "minor"', 'severity = "major"'), encoding="utf-8")
    summary = run_batch(Judge(FakeEngine()), inp, out, policy=policy)
    # the policy's sha256 changed: its rows are judged again (an item's rules come from one version)
    assert summary.judged == 3
    check_log(out, ["i1"], RULES)
    assert read_log(out).rows[key("i1", "honest")].severity == "major"


def test_a_row_names_its_own_policy_and_plain_rows_stay_plain(data: Path) -> None:
    (data / "policies").mkdir()
    (data / "policies" / "own.toml").write_text(POLICY.replace('name = "shop"', 'name = "own"'), "utf-8")
    rows = [
        {"id": "p1", "image": "a.png", "response": "A bike.", "policy": "policies/own.toml"},
        {
            "id": "plain",
            "image": "a.png",
            "instruction": "What is it?",
            "response": "A bike.",
            "rubric": "vqa-helpfulness",
        },
        {"id": "p2", "image": "b.png", "response": "A lamp.", "policy": "policies/own.toml"},
    ]
    inp = write_jsonl(data / "in.jsonl", rows)
    out = data / "out.jsonl"
    summary = run_batch(Judge(FakeEngine()), inp, out)
    assert (summary.results, summary.ok) == (7, 7)
    written = lines(out)
    runs = [r for r in written if r.get("kind") == "run"]
    assert len(runs) == 1 and [p["name"] for p in runs[0]["policies"]] == ["own"]
    plain = [r for r in written if r["id"] == "plain"]
    assert len(plain) == 1 and "rule_id" not in plain[0] and plain[0]["rubric"] == "vqa-helpfulness"
    check_log(out, ["p1", "p2"], RULES)
    assert "plain" not in read_log(out).decisions
    assert run_batch(Judge(FakeEngine()), inp, out).judged == 0


def test_a_row_policy_wins_over_the_runs(data: Path) -> None:
    (data / "own.toml").write_text(POLICY.replace('name = "shop"', 'name = "own"'), "utf-8")
    rows = [{"id": "x", "image": "a.png", "response": "A bike.", "policy": "own.toml"}, items(data)[0]]
    inp = write_jsonl(data / "in.jsonl", rows)
    run_batch(Judge(FakeEngine()), inp, data / "out.jsonl", policy=data / "shop.toml")
    log = read_log(data / "out.jsonl")
    assert log.decisions["x"].policy["name"] == "own" and log.decisions["i1"].policy["name"] == "shop"
    assert [p.get("name") for p in log.runs[0].policies] == ["shop", "own"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.toml", "policy file not found"),
        ("no-such-builtin", "unknown policy"),
        ("broken.toml", "missing the field 'severity'"),
        (12, "field 'policy' must be a policy name"),
    ],
)
def test_a_bad_policy_is_that_rows_one_error_row(data: Path, value: Any, message: str) -> None:
    (data / "broken.toml").write_text(POLICY.replace('severity = "critical"\n', ""), "utf-8")
    rows = [{"id": "bad", "image": "a.png", "response": "A bike.", "policy": value}, items(data)[2]]
    inp = write_jsonl(data / "in.jsonl", rows)
    out = data / "out.jsonl"
    summary = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    assert (summary.ok, summary.errors) == (3, 1)
    bad = [r for r in lines(out) if r["id"] == "bad"]
    assert len(bad) == 2 and bad[0]["status"] == "error" and message in bad[0]["error"]
    # ONE rule row "*" (never a rule id) with the policy as written, and its decision record: error
    assert bad[0]["rule_id"] == "*" and bad[0]["rule_state"] == "error" and bad[0]["hint"]
    assert bad[0]["policy"] == {"name": value if isinstance(value, str) else ""}
    assert bad[1]["kind"] == "decision" and bad[1]["decision"] == "error" and bad[1]["rules"] == ["*"]
    assert summary.decisions.get("error") == 1
    check_log(out, ["i3"], RULES, others=("bad",))
    log = read_log(out)
    (item,) = [i for i in policy_items(log.rows.values(), log.decisions, log.overrides) if i.id == "bad"]
    assert item.complete and item.final == "error" and item.decision.errors == ("*",)
    assert [r.rule_id for r in item.rules] == ["*"] and message in (item.first.error or "")
    again = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    assert again.judged == 0 and again.decisions == summary.decisions


def test_bad_rows_become_rule_error_rows_and_the_batch_goes_on(data: Path) -> None:
    bare = POLICY.replace('instruction = "A listing photo for a second-hand marketplace."\n', "")
    (data / "bare.toml").write_text(bare, "utf-8")
    rows = [
        {"id": "no-image", "image": "missing.png", "response": "A bike.", "instruction": "Q?"},
        {"id": "no-instruction", "image": "a.png", "response": "A bike."},
        {"id": "fine", "image": "a.png", "response": "A bike.", "instruction": "Sell it."},
    ]
    inp = data / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n", encoding="utf-8")
    out = data / "out.jsonl"
    summary = run_batch(Judge(FakeEngine()), inp, out, policy=data / "bare.toml")
    assert (summary.total, summary.results, summary.ok, summary.errors, summary.malformed) == (4, 12, 3, 9, 3)
    log = read_log(out)
    missing = log.rows[key("no-instruction", "safe")]
    assert (
        missing.status == "error"
        and "no instruction" in (missing.error or "")
        and missing.rule_state == "error"
    )
    assert "missing.png" in (log.rows[key("no-image", "accurate")].error or "")
    assert {log.decisions[i].decision.decision for i in ("no-image", "no-instruction", "line-4")} == {"error"}
    assert log.decisions["fine"].decision.decision != "error"
    check_log(out, ["no-image", "no-instruction", "fine", "line-4"], RULES)
    retried = run_batch(Judge(FakeEngine()), inp, out, policy=data / "bare.toml", retry_errors=True)
    assert (retried.judged, retried.errors) == (9, 9)  # only the error rows, again


def test_a_retried_rule_that_now_passes_gets_a_new_decision(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [items(data)[0]])
    out = data / "out.jsonl"
    engine = FakeEngine(n_ctx=256)  # too small: every rule fails to fit
    run_batch(Judge(engine), inp, out, policy=data / "shop.toml")
    assert read_log(out).decisions["i1"].decision.decision == "error"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", retry_errors=True)
    assert read_log(out).decisions["i1"].decision.decision != "error"
    check_log(out, ["i1"], RULES)


def test_keep_copies_more_fields(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", keep=("url",))
    assert read_log(out).rows[key("i3", "safe")].extra == (("url", "u3"),)


# -- an old plain output resumes with nothing judged again ----------------------------------------------
#: The keys edgejudge wrote for these rows before policies existed (commit b53236f, FakeEngine defaults).
OLD_KEYS = {
    "q1": "655757e05afcd31d06239ab9cc9dd48203c4189eefc9521495923308f12204c9",
    "q2": "8d3c5a8de082fd0b09bcfb34cb430486475bdae091a4a079a6fec016f1f62c58",
}


def test_an_old_plain_output_resumes_unchanged(work_dir: Path) -> None:
    synthetic_image(50, seed=4).save(work_dir / "one.png")
    rows = [
        {
            "id": "q1", "image": "one.png", "instruction": "What is shown?", "response": "Shapes.",
            "reference": "Coloured shapes.", "rubric": "vqa-helpfulness", "orig_score": 3,
        },
        {
            "id": "q2", "image": "one.png", "instruction": "Which colour?", "response": "Red.",
            "rubric": "caption-quality",
        },
    ]  # fmt: skip
    inp = write_jsonl(work_dir / "in.jsonl", rows)
    out = work_dir / "out.jsonl"
    # at the default --parallel (4), which earlier versions ran at without recording it
    run_batch(Judge(FakeEngine(max_parallel=4)), inp, out)
    assert {r["id"]: r["key"] for r in lines(out)} == OLD_KEYS  # the same keys as before
    before = out.read_bytes()
    summary = run_batch(Judge(FakeEngine(max_parallel=4)), inp, out)
    assert (summary.skipped, summary.judged, summary.decisions) == (2, 0, {})
    assert out.read_bytes() == before


# -- the CLI -----------------------------------------------------------------------------------------------
def test_batch_policy_cli_shows_decisions_and_counts(fake_factory: list[FakeEngine], data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    args = ["batch", str(inp), "-o", str(out), "--policy", str(data / "shop.toml")]
    result = CliRunner().invoke(app, [*args, "--keep", "url", "--review-band", "0.2,0.8", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["results"] == 9 and sum(summary["decisions"].values()) == 3
    assert "3 rows (9 judgments" in result.stderr
    for row_id in ("i1", "i2", "i3"):
        assert f"{row_id} (line" in result.stderr
    assert "decisions" in result.stderr and "needs_review" in result.stderr
    log = read_log(out)
    assert log.runs[0].review_band == (0.2, 0.8) and log.rows[key("i3", "accurate")].extra == (("url", "u3"),)
    again = CliRunner().invoke(app, [*args, "--keep", "url", "--review-band", "0.2,0.8", "--json"])
    assert again.exit_code == 0 and "already done" in again.stderr
    assert (json.loads(again.stdout)["skipped"], json.loads(again.stdout)["judged"]) == (9, 0)


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--rubric", "vqa-helpfulness"], "--policy"), (["--review-band", "1,0"], "--review-band")],
)
def test_batch_policy_usage_errors(
    fake_factory: list[FakeEngine], data: Path, extra: list[str], flag: str
) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    args = ["batch", str(inp), "-o", str(data / "out.jsonl"), "--policy", str(data / "shop.toml"), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and flag in result.stderr
    assert fake_factory == [] and not (data / "out.jsonl").exists()


def test_batch_unknown_policy_fails_before_loading(fake_factory: list[FakeEngine], data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    result = CliRunner().invoke(app, ["batch", str(inp), "-o", str(data / "o.jsonl"), "--policy", "nope"])
    assert result.exit_code == 1 and "error: unknown policy 'nope'" in result.stderr
    assert fake_factory == []


def test_another_review_band_decides_again_without_judging(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml")
    again = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", review_band=(0.0, 1.0))
    assert again.judged == 0
    log = read_log(out)
    assert {log.decisions[i].review_band for i in ("i1", "i2", "i3")} == {(0.0, 1.0)}
    check_log(out, ["i1", "i2", "i3"], RULES)
    before = out.read_bytes()
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", review_band=(0.0, 1.0))
    assert out.read_bytes() == before
