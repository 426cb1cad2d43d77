"""``edgejudge judge`` and the CLI core: JSON shapes, exit codes, one-line errors, --print-prompt, NO_COLOR.

Plumbing runs on ``FakeEngine`` through the ``_common.JUDGE_FACTORY`` seam; the last test runs the tiny real
model (converted by the real converter) on real llama.cpp end to end.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgejudge.cli import _common, app
from edgejudge.engine.fake import FakeEngine, peaked_distribution
from edgejudge.judge import Judge
from edgejudge.rubric import load_rubric

runner = CliRunner()


def _png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    from edgejudge.images import synthetic_image

    buffer = io.BytesIO()
    synthetic_image(96, seed=1).resize(size).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture()
def image(work_dir: Path) -> Path:
    return _png(work_dir / "cat.png")


BASE = ["--instruction", "What animal is this?", "--response", "A tabby cat."]


def test_json_shape_and_clean_stdout(fake: FakeEngine, image: Path) -> None:
    fake.enqueue("The cat is named correctly. [RESULT] 4", {1: 0.05, 2: 0.05, 3: 0.1, 4: 0.6, 5: 0.2})
    result = runner.invoke(
        app, ["judge", str(image), *BASE, "--reference", "A cat.", "--json", "--seed", "3"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert data["score"] == 4
    assert set(data["score_probs"]) == {"1", "2", "3", "4", "5"}
    assert data["score_probs"]["4"] == pytest.approx(0.6)
    assert data["expected_score"] == pytest.approx(1 * 0.05 + 2 * 0.05 + 3 * 0.1 + 4 * 0.6 + 5 * 0.2)
    assert data["feedback"] == "The cat is named correctly."
    assert data["raw_output"] == "The cat is named correctly. [RESULT] 4"
    assert data["reference"] is True and data["rubric"] == "vqa-helpfulness"
    params = fake.history[0][1]
    assert params.seed == 3 and params.constrained is True and params.temperature == 1.0


def test_judge_json_and_batch_rows_carry_the_same_settings_object(
    fake_factory: list[FakeEngine], image: Path, work_dir: Path
) -> None:
    from edgejudge.settings import SETTINGS_KEYS

    opts = ["--seed", "3", "--temperature", "0.5", "--top-p", "0.8", "--repeat-penalty", "1.1"]
    opts += ["--max-tokens", "200", "--samples", "2", "--image-fit", "pad", "--no-grammar"]
    judged = runner.invoke(app, ["judge", str(image), *BASE, "--json", *opts])
    assert judged.exit_code == 0, judged.stderr
    settings = json.loads(judged.stdout)["settings"]
    assert tuple(settings) == SETTINGS_KEYS
    assert settings == {
        "model": fake_factory[0].model_name,
        "engine": "fake",
        "temperature": 0.5,
        "top_p": 0.8,
        "seed": 3,
        "samples": 2,
        "max_tokens": 200,
        "repeat_penalty": 1.1,
        "image_fit": "pad",
        "grammar": False,
        "parallel": 1,  # the fake decodes one sample at a time
    }
    params = fake_factory[0].history[0][1]  # --top-p and --repeat-penalty reach the engine
    assert (params.top_p, params.repeat_penalty, params.constrained) == (0.8, 1.1, False)
    rows = work_dir / "in.jsonl"
    row = {
        "id": "a",
        "image": image.name,
        "instruction": BASE[1],
        "response": BASE[3],
        "rubric": "vqa-helpfulness",
    }
    rows.write_text(json.dumps(row) + "\n")
    out = work_dir / "out.jsonl"
    batch = runner.invoke(app, ["batch", str(rows), "-o", str(out), *opts])
    assert batch.exit_code == 0, batch.stderr
    (written,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert written["settings"] == settings


def test_the_image_file_is_read_once_and_decoded_once(
    fake: FakeEngine, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgejudge.images import decode

    reads: list[object] = []
    decodes: list[object] = []
    real_read, real_decode = decode._read_source, decode._decode
    monkeypatch.setattr(decode, "_read_source", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(decode, "_decode", lambda *a, **k: decodes.append(a) or real_decode(*a, **k))
    result = runner.invoke(app, ["judge", str(image), *BASE, "--json"])
    assert result.exit_code == 0, result.stderr
    assert len(reads) == 1 and len(decodes) == 1
    assert json.loads(result.stdout)["image"] == "cat.png"  # the verdict still names the file


def test_response_from_stdin_and_quiet_json(fake: FakeEngine, image: Path) -> None:
    args = ["judge", str(image), "-i", "What?", "--response-file", "-", "--json"]
    result = runner.invoke(app, args, input="A cat\nsitting.\n")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # nothing for people in a pipe unless there is a warning
    assert "A cat\nsitting.\n\n###Reference Answer" in fake.history[0][0].after_image


def test_human_output_goes_to_stderr_and_stdout_gets_the_score(fake: FakeEngine, image: Path) -> None:
    fake.enqueue("Fine. [RESULT] 2", peaked_distribution(2))
    result = runner.invoke(app, ["judge", str(image), *BASE, "--temperature", "0", "--no-grammar"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "2\n"
    assert "Score 2 / 5" in result.stderr and "Fine." in result.stderr
    assert "no reference answer was given" in result.stderr
    params = fake.history[0][1]
    assert params.temperature == 0 and params.constrained is False


def test_samples_and_generation_options_reach_the_engine(fake: FakeEngine, image: Path) -> None:
    for score in (3, 4, 4):
        fake.enqueue(f"ok [RESULT] {score}", peaked_distribution(score))
    args = ["judge", str(image), *BASE, "--samples", "3", "--seed", "10", "--max-tokens", "99", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] == 4 and len(data["samples"]) == 3
    assert data["agreement"] == pytest.approx(2 / 3)
    assert [p.seed for _, p in fake.history] == [10, 11, 12]
    assert {p.max_tokens for _, p in fake.history} == {99}


def test_print_prompt_is_byte_exact_and_needs_no_model(image: Path) -> None:
    # no JUDGE_FACTORY and no model installed: --print-prompt must not load anything
    args = ["judge", str(image), *BASE, "--reference", "A cat.", "--rubric", "ocr-accuracy", "--print-prompt"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    want = Judge(FakeEngine()).prompt_text(
        instruction="What animal is this?",
        response="A tabby cat.",
        rubric=load_rubric("ocr-accuracy"),
        reference="A cat.",
    )
    assert result.stdout == want
    assert result.stdout.startswith("A chat between a curious user") and result.stdout.endswith(" ASSISTANT:")
    assert result.stderr == ""


def test_inline_rubric_and_response_file(fake: FakeEngine, image: Path, work_dir: Path) -> None:
    answer = work_dir / "answer.txt"
    answer.write_text("It is a cat,\non a mat.", encoding="utf-8")
    scores = [f"--score{k}" for k in range(1, 6)]
    inline = ["--criteria", "Is the animal right?"]
    for k, flag in enumerate(scores, 1):
        inline += [flag, f"level {k}"]
    args = ["judge", str(image), "-i", "What?", "--response-file", str(answer), *inline, "--print-prompt"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "Is the animal right?\nScore 1: level 1\n" in result.stdout
    assert "It is a cat,\non a mat." in result.stdout


def test_unreadable_response_file_names_the_option(fake: FakeEngine, image: Path, work_dir: Path) -> None:
    missing = ["judge", str(image), "-i", "What?", "--response-file", str(work_dir / "none.txt")]
    result = runner.invoke(app, missing)
    assert result.exit_code == 1 and result.stdout == ""
    lines = _one_line_error(result)
    assert lines[0].startswith("error: --response-file not found:") and "none.txt" in lines[0]
    assert not fake.history
    # issue 8, item 15 changed this: a file that is not UTF-8 is judged with U+FFFD for the bad bytes,
    # and the verdict carries a warning naming the option and the file (was: refused)
    binary = work_dir / "answer.bin"
    binary.write_bytes(b"caf\xe9 au lait")
    args = ["judge", str(image), "-i", "What?", "--response-file", str(binary), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    warning = next(w for w in verdict["warnings"] if "not valid UTF-8" in w)
    assert f"--response-file {binary}" in warning
    assert "caf\ufffd au lait" in fake.history[-1][0].after_image


def test_panel_names_the_registered_model(
    monkeypatch: pytest.MonkeyPatch, image: Path, tiny_gguf: tuple[Path, Path]
) -> None:
    from edgejudge.registry import make_entry, register

    factory = lambda options: Judge(FakeEngine(model_name="fake-judge"))  # noqa: E731
    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    register(make_entry("tinyjudge", *tiny_gguf, hash_files=False))
    result = runner.invoke(app, ["judge", str(image), *BASE, "-m", "tinyjudge"])
    assert result.exit_code == 0, result.stderr
    assert "tinyjudge:F16 · rubric vqa-helpfulness" in result.stderr  # the whole subtitle, not cut off
    # a model given by path keeps the verdict's own model name
    result = runner.invoke(app, ["judge", str(image), *BASE, "-m", str(tiny_gguf[0])])
    assert result.exit_code == 0, result.stderr
    assert "fake-judge · rubric vqa-helpfulness" in result.stderr


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--criteria", "c", "--score1", "a"], "--score2"),
        (["--rubric", "ocr-accuracy", "--criteria", "c"], "not both"),
        (["--response-file", "x.txt"], "not both"),
        (["--image-fit", "stretch"], "--image-fit"),
        (["--samples", "0"], "--samples"),
    ],
)
def test_usage_errors_exit_2(fake: FakeEngine, image: Path, extra: list[str], needle: str) -> None:
    result = runner.invoke(app, ["judge", str(image), *BASE, *extra])
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stdout == ""
    assert not fake.history


def test_missing_response_is_a_usage_error(image: Path) -> None:
    result = runner.invoke(app, ["judge", str(image), "--instruction", "What?"])
    assert result.exit_code == 2 and "--response" in result.stderr


def _one_line_error(result: object) -> list[str]:
    stderr = result.stderr  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines


def test_missing_image_is_one_line_error(fake: FakeEngine, work_dir: Path) -> None:
    result = runner.invoke(app, ["judge", str(work_dir / "nope.png"), *BASE])
    assert result.exit_code == 1 and result.stdout == ""
    lines = _one_line_error(result)
    assert "nope.png" in lines[0] and lines[1].startswith("hint: ")


def test_corrupt_image_is_one_line_error(fake: FakeEngine, work_dir: Path) -> None:
    bad = work_dir / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = runner.invoke(app, ["judge", str(bad), *BASE])
    assert result.exit_code == 1
    assert "broken.jpg" in _one_line_error(result)[0]


def _bad_image(work_dir: Path, kind: str) -> Path:
    from PIL import Image

    if kind == "folder":
        (work_dir / "pictures").mkdir()
        return work_dir / "pictures"
    path = work_dir / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, this is not an image\n")
    elif kind == "truncated":
        data = _png(work_dir / "whole.png", (120, 90)).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bomb":
        Image.new("L", (9000, 9000)).save(path)  # 81 Mpx > the 64 Mpx limit, a few KB on disk
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("empty", "empty"),
        ("text", "not an image"),
        ("truncated", "truncated"),
        ("bomb", "pixel limit"),
        ("folder", "directory"),
    ],
)
def test_every_bad_image_is_one_line_error(fake: FakeEngine, work_dir: Path, kind: str, needle: str) -> None:
    bad = _bad_image(work_dir, kind)
    result = runner.invoke(app, ["judge", str(bad), *BASE])
    assert result.exit_code == 1 and result.stdout == ""
    lines = _one_line_error(result)
    assert bad.name in lines[0] and needle in lines[0] and lines[1].startswith("hint: ")
    assert fake.history == []  # refused before anything was judged


@pytest.mark.parametrize("field", ["response", "reference"])
def test_context_overflow_names_the_field(
    monkeypatch: pytest.MonkeyPatch, image: Path, work_dir: Path, field: str
) -> None:
    engine = FakeEngine(n_ctx=2048)
    monkeypatch.setattr(_common, "JUDGE_FACTORY", lambda options: Judge(engine))
    long_text = work_dir / "long.txt"
    long_text.write_text("far too many words " * 800)
    args = ["--response-file", str(long_text)] if field == "response" else ["--response", "Short."]
    if field == "reference":
        args += ["--reference", long_text.read_text()]
    result = runner.invoke(app, ["judge", str(image), "-i", "What is it?", *args])
    assert result.exit_code == 1 and result.stdout == ""
    lines = _one_line_error(result)
    assert "tokens too many" in lines[0] and f"the {field} is the longest field" in lines[0]
    assert f"shorten the {field}" in lines[1] and "raise --n-ctx" in lines[1]  # the CLI names the flag


def test_unknown_rubric_is_one_line_error(fake: FakeEngine, image: Path) -> None:
    result = runner.invoke(app, ["judge", str(image), *BASE, "--rubric", "no-such-rubric"])
    assert result.exit_code == 1
    lines = _one_line_error(result)
    assert "no-such-rubric" in lines[0] and "vqa-helpfulness" in lines[0]


def test_missing_model_is_one_line_error(image: Path) -> None:
    result = runner.invoke(app, ["judge", str(image), *BASE])
    assert result.exit_code == 1
    lines = _one_line_error(result)
    assert "no model given" in lines[0]
    assert "models pull prometheus-vision-7b" in lines[1]
    result = runner.invoke(app, ["judge", str(image), *BASE, "--model", "prometheus-vision-13b"])
    assert result.exit_code == 1
    assert "not installed" in _one_line_error(result)[0]


def test_unexpected_errors_and_debug(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    def boom(options: object) -> Judge:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_common, "JUDGE_FACTORY", boom)
    result = runner.invoke(app, ["judge", str(image), *BASE])
    assert result.exit_code == 1
    lines = _one_line_error(result)
    assert lines == [
        "error: unexpected RuntimeError: disk on fire",
        "hint: set EDGEJUDGE_DEBUG=1 for the traceback",
    ]
    result = runner.invoke(app, ["judge", str(image), *BASE], env={"EDGEJUDGE_DEBUG": "1"})
    assert result.exit_code == 1 and "Traceback" in result.stderr and "disk on fire" in result.stderr


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    def interrupted(options: object) -> Judge:
        raise KeyboardInterrupt

    monkeypatch.setattr(_common, "JUDGE_FACTORY", interrupted)
    result = runner.invoke(app, ["judge", str(image), *BASE])
    assert result.exit_code == 130 and "interrupted" in result.stderr


def test_no_escape_codes_in_pipes(fake: FakeEngine, image: Path) -> None:
    result = runner.invoke(app, ["judge", str(image), *BASE], env={"TERM": "xterm-256color"})
    assert result.exit_code == 0
    assert "\x1b[" not in result.stderr and "\x1b[" not in result.stdout


def test_no_color_is_respected(image: Path) -> None:
    args = ["judge", str(image), *BASE, "--rubric", "nope"]
    coloured = runner.invoke(app, args, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert coloured.exit_code == 1 and re.search(r"\x1b\[[0-9;]*31m", coloured.stderr)
    plain = runner.invoke(app, args, env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": "1"})
    assert plain.exit_code == 1 and "error:" in plain.stderr
    assert not re.search(r"\x1b\[[0-9;]*(3[0-9]|9[0-7])m", plain.stderr)


def test_version_help_and_no_args() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip().startswith("edgejudge ")
    result = runner.invoke(app, ["judge", "--help"])
    assert result.exit_code == 0 and "Examples" in result.stdout and "--print-prompt" in result.stdout
    result = runner.invoke(app, [])  # CliRunner's stdin is not a terminal
    assert result.exit_code == 2
    assert "edgejudge judge" in result.stderr and result.stdout == ""


def test_every_command_is_registered_with_examples() -> None:
    result = runner.invoke(app, ["--help"])
    for name in (
        "judge",
        "convert",
        "batch",
        "report",
        "parse",
        "metrics",
        "rubrics",
        "models",
        "doctor",
        "demo",
        "tui",
    ):
        assert name in result.stdout
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "Examples" in sub.stdout, name


def test_console_script_entry_point(image: Path) -> None:
    """The installed entry point (a real process, stdin not a TTY) behaves like the CliRunner app."""
    env = {**os.environ, "NO_COLOR": "1"}
    code = "import sys; from edgejudge.cli import main; sys.argv = ['edgejudge', *sys.argv[1:]]; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "judge", str(image), *BASE, "--rubric", "nope"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: unknown rubric 'nope'")


def test_judge_on_the_tiny_real_model(tiny_gguf: tuple[Path, Path], image: Path) -> None:
    text, mmproj = tiny_gguf
    args = [
        "judge",
        str(image),
        *BASE,
        "--model",
        str(text),
        "--mmproj",
        str(mmproj),
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        "--threads",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] in range(1, 6)
    assert sum(data["score_probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert "[RESULT]" in data["raw_output"]
    # the mmproj is found beside the model by its name; greedy verdicts are reproducible
    again = runner.invoke(app, [a for a in args if a not in ("--mmproj", str(mmproj))])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["raw_output"] == data["raw_output"]


def test_tiny_generation_budget_still_yields_a_score(tiny_gguf: tuple[Path, Path], image: Path) -> None:
    """--max-tokens below 8 is allowed: the engine forces the ``[RESULT] d`` tail within any budget."""
    text, mmproj = tiny_gguf
    args = ["judge", str(image), *BASE, "--model", str(text), "--mmproj", str(mmproj)]
    result = runner.invoke(
        app, [*args, "--max-tokens", "3", "--json", "--temperature", "0", "--threads", "2"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] in range(1, 6)
    assert data["raw_output"].rstrip().endswith(f"[RESULT] {data['score']}")
