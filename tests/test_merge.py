"""``edgejudge.merge``: joining batch logs written by real ``run_batch`` runs (on the fake engine: plumbing).

Last row per result key wins, an ok row beats an error row in any order, conflicts (other keys, other
scores) are listed and refused when strict, malformed lines are skipped and counted, policy records carried
over so the merged compliance items are the unsharded run's, and the output is written whole or not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers.policies import listing_policy

from edgejudge.batch import check_output, read_results, run_batch
from edgejudge.batch.records import policy_items, read_log
from edgejudge.batch.result import ResultRow
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.merge import check_target, merge_logs, plan_merge
from edgejudge.review import append_override, make_override

GREEDY = GenerationParams(temperature=0.0)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def bench(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(48, seed=2).save(work_dir / "b.png")
    rows = [
        {
            "id": f"r{i}",
            "image": "a.png" if i % 2 else "b.png",
            "instruction": "What?",
            "response": f"ans {i}",
            "rubric": "vqa-helpfulness",
        }  # fmt: skip
        for i in range(8)
    ]
    return write_jsonl(work_dir / "bench.jsonl", rows)


def same_rows(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> bool:
    """Equal rows but for what a run's clock and random seed give (timings, elapsed_s, samples)."""

    def strip(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        clock = ("timings", "elapsed_s", "samples")
        return {k: {f: v for f, v in r.items() if f not in clock} for k, r in rows.items()}

    return strip(a) == strip(b)


def run(bench: Path, out: Path, **kwargs: Any) -> None:
    run_batch(Judge(FakeEngine()), bench, out, params=kwargs.pop("params", GREEDY), **kwargs)


def shards(bench: Path, n: int, **kwargs: Any) -> list[Path]:
    outs = []
    for k in range(1, n + 1):
        outs.append(bench.parent / f"out-{k}.jsonl")
        run(bench, outs[-1], shard=(k, n), **kwargs)
    return outs


def test_shards_merge_into_the_whole_run(bench: Path) -> None:
    run(bench, bench.parent / "whole.jsonl")
    outs = shards(bench, 3)
    plan = merge_logs(outs, bench.parent / "all.jsonl")
    assert (plan.rows, plan.ok, plan.errors, plan.conflicts, plan.malformed) == (8, 8, 0, (), 0)
    merged, whole = read_results(bench.parent / "all.jsonl"), read_results(bench.parent / "whole.jsonl")
    assert same_rows(merged, whole)  # every field of every row, not just the keys
    check_output(bench, bench.parent / "all.jsonl")  # a batch log a run may append to
    # rows in input order
    assert [row["line"] for row in lines(bench.parent / "all.jsonl")] == list(range(1, 9))


def test_an_ok_row_beats_an_error_row_in_any_order(bench: Path) -> None:
    good = bench.parent / "good.jsonl"
    run(bench, good)
    failed = bench.parent / "failed.jsonl"
    rows = [ResultRow.from_dict(row) for row in lines(good)]
    broken = [
        replace(r, status="error", error="server went away", score=None) if r.id == "r3" else r for r in rows
    ]
    failed.write_text("".join(r.to_json() + "\n" for r in broken), encoding="utf-8")
    for order in ([good, failed], [failed, good]):
        target = bench.parent / "m.jsonl"
        plan = merge_logs(order, target, overwrite=True)
        assert plan.conflicts == () and (plan.ok, plan.errors) == (8, 0)
        assert read_results(target)["r3"] == read_results(good)["r3"]


def test_the_last_row_wins_and_other_keys_or_scores_are_conflicts(bench: Path) -> None:
    first, second = bench.parent / "first.jsonl", bench.parent / "second.jsonl"
    run(bench, first)
    run(bench, second, params=GenerationParams(temperature=0.0, max_tokens=500))  # other settings: other keys
    plan = plan_merge([first, second])
    assert len(plan.conflicts) == 8 and all("key" in c.kinds for c in plan.conflicts)
    assert all(c.kept == str(second) for c in plan.conflicts)
    assert {json.dumps(row, sort_keys=True) for row in plan.lines} == {
        json.dumps(row, sort_keys=True) for row in lines(second)
    }
    # the same key with another score (an edited copy): a score conflict, the later file's row kept
    edited = bench.parent / "edited.jsonl"
    rows = lines(first)
    rows[2]["score"] = 1 if rows[2]["score"] != 1 else 5
    write_jsonl(edited, rows)
    (conflict,) = plan_merge([first, edited]).conflicts
    assert conflict.kinds == ("score",) and conflict.id == rows[2]["id"] and conflict.kept == str(edited)
    assert conflict.to_dict()["scores"] == [lines(first)[2]["score"], rows[2]["score"]]
    # strict: an error, nothing written
    target = bench.parent / "strict.jsonl"
    with pytest.raises(InputError, match="1 conflict"):
        merge_logs([first, edited], target, strict=True)
    assert not target.exists()
    assert not [p for p in bench.parent.iterdir() if p.name.startswith(".strict")]


def test_malformed_lines_are_skipped_and_counted(bench: Path) -> None:
    out = bench.parent / "out.jsonl"
    run(bench, out)
    text = out.read_text(encoding="utf-8").splitlines(keepends=True)
    text.insert(3, "a hand-written note\n")
    text.insert(5, '{"id": "x", "note": "not a row"}\n')
    killed = "".join(text) + text[-1][: len(text[-1]) // 2]  # a last line cut short by a kill
    out.write_text(killed, encoding="utf-8")
    plan = merge_logs([out], bench.parent / "all.jsonl")
    assert plan.inputs[0].malformed == 3 and plan.malformed == 3
    assert plan.rows == 8
    assert read_results(bench.parent / "all.jsonl").keys() == {f"r{i}" for i in range(8)}


def test_inputs_that_are_not_batch_logs_are_refused(bench: Path) -> None:
    out = bench.parent / "out.jsonl"
    run(bench, out)
    with pytest.raises(InputError, match="not an edgejudge batch log"):
        plan_merge([out, bench])  # the batch input, not its output
    with pytest.raises(InputError, match="missing|no such|not found|does not exist"):
        plan_merge([out, bench.parent / "nope.jsonl"])
    with pytest.raises(InputError, match="given twice"):
        plan_merge([out, bench.parent / "." / "out.jsonl"])
    with pytest.raises(InputError, match="no batch logs"):
        plan_merge([])
    empty = bench.parent / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert plan_merge([out, empty]).rows == 8


def test_the_output_is_never_an_input_and_never_replaced_unasked(bench: Path) -> None:
    out, other = bench.parent / "out.jsonl", bench.parent / "other.jsonl"
    run(bench, out)
    run(bench, other, limit=3)
    before = out.read_bytes()
    os.link(out, bench.parent / "hard.jsonl")
    (bench.parent / "soft.jsonl").symlink_to(out)
    for target in (out, bench.parent / "hard.jsonl", bench.parent / "soft.jsonl"):
        with pytest.raises(InputError, match="one of the logs being merged"):
            merge_logs([out, other], target, overwrite=True)
    assert out.read_bytes() == before
    existing = bench.parent / "existing.jsonl"
    existing.write_text("keep me\n", encoding="utf-8")
    with pytest.raises(InputError, match="already exists") as caught:
        check_target([out], existing)
    assert caught.value.about == ("output", "overwrite")
    assert existing.read_text(encoding="utf-8") == "keep me\n"
    merge_logs([out, other], existing, overwrite=True)
    assert same_rows(read_results(existing), read_results(out))
    with pytest.raises(InputError, match="folder"):
        merge_logs([out], bench.parent)


POLICY = listing_policy("shop", "1", "A small listing policy.")


def policy_items_of(path: Path) -> list[tuple[Any, ...]]:
    log = read_log(path)
    return [
        (i.id, i.key, i.final, i.complete, [r.rule_id for r in i.rules])
        for i in policy_items(log.rows.values(), log.decisions, log.overrides)
    ]


def test_policy_shards_merge_into_the_whole_compliance_log(bench: Path) -> None:
    (bench.parent / "shop.toml").write_text(POLICY, encoding="utf-8")
    policy = bench.parent / "shop.toml"
    whole = bench.parent / "whole.jsonl"
    run(bench, whole, policy=policy)
    outs = shards(bench, 2, policy=policy)
    # a person's decision on an item of shard 1, then a later one on the same item
    log = read_log(outs[0])
    item = policy_items(log.rows.values(), log.decisions, log.overrides)[0]
    early = datetime(2026, 1, 1, tzinfo=timezone.utc)
    append_override(outs[0], make_override(item, "violation", reviewer="ann", at=early))
    append_override(outs[0], make_override(item, "compliant", reviewer="bob", note="checked"))
    merged = bench.parent / "all.jsonl"
    plan = merge_logs(outs, merged)
    runs = {json.dumps(r, sort_keys=True) for out in outs for r in lines(out) if r.get("kind") == "run"}
    assert plan.records == {"run": len(runs), "decision": 8, "override": 2}  # identical records once
    assert plan.rows == 8 * 3 and plan.conflicts == ()
    got = policy_items_of(merged)
    want = policy_items_of(whole)
    assert [g[:2] + g[3:] for g in got] == [w[:2] + w[3:] for w in want]  # same items, keys, completeness
    finals = {g[0]: g[2] for g in got}
    assert finals[item.id] == "compliant"  # the latest override stands
    assert {g[0]: g[2] for g in want if g[0] != item.id} == {k: v for k, v in finals.items() if k != item.id}
    assert len(read_log(merged).runs) == len(runs) and all(r.policies for r in read_log(merged).runs)
    # resuming the merged log with the unsharded command judges and decides nothing
    size = merged.stat().st_size
    summary = run_batch(Judge(FakeEngine()), bench, merged, params=GREEDY, policy=policy)
    assert (summary.judged, summary.skipped) == (0, 24)
    assert merged.stat().st_size == size
