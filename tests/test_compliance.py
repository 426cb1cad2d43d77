"""The compliance report of a policy log: content, overrides, the audit block, escaping of hostile rows,
the grade sheet and leaderboard sections, and the CLI (the page in a browser: test_compliance_chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgejudge.batch.records import DecisionRecord, read_log, rules_key
from edgejudge.cli import app
from edgejudge.compliance import ComplianceSummary, render_compliance
from edgejudge.decision import Decision
from edgejudge.report import render_report, write_report
from tests.helpers.compliance_logs import (
    POLICY,
    RULES,
    XSS,
    decision_record,
    policy_log,
    rule_row,
    write_lines,
)


def _done(item: str, line: int, rows: list[dict]) -> dict:
    """The decision record that makes an item complete, whatever its rows hold (an error decision)."""
    rules = tuple(str(r.get("rule_id")) for r in rows)
    return DecisionRecord(
        id=item,
        line=line,
        key=rules_key(r["key"] for r in rows),
        policy={},  # the rows' own (they hold no usable policy)
        decision=Decision("error", None, (), (), rules),
        rules=rules,
    ).to_dict()


def _page(path: Path, **kwargs: object) -> tuple[str, ComplianceSummary]:
    return render_compliance(read_log(path), results_dir=path.parent, **kwargs)  # type: ignore[arg-type]


def _card(page: str, item_id: str) -> str:
    match = re.search(rf'<article [^>]*data-id="{re.escape(item_id)}".*?</article>', page, re.S)
    assert match, item_id
    return match.group(0)


def test_summary_counts_and_rule_table(work_dir: Path) -> None:
    page, summary = _page(policy_log(work_dir))
    assert (summary.items, summary.rule_rows, summary.overridden, summary.runs) == (5, 15, 1, 1)
    assert (summary.compliant, summary.violation, summary.needs_review, summary.error) == (2, 2, 0, 1)
    assert summary.images_missing == 0 and page.count('<article class="card') == 5
    tiles = {
        label: n for n, label in re.findall(r'<div class="tile [^"]*"><b>(\d+)</b><span>([^<]+)</span>', page)
    }
    assert tiles == {
        "items": "5",
        "compliant": "2",
        "violation": "2",
        "needs review": "0",
        "error": "1",
        "overridden": "1",
    }
    table = re.search(r'<table class="grid" id="rule-failures">.*?</table>', page, re.S)
    assert table
    rows = {
        cells[0]: cells[2:]
        for cells in (
            re.findall(r"<td>([^<]*)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table.group(0))
        )
        if cells
    }
    # columns: info minor major critical | uncertain errors passed
    assert rows["prohibited-items"] == ["", "", "", "1", "0", "0", "4"]
    assert rows["misleading-claims"] == ["", "", "", "", "1", "1", "3"]
    assert rows["personal-data"] == ["", "", "", "", "0", "0", "5"]


def test_cards_show_rules_evidence_and_overrides(work_dir: Path) -> None:
    page, _ = _page(policy_log(work_dir))
    bad = _card(page, "bad")
    assert 'data-decision="violation"' in bad and 'data-severities="critical"' in bad
    assert '<tr class="st-fail"><td class="rule">prohibited-items' in bad
    assert "<td>2</td><td>0.05</td><td>no</td><td>fail</td>" in bad
    assert "A replica handgun is offered for sale." in bad and 'class="evidence"' in bad
    assert "A listing photo for a second-hand marketplace" in bad and "A red bicycle, barely used." in bad
    assert "data:image/jpeg;base64," in bad  # the image as judged

    unsure = _card(page, "unsure")
    assert 'class="card d-violation overridden"' in unsure and 'data-decision="violation"' in unsure
    assert (
        "decision: <b>violation (overridden by ana, 2026-12-02: claim is false; computed: needs_review)</b>"
        " · severity: <b>major</b>"
    ) in unsure
    assert json.loads(re.search(r'data-rules="([^"]*)"', unsure).group(1).replace("&quot;", '"')) == [
        "misleading-claims"
    ]

    broken = _card(page, "broken")
    assert 'data-decision="error"' in broken and "the model stopped early" in broken
    assert "raise --max-tokens" in broken and '<tr class="st-error">' in broken


def test_an_override_of_other_results_does_not_carry_over(work_dir: Path) -> None:
    path = policy_log(work_dir)
    again = rule_row("unsure", 3, RULES[1], 0.45, judged_at="2026-12-02T03:00:00Z")
    again["key"] = "cd" * 32  # judged again: other results, the override was made on the old ones
    now = [rule_row("unsure", 3, RULES[0], 0.97), again, rule_row("unsure", 3, RULES[2], 0.9)]
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(again) + "\n" + json.dumps(decision_record(now)) + "\n")
    page, summary = _page(path)
    assert summary.overridden == 0 and summary.needs_review == 1
    assert "decision: <b>needs_review</b>" in _card(page, "unsure")


def test_audit_block(work_dir: Path) -> None:
    page, _ = _page(policy_log(work_dir))
    audit = re.search(r'<section class="audit" id="audit">.*?</section>', page, re.S)
    assert audit
    block = audit.group(0)
    for value in (
        "0.1.0",
        "prometheus-vision-7b",
        "judge.gguf",
        "11" * 32,
        "judge-mmproj.gguf",
        "22" * 32,
        "marketplace-listing version 1.2",
        POLICY["sha256"],
        "33" * 32,
        "in.jsonl",
        "44" * 32,
        "temperature = 0.0",
        "2026-12-02T00:59:00Z",  # started
        "2026-12-02T01:00:00Z",  # ended: the latest judged_at
        "0.25–0.75",
    ):
        assert value in block, value
    assert "not recorded" not in block


def test_audit_of_an_older_log_says_not_recorded(work_dir: Path) -> None:
    page, summary = _page(policy_log(work_dir, run=False))
    block = re.search(r'<section class="audit" id="audit">.*?</section>', page, re.S).group(0)
    assert summary.runs == 0 and "no run record in this log" in block
    assert block.count("not recorded") >= 8  # versions, files, hashes, settings, start
    assert POLICY["sha256"] in block and "2026-12-02T01:00:00Z" in block  # from the rule rows


def test_several_runs_are_listed_each(work_dir: Path) -> None:
    from tests.helpers.compliance_logs import run_record

    path = policy_log(work_dir)
    late = rule_row("clean", 1, RULES[0], 0.99, judged_at="2026-12-02T05:00:30Z")
    decided = decision_record([late, *(rule_row("clean", 1, r, 0.95) for r in RULES[1:])])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(run_record("2026-12-02T05:00:00Z")) + "\n" + json.dumps(late) + "\n")
        handle.write(json.dumps(decided) + "\n")
    page, summary = _page(path)
    assert summary.runs == 2 and "<h3>Run 1</h3>" in page and "<h3>Run 2</h3>" in page
    run1 = re.search(r"<h3>Run 1</h3>.*?</table>", page, re.S).group(0)
    run2 = re.search(r"<h3>Run 2</h3>.*?</table>", page, re.S).group(0)
    assert "2026-12-02T01:00:00Z" in run1 and "2026-12-02T05:00:30Z" in run2


def test_hostile_rows_are_escaped_and_bad_types_never_raise(work_dir: Path) -> None:
    path = policy_log(work_dir)
    weird = rule_row("weird", 6, ("<b>r</b>", "<i>t</i>", "critical"), 0.1, feedback=XSS)
    weird.update(
        score="5",
        p_pass="high",
        feedback=["<script>x</script>"],
        rule_title={"a": "<svg onload=alert(1)>"},
        policy="not a mapping",
        severity=7,
        image=12345,
        judged_at=None,
        student=["<x>"],
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            json.dumps(weird)
            + "\n"
            + json.dumps(_done("weird", 6, [weird]))  # the item is complete
            + "\n"
            + json.dumps({"id": "x", "line": 9, "status": "ok", "kind": "run"})
        )
        handle.write("\n[1, 2]\n{broken\n")
    page, summary = _page(path)
    assert summary.items == 6 and summary.runs == 2
    assert page.count("<script") == 1 and "<img src=x" not in page and "<svg" not in page
    assert "&lt;script&gt;document.body.setAttribute(&quot;data-pwned&quot;" in page
    assert 'data-id="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in page
    assert "&lt;b&gt;r&lt;/b&gt;" in page and "Content-Security-Policy" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert 'data-decision="error"' in _card(page, "weird")  # p_pass "high" is no p_pass


def test_grade_sheet_and_leaderboard_sections(work_dir: Path) -> None:
    rows = []
    for k, (student, system) in enumerate([("ana", "a"), ("ben", "b"), ("ana", "b"), ("ben", "a")], 1):
        item = [
            rule_row(
                f"i{k}", k, r, 0.9 if system == "a" else 0.1, extra=[("student", student), ("system", system)]
            )
            for r in RULES
        ]
        rows.extend([*item, decision_record(item)])
    path = write_lines(work_dir / "graded.jsonl", rows)
    page, _ = _page(path)
    sheet = re.search(r'<section class="views" id="grade-sheet">.*?</section>', page, re.S).group(0)
    assert (
        "Grade sheet by student" in sheet
        and "<td>ana</td><td>2</td>" in sheet
        and "prohibited-items" in sheet
    )
    board = re.search(r'<section class="views" id="leaderboard">.*?</section>', page, re.S).group(0)
    assert re.search(r"<td>1</td><td>a</td><td>\d+</td><td><b>5\.00</b></td>", board)
    assert "100%" in board and "0%" in board and "95% interval" in board
    by_system, _ = _page(path, group_by="system")
    assert "Grade sheet by system" in by_system

    plain, _ = render_report([{**r, "rule_id": None} for r in rows if "kind" not in r])
    assert 'id="leaderboard"' in plain and 'id="grade-sheet"' in plain
    bare, _ = render_report([{k: v for k, v in r.items() if k not in ("student", "system")} for r in rows])
    assert "Leaderboard" not in bare and "grade-sheet" not in bare and ".views{" not in bare


def test_report_cli_detects_a_policy_log(work_dir: Path) -> None:
    path = policy_log(work_dir)
    html_path = work_dir / "site" / "compliance.html"
    result = CliRunner().invoke(app, ["report", str(path), "-o", str(html_path), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "compliance" and summary["items"] == 5 and summary["output"] == str(html_path)
    assert "compliance report, 5 items (2 compliant, 2 violation, 0 needs review, 1 error; 1 overridden)" in (
        " ".join(result.stderr.split())
    )
    page = html_path.read_text(encoding="utf-8")
    assert "<title>edgejudge compliance report</title>" in page and 'id="audit"' in page
    assert [p.name for p in html_path.parent.iterdir()] == ["compliance.html"]
    assert isinstance(write_report(path, work_dir / "b.html", title="Q4 <audit>"), ComplianceSummary)
    assert "<title>Q4 &lt;audit&gt;</title>" in (work_dir / "b.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["pdf", "", "HTML5"])
def test_report_cli_refuses_an_unknown_format(work_dir: Path, fmt: str) -> None:
    path = policy_log(work_dir)
    result = CliRunner().invoke(app, ["report", str(path), "-o", str(work_dir / "r"), "--format", fmt])
    assert result.exit_code == 2 and "choose html or csv" in result.stderr
    assert not (work_dir / "r").exists()


def test_end_to_end_from_a_real_policy_batch_on_the_fake_engine(work_dir: Path) -> None:
    """A policy batch (run_batch with a built-in policy, the fake engine for the judge) through the CLI to
    the compliance page and the CSV: every rule row, the decisions, the run record in the audit block."""
    from edgejudge.batch import run_batch
    from edgejudge.engine.fake import FakeEngine
    from edgejudge.images import synthetic_image
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    policy = load_policy("marketplace-listing")
    synthetic_image(96, seed=5).save(work_dir / "bike.png")
    rows = [
        {"id": f"listing-{k}", "image": "bike.png", "response": f"Bicycle, {k} years old <b>", "system": s}
        for k, s in enumerate(["a", "b", "a"], 1)
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_batch(Judge(FakeEngine()), work_dir / "in.jsonl", work_dir / "out.jsonl", policy=policy)
    assert summary.errors == 0

    html_path = work_dir / "compliance.html"
    result = CliRunner().invoke(app, ["report", str(work_dir / "out.jsonl"), "-o", str(html_path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "compliance" and report["items"] == 3 and report["runs"] == 1
    assert report["rule_rows"] == 3 * len(policy.rules) and report["images_missing"] == 0
    assert sum(report[d] for d in ("compliant", "violation", "needs_review", "error")) == 3
    page = html_path.read_text(encoding="utf-8")
    assert page.count('<table class="rules">') == 3 and page.count('<tr class="st-') == 3 * len(policy.rules)
    assert policy.sha256 in page  # the audit names the policy by its hash
    audit = re.search(r'<section class="audit" id="audit">.*?</section>', page, re.S).group(0)
    assert "in.jsonl" in audit and "<h3>Run 1</h3>" in audit and 'id="leaderboard"' in page
    assert "Bicycle, 1 years old &lt;b&gt;" in page

    csv_result = CliRunner().invoke(
        app,
        ["report", str(work_dir / "out.jsonl"), "--format", "csv", "-o", str(work_dir / "o.csv"), "--json"],
    )
    assert csv_result.exit_code == 0, csv_result.stderr
    table = json.loads(csv_result.stdout)
    assert table["kind"] == "policy" and table["lines"] == 3 * len(policy.rules) and table["items"] == 3
