"""Items of a policy log the compliance report, the CSV and the report command treat apart: an incomplete
item (not every rule judged: a batch cut short, or one still running), a row whose policy could not be
loaded (one rule row with rule_id "*"), and the report's options that only fit one format (--group-by,
--title) or a field the rows do not carry. Hand-made logs in the documented format (helpers)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.batch.records import read_log
from edgejudge.cli import app
from edgejudge.compliance import INCOMPLETE_WHY, render_compliance
from edgejudge.report_csv import POLICY_COLUMNS, write_csv
from tests.helpers.compliance_logs import RULES, decision_record, policy_log, rule_row

NO_POLICY_ERROR = "cannot load the policy 'gone.toml' named by this row: no such file"


def _with(work_dir: Path, *lines: dict) -> Path:
    path = policy_log(work_dir)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _cut_and_stale(work_dir: Path) -> Path:
    """The five items of ``policy_log``, plus "cut" (2 of 3 rules, no decision record: a kill) and "stale"
    (decided, then one rule judged again with nothing decided since: a re-judge cut short)."""
    cut = [rule_row("cut", 6, r, 0.95) for r in RULES[:2]]
    stale = [rule_row("stale", 7, r, 0.95) for r in RULES]
    again = {**rule_row("stale", 7, RULES[0], 0.1, judged_at="2026-12-02T04:00:00Z"), "key": "ee" * 32}
    return _with(work_dir, *cut, *stale, decision_record(stale), again)


def _card(page: str, item_id: str) -> str:
    match = re.search(rf'<article [^>]*data-id="{re.escape(item_id)}".*?</article>', page, re.S)
    assert match, item_id
    return match.group(0)


def _tiles(page: str) -> dict[str, str]:
    return {
        label: n for n, label in re.findall(r'<div class="tile [^"]*"><b>(\d+)</b><span>([^<]+)</span>', page)
    }


def test_an_incomplete_item_is_its_own_category(work_dir: Path) -> None:
    path = _cut_and_stale(work_dir)
    page, summary = render_compliance(read_log(path), results_dir=work_dir)
    assert (summary.items, summary.incomplete) == (7, 2)
    assert (summary.compliant, summary.violation, summary.needs_review, summary.error) == (2, 2, 0, 1)
    assert _tiles(page)["incomplete"] == "2" and _tiles(page)["compliant"] == "2"
    for item in ("cut", "stale"):
        card = _card(page, item)
        assert (
            'data-decision="incomplete"' in card
            and '<span class="badge bd-incomplete">incomplete</span>' in card
        )
        assert f"decision: <b>incomplete: {INCOMPLETE_WHY}</b> · severity: <b>–</b>" in card
    assert '<option value="incomplete">incomplete</option>' in page  # a value of the decision filter
    assert 'id="incomplete-note"' in page and "2 item(s) incomplete" in page
    (work_dir / "all-done").mkdir()
    complete, _ = render_compliance(read_log(policy_log(work_dir / "all-done")), results_dir=work_dir)
    assert ">incomplete</span></div>" not in complete and 'id="incomplete-note"' not in complete


def test_the_report_command_counts_incomplete_items(work_dir: Path) -> None:
    path = _cut_and_stale(work_dir)
    result = CliRunner().invoke(app, ["report", str(path), "-o", str(work_dir / "r.html"), "--json"])
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "7 items (2 compliant, 2 violation, 0 needs review, 1 error, 2 incomplete; 1 overridden)" in said
    assert f"2 items incomplete: {INCOMPLETE_WHY}" in said
    assert json.loads(result.stdout)["incomplete"] == 2


def test_the_csv_writes_incomplete_and_each_rules_state(work_dir: Path) -> None:
    path = _cut_and_stale(work_dir)
    write_csv(path, work_dir / "o.csv")
    with (work_dir / "o.csv").open(encoding="utf-8", newline="") as handle:
        lines = list(csv.DictReader(handle))
    header = list(lines[0])
    assert header == POLICY_COLUMNS and header.index("rule_state") == header.index("passed") + 1
    cut = [r for r in lines if r["id"] == "cut"]
    assert len(cut) == 2 and {(r["decision"], r["computed_decision"], r["severity"]) for r in cut} == {
        ("incomplete", "incomplete", "")
    }
    stale = {r["rule_id"]: r for r in lines if r["id"] == "stale"}
    assert stale["prohibited-items"]["decision"] == "incomplete"
    states = {(r["id"], r["rule_id"]): r["rule_state"] for r in lines}
    assert states["bad", "prohibited-items"] == "fail" and states["clean", "personal-data"] == "pass"
    assert states["broken", "misleading-claims"] == "error"
    # passed says yes (score 5) but p_pass 0.5 is inside the review band: the state says uncertain
    unsure = [r for r in lines if (r["id"], r["rule_id"]) == ("unsure", "misleading-claims")][0]
    assert (unsure["passed"], unsure["p_pass"], unsure["rule_state"]) == ("true", "0.5", "uncertain")


def _no_policy_row() -> dict:
    row = rule_row("nopol", 6, ("*", "", "major"), None)
    row.update(
        error=NO_POLICY_ERROR,
        hint="name a built-in policy or a file",
        rule_title=None,
        policy={"name": "gone.toml"},  # what the batch writes: the value as written
    )
    return row


def test_a_row_whose_policy_could_not_load_is_an_error_item(work_dir: Path) -> None:
    row = _no_policy_row()
    path = _with(work_dir, row, decision_record([row], policy={"name": "gone.toml"}))
    page, summary = render_compliance(read_log(path), results_dir=work_dir)
    assert (summary.items, summary.error, summary.other_rows, summary.incomplete) == (6, 2, 0, 0)
    card = _card(page, "nopol")
    assert 'data-decision="error"' in card and NO_POLICY_ERROR.replace("'", "&#x27;") in card
    assert "the policy<small>could not be loaded: no rule was judged</small>" in card
    assert 'data-rules="[]"' in card  # it failed no rule of a policy
    assert '<option value="*">' not in page  # not a rule of the rule filter
    table = re.search(r'<table class="grid" id="rule-failures">.*?</table>', page, re.S).group(0)
    assert "<td>*</td>" not in table

    result = CliRunner().invoke(app, ["report", str(path), "-o", str(work_dir / "r.html")])
    assert result.exit_code == 0, result.stderr
    assert "6 items (2 compliant, 2 violation, 0 needs review, 2 error; 1 overridden)" in " ".join(
        result.stderr.split()
    )
    assert "without a rule" not in result.stderr  # the row is an item now, not a row left out

    write_csv(path, work_dir / "o.csv")
    with (work_dir / "o.csv").open(encoding="utf-8", newline="") as handle:
        nopol = [r for r in csv.DictReader(handle) if r["id"] == "nopol"]
    assert [(r["rule_id"], r["decision"], r["rule_state"], r["error"]) for r in nopol] == [
        ("*", "error", "error", NO_POLICY_ERROR)
    ]


def test_plain_rows_in_a_policy_log_are_named_as_such(work_dir: Path) -> None:
    plain = {**rule_row("plain", 8, RULES[0], 0.9), "rule_id": None, "policy": None}
    path = _with(work_dir, plain)
    result = CliRunner().invoke(app, ["report", str(path), "-o", str(work_dir / "r.html")])
    assert result.exit_code == 0, result.stderr
    assert "1 rows without a rule not shown (rows of the log judged without a policy)" in " ".join(
        result.stderr.split()
    )


def test_group_by_a_field_no_row_carries_warns_and_names_keep(work_dir: Path) -> None:
    path = policy_log(work_dir)
    args = ["report", str(path), "-o", str(work_dir / "r.html")]
    result = CliRunner().invoke(app, [*args, "--group-by", "class", "--json"])
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "no row carries the field 'class': no grade sheet" in said and "--keep class" in said
    assert json.loads(result.stdout)["group_rows"] == 0
    assert 'id="grade-sheet"' not in (work_dir / "r.html").read_text(encoding="utf-8")
    quiet = CliRunner().invoke(app, args)  # no --group-by: nothing to warn about
    assert quiet.exit_code == 0 and "no row carries" not in quiet.stderr


def test_group_by_on_a_plain_log_warns_too(work_dir: Path) -> None:
    rows = [{**rule_row(f"r{k}", k, RULES[0], 0.9), "rule_id": None, "policy": None} for k in (1, 2)]
    (work_dir / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["report", str(work_dir / "plain.jsonl"), "-o", str(work_dir / "p.html"), "--group-by", "class"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    assert "no row carries the field 'class'" in result.stderr and "--keep class" in result.stderr
    assert json.loads(result.stdout)["group_rows"] == 0


def test_html_only_options_with_csv_are_usage_errors(work_dir: Path) -> None:
    path = policy_log(work_dir)
    for extra, flag in ((["--group-by", "student"], "--group-by"), (["--title", "Q4"], "--title")):
        args = ["report", str(path), "--format", "csv", "-o", str(work_dir / "o.csv"), *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.stderr
        assert flag in result.stderr and "HTML report" in result.stderr
        assert not (work_dir / "o.csv").exists()


def test_a_real_batch_row_whose_policy_cannot_load_reaches_the_report(work_dir: Path) -> None:
    """run_batch (fake engine for the judge) with a row naming a policy file that does not exist: the
    report shows it as an error item, counted, and no row is 'not shown'."""
    from edgejudge.batch import run_batch
    from edgejudge.engine.fake import FakeEngine
    from edgejudge.images import synthetic_image
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    synthetic_image(64, seed=6).save(work_dir / "bike.png")
    rows = [
        {"id": "fine", "image": "bike.png", "response": "A bike."},
        {"id": "lost", "image": "bike.png", "response": "A bike.", "policy": "gone.toml"},
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    policy = load_policy("marketplace-listing")
    run_batch(Judge(FakeEngine()), work_dir / "in.jsonl", work_dir / "out.jsonl", policy=policy)
    page, summary = render_compliance(read_log(work_dir / "out.jsonl"), results_dir=work_dir)
    assert (summary.items, summary.other_rows, summary.incomplete) == (2, 0, 0)
    assert summary.error >= 1
    lost = _card(page, "lost")
    assert 'data-decision="error"' in lost and "gone.toml" in lost and "could not be loaded" in lost


def test_the_audit_says_where_a_model_hash_came_from(work_dir: Path) -> None:
    from tests.helpers.compliance_logs import run_record

    record = run_record("2026-12-02T06:00:00Z")
    record["model"]["sha256_from"] = "registry"
    record["mmproj"]["sha256_from"] = "file"
    path = _with(work_dir, record)
    page, _ = render_compliance(read_log(path), results_dir=work_dir)
    run2 = re.search(r"<h3>Run 2</h3>.*?</table>", page, re.S).group(0)
    assert f'{"11" * 32} <small class="muted">(registry record)</small>' in run2
    assert f'{"22" * 32} <small class="muted">(file hashed by the run)</small>' in run2
    run1 = re.search(r"<h3>Run 1</h3>.*?</table>", page, re.S).group(0)
    assert "11" * 32 in run1 and "registry record" not in run1  # an older record says nothing


def test_the_grade_sheet_leaves_out_incomplete_items(work_dir: Path) -> None:
    """ana's item is decided; ben's was cut after 1 of 3 rules: the report's grade sheet (and leaderboard)
    has no grade for ben, and its footer says the rows of an incomplete item were left out (with the 15
    rows of the other items, which carry no student)."""
    ana = [rule_row("ana-1", 6, r, 0.95, extra=[("student", "ana"), ("system", "s1")]) for r in RULES]
    ben = [rule_row("ben-1", 7, RULES[0], 0.95, extra=[("student", "ben"), ("system", "s2")])]
    path = _with(work_dir, *ana, decision_record(ana), *ben)
    page, summary = render_compliance(read_log(path), results_dir=work_dir)
    assert summary.incomplete == 1
    sheet = re.search(r'<section class="views" id="grade-sheet">.*?</section>', page, re.S)
    board = re.search(r'<section class="views" id="leaderboard">.*?</section>', page, re.S)
    assert sheet and board
    assert "<td>ana</td>" in sheet.group(0) and "<td>ben</td>" not in sheet.group(0)
    assert (
        "16 rows left out (errors, no score or no usable student; the rules of 1 incomplete items)"
        in sheet.group(0)
    )
    assert ">s1<" in board.group(0) and ">s2<" not in board.group(0)
    assert "(the rules of 1 incomplete items among them)" in board.group(0)
