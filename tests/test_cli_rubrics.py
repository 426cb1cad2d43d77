"""``edgejudge rubrics list|show``: the library on stderr for people, JSON/TOML on stdout for programs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.rubric import builtin_rubrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()


def test_list_json_and_human() -> None:
    result = runner.invoke(app, ["rubrics", "list", "--json"])
    assert result.exit_code == 0
    names = [r["name"] for r in json.loads(result.stdout)]
    assert names == list(builtin_rubrics())
    assert "content-moderation" in names and "vqa-helpfulness" in names
    human = runner.invoke(app, ["rubrics", "list"])
    assert human.exit_code == 0 and human.stdout == "" and "content-moderation" in human.stderr


def test_show_builtin_file_and_toml(work_dir: Path) -> None:
    data = json.loads(runner.invoke(app, ["rubrics", "show", "ocr-accuracy", "--json"]).stdout)
    assert set(data) >= {"name", "criteria", "score1", "score5"}
    toml_text = runner.invoke(app, ["rubrics", "show", "ocr-accuracy", "--toml"]).stdout
    assert tomllib.loads(toml_text) == data
    path = work_dir / "mine.toml"
    path.write_text(toml_text.replace('name = "ocr-accuracy"', 'name = "mine"'), encoding="utf-8")
    shown = runner.invoke(app, ["rubrics", "show", str(path)])
    assert shown.exit_code == 0 and "Score 5" in shown.stderr and "mine" in shown.stderr


def test_unknown_and_malformed(work_dir: Path) -> None:
    result = runner.invoke(app, ["rubrics", "show", "nope"])
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown rubric 'nope'")
    bad = work_dir / "bad.toml"
    bad.write_text('criteria = "x"\nscore1 = "a"\n', encoding="utf-8")
    result = runner.invoke(app, ["rubrics", "show", str(bad)])
    assert result.exit_code == 1 and "score2" in result.stderr and "Traceback" not in result.stderr


def test_show_prints_user_text_with_brackets_as_written(work_dir: Path) -> None:
    mine = work_dir / "brackets.json"
    descriptions = {f"score{k}": f"level {k} [b]not bold[/b] [/x]" for k in range(1, 6)}
    mine.write_text(json.dumps({"criteria": "Uses [RESULT] tags?", **descriptions}), encoding="utf-8")
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["rubrics", "show", str(mine)])
    assert result.exit_code == 0, result.output
    assert "level 5 [b]not bold[/b] [/x]" in result.stderr and "Uses [RESULT] tags?" in result.stderr


def test_parse_jsonl_names_a_bracketed_field_as_given(work_dir: Path) -> None:
    rows = work_dir / "rows.jsonl"
    rows.write_text('{"other": 1}\n', encoding="utf-8")
    result = runner.invoke(app, ["parse", "--jsonl", str(rows), "--field", "[/x]"])
    assert result.exit_code == 1 and "field '[/x]' is missing" in result.stderr
