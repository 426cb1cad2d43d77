"""``edgejudge batch --answers-format reference``: the original pipeline's answer file (``question_id, prompt,
text, answer_id, model_id, metadata`` in that order), written from the whole log so a resumed run gives the
complete file; on the fake engine (plumbing) and once on the tiny real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgejudge.answers import ANSWER_KEYS, answers_path, write_reference_answers
from edgejudge.batch import read_results
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.prompt import render_judge_prompt
from edgejudge.rubric import Rubric

RUBRIC = Rubric(
    name="t",
    criteria="Is the answer correct?",
    descriptions=("Wrong.", "Mostly wrong.", "Partly right.", "Right with slips.", "Fully right."),
)
#: The keys of model_vqa.py's answer lines, in its order (LLaVA's llava/eval/model_vqa.py).
REFERENCE_KEYS = ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]


def question_file(folder: Path) -> Path:
    synthetic_image(64, seed=1).save(folder / "a.png")
    synthetic_image(48, seed=2).save(folder / "b.png")
    rows: list[dict[str, Any]] = [
        {"question_id": 10 + i, "image": "a.png" if i % 2 else "b.png",
         "text": render_judge_prompt(f"What is {i}?", f"It is {i}.", RUBRIC, f"{i}." if i % 3 else None)}
        for i in range(6)
    ]  # fmt: skip
    rows.insert(2, {"question_id": "q-missing", "image": "nowhere.png", "text": rows[0]["text"]})
    rows.insert(4, {"question_id": "q-bad", "image": "a.png", "text": "not a rendered prompt"})
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(questions: Path, out: Path, *extra: str) -> dict[str, Any]:
    args = ["batch", str(questions), "-o", str(out), "--answers-format", "reference", "--temperature", "0"]
    result = CliRunner().invoke(app, [*args, *extra, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def answers_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_answer_file_has_the_reference_keys_in_order(work_dir: Path, fake: FakeEngine) -> None:
    questions = question_file(work_dir)
    out = work_dir / "out.jsonl"
    summary = run(questions, out)
    path = work_dir / "out.answers.jsonl"
    assert answers_path(out) == path
    assert summary["answers"] == {"path": str(path), "written": 6, "errors": 2, "missing": 0, "stale": 0}
    answers = answers_of(path)
    assert list(ANSWER_KEYS) == REFERENCE_KEYS
    assert all(list(a) == REFERENCE_KEYS for a in answers)
    assert [a["question_id"] for a in answers] == [10, 11, 12, 13, 14, 15]  # input order, JSON integers
    given = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines()]
    assert [a["prompt"] for a in answers] == [q["text"] for q in given if isinstance(q["question_id"], int)]
    rows = read_results(out)
    for answer in answers:
        row = rows[str(answer["question_id"])]
        assert answer["text"] == row["raw_output"] and answer["text"].rstrip().endswith(
            f"[RESULT] {row['score']}"
        )
        assert answer["model_id"] == "fake-judge" == row["settings"]["model"]
        assert answer["metadata"] == {
            "score": row["score"],
            "expected_score": row["expected_score"],
            "score_probs": row["score_probs"],
            "settings": row["settings"],
        }
    assert len({a["answer_id"] for a in answers}) == 6
    # every prompt is the one the judge saw
    seen = [parts.after_image for parts, _ in fake.history]
    assert all(sum(a["prompt"] in after for after in seen) == 1 for a in answers)


def test_a_resumed_run_rewrites_the_complete_file_with_the_same_ids(
    work_dir: Path, fake_factory: list[FakeEngine]
) -> None:
    questions = question_file(work_dir)
    out = work_dir / "out.jsonl"
    first = run(questions, out, "--limit", "3")
    assert first["answers"]["written"] == 2  # rows 10, 11 (the third row is an error)
    path = work_dir / "out.answers.jsonl"
    early = answers_of(path)
    second = run(questions, out)
    assert second["judged"] == 5 and second["skipped"] == 3
    full = answers_of(path)
    assert [a["question_id"] for a in full] == [10, 11, 12, 13, 14, 15]
    assert full[:2] == early  # the same lines, answer ids included
    third = run(questions, out)
    assert (
        third["judged"] == 0 and answers_of(path) == full
    )  # a rerun judges nothing and writes the same file


def test_the_answers_path_can_be_given_and_is_never_the_output(
    work_dir: Path, fake_factory: list[FakeEngine]
) -> None:
    questions = question_file(work_dir)
    out = work_dir / "out.jsonl"
    mine = work_dir / "answers" / "mine.jsonl"
    summary = run(questions, out, "--answers", str(mine))
    assert summary["answers"]["path"] == str(mine) and len(answers_of(mine)) == 6
    assert not (work_dir / "out.answers.jsonl").exists()
    args = ["batch", str(questions), "-o", str(out), "--answers-format", "reference"]
    for bad in ([*args, "--answers", str(out)], [*args, "--answers", str(questions)]):
        result = CliRunner().invoke(app, bad)
        assert result.exit_code == 1 and "the batch's input or output" in result.stderr
    for bad, flag in (
        (["batch", str(questions), "-o", str(out), "--answers", str(mine)], "--answers"),
        ([*args[:4], "--answers-format", "csv"], "--answers-format"),
        ([*args, "--policy", "marketplace-listing"], "--answers-format"),
    ):
        result = CliRunner().invoke(app, bad)
        assert result.exit_code == 2 and flag in result.output


def test_rows_judged_from_other_inputs_are_left_out(work_dir: Path, fake_factory: list[FakeEngine]) -> None:
    questions = question_file(work_dir)
    out = work_dir / "out.jsonl"
    run(questions, out)
    # the question file changes after the run: its rows' results in the log are stale until judged again
    text = questions.read_text(encoding="utf-8").replace("It is 1.", "It is one.")
    questions.write_text(text, encoding="utf-8")
    summary = write_reference_answers(questions, out, work_dir / "a.jsonl")
    assert (summary.written, summary.stale, summary.errors) == (5, 1, 2)
    assert 11 not in [a["question_id"] for a in answers_of(work_dir / "a.jsonl")]
    missing = write_reference_answers(questions, work_dir / "none.jsonl", work_dir / "b.jsonl")
    assert (missing.written, missing.missing) == (0, 8) and (work_dir / "b.jsonl").read_text() == ""


@pytest.mark.parametrize("rows", [2])
def test_answers_on_the_tiny_model(tiny_gguf: tuple[Path, Path], work_dir: Path, rows: int) -> None:
    text_model, mmproj = tiny_gguf
    questions = question_file(work_dir)
    out = work_dir / "out.jsonl"
    model = ["--model", str(text_model), "--mmproj", str(mmproj), "--max-tokens", "16", "--n-ctx", "2048"]
    summary = run(questions, out, "--limit", str(rows), *model, "--threads", "1")
    answers = answers_of(work_dir / "out.answers.jsonl")
    assert summary["answers"]["written"] == rows == len(answers)
    for answer, row in zip(answers, read_results(out).values(), strict=True):
        assert list(answer) == REFERENCE_KEYS
        assert answer["text"] == row["raw_output"] and "[RESULT]" in answer["text"]
        assert (
            answer["model_id"] == row["model"]
            and abs(sum(answer["metadata"]["score_probs"].values()) - 1) < 1e-3
        )
