"""``edgejudge review``: the walk driven in a real pseudo-terminal (pexpect, the console script), and the
command's other paths through CliRunner (no terminal, --decide and its syntax, nothing to review, incomplete
items, not a policy log).

The logs are hand-written policy logs in the documented record format (tests/helpers/review_logs): rule
rows, decision records and a real image beside them."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from edgejudge.batch.lock import OutputLock
from edgejudge.batch.records import policy_items, read_log
from edgejudge.cli import app
from edgejudge.cli.review import parse_decision
from edgejudge.errors import InputError
from tests.helpers.review_logs import policy_log

EDGEJUDGE = str(Path(sys.executable).with_name("edgejudge"))
KEYS = r"\[a/v/s/q\]"  # the prompt of an item that needs review
runner = CliRunner()


def spawn(args: list[str], work_dir: Path) -> pexpect.spawn:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        EDGEJUDGE, ["review", *args], cwd=str(work_dir), env=env, encoding="utf-8", timeout=60,
        dimensions=(60, 120),
    )  # fmt: skip
    child.logfile_read = (work_dir / "pty.log").open("a", encoding="utf-8")
    return child


def answer(child: pexpect.spawn, prompt: str, text: str) -> None:
    """Wait for ``prompt``, then type ``text`` and Enter (the terminal holds the line until it is read)."""
    child.expect(prompt)
    child.sendline(text)


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None
    return child.exitstatus


def overrides(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "override"]


def finals(path: Path) -> dict[str, str]:
    log = read_log(path)
    return {i.id: i.final for i in policy_items(log.rows.values(), log.decisions, log.overrides)}


def test_walk_decides_the_items_that_need_review(work_dir: Path) -> None:
    path = policy_log(work_dir)
    child = spawn([str(path), "--reviewer", "moderator ana"], work_dir)
    child.expect("2 item\\(s\\) to review in out.jsonl \\(of 4\\); reviewer moderator ana")
    child.expect("item 1/2")
    child.expect("unsure-1")
    child.expect("listing.png as judged")  # the image preview
    child.expect("Item unsure-1: a red bicycle")  # the response
    child.expect("misleading-claims")
    child.expect("0.50")  # its p_pass
    child.expect("Feedback on misleading-claims for unsure-1.")
    answer(child, KEYS, "v")
    answer(child, r"severity.*\(major\)", "")  # the uncertain rule's severity is the default
    answer(child, "note", "the 'like new' claim is false")
    child.expect("saved: violation \\(major\\) by moderator ana")
    assert len(overrides(path)) == 1  # appended at once, before the next item is shown
    child.expect("item 2/2")
    answer(child, KEYS, "a")
    answer(child, "note", "")
    child.expect("saved: compliant")
    child.expect("reviewed 2 item\\(s\\) \\(2 overridden, 0 confirmed\\), skipped 0")
    assert finish(child) == 0

    first, second = overrides(path)
    assert (first["id"], first["decision"], first["severity"], first["previous"]) == (
        "unsure-1",
        "violation",
        "major",
        "needs_review",
    )
    assert first["note"] == "the 'like new' claim is false" and first["reviewer"] == "moderator ana"
    assert first["at"].endswith("+00:00") and first["key"] == review_key(path, "unsure-1")
    assert (second["id"], second["decision"], second["severity"], second["note"]) == (
        "unsure-2",
        "compliant",
        None,
        "",
    )
    assert finals(path) == {"clean": "compliant", "unsure-1": "violation", "bad": "violation",
                            "unsure-2": "compliant"}  # fmt: skip

    again = spawn([str(path), "--reviewer", "ana"], work_dir)  # the overridden items are skipped
    again.expect("nothing to review in .*out.jsonl: 4 item\\(s\\), 2 need review, all 2 already decided")
    assert finish(again) == 0


def review_key(path: Path, item_id: str) -> str:
    log = read_log(path)
    return next(i.key for i in policy_items(log.rows.values(), log.decisions) if i.id == item_id)


def test_walk_all_confirms_skips_and_quits(work_dir: Path) -> None:
    path = policy_log(work_dir)
    child = spawn([str(path), "--reviewer", "ben", "--all"], work_dir)
    child.expect("4 item\\(s\\) to review")
    child.expect("item 1/4")
    answer(child, r"c: confirm compliant.*\[c/a/v/s/q\]", "c")  # the computed decision, confirmed
    answer(child, "note", "checked")
    child.expect("item 2/4")
    answer(child, KEYS, "s")
    child.expect("item 3/4")
    answer(child, r"c: confirm violation.*\[c/a/v/s/q\]", "v")
    answer(child, r"severity.*\(critical\)", "minor")  # a failed critical rule; the person says minor
    answer(child, "note", "")
    child.expect("item 4/4")
    answer(child, KEYS, "q")
    child.expect("reviewed 2 item\\(s\\) \\(1 overridden, 1 confirmed\\), skipped 1, 1 not reached")
    assert finish(child) == 0
    records = overrides(path)
    assert [(r["id"], r["decision"], r["severity"], r["previous"]) for r in records] == [
        ("clean", "compliant", None, "compliant"),
        ("bad", "violation", "minor", "violation"),
    ]


def test_ctrl_c_keeps_what_was_decided(work_dir: Path) -> None:
    path = policy_log(work_dir)
    child = spawn([str(path), "--reviewer", "ana"], work_dir)
    answer(child, KEYS, "a")
    answer(child, "note", "")
    child.expect("item 2/2")
    child.expect(KEYS)
    time.sleep(0.5)  # the prompt is printed just before input() waits: Ctrl-C lands there
    child.sendintr()
    child.expect("reviewed 1 item\\(s\\)")
    assert finish(child) == 130
    assert [r["id"] for r in overrides(path)] == ["unsure-1"]


def test_a_running_batch_on_the_file_stops_the_walk_with_a_clear_error(work_dir: Path) -> None:
    path = policy_log(work_dir)
    before = path.read_bytes()
    with OutputLock(path):  # what a running batch holds on its output
        child = spawn([str(path), "--reviewer", "ana"], work_dir)
        answer(child, KEYS, "a")
        answer(child, "note", "")
        child.expect("error: .*out.jsonl is already being written by another edgejudge \\(pid \\d+\\)")
        child.expect(r"hint: \S*wait for that batch to finish, then review again")
        assert finish(child) == 1
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------- no terminal


def test_without_a_terminal_the_walk_refuses_with_a_hint(work_dir: Path) -> None:
    path = policy_log(work_dir)
    result = runner.invoke(app, ["review", str(path), "--reviewer", "ana"])
    assert result.exit_code == 2
    assert "error: the review walk needs a terminal" in result.stderr
    assert "hint: decide from a script with --decide ID=compliant" in result.stderr
    assert overrides(path) == []


def test_decide_from_a_script(work_dir: Path) -> None:
    path = policy_log(work_dir)
    args = ["review", str(path), "--reviewer", "ci", "--note", "policy team call"]
    result = runner.invoke(app, [*args, "--decide", "unsure-1=violation", "--decide", "clean=compliant"])
    assert result.exit_code == 0, result.output
    assert "reviewed 2 item(s) (1 overridden, 1 confirmed)" in result.stderr
    records = overrides(path)
    assert [(r["id"], r["decision"], r["severity"], r["note"], r["reviewer"]) for r in records] == [
        ("unsure-1", "violation", "major", "policy team call", "ci"),
        ("clean", "compliant", None, "policy team call", "ci"),
    ]
    assert finals(path)["unsure-1"] == "violation"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--decide", "nobody=compliant"], 1, "error: "),
        (["--decide", "unsure-1=maybe"], 1, "cannot read the decision 'unsure-1=maybe'"),
        (["--note", "x"], 2, "--note goes with --decide"),
    ],
)
def test_decide_errors(work_dir: Path, args: list[str], code: int, words: str) -> None:
    path = policy_log(work_dir)
    result = runner.invoke(app, ["review", str(path), "--reviewer", "ci", *args])
    assert result.exit_code == code, result.output
    assert words in " ".join(result.stderr.replace("│", " ").split())
    assert overrides(path) == []


def test_nothing_to_review_is_a_message_and_exit_0(work_dir: Path) -> None:
    path = policy_log(work_dir, {"clean": (0.95, 0.9, 0.97), "bad": (0.05, 0.9, 0.9)})
    result = runner.invoke(app, ["review", str(path), "--reviewer", "ana"])
    assert result.exit_code == 0, result.output
    assert "nothing to review" in result.stderr and "2 item(s), 0 need review" in result.stderr


def test_not_a_policy_log_is_a_clear_error(work_dir: Path) -> None:
    plain = work_dir / "plain.jsonl"
    plain.write_text(
        json.dumps({"id": "r1", "line": 1, "status": "ok", "score": 3, "key": "a" * 64, "settings": {}})
        + "\n"
    )
    result = runner.invoke(app, ["review", str(plain), "--reviewer", "ana"])
    assert result.exit_code == 1
    assert "is not a policy log: its 1 result row(s) were judged without a policy" in result.stderr
    assert "hint: review reads the output of a batch run with a policy" in result.stderr


# ------------------------------------------------------------------------------ a real policy batch


def test_walk_over_a_real_policy_batch_on_the_fake_engine(work_dir: Path) -> None:
    """A log written by run_batch(policy=...) (the fake engine judging: every rule uncertain, p_pass 0.5),
    reviewed in the terminal; the overrides change the items' final decisions and are not asked again."""
    from edgejudge.batch import run_batch
    from edgejudge.engine.fake import FakeEngine
    from edgejudge.images import synthetic_image
    from edgejudge.judge import Judge
    from edgejudge.policy import load_policy

    policy = load_policy("marketplace-listing")
    synthetic_image(96, seed=5).save(work_dir / "bike.png")
    rows = [
        {"id": f"listing-{k}", "image": "bike.png", "response": f"Bicycle, {k} years old"} for k in (1, 2)
    ]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = FakeEngine()
    for _ in range(len(rows) * len(policy.rules)):
        engine.enqueue("The listing may or may not break this rule. [RESULT] 4", {2: 0.5, 4: 0.5})
    out = work_dir / "out.jsonl"
    summary = run_batch(Judge(engine), work_dir / "in.jsonl", out, policy=policy)
    assert summary.errors == 0
    assert set(finals(out).values()) == {"needs_review"}

    child = spawn([str(out), "--reviewer", "ana"], work_dir)
    child.expect("2 item\\(s\\) to review")
    child.expect("item 1/2")
    child.expect("bike.png as judged")
    child.expect("Bicycle, 1 years old")
    child.expect(policy.rules[0].id)
    answer(child, KEYS, "v")
    answer(child, "severity", "critical")
    answer(child, "note", "a replica gun in the basket")
    child.expect("item 2/2")
    answer(child, KEYS, "a")
    answer(child, "note", "")
    child.expect("reviewed 2 item\\(s\\) \\(2 overridden, 0 confirmed\\)")
    assert finish(child) == 0

    log = read_log(out)
    items = {i.id: i for i in policy_items(log.rows.values(), log.decisions, log.overrides)}
    assert (items["listing-1"].final, items["listing-1"].final_severity) == ("violation", "critical")
    assert items["listing-1"].override is not None and items["listing-1"].override.note.startswith(
        "a replica"
    )
    assert (items["listing-2"].final, items["listing-2"].decision.decision) == ("compliant", "needs_review")
    again = runner.invoke(app, ["review", str(out), "--reviewer", "ana"])
    assert again.exit_code == 0 and "all 2 already decided" in again.stderr


def test_hostile_text_in_the_log_is_shown_not_run(work_dir: Path) -> None:
    """Feedback, ids and responses come from files anyone can edit: an escape sequence is printed as
    \\x1b, Rich markup as written."""
    path = policy_log(work_dir)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for record in lines:
        if record.get("id") == "unsure-1" and record.get("rule_id"):
            record["response"] = "[bold]bold?[/bold]"
        if record.get("id") == "unsure-1" and record.get("rule_id") == "misleading-claims":
            record["feedback"] = "fine\x1b]0;pwned\x07 [red]markup[/red] \x1b[2J"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    child = spawn([str(path), "--reviewer", "ana"], work_dir)
    child.expect("item 1/2")
    answer(child, KEYS, "q")
    assert finish(child) == 0
    shown = (work_dir / "pty.log").read_text(encoding="utf-8")
    assert "\x1b]0;pwned" not in shown and "\x1b[2J" not in shown
    assert "\\x1b]0;pwned\\x07 [red]markup[/red] \\x1b[2J" in shown
    assert "[bold]bold?[/bold]" in shown


def test_a_note_too_long_is_asked_again(work_dir: Path) -> None:
    path = policy_log(work_dir)
    child = spawn([str(path), "--reviewer", "ana"], work_dir)
    answer(child, KEYS, "a")
    answer(child, "note", "x" * 4001)
    child.expect("error: \\S*the note is 4001 characters long")
    answer(child, "note", "short")
    child.expect("saved: compliant")
    answer(child, KEYS, "q")
    assert finish(child) == 0
    assert [(r["id"], r["note"]) for r in overrides(path)] == [("unsure-1", "short")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("r1=compliant", ("r1", "compliant", None)),
        ("r1=violation", ("r1", "violation", None)),
        ("r1=violation:minor", ("r1", "violation", "minor")),
        ("a=b=violation:critical", ("a=b", "violation", "critical")),
        (" r1 = compliant ", ("r1", "compliant", None)),
    ],
)
def test_parse_decision(text: str, expected: tuple) -> None:
    assert parse_decision(text) == expected


@pytest.mark.parametrize(
    "text", ["r1", "=compliant", "r1=maybe", "r1=compliant:major", "r1=violation:huge", "r1=needs_review"]
)
def test_parse_decision_refuses(text: str) -> None:
    with pytest.raises(InputError):
        parse_decision(text)


def test_incomplete_items_are_skipped_and_counted(work_dir: Path) -> None:
    path = policy_log(work_dir)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    unsure = [k for k, r in enumerate(lines) if r["id"] == "unsure-2"]
    path.write_text("".join(json.dumps(r) + "\n" for k, r in enumerate(lines) if k not in unsure[-2:]))
    result = runner.invoke(app, ["review", str(path), "--reviewer", "ana"])
    assert result.exit_code == 2  # unsure-1 is left to review, and there is no terminal
    said = " ".join(result.stderr.split())
    assert (
        "1 incomplete item(s) skipped (the batch has not judged every rule yet; run it again): unsure-2"
        in said
    )
    scripted = runner.invoke(app, ["review", str(path), "--reviewer", "ci", "--decide", "unsure-2=compliant"])
    assert scripted.exit_code == 1 and "'unsure-2' is incomplete" in " ".join(scripted.stderr.split())
    assert overrides(path) == []
    done = runner.invoke(app, ["review", str(path), "--reviewer", "ci", "--decide", "unsure-1=compliant"])
    assert done.exit_code == 0, done.stderr
    again = runner.invoke(app, ["review", str(path), "--reviewer", "ana"])
    assert again.exit_code == 0, again.stderr
    assert "4 item(s), 1 need review, all 1 already decided, 1 incomplete" in " ".join(again.stderr.split())
