"""``edgejudge policies list|show|check`` through the command line: people's tables on stderr, JSON/TOML on
stdout, one ``error:`` line and exit 1 for a policy that cannot be used."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.policy import builtin_policies

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner(env={"COLUMNS": "200"})

RULE = """
[[rules]]
id = "{id}"
title = "Rule {id}"
severity = "minor"

[rules.rubric]
criteria = "{criteria}"
score1 = "Level one: the content clearly breaks the rule in an obvious way."
score2 = "Level two: the content breaks the rule, though less obviously so."
score3 = "Level three: unclear whether the content breaks the rule or not."
score4 = "Level four: the content follows the rule with one small doubt."
score5 = "Level five: the content follows the rule fully, nothing to note."
"""


def policy_file(
    folder: Path, *rules: str, criteria: str = "Does it follow the rule?", name: str = "mine"
) -> Path:
    path = folder / f"{name}.toml"
    head = f'name = "{name}"\nversion = "1.0"\ndescription = "My rules.\\nMore words."\n'
    path.write_text(head + "".join(RULE.format(id=r, criteria=criteria) for r in rules), encoding="utf-8")
    return path


def test_list_human_and_json() -> None:
    human = runner.invoke(app, ["policies", "list"])
    assert human.exit_code == 0, human.output
    assert human.stdout == ""  # people's table on stderr, stdout stays clean
    for name, policy in builtin_policies().items():
        assert name in human.stderr and policy.version in human.stderr
    assert "MLCommons AILuminate v1.0" in human.stderr  # the first line of a description
    data = json.loads(runner.invoke(app, ["policies", "list", "--json"]).stdout)
    assert [p["name"] for p in data] == list(builtin_policies())
    grading = next(p for p in data if p["name"] == "figure-grading")
    assert grading["rules"] == [
        "correctness",
        "use-of-figure",
        "reasoning",
        "units-notation",
        "communication",
    ]
    assert grading["instruction"] is None and len(grading["sha256"]) == 64
    assert grading["title"].startswith("Grading a student's answer")


def test_show_human_with_and_without_rubrics() -> None:
    plain = runner.invoke(app, ["policies", "show", "marketplace-listing"])
    assert plain.exit_code == 0 and plain.stdout == ""
    policy = builtin_policies()["marketplace-listing"]
    for rule in policy.rules:
        assert rule.id in plain.stderr and rule.title in plain.stderr
    assert "critical" in plain.stderr and policy.instruction and policy.instruction in plain.stderr
    assert "Score 5" not in plain.stderr and "--rules" in plain.stderr
    for flag in ("--rules", "--full"):
        full = runner.invoke(app, ["policies", "show", "marketplace-listing", flag])
        assert full.exit_code == 0
        assert "Score 1" in full.stderr and "Score 5" in full.stderr
        assert policy.rules[0].rubric.descriptions[0] in full.stderr
    grading = runner.invoke(app, ["policies", "show", "figure-grading"])
    assert "none (each item's own)" in grading.stderr


def test_show_json_is_the_whole_policy() -> None:
    result = runner.invoke(app, ["policies", "show", "social-media-safety", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    policy = builtin_policies()["social-media-safety"]
    assert set(data) == {"name", "version", "description", "instruction", "sha256", "source", "rules"}
    assert (data["name"], data["version"], data["sha256"]) == (policy.name, policy.version, policy.sha256)
    assert data["source"] == "builtin:social-media-safety"
    assert [r["id"] for r in data["rules"]] == [r.id for r in policy.rules]
    first = data["rules"][0]
    assert {"id", "title", "severity", "pass_at", "rubric"} <= set(first)
    assert set(first["rubric"]) == {"criteria", "score1", "score2", "score3", "score4", "score5"}


def test_show_toml_is_a_policy_file_check_accepts(work_dir: Path) -> None:
    result = runner.invoke(app, ["policies", "show", "figure-grading", "--toml"])
    assert result.exit_code == 0
    data = tomllib.loads(result.stdout)
    assert data["name"] == "figure-grading" and len(data["rules"]) == 5
    assert data["rules"][0]["rubric"]["score5"].startswith("Fully correct")
    copy = work_dir / "my-grading.toml"
    copy.write_text(result.stdout.replace('name = "figure-grading"', 'name = "my-grading"'), encoding="utf-8")
    checked = runner.invoke(app, ["policies", "check", str(copy)])
    assert checked.exit_code == 0, checked.output
    assert checked.stderr.strip() == f"ok: {copy}: policy my-grading 2026.12, 5 rules"


def test_show_a_file_prints_user_text_as_written(work_dir: Path) -> None:
    path = policy_file(work_dir, "r1", criteria="Uses [bold]tags[/bold] and [RESULT]?")
    result = runner.invoke(app, ["policies", "show", str(path), "--rules"])
    assert result.exit_code == 0, result.output
    assert "Uses [bold]tags[/bold] and [RESULT]?" in result.stderr
    assert str(path) in result.stderr  # its source


def test_check_ok_and_plural(work_dir: Path) -> None:
    one = runner.invoke(app, ["policies", "check", str(policy_file(work_dir, "only", name="one"))])
    assert one.exit_code == 0 and one.stdout == ""
    assert one.stderr.strip().endswith("policy one 1.0, 1 rule")
    for name in builtin_policies():
        result = runner.invoke(app, ["policies", "check", name])
        assert result.exit_code == 0
        assert "warning" not in result.stderr, result.stderr  # the built-ins stay well within the length
        assert result.stderr.startswith(f"ok: {name}: policy {name} 2026.12, ")


def test_check_broken_is_one_error_line(work_dir: Path) -> None:
    path = policy_file(work_dir, "r1", "r2")
    path.write_text(path.read_text(encoding="utf-8").replace('severity = "minor"', 'severity = "huge"', 2))
    result = runner.invoke(app, ["policies", "check", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0]
        == f"error: {path}, rule 'r1': severity must be one of info, minor, major, critical, got 'huge'"
    )
    assert lines[1].startswith("hint: ") and len(lines) == 2
    duplicate = policy_file(work_dir, "r1", "r1", name="dup")
    result = runner.invoke(app, ["policies", "check", str(duplicate)])
    assert result.exit_code == 1 and "repeats the id 'r1'" in result.stderr
    missing_score = policy_file(work_dir, "r1", "r2", name="gap")
    text = missing_score.read_text(encoding="utf-8")
    cut = text.rindex("score3 = ")
    missing_score.write_text(text[:cut] + text[text.index("\n", cut) + 1 :], encoding="utf-8")
    result = runner.invoke(app, ["policies", "check", str(missing_score)])
    assert result.exit_code == 1
    assert f"error: {missing_score}, rule 'r2': rubric is missing the field 'score3'" in result.stderr
    assert "Traceback" not in result.output


def test_check_warns_about_a_long_rubric(work_dir: Path) -> None:
    long = "Does the content follow the rule? " + "Consider every detail of the image and the text. " * 80
    path = policy_file(work_dir, "short", "long", criteria=long)
    result = runner.invoke(app, ["policies", "check", str(path)])
    assert result.exit_code == 0, result.output  # a warning, not an error
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "rule 'long'" in warnings[1] and "2048" in warnings[1]
    assert result.stderr.strip().splitlines()[-1] == f"ok: {path}: policy mine 1.0, 2 rules"


def test_unknown_and_unreadable(work_dir: Path) -> None:
    result = runner.invoke(app, ["policies", "show", "nope"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown policy 'nope'; built-in: children-education-content")
    assert "hint: " in result.stderr and "edgejudge policies list" in result.stderr
    fifo = work_dir / "pipe.toml"
    os.mkfifo(fifo)
    for command in ("show", "check"):  # refused, never waited on
        result = runner.invoke(app, ["policies", command, str(fifo)])
        assert result.exit_code == 1 and "named pipe" in result.stderr
    folder = work_dir / "folder.json"
    folder.mkdir()
    result = runner.invoke(app, ["policies", "check", str(folder)])
    assert result.exit_code == 1 and "folder" in result.stderr
    result = runner.invoke(app, ["policies", "check", str(work_dir / "missing.toml")])
    assert result.exit_code == 1 and "policy file not found" in result.stderr
    result = runner.invoke(app, ["policies", "check"])
    assert result.exit_code == 2  # a usage error: the argument is required


def test_help_teaches() -> None:
    result = runner.invoke(app, ["policies", "--help"])
    assert result.exit_code == 0
    for text in (
        "[[rules]]",
        "[rules.rubric]",
        "pass_at",
        "severity",
        "edgejudge policies check my-grading.toml",
    ):
        assert text in result.stdout, text
    for command in ("list", "show", "check"):
        assert command in result.stdout
    check = runner.invoke(app, ["policies", "check", "--help"])
    assert "2048" in check.stdout and "edgejudge policies check my-policy.toml" in check.stdout
    root = runner.invoke(app, ["--help"])
    assert "policies" in root.stdout
