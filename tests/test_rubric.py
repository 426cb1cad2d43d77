"""Rubric records, the built-in library, loading and saving rubric files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edgejudge.errors import RubricError
from edgejudge.rubric import Rubric, builtin_rubrics, load_rubric, rubric_to_toml, save_rubric

REQUIRED = (
    "vqa-helpfulness",
    "visual-grounding",
    "ocr-accuracy",
    "caption-quality",
    "education-grading",
    "content-moderation",
)
BASE = {
    "criteria": "Is it right?",
    "score1": "No.",
    "score2": "Barely.",
    "score3": "Partly.",
    "score4": "Mostly.",
    "score5": "Fully.",
}


def test_builtin_library() -> None:
    library = builtin_rubrics()
    assert set(REQUIRED) <= set(library)
    for name, rubric in library.items():
        assert rubric.name == name
        assert rubric.title and rubric.summary and rubric.criteria.endswith("?")
        assert len(rubric.descriptions) == 5
        for text in rubric.descriptions:
            assert 20 < len(text) < 260 and text.endswith(".") and "\n" not in text
        assert len(set(rubric.descriptions)) == 5


def test_moderation_rubric_has_examples_and_5_is_compliant() -> None:
    rubric = load_rubric("content-moderation")
    assert all("e.g." in text for text in rubric.descriptions)
    assert rubric.descriptions[4].startswith("Fully compliant")
    assert "violation" in rubric.descriptions[0].lower()


def test_builtin_names_are_normalised() -> None:
    assert load_rubric("VQA_Helpfulness") == load_rubric("vqa-helpfulness")


def test_unknown_name_lists_available() -> None:
    with pytest.raises(RubricError) as info:
        load_rubric("helpfulness-of-cats")
    message = str(info.value)
    assert "helpfulness-of-cats" in message and all(name in message for name in REQUIRED)
    assert info.value.hint


@pytest.mark.parametrize(
    "data",
    [
        BASE,
        {"criteria": "Is it right?", **{f"score{k}_description": BASE[f"score{k}"] for k in range(1, 6)}},
        {
            "orig_criteria": "Is it right?",
            "orig_instruction": "ignored",
            **{f"orig_score{k}_description": BASE[f"score{k}"] for k in range(1, 6)},
        },
    ],
    ids=["scoreN", "scoreN_description", "perception"],
)
def test_from_mapping_accepts_all_spellings(data: dict[str, str]) -> None:
    rubric = Rubric.from_mapping(data)
    assert rubric == Rubric("custom", "Is it right?", ("No.", "Barely.", "Partly.", "Mostly.", "Fully."))


def test_from_mapping_strips_and_names() -> None:
    rubric = Rubric.from_mapping({**BASE, "criteria": "  Is it right?\n"}, name="mine")
    assert rubric.criteria == "Is it right?" and rubric.name == "mine"
    assert Rubric.from_mapping({**BASE, "name": "named"}, name="mine").name == "named"
    assert rubric.description(5) == "Fully."


def test_round_trip_dict() -> None:
    rubric = load_rubric("ocr-accuracy")
    assert Rubric.from_mapping(rubric.to_dict()) == rubric


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({k: v for k, v in BASE.items() if k != "score3"}, "score3", "missing"),
        ({k: v for k, v in BASE.items() if k != "criteria"}, "criteria", "missing"),
        ({**BASE, "score5": "   "}, "score5", "empty"),
        ({**BASE, "score2": 2}, "score2", "must be text"),
    ],
)
def test_from_mapping_names_the_bad_field(data: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(RubricError) as info:
        Rubric.from_mapping(data)
    assert f"'{field}'" in str(info.value) and problem in str(info.value)
    assert "criteria, score1, score2, score3, score4, score5" in (info.value.hint or "")


def test_from_mapping_rejects_non_mapping() -> None:
    with pytest.raises(RubricError, match="table/object"):
        Rubric.from_mapping(["criteria"])  # type: ignore[arg-type]
    with pytest.raises(RubricError, match="5 score descriptions"):
        Rubric("short", "Is it?", ("a", "b"))  # type: ignore[arg-type]


def test_load_toml_and_json_files(tmp_path: Path) -> None:
    toml_file = tmp_path / "mine.toml"
    toml_file.write_text(
        'criteria = "Is it right?"\n' + "".join(f'score{k} = "S{k}."\n' for k in range(1, 6))
    )
    rubric = load_rubric(toml_file)
    assert rubric.name == "mine" and rubric.descriptions == ("S1.", "S2.", "S3.", "S4.", "S5.")
    json_file = tmp_path / "other.json"
    json_file.write_text(json.dumps({"rubric": {**BASE, "title": "Other"}}))
    assert load_rubric(str(json_file)).title == "Other"


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("bad.toml", 'criteria = "x"\nscore1 = "a"\n', "missing the field 'score2'"),
        ("bad.toml", 'criteria = "x\n', "not valid TOML"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.json", "[1, 2]", "table/object"),
        ("bad.txt", "criteria = 'x'", "must end in .toml or .json"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, filename: str, content: str, expected: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert info.value.hint


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RubricError, match="not found"):
        load_rubric(tmp_path / "nope.toml")
    with pytest.raises(RubricError, match="directory"):
        load_rubric(str(tmp_path) + "/")


TRICKY = Rubric(
    name="tricky",
    criteria="Does it quote \"this\" and C:\\path\\ and use 'single' quotes?",
    descriptions=(
        "line one\nline two",
        "tab\there",
        "unicode: 结果 ✓ é",
        "control \x01\x7f char",
        "'''\"\"\"",
    ),
    title="Tricky",
    summary="Escapes",
)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_round_trip(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / f"tricky{suffix}"
    save_rubric(TRICKY, path)
    assert load_rubric(path) == TRICKY
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left behind


def test_toml_text_parses_back() -> None:
    assert tomllib.loads(rubric_to_toml(TRICKY)) == TRICKY.to_dict()


def test_save_overwrites_atomically_and_checks_folder(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("old")
    save_rubric(load_rubric("caption-quality"), path)
    assert load_rubric(path).name == "caption-quality"
    with pytest.raises(RubricError, match="folder does not exist"):
        save_rubric(TRICKY, tmp_path / "missing" / "r.toml")
