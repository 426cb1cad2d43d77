"""Text from inputs, logs, policy files and the model is printed through ONE helper (``cli._console.shown``):
control characters appear as ``\\xNN`` and never reach the terminal, and brackets are never Rich markup.
Checked through the commands people run (batch with a policy on the fake engine, judge --policy, policies
show/check, the error line) and on the helper itself (table-driven)."""

from __future__ import annotations

import json
from dataclasses import replace
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.cli._console import shown
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image

ESC_ID = "evil\x1b[2J"


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ("plain", "plain"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\x1bcb", "a\\x1bcb"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b31m", "csi\\x9b31m"),  # a C1 control (8-bit CSI)
        ("nul\x00", "nul\\x00"),
        ("cr\rlf", "cr\\x0dlf"),
        ("line\nfeed\ttab", "line\nfeed\ttab"),  # kept
        ("[bold]x[/bold]", "[bold]x[/bold]"),  # never markup
        (7, "7"),
        ("é ✓ 漢", "é ✓ 漢"),
    ],
)
def test_shown(value: object, printed: str) -> None:
    text = shown(value, "red")
    assert text.plain == printed and str(text.style) == "red"
    console = Console(file=StringIO(), force_terminal=False, width=200)
    console.print(text)
    assert console.file.getvalue() == printed.expandtabs(8) + "\n"  # type: ignore[attr-defined]


def _no_raw_controls(text: str) -> None:
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b")), repr(text)


def test_batch_prints_ids_and_errors_of_hostile_rows_escaped(fake: FakeEngine, work_dir: Path) -> None:
    synthetic_image(48, seed=2).save(work_dir / "ok.png")
    rows = [
        {"id": ESC_ID, "image": "ok.png", "response": "A bike."},
        {"id": "gone\x1b]0;owned\x07", "image": "missing\x1b[31m.png", "response": "A bike."},
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["batch", str(work_dir / "in.jsonl"), "-o", str(work_dir / "out.jsonl")]
    result = CliRunner().invoke(app, [*args, "--policy", "marketplace-listing"])
    assert result.exit_code == 0, result.stderr
    _no_raw_controls(result.stderr)
    assert "evil\\x1b[2J (line 1): " in result.stderr  # the decision line of the first row
    assert "gone\\x1b]0;owned\\x07" in result.stderr and "missing\\x1b[31m.png" in result.stderr  # errors


def test_judge_policy_prints_feedback_escaped(fake: FakeEngine, work_dir: Path) -> None:
    synthetic_image(48, seed=3).save(work_dir / "item.png")
    fake.enqueue("Clear\x1b[2J [not markup] screen. [RESULT] 5")
    args = ["judge", str(work_dir / "item.png"), "--policy", "marketplace-listing", "--response", "A bike."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    _no_raw_controls(result.stderr)
    assert "Clear\\x1b[2J [not markup] screen." in result.stderr


def test_policy_view_prints_policy_text_escaped(work_dir: Path) -> None:
    """A policy whose text holds control characters (the loader refuses them; one made in memory gets past
    it) is still printed safely by judge --policy's view."""
    from edgejudge.cli.judge import policy_view
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    policy = load_policy("marketplace-listing")
    first = replace(policy.rules[0], title="Title\x1b[31m red", id="rule\x1b[2J")
    hostile = replace(policy, name="shop\x1b[5m", rules=(first, *policy.rules[1:]))
    engine = FakeEngine()
    verdict = Judge(engine).evaluate_policy(
        synthetic_image(48, seed=4), policy=hostile, response="A bike.", instruction="A listing photo."
    )
    console = Console(file=StringIO(), force_terminal=False, width=300)
    console.print(policy_view(verdict, hostile, model="m\x1b[0m"))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    _no_raw_controls(out)
    for text in ("shop\\x1b[5m", "rule\\x1b[2J", "Title\\x1b[31m red", "m\\x1b[0m"):
        assert text in out, text


def test_policies_show_and_check_never_print_a_control_character(work_dir: Path) -> None:
    from edgejudge.policy import load_policy, policy_to_toml

    source = policy_to_toml(load_policy("marketplace-listing"))
    title = load_policy("marketplace-listing").rules[0].title
    path = work_dir / "mine.toml"
    path.write_text(source.replace(f'"{title}"', '"Title\\u001b[31m red"', 1), encoding="utf-8")
    assert "\\u001b" in path.read_text(encoding="utf-8")
    for args in (["show", str(path)], ["show", str(path), "--rules"], ["check", str(path)]):
        result = CliRunner().invoke(app, ["policies", *args])
        _no_raw_controls(result.stderr)
        if result.exit_code == 0:  # shown, escaped
            assert "Title\\x1b[31m red" in result.stderr
        else:  # refused at load: the error line shows the value escaped too
            assert result.exit_code == 1 and result.stderr.startswith("error: "), result.stderr


def test_the_error_line_escapes_what_a_message_quotes(work_dir: Path) -> None:
    missing = work_dir / "no\x1b[2Jthere.jsonl"
    result = CliRunner().invoke(app, ["report", str(missing), "-o", str(work_dir / "r.html")])
    assert result.exit_code == 1
    _no_raw_controls(result.stderr)
    assert "no\\x1b[2Jthere.jsonl" in result.stderr
