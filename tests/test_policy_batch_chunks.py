"""``run_batch(policy=...)`` on the fake engine: a policy row's rules judged and written in chunks of
``max_parallel`` (a stop or a kill loses at most one chunk), ``judged_at`` stamped once a rule's verdict is
done, an item cut short read as incomplete until a rerun writes its decision, and ``keep`` refusing the
fields edgejudge writes or reads itself. (Rule rows, decisions, resume: ``test_policy_batch.py``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_policy_batch import POLICY, RULES, check_log, items, key, lines, write_jsonl
from typer.testing import CliRunner

from edgejudge.batch import run_batch
from edgejudge.batch.keep import RESERVED
from edgejudge.batch.records import policy_items, read_log
from edgejudge.cli import app
from edgejudge.decision import INCOMPLETE
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge


@pytest.fixture()
def data(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(48, seed=2).save(work_dir / "b.png")
    (work_dir / "shop.toml").write_text(POLICY, encoding="utf-8")
    return work_dir


class Watching(FakeEngine):
    """A fake that records, at each generation, how many lines the output already holds."""

    def __init__(self, out: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out = out
        self.seen: list[int] = []

    def generate(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        self.seen.append(len(self.out.read_bytes().splitlines()) if self.out.exists() else 0)
        return super().generate(*args, **kwargs)


def found(out: Path) -> dict[str, Any]:
    log = read_log(out)
    return {i.id: i for i in policy_items(log.rows.values(), log.decisions, log.overrides)}


def test_a_rows_rules_are_judged_and_written_a_chunk_at_a_time(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    engine = Watching(out, max_parallel=2)
    summary = run_batch(Judge(engine), inp, out, policy=data / "shop.toml")
    assert (summary.results, summary.judged, sum(summary.decisions.values())) == (9, 9, 3)
    # 3 rules at 2 sequences: chunks of 2 then 1 per row (the engine's own waves), and every chunk's rows
    # are on disk before the next chunk is judged: the run record; +2 rows; +1 row and i1's decision ...
    assert engine.seen == [1, 1, 3, 5, 5, 7, 9, 9, 11]
    written = lines(out)
    assert [r.get("kind") or r["rule_id"] for r in written[:5]] == ["run", *RULES, "decision"]
    check_log(out, ["i1", "i2", "i3"], RULES)


def test_a_stop_loses_at_most_one_chunk_and_the_item_is_incomplete_until_the_rerun(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    events: list[Any] = []
    summary = run_batch(
        Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml", on_event=events.append,
        should_stop=lambda: any(e.kind == "row_done" for e in events),
    )  # fmt: skip
    assert (summary.stopped, summary.judged, summary.remaining, summary.decisions) == (True, 2, 1, {})
    assert summary.incomplete == 1
    assert [r.get("rule_id") for r in lines(out)] == [None, "accurate", "safe"]  # the run record, 1 chunk
    item = found(out)["i1"]
    assert (item.complete, item.final, item.final_severity) == (False, INCOMPLETE, None)
    again = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    assert (again.skipped, again.judged, again.incomplete) == (2, 1, 0)
    assert found(out)["i1"].complete and found(out)["i1"].final != INCOMPLETE
    check_log(out, ["i1"], RULES)


def test_a_log_cut_after_some_rule_rows_is_incomplete_and_the_rerun_completes_it(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    at = [json.loads(line).get("rule_id") for line in full].index("safe", 5)  # i2's second rule row
    out.write_text("".join(full[:at]), encoding="utf-8")  # a kill after i1's decision and i2's first rule
    cut = found(out)
    assert cut["i1"].complete and cut["i1"].final == read_log(out).decisions["i1"].decision.decision
    assert (cut["i2"].complete, cut["i2"].final, len(cut["i2"].rules)) == (False, INCOMPLETE, 1)
    assert "i3" not in cut
    summary = run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    assert (summary.skipped, summary.judged, sum(summary.decisions.values())) == (4, 5, 3)
    assert all(item.complete and item.final != INCOMPLETE for item in found(out).values())
    check_log(out, ["i1", "i2", "i3"], RULES)


def test_rules_written_by_a_killed_run_get_their_decision_on_the_rerun(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine(max_parallel=2)), inp, out, policy=data / "shop.toml")
    rows_only = [r for r in lines(out) if r.get("kind") != "decision"]  # killed before the decision
    write_jsonl(out, rows_only)
    assert not found(out)["i1"].complete and found(out)["i1"].final == INCOMPLETE
    engine = FakeEngine(max_parallel=2)  # the run's own --parallel (it is in the resume key)
    summary = run_batch(Judge(engine), inp, out, policy=data / "shop.toml")
    assert summary.judged == 0 and engine.history == [] and sum(summary.decisions.values()) == 1
    assert found(out)["i1"].complete
    check_log(out, ["i1"], RULES)


def test_judged_at_is_stamped_once_the_rules_verdict_is_done(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgejudge.batch import policy_run

    inp = write_jsonl(data / "in.jsonl", items(data)[:1])
    out = data / "out.jsonl"
    engine = FakeEngine(max_parallel=2)
    monkeypatch.setattr(policy_run, "utc_now", lambda: f"after {len(engine.history)} generations")
    run_batch(Judge(engine), inp, out, policy=data / "shop.toml")
    log = read_log(out)
    stamps = [log.rows[key("i1", rule)].judged_at for rule in RULES]
    assert stamps == ["after 2 generations", "after 2 generations", "after 3 generations"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("rule_id", "writes"),
        ("kind", "writes"),
        ("warnings", "writes"),
        ("reference_given", "writes"),
        ("elapsed_s", "writes"),
        ("score", "writes"),
        ("judged_at", "writes"),
        ("line", "writes"),
        ("status", "writes"),
        ("p_pass", "writes"),
        ("policy", "reads"),
        ("image", "reads"),
        ("orig_instruction", "reads"),
        ("question_id", "reads"),
        ("orig_score3_description", "reads"),
        ("", "not a field name"),
    ],
)
def test_keep_refuses_the_fields_edgejudge_writes_or_reads(data: Path, name: str, why: str) -> None:
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    engine = FakeEngine()
    with pytest.raises(InputError, match=why) as caught:
        run_batch(Judge(engine), inp, out, policy=data / "shop.toml", keep=("url", name))
    assert caught.value.about == ("keep",) and f"field {name!r}" in str(caught.value)
    assert not out.exists() and engine.history == []


def test_keep_allows_other_fields_and_the_pass_through_ones(data: Path) -> None:
    assert {"student", "system", "orig_score", "url"}.isdisjoint(RESERVED)
    inp = write_jsonl(data / "in.jsonl", items(data))
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, policy=data / "shop.toml", keep=("student", "url"))
    log = read_log(out)
    assert log.rows[key("i1", "safe")].extra == (("student", "ann"),)
    assert log.rows[key("i3", "safe")].extra == (("url", "u3"),)


def test_batch_keep_of_a_reserved_field_is_one_error_line(fake_factory: list[FakeEngine], data: Path) -> None:
    rows = [{**items(data)[0], "kind": "decision", "rule_id": "x"}]
    inp = write_jsonl(data / "in.jsonl", rows)
    out = data / "out.jsonl"
    for name in ("kind", "rule_id"):
        result = CliRunner().invoke(app, ["batch", str(inp), "-o", str(out), "--keep", name])
        assert result.exit_code == 1 and f"error: cannot keep the field '{name}'" in result.stderr
        assert "Traceback" not in result.stderr and not out.exists()
    assert fake_factory == []  # refused before the model loads


def test_a_policy_broken_then_mended_gives_the_item_its_rules_back(data: Path) -> None:
    (data / "own.toml").write_text(POLICY, encoding="utf-8")
    inp = write_jsonl(data / "in.jsonl", [{**items(data)[0], "policy": "own.toml"}])
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out)
    first = found(out)["i1"]
    assert first.complete and [r.rule_id for r in first.rules] == RULES
    (data / "own.toml").write_text(POLICY + "\nname = [", encoding="utf-8")  # not TOML any more
    broken = run_batch(Judge(FakeEngine()), inp, out)
    assert (broken.judged, broken.decisions) == (1, {"error": 1})
    item = found(out)["i1"]
    assert item.complete and item.final == "error" and [r.rule_id for r in item.rules] == ["*"]
    assert item.policy == {"name": "own.toml"}
    (data / "own.toml").write_text(POLICY, encoding="utf-8")  # mended: the rule rows are still in the log
    mended = run_batch(Judge(FakeEngine()), inp, out)
    assert mended.judged == 0 and sum(mended.decisions.values()) == 1
    item = found(out)["i1"]
    assert item.complete and [r.rule_id for r in item.rules] == RULES
    assert (item.final, item.key) == (first.final, first.key)
