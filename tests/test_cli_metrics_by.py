"""``edgejudge metrics OUT.jsonl --by FIELD``: the leaderboard and the grade sheet of one results file,
through the command line (hand-written result rows, and a real batch on the fake engine for the plumbing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgejudge.batch import read_result_rows
from edgejudge.batch.result import ResultRow
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.views import leaderboard

runner = CliRunner()


def result_line(id: str, score: int | None, status: str = "ok", **extra: Any) -> str:
    data = {
        "id": id,
        "line": 1,
        "status": status,
        "score": score,
        "key": "c" * 64,
        "image": extra.pop("image", "cat.png"),
        "instruction": "What is this?",
        "rubric": "vqa-helpfulness",
        "settings": {},
        **extra,
    }
    return ResultRow.from_dict(data).to_json()


@pytest.fixture()
def systems_log(work_dir: Path) -> Path:
    scores = {"llava": [5, 4, 4, 3], "blip": [3, 3, 2, 4], "[red]gpt[/red]": [2, 2, 1, 1]}
    lines = [
        result_line(f"{name}-{k}", s, image=f"img{k}.png", system=name)
        for name, values in scores.items()
        for k, s in enumerate(values)
    ]
    lines.append(result_line("broken", None, status="error", system="blip"))
    path = work_dir / "out.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_by_system_json_is_the_leaderboard(systems_log: Path) -> None:
    result = runner.invoke(app, ["metrics", str(systems_log), "--by", "system", "--json", "--seed", "4"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["view"] == "leaderboard" and data["field"] == "system"
    assert [s["system"] for s in data["systems"]] == ["llava", "blip", "[red]gpt[/red]"]
    assert [s["mean"] for s in data["systems"]] == [4.0, 3.0, 1.5]
    assert all(s["ci_low"] <= s["mean"] <= s["ci_high"] for s in data["systems"])
    assert (data["resamples"], data["seed"], data["left_out"]) == (2000, 4, 1)
    wins = {(w["a"], w["b"]): (w["wins"], w["losses"], w["ties"], w["rate"]) for w in data["wins"]}
    assert wins[("llava", "blip")] == (3, 1, 0, 0.75)
    assert wins[("blip", "llava")] == (1, 3, 0, 0.25)
    expected = leaderboard(read_result_rows(systems_log).values(), resamples=2000, seed=4)
    assert expected is not None
    assert data["systems"] == [s.to_dict() for s in expected.systems]  # what the library computes


def test_by_system_tables(systems_log: Path) -> None:
    result = runner.invoke(app, ["metrics", str(systems_log), "--by", "system", "--bootstrap", "300"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # tables are for people: stderr
    text = result.stderr
    assert "leaderboard by system" in text and "95% CI" in text and "win rate" in text
    assert "[red]gpt[/red]" in text  # a system name is printed as written, never as markup
    assert "75% (4)" in text and "300 resamples" in text


def test_by_student_is_a_grade_sheet(work_dir: Path) -> None:
    lines = [
        result_line("a1", 5, student="ana"),
        result_line("a2", 3, student="ana", rubric="accuracy"),
        result_line("b1", 2, student="ben"),
    ]
    path = work_dir / "graded.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["metrics", str(path), "--by", "student", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["view"] == "grades" and data["columns"] == ["vqa-helpfulness", "accuracy"]
    assert [(r["group"], r["scores"], r["total"]) for r in data["rows"]] == [
        ("ana", {"vqa-helpfulness": 5.0, "accuracy": 3.0}, 4.0),
        ("ben", {"vqa-helpfulness": 2.0, "accuracy": None}, 2.0),
    ]
    table = runner.invoke(app, ["metrics", str(path), "--by", "student"])
    assert table.exit_code == 0 and "grade sheet by student" in table.stderr and "4.00" in table.stderr
    board = runner.invoke(app, ["metrics", str(path), "--by", "student", "--view", "leaderboard", "--json"])
    assert board.exit_code == 0 and json.loads(board.stdout)["view"] == "leaderboard"


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--by", "team"], 1, "error: no judged row of out.jsonl carries the field 'team'"),
        (["--by", "system", "--gold-field", "x"], 2, "--by reads one results file"),
        (["--by", "system", "--bootstrap", "0"], 2, "at least 1 bootstrap resample"),
        ([], 2, "give GOLD.jsonl"),
    ],
    ids=["field absent", "gold with --by", "no resamples", "neither GOLD nor --by"],
)
def test_by_errors(systems_log: Path, extra: list[str], code: int, words: str) -> None:
    result = runner.invoke(app, ["metrics", str(systems_log), *extra])
    assert result.exit_code == code, result.output
    assert words in " ".join(result.stderr.replace("│", " ").split())  # Typer boxes usage errors


def test_by_names_what_it_cannot_read(work_dir: Path, systems_log: Path) -> None:
    missing = runner.invoke(app, ["metrics", str(work_dir / "nope.jsonl"), "--by", "system"])
    assert missing.exit_code == 1 and "error: no such results file" in missing.stderr
    odd = work_dir / "[bold]week[i].jsonl"  # a file name is printed as written, never as markup
    odd.write_bytes(systems_log.read_bytes())
    shown = runner.invoke(app, ["metrics", str(odd), "--by", "student"])
    assert shown.exit_code == 1 and "[bold]week[i].jsonl" in shown.stderr
    table = runner.invoke(app, ["metrics", str(odd), "--by", "system"])
    assert table.exit_code == 0 and "([bold]week[i].jsonl)" in table.stderr


def test_gold_file_still_needs_gold_field(systems_log: Path) -> None:
    result = runner.invoke(app, ["metrics", str(systems_log), str(systems_log)])
    assert result.exit_code == 2 and "--gold-field" in result.stderr


def test_by_system_on_a_real_batch(work_dir: Path, fake_factory: list[FakeEngine]) -> None:
    for k in range(3):
        synthetic_image(48, seed=k).save(work_dir / f"img{k}.png")
    rows = [
        {
            "id": f"{system}-{k}",
            "image": f"img{k}.png",
            "instruction": "What is shown?",
            "response": f"{system} says picture {k}",
            "system": system,
        }  # fmt: skip
        for system in ("alpha", "beta")
        for k in range(3)
    ]
    source = work_dir / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = work_dir / "out.jsonl"
    batch = runner.invoke(app, ["batch", str(source), "--output", str(out), "--rubric", "vqa-helpfulness"])
    assert batch.exit_code == 0, batch.stderr
    result = runner.invoke(app, ["metrics", str(out), "--by", "system", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(s["system"] for s in data["systems"]) == ["alpha", "beta"]
    assert all(s["n"] == 3 for s in data["systems"])
    judged = read_result_rows(out)
    for s in data["systems"]:
        scores = [r.score for r in judged.values() if dict(r.extra).get("system") == s["system"]]
        assert s["mean"] == pytest.approx(sum(scores) / 3)  # type: ignore[arg-type]
    pair = {(w["a"], w["b"]): w for w in data["wins"]}
    assert pair[("alpha", "beta")]["n"] == 3  # the same image and instruction: one item per picture


def test_by_student_on_a_real_policy_batch(work_dir: Path) -> None:
    """A grading policy run by run_batch(policy=...) on the fake engine: the grade sheet's columns are the
    policy's rules in order, with each student's mean and passes per rule."""
    from edgejudge.batch import run_batch
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    policy = load_policy("figure-grading")
    synthetic_image(64, seed=2).save(work_dir / "figure.png")
    rows = [
        {
            "id": f"{student}-{k}",
            "image": "figure.png",
            "instruction": "Explain the figure.",
            "response": f"{student}'s answer {k}",
            "student": student,
        }  # fmt: skip
        for student in ("ana", "ben")
        for k in (1, 2)
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    engine = FakeEngine()
    for _ in range(len(rows) * len(policy.rules)):
        engine.enqueue("Correct and well explained. [RESULT] 5")
    out = work_dir / "out.jsonl"
    assert run_batch(Judge(engine), work_dir / "in.jsonl", out, policy=policy).errors == 0
    result = runner.invoke(app, ["metrics", str(out), "--by", "student", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rule_ids = [rule.id for rule in policy.rules]
    assert data["columns"] == rule_ids and data["left_out"] == 0
    for row in data["rows"]:
        assert row["n_items"] == 2 and row["total"] == 5.0
        assert row["scores"] == dict.fromkeys(rule_ids, 5.0) and row["passed"] == dict.fromkeys(rule_ids, 2)
    assert [row["group"] for row in data["rows"]] == ["ana", "ben"]


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("team", "hint: a batch copies only orig_score, student, system and its --keep fields into its "
         "output: run it again with batch --keep team to group by 'team'"),
        ("model", "hint: 'model' is a field edgejudge itself uses, not one copied from the input rows"),
        ("student", "hint: check --by: the field of the input rows to group by, e.g. system or student"),
    ],
    ids=["any field: --keep", "an output key", "a pass-through field"],
)  # fmt: skip
def test_by_a_field_no_row_carries_names_keep(systems_log: Path, field: str, words: str) -> None:
    result = runner.invoke(app, ["metrics", str(systems_log), "--by", field])
    assert result.exit_code == 1
    assert words in " ".join(result.stderr.split())


def test_by_student_leaves_out_an_incomplete_item(work_dir: Path) -> None:
    """A policy batch cut short: the item whose rules are not all in counts in no grade (left out, named
    as incomplete in the footer and the JSON), the complete ones as before."""
    from edgejudge.batch import run_batch
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    policy = load_policy("figure-grading")
    synthetic_image(64, seed=2).save(work_dir / "figure.png")
    rows = [
        {"id": f"{s}-1", "image": "figure.png", "instruction": "Explain.", "response": "R", "student": s}
        for s in ("ana", "ben")
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = work_dir / "out.jsonl"
    assert run_batch(Judge(FakeEngine()), work_dir / "in.jsonl", out, policy=policy).errors == 0
    # as a kill leaves it: ben's decision record and one of his rule rows never written
    lines = out.read_text(encoding="utf-8").splitlines()
    ben = [k for k, line in enumerate(lines) if json.loads(line)["id"] == "ben-1"]
    kept = [line for k, line in enumerate(lines) if k not in ben[-2:]]
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["metrics", str(out), "--by", "student", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["group"] for row in data["rows"]] == ["ana"]
    assert (data["incomplete"], data["left_out"]) == (1, len(policy.rules) - 1)
    table = runner.invoke(app, ["metrics", str(out), "--by", "student"])
    assert table.exit_code == 0 and "the rules of 1 incomplete item(s): run the batch again" in " ".join(
        table.stderr.split()
    )
