"""``edgejudge parse``: text or JSON lines in, one JSON object per output out; malformed lines by number."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.cli import app

runner = CliRunner()


def test_parse_stdin() -> None:
    result = runner.invoke(
        app, ["parse"], input="The answer is right. So the overall score is 4.\n[RESULT] 4\n"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "score": 4,
        "feedback": "The answer is right. So the overall score is 4.",
        "method": "result_marker",
        "reason": None,
    }


def test_parse_file_without_score_reports_reason(work_dir: Path) -> None:
    path = work_dir / "out.txt"
    path.write_text("I cannot judge this image.", encoding="utf-8")
    result = runner.invoke(app, ["parse", str(path)])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["score"] is None and data["method"] == "none" and data["reason"]


def test_parse_jsonl_keeps_ids_and_reports_bad_lines(work_dir: Path) -> None:
    path = work_dir / "answers.jsonl"
    rows = [
        json.dumps({"question_id": 7, "text": "Good. [RESULT] 5", "model_id": "x"}),
        "",
        "{not json",
        json.dumps({"id": "b", "text": "Weak answer. Score: 2"}),
        json.dumps({"id": "c", "answer": "no text field"}),
        json.dumps({"id": "d", "text": "Rated [RESULT] 9"}),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["parse", "--jsonl", str(path), "--field", "text"])
    assert result.exit_code == 1  # two lines could not be read
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in out] == [1, 3, 4, 5, 6]
    assert out[0] == {
        "line": 1,
        "question_id": 7,
        "score": 5,
        "feedback": "Good.",
        "method": "result_marker",
        "reason": None,
    }
    assert out[1]["line"] == 3 and "malformed JSON" in out[1]["error"]
    assert out[2]["id"] == "b" and out[2]["score"] == 2 and out[2]["method"] == "score_phrase"
    assert out[3]["id"] == "c" and "'text' is missing" in out[3]["error"]
    assert out[4]["score"] is None and out[4]["reason"]
    assert "line 3" in result.stderr and "line 5" in result.stderr


def test_parse_usage_and_missing_file(work_dir: Path) -> None:
    result = runner.invoke(app, ["parse", "x.txt", "--jsonl", "y.jsonl"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["parse", "--jsonl", str(work_dir / "missing.jsonl")])
    assert result.exit_code == 1 and result.stderr.startswith("error: --jsonl not found")


def test_parse_jsonl_not_utf8_line_is_a_malformed_line(work_dir: Path) -> None:
    # issue 8, item 13 changed this: a non-UTF-8 line is one reported malformed line, the others go on
    path = work_dir / "latin1.jsonl"
    path.write_bytes(b'{"id": "a", "text": "Fine. [RESULT] 4"}\n{"id": "b", "text": "caf\xe9 [RESULT] 2"}\n')
    result = runner.invoke(app, ["parse", "--jsonl", str(path)])
    assert result.exit_code == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["id"] == "a" and out[0]["score"] == 4
    assert out[1]["line"] == 2 and "UTF-8" in out[1]["error"]
    assert "line 2" in result.stderr and "UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
