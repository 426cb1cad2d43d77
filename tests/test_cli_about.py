"""The CLI maps error kinds to flag names (issue #9 rule 6): a library error names the parameters its hint
is ``about`` (``outdir``, ``output``, ``model`` …) and the CLI appends the flag that sets each, when the
running command has it. Tested on real library errors through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.cli._hints import about_flags, about_table, hint_for_people
from edgejudge.errors import ContextOverflowError, EdgeJudgeError

runner = CliRunner()


def _hint(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("hint: "), stderr
    assert lines[-2].startswith("error: "), stderr
    return lines[-1]


def test_about_is_a_tuple_of_names() -> None:
    assert EdgeJudgeError("x").about == ()
    assert EdgeJudgeError("x", about="outdir").about == ("outdir",)
    assert EdgeJudgeError("x", about=("outdir", "name")).about == ("outdir", "name")
    assert ContextOverflowError("x", about="n_ctx").about == ("n_ctx",)


def test_the_table_holds_settings_and_the_other_parameters() -> None:
    table = about_table()
    assert table["outdir"] == "--outdir" and table["output"] == "--output" and table["model"] == "--model"
    assert table["n_ctx"] == "--n-ctx" and table["mmproj_quant"] == "--mmproj-quant"
    assert about_flags(["outdir", "nonsense", "outdir"]) == ["--outdir"]


def test_hint_for_people_appends_only_offered_flags_not_named_yet() -> None:
    assert hint_for_people("choose another output directory", ["outdir"]) == (
        "choose another output directory (--outdir)"
    )
    assert hint_for_people("choose another output directory", ["outdir"], {"--output"}) == (
        "choose another output directory"
    )
    assert hint_for_people("use samples >= 1", ["samples"]) == "use --samples >= 1"  # named already
    assert hint_for_people("pick a dir", ["outdir", "name"], {"--outdir", "--name"}) == (
        "pick a dir (--outdir, --name)"
    )


def test_convert_into_a_file_names_outdir(tmp_path: Path, tiny_checkpoint: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["convert", str(tiny_checkpoint), "--outdir", str(blocker / "sub")])
    assert result.exit_code == 1, result.output
    hint = _hint(result.stderr)
    assert "output directory" in hint and hint.endswith("(--outdir)")


def test_batch_output_a_folder_names_output(work_dir: Path, fake: object) -> None:
    rows = work_dir / "in.jsonl"
    rows.write_text(json.dumps({"id": "a", "image": "x.png", "instruction": "Q", "response": "A"}) + "\n")
    folder = work_dir / "out"
    folder.mkdir()
    result = runner.invoke(app, ["batch", str(rows), "--output", str(folder), "--rubric", "vqa-helpfulness"])
    assert result.exit_code == 1, result.output
    assert _hint(result.stderr) == "hint: pass a file name, e.g. out.jsonl (--output)"


def test_report_over_its_results_names_output(work_dir: Path) -> None:
    results = work_dir / "out.jsonl"
    results.write_text("")
    result = runner.invoke(app, ["report", str(results), "--output", str(results)])
    assert result.exit_code == 1, result.output
    assert _hint(result.stderr) == "hint: write the report to another file, e.g. report.html (--output)"


def test_judge_without_a_model_names_model(work_dir: Path) -> None:
    from edgejudge.images import synthetic_image

    image = work_dir / "cat.png"
    synthetic_image(64, seed=1).save(image, format="PNG")
    result = runner.invoke(app, ["judge", str(image), "-i", "Q?", "--response", "A."])
    assert result.exit_code == 1
    hint = _hint(result.stderr)
    assert hint.startswith("hint: name a model") and hint.endswith("(--model)")


def test_pull_of_an_unknown_model_names_source() -> None:
    result = runner.invoke(app, ["models", "pull", "no-such-judge"])
    assert result.exit_code == 1
    assert _hint(result.stderr).endswith("as its source (--source)")


def test_a_model_not_installed_says_how_to_pull_it_without_a_flag(work_dir: Path) -> None:
    from edgejudge.errors import ModelNotFoundError
    from edgejudge.registry import resolve_model

    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("prometheus-vision-7b:Q8_0")
    assert info.value.hint == "install it with `edgejudge models pull prometheus-vision-7b:Q8_0`"
    assert "--" not in (info.value.hint or "")


def test_a_flag_of_another_command_is_not_suggested(work_dir: Path) -> None:
    missing = work_dir / "missing-Q4_K_M.gguf"
    # judge has --model: the hint names it
    image = work_dir / "cat.png"
    from edgejudge.images import synthetic_image

    synthetic_image(64, seed=1).save(image, format="PNG")
    judged = runner.invoke(app, ["judge", str(image), "-i", "Q?", "--response", "A.", "-m", str(missing)])
    assert judged.exit_code == 1
    assert _hint(judged.stderr).endswith("`edgejudge models list` (--model)")
    # models path takes the model as an argument and has no --model: the hint stays in words
    result = runner.invoke(app, ["models", "path", str(missing)])
    assert result.exit_code == 1
    assert _hint(result.stderr) == "hint: check the path, or use a name from `edgejudge models list`"
