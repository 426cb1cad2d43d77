"""The CSV export (``edgejudge report --format csv``): cells (table-driven, the formula-injection guard),
policy and plain logs read back with Python's csv module, and the CLI's errors and atomic write."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgejudge.batch import run_batch
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.judge import Judge
from edgejudge.report_csv import PLAIN_COLUMNS, POLICY_COLUMNS, safe_cell, write_csv
from tests.helpers.compliance_logs import POLICY, XSS, policy_log


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("plain text", "plain text"),
        ("=1+1", "'=1+1"),
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+41 79 000", "'+41 79 000"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        (" =1", " =1"),  # not at the start: a spreadsheet reads it as text
        ("a=b", "a=b"),
        ("'quoted", "'quoted"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (3, 3),
        (-3, -3),  # a number stays a number
        (0.25, 0.25),
        (math.nan, "nan"),
        pytest.param(10**5000, "<int value>", id="huge-int"),
        ({"a": "=1"}, '{"a": "=1"}'),
        (["=x"], '["=x"]'),
        ("\ud800lone", "\ufffdlone"),
    ],
)
def test_safe_cell(value: Any, cell: Any) -> None:
    assert safe_cell(value) == cell


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_policy_log_gives_one_line_per_item_and_rule(work_dir: Path) -> None:
    path = policy_log(work_dir)
    out = work_dir / "out.csv"
    summary = write_csv(path, out)
    assert (summary.kind, summary.lines, summary.items, summary.columns) == (
        "policy",
        15,
        5,
        len(POLICY_COLUMNS),
    )
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and summary.bytes == len(raw)
    lines = _read(out)
    assert list(lines[0]) == POLICY_COLUMNS and len(lines) == 15
    assert [(r["id"], r["rule_id"]) for r in lines[:4]] == [
        ("clean", "prohibited-items"),
        ("clean", "misleading-claims"),
        ("clean", "personal-data"),
        ("bad", "prohibited-items"),
    ]
    bad = lines[3]
    assert (bad["decision"], bad["computed_decision"], bad["severity"], bad["rule_severity"]) == (
        "violation",
        "violation",
        "critical",
        "critical",
    )
    assert (bad["score"], bad["p_pass"], bad["passed"], bad["policy_sha256"]) == (
        "2",
        "0.05",
        "false",
        POLICY["sha256"],
    )
    unsure = [r for r in lines if r["id"] == "unsure"]
    assert {(r["decision"], r["computed_decision"], r["overridden_by"], r["severity"]) for r in unsure} == {
        ("violation", "needs_review", "ana", "major")
    }
    assert (
        unsure[0]["override_note"] == "claim is false" and unsure[0]["override_at"] == "2026-12-02T02:10:00Z"
    )
    broken = [r for r in lines if r["id"] == "broken" and r["rule_id"] == "misleading-claims"][0]
    assert (
        broken["error"] == "the model stopped early"
        and broken["score"] == ""
        and broken["decision"] == "error"
    )
    hostile = [r for r in lines if r["id"] == '"><script>x</script>']
    assert len(hostile) == 3 and hostile[0]["feedback"] == XSS
    assert hostile[0]["response"] == '\'=HYPERLINK("http://x")'  # the guard, read back
    assert bad["instruction"] == "A listing photo for a second-hand marketplace"


def test_formula_cells_are_neutralised_in_the_file(work_dir: Path) -> None:
    path = policy_log(work_dir)
    with path.open("a", encoding="utf-8") as handle:
        from tests.helpers.compliance_logs import RULES, rule_row

        row = rule_row(
            "=cmd|' /C calc'!A0", 6, RULES[0], 0.9, feedback="+1 and more", extra=[("note", "@risk")]
        )
        handle.write(json.dumps(row) + "\n")
    assert write_csv(path, work_dir / "x.csv").lines == 16
    lines = _read(work_dir / "x.csv")
    last = [r for r in lines if r["line"] == "6"][0]
    assert (
        last["id"] == "'=cmd|' /C calc'!A0"
        and last["feedback"] == "'+1 and more"
        and last["note"] == "'@risk"
    )
    assert list(lines[0])[-1] == "note"  # pass-through fields after the documented columns
    for line in lines:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in line.values() if cell)


def test_plain_log_gives_one_line_per_row(work_dir: Path) -> None:
    from edgejudge.images import synthetic_image

    synthetic_image(64, seed=1).save(work_dir / "a.png")
    rows = [
        {"id": "r1", "image": "a.png", "instruction": "Q?", "response": "=2*3", "student": "ana"},
        {"id": "r2", "image": "missing.png", "instruction": "Q?", "response": "R", "student": "ben"},
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = FakeEngine()
    engine.enqueue("Fine, with a line\nbreak. [RESULT] 4")
    run_batch(Judge(engine), work_dir / "in.jsonl", work_dir / "out.jsonl", default_rubric="vqa-helpfulness")
    result = CliRunner().invoke(
        app,
        ["report", str(work_dir / "out.jsonl"), "--format", "CSV", "-o", str(work_dir / "t.csv"), "--json"],
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "plain" and summary["lines"] == 2 and "2 lines (2 rows" in result.stderr
    lines = _read(work_dir / "t.csv")
    assert list(lines[0]) == [*PLAIN_COLUMNS, "student"]
    assert [(r["id"], r["status"], r["score"], r["student"]) for r in lines] == [
        ("r1", "ok", "4", "ana"),
        ("r2", "error", "", "ben"),
    ]
    assert lines[0]["response"] == "'=2*3" and lines[0]["feedback"] == "Fine, with a line\nbreak."
    assert lines[1]["error"].startswith("image not found: missing.png")


def test_csv_cli_errors_and_atomic_write(work_dir: Path) -> None:
    path = policy_log(work_dir)
    before = path.read_bytes()
    same = CliRunner().invoke(app, ["report", str(path), "--format", "csv", "-o", str(path)])
    assert same.exit_code == 1 and "overwrite the results file" in same.stderr and path.read_bytes() == before
    folder = CliRunner().invoke(app, ["report", str(path), "--format", "csv", "-o", str(work_dir)])
    assert folder.exit_code == 1 and "is a folder" in folder.stderr and "out.csv" in folder.stderr
    missing = CliRunner().invoke(
        app, ["report", str(work_dir / "nope.jsonl"), "--format", "csv", "-o", "x.csv"]
    )
    assert missing.exit_code == 1 and "results file not found" in missing.stderr
    (work_dir / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="no batch results"):
        write_csv(work_dir / "empty.jsonl", work_dir / "e.csv")
    site = work_dir / "site"
    done = CliRunner().invoke(app, ["report", str(path), "--format", "csv", "-o", str(site / "d.csv")])
    assert done.exit_code == 0, done.stderr
    assert [p.name for p in site.iterdir()] == ["d.csv"] and (site / "d.csv").stat().st_mode & 0o777 == 0o644
    help_text = " ".join(CliRunner().invoke(app, ["report", "--help"]).stdout.split())
    assert "leading apostrophe" in help_text and "--format" in help_text


def test_a_mixed_log_writes_its_plain_rows_too(work_dir: Path) -> None:
    """A batch without --policy whose rows name their own policy or none: the CSV has every item's rules
    and every plain row (one line each, in input order, the decision empty, its rubric in ``rubric``)."""
    from edgejudge.images import synthetic_image

    synthetic_image(64, seed=1).save(work_dir / "a.png")
    rows = [
        {"id": "plain0", "image": "a.png", "instruction": "Q?", "response": "-1", "student": "ana"},
        {"id": "p1", "image": "a.png", "instruction": "Q?", "response": "R", "policy": "figure-grading"},
        {"id": "plain2", "image": "missing.png", "instruction": "Q?", "response": "R"},
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_batch(
        Judge(FakeEngine()), work_dir / "in.jsonl", work_dir / "out.jsonl", default_rubric="vqa-helpfulness"
    )
    result = CliRunner().invoke(
        app,
        ["report", str(work_dir / "out.jsonl"), "--format", "csv", "-o", str(work_dir / "m.csv"), "--json"],
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    lines = _read(work_dir / "m.csv")
    rules = [r for r in lines if r["id"] == "p1"]
    assert summary["kind"] == "policy" and (summary["items"], summary["plain_rows"]) == (1, 2)
    assert summary["lines"] == len(lines) == len(rules) + 2 and len(rules) >= 2
    said = " ".join(result.stderr.split())
    assert f"{len(lines)} lines (1 items and 2 rows judged without a policy," in said
    assert list(lines[0])[: len(POLICY_COLUMNS) + 1] == [*POLICY_COLUMNS, "rubric"]
    assert [r["id"] for r in lines] == ["plain0", *(["p1"] * len(rules)), "plain2"]  # input order
    first, last = lines[0], lines[-1]
    assert (first["line"], first["decision"], first["rule_id"], first["rubric"], first["student"]) == (
        "1",
        "",
        "",
        "vqa-helpfulness",
        "ana",
    )
    assert first["score"] != "" and first["feedback"] and first["response"] == "'-1"
    assert last["score"] == "" and last["error"].startswith("image not found: missing.png")
    assert {r["rubric"] for r in rules} == {""} and all(r["decision"] for r in rules)


def test_a_policy_log_has_no_rubric_column(work_dir: Path) -> None:
    summary = write_csv(policy_log(work_dir), work_dir / "p.csv")
    assert summary.plain_rows == 0 and "rubric" not in _read(work_dir / "p.csv")[0]
