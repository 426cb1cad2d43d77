"""``run_batch(policy=...)`` on the fake engine: a row decided under one policy, then partly judged under
another (a stopped run), then run again under the first is decided afresh and complete again; the
summary counts the policy rows left incomplete (the library's and the CLI's, with "judgments left");
``--keep`` allows the keys only a record has and refuses a reserved name before the model loads; chunks
with ``samples > 1``. (Chunks, kills, ``keep``: ``test_policy_batch_chunks.py``.)"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_policy_batch import POLICY, RULES, CountingFake, items, key, lines, write_jsonl
from typer.testing import CliRunner

from edgejudge.batch import run_batch
from edgejudge.batch.records import policy_items, read_log
from edgejudge.cli import app
from edgejudge.decision import INCOMPLETE
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

OTHER = POLICY.replace('name = "shop"', 'name = "other"')
for _rule in RULES:
    OTHER = OTHER.replace(f'id = "{_rule}"', f'id = "b-{_rule}"')


@pytest.fixture()
def data(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    (work_dir / "shop.toml").write_text(POLICY, encoding="utf-8")
    (work_dir / "other.toml").write_text(OTHER, encoding="utf-8")
    return work_dir


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The log's timestamps one second apart per call, so the order of judgments shows without sleeping."""
    from edgejudge.batch import policy_run

    ticks = iter(range(10_000))
    monkeypatch.setattr(policy_run, "utc_now", lambda: f"2026-01-01T{next(ticks):08d}+00:00")
    yield


def state(out: Path) -> list[tuple[str, bool, str, list[str | None]]]:
    log = read_log(out)
    found = policy_items(log.rows.values(), log.decisions, log.overrides)
    return [(i.id, i.complete, i.final, [r.rule_id for r in i.rules]) for i in found]


def decision_lines(out: Path) -> int:
    return sum(1 for r in lines(out) if r.get("kind") == "decision")


def test_decided_then_another_policy_stopped_then_the_first_again_is_complete(
    data: Path, clock: None
) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    first = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    decided = state(out)
    assert decided[0][:2] == ("i1", True) and decided[0][3] == RULES
    calls = iter([False, True])  # the other policy's run stops after its first rule
    stopped = run_batch(
        Judge(FakeEngine()), inp, out, policy=data / "other.toml", should_stop=lambda: next(calls, True)
    )
    assert (stopped.stopped, stopped.judged, stopped.decisions, stopped.incomplete) == (True, 1, {}, 1)
    assert state(out) == [("i1", False, INCOMPLETE, ["b-accurate"])]
    before = decision_lines(out)
    again = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    assert (again.judged, again.decisions, again.incomplete) == (0, first.decisions, 0)
    assert state(out) == decided  # the report's items agree with the summary
    assert decision_lines(out) == before + 1  # a fresh decision record, after the other policy's row
    third = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    assert (third.judged, third.decisions) == (0, first.decisions)
    assert decision_lines(out) == before + 1 and state(out) == decided  # it stands now: nothing more
    report = CliRunner().invoke(app, ["report", str(out), "--format", "csv", "-o", str(data / "r.csv")])
    assert report.exit_code == 0, report.stderr
    assert INCOMPLETE not in (data / "r.csv").read_text(encoding="utf-8")


def test_a_stopped_runs_summary_counts_the_incomplete_rows(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:2])
    out = data / "out.jsonl"
    events: list[Any] = []
    summary = run_batch(
        Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml", on_event=events.append,
        should_stop=lambda: sum(e.kind == "row_done" for e in events) >= 4,
    )  # fmt: skip
    # i1: 2 + 1 rules (decided), i2: 2 of 3 rules: one row decided, one incomplete, 1 judgment left
    assert (summary.judged, summary.remaining, sum(summary.decisions.values()), summary.incomplete) == (
        5, 1, 1, 1,
    )  # fmt: skip
    assert summary.to_dict()["incomplete"] == 1
    done = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    assert (done.judged, sum(done.decisions.values()), done.incomplete) == (1, 2, 0)


class Interrupting(FakeEngine):
    """A fake that sends this process a SIGINT (the CLI's first Ctrl-C) during its first generation."""

    def generate(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not self.history:
            os.kill(os.getpid(), signal.SIGINT)
        return super().generate(*args, **kwargs)


def test_batch_cli_stopped_says_judgments_left_and_incomplete_rows(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgejudge.cli import _common

    def factory(options: Any) -> Judge:
        return Judge(Interrupting())

    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    args = ["batch", str(inp), "-o", str(out), "--policy", str(data / "shop.toml"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130, result.stderr
    assert "stopped with 2 judgments left, 1 policy rows incomplete." in result.stderr
    assert "needs_review 0  error 0  incomplete 1" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["judged"], summary["remaining"], summary["incomplete"], summary["decisions"]) == (
        1,
        2,
        1,
        {},
    )


@pytest.mark.parametrize("name", ["note", "decision", "at", "reviewer", "input", "previous", "decided_at"])
def test_keep_allows_the_keys_only_a_record_has(data: Path, name: str) -> None:
    inp = write_jsonl(data / "in.jsonl", [{**items(data)[0], name: "from the input"}])
    out = data / "out.jsonl"
    summary = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", keep=(name,))
    assert sum(summary.decisions.values()) == 1
    log = read_log(out)
    assert log.rows[key("i1", "safe")].extra == (("student", "ann"), (name, "from the input"))
    assert state(out)[0][:2] == ("i1", True)  # the kept field makes no row a record
    again = run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", keep=(name,))
    assert again.judged == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("kind", "edgejudge writes that field itself"),
        ("p_pass", "edgejudge writes that field itself"),
        ("response", "edgejudge reads that field itself"),
    ],
)
def test_batch_keep_of_a_reserved_field_fails_before_the_model_loads(
    data: Path, monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    from edgejudge.cli import _common

    loaded: list[str] = []

    def factory(options: Any) -> Judge:
        loaded.append("model")
        return Judge(FakeEngine())

    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(inp), "-o", str(out), "--keep", "url", "--keep", name])
    assert result.exit_code == 1 and f"error: cannot keep the field '{name}': {message}" in result.stderr
    assert loaded == [] and not out.exists() and "Traceback" not in result.stderr


def test_chunks_with_samples_are_parallel_rules_of_samples_sequences_each(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    engine = CountingFake(max_parallel=2)
    summary = run_batch(Judge(engine), inp, out, policy=data / "shop.toml", samples=3)
    assert (summary.judged, sum(summary.decisions.values())) == (3, 1)
    # 3 rules at --parallel 2: a chunk of 2 rules (2 x 3 samples = 6 sequences), then 1 rule (3 sequences)
    assert engine.calls == [6, 3]
    written = [r.get("kind") or r["rule_id"] for r in lines(out)]
    assert written == ["run", *RULES, "decision"]
