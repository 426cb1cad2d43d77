"""The guided wizard driven end to end in a real pseudo-terminal (pexpect).

One run on the tiny REAL model (console script, llama.cpp), one on a FakeEngine driver that covers the
branches (registry listing, bad inputs re-asked, @file, a rubric written step by step, Ctrl-C), and the
non-terminal message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.images import synthetic_image
from edgejudge.registry import InstalledModel, register

EDGEJUDGE = str(Path(sys.executable).with_name("edgejudge"))
MENU = "q: quit"
SCORE = r"Score \S*[1-5]\S* / 5"  # styled: escape codes between the parts

FAKE_DRIVER = """
import sys
import edgejudge.cli._common as common
from edgejudge.cli import main
from edgejudge.engine.fake import FakeEngine
from edgejudge.judge import Judge

common.JUDGE_FACTORY = lambda o: Judge(FakeEngine(model_name=f"fake:{o.model}"), image_fit=o.image_fit)
main(sys.argv[1:])
"""


def spawn(args: list[str], work_dir: Path, program: str = EDGEJUDGE, timeout: int = 120) -> pexpect.spawn:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        program, args, cwd=str(work_dir), env=env, encoding="utf-8", timeout=timeout, dimensions=(50, 120)
    )
    child.logfile_read = (work_dir / "pty.log").open("a", encoding="utf-8")
    return child


def type_line(child: pexpect.spawn, text: str) -> None:
    """Type a line once the wizard is reading (readline turns echo off), then wait for its echo."""
    assert child.waitnoecho(timeout=30), "the wizard never started reading"
    child.sendline(text)
    if 0 < len(text) <= 40:  # longer lines may be redrawn in pieces by readline
        child.expect_exact(text)


def press(child: pexpect.spawn, key: str) -> None:
    """Ctrl-C or Ctrl-D once the wizard is reading (sent earlier, CPython could miss the signal)."""
    assert child.waitnoecho(timeout=30), "the wizard never started reading"
    child.sendintr() if key == "intr" else child.sendeof()


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return child.exitstatus


def test_wizard_on_the_tiny_real_model(tiny_gguf: tuple[Path, Path], work_dir: Path) -> None:
    text_model, _ = tiny_gguf
    synthetic_image(160, seed=5).save(work_dir / "scene.png")
    child = spawn(["tui", "--temperature", "0", "--max-tokens", "24", "--n-ctx", "2048"], work_dir)
    child.expect("No judge installed yet")
    child.expect("Model")
    type_line(child, str(text_model))  # a path works when nothing is registered
    child.expect(r"loaded\S* tiny")
    child.expect("Image")
    type_line(child, "scene.png")
    child.expect(r"what the judge sees \((\d+)×(\d+), crop\)")
    assert child.match.group(1) == child.match.group(2)
    child.expect("▀")  # the half-block preview
    child.expect("Instruction")
    type_line(child, "What is in the picture?")
    child.expect("Response to evaluate")
    type_line(child, "A small house")
    type_line(child, "under a yellow sun.")
    type_line(child, ".")
    child.expect("Press Enter to skip")
    child.expect("Reference answer")
    type_line(child, "")
    child.expect("Rubric")
    type_line(child, "")  # the default: vqa-helpfulness
    child.expect(r"rubric \S*vqa-helpfulness")
    child.expect(SCORE)
    child.expect(r"expected \d\.\d\d")
    child.expect(r"took [\d.]+ m?s · image encoded in")
    child.expect(MENU)
    type_line(child, "a")
    child.expect("Another response")
    type_line(child, "Just a tree.")
    type_line(child, ".")
    child.expect(SCORE)
    child.expect(
        r"took [\d.]+ m?s · image (reused|embedding from cache)[^·]*· reused (\d+) of (\d+) prompt tokens"
    )
    reused, total = int(child.match.group(2)), int(child.match.group(3))
    assert 0 < reused < total  # the image and the text before the response were not evaluated again
    child.expect(MENU)
    type_line(child, "s")
    child.expect("Save the verdict as")
    type_line(child, "verdict.json")
    child.expect("saved")
    child.expect(MENU)
    type_line(child, "q")
    assert finish(child) == 0
    verdict = json.loads((work_dir / "verdict.json").read_text(encoding="utf-8"))
    assert verdict["score"] in range(1, 6) and verdict["rubric"] == "vqa-helpfulness"
    assert abs(sum(verdict["score_probs"].values()) - 1) < 1e-6 and verdict["reference"] is False
    assert "Just a tree." not in verdict["feedback"] or verdict["feedback"]  # feedback is the model's text


def test_wizard_branches_on_a_fake_engine(work_dir: Path) -> None:
    register(
        InstalledModel(
            name="judge-a",
            quant="Q4_K_M",
            text_model=str(work_dir / "a.gguf"),
            mmproj=str(work_dir / "mmproj-a.gguf"),
            text_bytes=3 << 29,
            mmproj_bytes=1 << 20,
        )
    )
    for name in ("a.gguf", "mmproj-a.gguf"):
        (work_dir / name).write_bytes(b"GGUF")
    synthetic_image(100, seed=6).save(work_dir / "pic.png")
    (work_dir / "answer.txt").write_text("A house read from a file.\n", encoding="utf-8")
    driver = work_dir / "driver.py"
    driver.write_text(FAKE_DRIVER, encoding="utf-8")

    child = spawn([str(driver), "tui"], work_dir, program=sys.executable, timeout=30)
    child.expect("judge-a")
    child.expect("Q4_K_M")
    child.expect("1.6 GB")  # the same decimal units as `edgejudge models list`
    child.expect(r"Model .*\(1\)")
    type_line(child, "")
    child.expect("fake:judge-a:Q4_K_M · image 336px")
    child.expect("Image")
    type_line(child, "nowhere.png")
    child.expect("error: ")
    child.expect("hint: ")
    child.expect("Image")
    type_line(child, "pic.png")
    child.expect("Instruction")
    type_line(child, "")
    child.expect("please type something")
    type_line(child, "Describe the picture.")
    child.expect("Response to evaluate")
    type_line(child, "@answer.txt")
    child.expect("Reference answer")
    type_line(child, "A red-roofed house.")
    child.expect("Rubric")
    type_line(child, "w")
    child.expect("Criterion")
    type_line(child, "Is the description right?")
    for k in range(1, 6):
        child.expect(f"score of {k} mean")
        type_line(child, f"level {k}")
    child.expect("Save it to a file")
    type_line(child, "my-rubric.toml")
    child.expect(r"rubric \S*custom")
    child.expect(SCORE)
    child.expect(r"[^:]judge-a:Q4_K_M · rubric")  # the panel names the registered model, not the engine
    child.expect(MENU)
    type_line(child, "a")
    child.expect("Another response")
    press(child, "intr")  # Ctrl-C cancels the step, back to the menu
    child.expect("cancelled")
    child.expect(MENU)
    type_line(child, "r")
    child.expect("Rubric")
    type_line(child, "f")
    child.expect("Rubric file")
    type_line(child, "my-rubric.toml")  # the rubric saved above loads back
    child.expect(SCORE)
    child.expect(MENU)
    type_line(child, "s")
    child.expect("Save the verdict as")
    type_line(child, "out/v.json")
    child.expect("saved")
    child.expect(MENU)
    type_line(child, "q")
    assert finish(child) == 0
    verdict = json.loads((work_dir / "out" / "v.json").read_text(encoding="utf-8"))
    assert verdict["model"] == "fake:judge-a:Q4_K_M" and verdict["reference"] is True
    assert "level 5" in (work_dir / "my-rubric.toml").read_text(encoding="utf-8")

    child = spawn([str(driver), "tui", "--model", "judge-a"], work_dir, program=sys.executable, timeout=30)
    child.expect("fake:judge-a · image")
    child.expect("Image")
    press(child, "intr")  # Ctrl-C before the first verdict leaves the wizard
    child.expect("cancelled")
    assert finish(child) == 130

    child = spawn([str(driver)], work_dir, program=sys.executable, timeout=30)  # `edgejudge` alone
    child.expect("edgejudge wizard")
    child.expect("Model")
    press(child, "eof")  # end of input at the first step leaves too
    assert finish(child) == 130


@pytest.mark.parametrize("args", [["tui"], []])
def test_wizard_needs_a_terminal(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, input="")
    assert result.exit_code == 2
    assert "edgejudge judge" in result.stderr and "terminal" in result.stderr


def test_wizard_save_leaves_no_temp_file_when_it_fails(work_dir: Path) -> None:
    from rich.console import Console

    from edgejudge.cli._common import GenerationOptions
    from edgejudge.cli.tui import Wizard
    from edgejudge.engine.fake import FakeEngine
    from edgejudge.judge import Judge

    judge = Judge(FakeEngine())
    verdict = judge.evaluate(
        synthetic_image(64, seed=1), instruction="Q", response="R", rubric="vqa-helpfulness"
    )
    console = Console(record=True, width=200, force_terminal=False)
    wizard = Wizard(console, lambda options: judge, GenerationOptions())
    wizard.verdict = verdict
    (work_dir / "taken").mkdir()  # the chosen name is an existing folder: os.replace fails
    for target in ("taken", "ok.json"):
        wizard.ask = lambda label, target=target, **kwargs: str(work_dir / target)  # type: ignore[method-assign]
        wizard.save()
    text = console.export_text()
    assert "cannot write" in text and "saved" in text
    assert json.loads((work_dir / "ok.json").read_text())["score"] == verdict.score
    assert sorted(p.name for p in work_dir.iterdir()) == ["ok.json", "taken"]


def test_wizard_at_file_refuses_special_files_and_reads_text(work_dir: Path) -> None:
    from rich.console import Console

    from edgejudge.cli._tui_prompts import Prompter

    console = Console(record=True, width=200)
    prompter = Prompter(console)
    (work_dir / "answer.txt").write_text("  A cat.\n", encoding="utf-8")
    assert prompter._read_file(str(work_dir / "answer.txt")) == "A cat."
    assert prompter._read_file("/dev/zero") is None  # a device: refused at once, never read
    assert prompter._read_file(str(work_dir)) is None
    assert prompter._read_file("-") is None  # never the terminal's stdin
    text = console.export_text()
    assert "device" in text and "folder" in text and "give a file name after @" in text
