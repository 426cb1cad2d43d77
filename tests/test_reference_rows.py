"""The reference evaluation's question files (``question_id``, ``image``, ``text``: the rendered prompt):
``prompt.parse_rendered_prompt`` reads exactly what the template renders, and a batch reads such rows into
the normal fields (same keys, reports and metrics as native rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgejudge.batch import read_results
from edgejudge.batch.rows import read_input_rows
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.prompt import JUDGE_TEMPLATE, NO_REFERENCE_TEXT, parse_rendered_prompt, render_judge_prompt
from edgejudge.rubric import Rubric, load_rubric

RUBRIC = Rubric(
    name="t",
    criteria="Is the answer correct?",
    descriptions=("Wrong.", "Mostly wrong.", "Partly right.", "Right with slips.", "Fully right."),
)

# (instruction, response, reference, rubric): every one renders a prompt that must read back to itself
RENDERED = [
    ("What animal is on the sofa?", "A grey cat.", "A grey tabby cat lying on a red sofa.", RUBRIC),
    ("What animal is on the sofa?", "A grey cat.", None, RUBRIC),
    ("Count the {braces} and %s", "  indented first line\nsecond line", "two\n\nparagraphs", RUBRIC),
    ("Unicode: 猫 ünïcödé 🐈", "Réponse.", "", RUBRIC),
    ("Q", "R", "   ", RUBRIC),
    ("Q\n\nwith a blank line", "R\n###Not a heading of ours", None, load_rubric("vqa-helpfulness")),
    ("Q", "Score 1: inside a response", "Ref", RUBRIC),
]


@pytest.mark.parametrize(("instruction", "response", "reference", "rubric"), RENDERED)
def test_a_rendered_prompt_reads_back_to_the_same_text(
    instruction: str, response: str, reference: str | None, rubric: Rubric
) -> None:
    text = render_judge_prompt(instruction, response, rubric, reference)
    fields = parse_rendered_prompt(text)
    assert fields is not None
    assert fields.instruction == instruction.strip("\n")
    assert fields.response == response
    assert fields.reference == (reference if reference and reference.strip() else None)
    assert fields.criteria == rubric.criteria
    assert fields.descriptions == rubric.descriptions
    again = Rubric(name="x", criteria=fields.criteria, descriptions=fields.descriptions)
    assert render_judge_prompt(fields.instruction, fields.response, again, fields.reference) == text


def test_the_template_itself_is_a_prompt_whose_fields_are_its_placeholders() -> None:
    fields = parse_rendered_prompt(JUDGE_TEMPLATE)
    assert fields is not None and fields.instruction == "{instruction}"
    assert fields.descriptions[4] == "{score5_description}"


def test_the_no_reference_variant_reads_back_as_no_reference() -> None:
    text = render_judge_prompt("Q", "R", RUBRIC, None)
    assert NO_REFERENCE_TEXT in text
    fields = parse_rendered_prompt(text)
    assert fields is not None and fields.reference is None


GOOD = render_judge_prompt("What is shown?", "A cat.", RUBRIC, "A cat on a sofa.")
NOT_PROMPTS = [
    "",
    "What is shown?",
    GOOD + "\n",  # a trailing newline the template never writes
    GOOD.replace("\n", "\r\n"),  # other line endings
    "<image>\n" + GOOD,  # the image marker belongs to the conversation, not to the prompt
    GOOD.replace("###Score Rubrics:", "###Score Rubric:"),  # a changed heading
    GOOD.replace("Score 3: Partly right.\n", ""),  # a missing score line
    GOOD.replace("A cat.", "A cat.   "),  # a field that was not normalised (trailing blanks)
    GOOD.replace("What is shown?", "\nWhat is shown?"),  # a leading blank line
    GOOD.replace("Feedback:", "Feedback: "),
    GOOD[: len(GOOD) // 2],
]


@pytest.mark.parametrize("text", NOT_PROMPTS)
def test_what_the_template_does_not_render_is_not_a_prompt(text: str) -> None:
    assert parse_rendered_prompt(text) is None


def _question_file(folder: Path) -> Path:
    synthetic_image(64, seed=1).save(folder / "a.png")
    synthetic_image(64, seed=2).save(folder / "b.png")
    rows = [
        {
            "question_id": 1,
            "image": "a.png",
            "text": render_judge_prompt("What?", "A cat.", RUBRIC, "A cat."),
        },
        {"question_id": 2, "image": "b.png", "text": render_judge_prompt("Colour?", "Red.", RUBRIC)},
        {"question_id": "q3", "image": "a.png", "text": "What is in the picture?"},  # a bare question
        {"question_id": 4, "image": "b.png", "text": ["not", "text"]},
        {"question_id": 5, "image": "b.png", "text": render_judge_prompt("Size?", "Big.", RUBRIC, "Small.")},
    ]
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_question_rows_become_the_normal_fields(work_dir: Path) -> None:
    rows = read_input_rows(_question_file(work_dir))
    assert [r.id for r in rows] == ["1", "2", "q3", "4", "5"]
    first = rows[0]
    assert (first.instruction, first.response, first.reference, first.image) == (
        "What?",
        "A cat.",
        "A cat.",
        "a.png",
    )
    assert first.rubric is not None
    assert (first.rubric.criteria, first.rubric.descriptions) == (RUBRIC.criteria, RUBRIC.descriptions)
    assert first.int_id and not rows[2].int_id
    assert rows[1].reference is None and rows[1].problem is None
    assert rows[2].problem is not None and "not a judge prompt" in rows[2].problem
    assert rows[3].problem is not None and "'text' must be a string" in rows[3].problem
    assert rows[4].problem is None


def test_a_native_row_with_a_text_field_keeps_its_own_fields(work_dir: Path) -> None:
    path = work_dir / "in.jsonl"
    row = {"id": "n", "image": "a.png", "instruction": "Q", "response": "R", "rubric": "vqa-helpfulness",
           "text": "anything"}  # fmt: skip
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (only,) = read_input_rows(path)
    assert only.problem is None and (only.instruction, only.response) == ("Q", "R")


def test_a_batch_over_a_question_file_judges_the_prompts_and_reports(
    work_dir: Path, fake: FakeEngine
) -> None:
    questions = _question_file(work_dir)
    out = work_dir / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(questions), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["errors"]) == (3, 2)
    rows = read_results(out)
    assert rows["q3"]["status"] == "error" and "not a judge prompt" in rows["q3"]["error"]
    assert rows["1"]["instruction"] == "What?" and rows["1"]["criteria"] == RUBRIC.criteria
    # the judge saw exactly the question file's text inside the conversation
    seen = [parts.after_image for parts, _ in fake.history]
    texts = [json.loads(line)["text"] for line in questions.read_text(encoding="utf-8").splitlines()]
    for text in (texts[0], texts[1], texts[4]):
        assert sum(text in after for after in seen) == 1
    # resume: nothing new
    again = CliRunner().invoke(app, ["batch", str(questions), "-o", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["judged"] == 0
    assert len(fake.history) == 3
    # the report and metrics read it like any batch log
    report = CliRunner().invoke(app, ["report", str(out), "--output", str(work_dir / "r.html")])
    assert report.exit_code == 0, report.output
    assert (work_dir / "r.html").stat().st_size > 0
