"""A batch on an engine serving several calls at once (``Engine.concurrency`` > 1), shards, and resume keys
that leave the engine out: plumbing on the FakeEngine (the real servers are in test_batch_servers.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edgejudge.batch import run_batch
from edgejudge.batch.flow import Flow
from edgejudge.batch.shard import in_shard, parse_shard, shard_of
from edgejudge.engine.base import Generation, GenerationParams, PromptParts
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import EngineError, InputError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

GREEDY = GenerationParams(temperature=0.0, max_tokens=64)


class _Slow(FakeEngine):
    """A fake that takes a while per call and records how many calls overlap."""

    def __init__(self, delay: float, fail_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay
        self.fail_after = fail_after
        self.active = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def _call(self, run: Any) -> Any:
        with self._lock:
            self.calls += 1
            call = self.calls
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(self.delay)
            if self.fail_after is not None and call > self.fail_after:
                raise EngineError("every server is down", hint="start a server")
            return run()
        finally:
            with self._lock:
                self.active -= 1

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        return self._call(lambda: super(_Slow, self).generate_many(requests))  # type: ignore[no-any-return]

    def generate(self, parts: PromptParts, params: GenerationParams, on_text: Any = None) -> Generation:
        return self._call(lambda: super(_Slow, self).generate(parts, params, on_text))  # type: ignore[no-any-return]


def _rows(folder: Path, n: int, images: int) -> Path:
    for k in range(images):
        synthetic_image(64, seed=k).save(folder / f"i{k}.png")
    path = folder / "in.jsonl"
    rows = [
        {"id": f"r{i}", "image": f"i{i % images}.png", "instruction": "What?", "response": f"answer {i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ok(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {r["id"]: r for r in rows if r.get("status") == "ok"}


def test_a_concurrent_engine_gets_several_groups_in_flight_and_every_row_once(work_dir: Path) -> None:
    inp = _rows(work_dir, 12, 6)
    engine = _Slow(0.05, concurrency=3)
    out = work_dir / "out.jsonl"
    summary = run_batch(Judge(engine), inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
    assert summary.ok == 12 and summary.errors == 0
    assert engine.most == 3  # three groups in flight at once, never more
    lines = [json.loads(line) for line in (work_dir / "out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(f"r{i}" for i in range(12))  # each row exactly once
    # the same verdicts as one call at a time
    alone = run_batch(
        Judge(FakeEngine()), inp, work_dir / "seq.jsonl", default_rubric="vqa-helpfulness", params=GREEDY
    )
    assert alone.ok == 12
    seq = _ok(work_dir / "seq.jsonl")
    assert {k: (v["score"], v["key"]) for k, v in _ok(work_dir / "out.jsonl").items()} == {
        k: (v["score"], v["key"]) for k, v in seq.items()
    }


def test_a_failing_group_writes_the_finished_ones_then_raises_and_resume_completes(work_dir: Path) -> None:
    inp = _rows(work_dir, 8, 8)
    out = work_dir / "out.jsonl"
    engine = _Slow(0.02, fail_after=4, concurrency=2)
    with pytest.raises(EngineError, match="every server is down"):
        run_batch(Judge(engine), inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
    written = _ok(out)
    assert 1 <= len(written) <= 4  # what finished before the failure is kept, nothing half-written
    again = run_batch(Judge(FakeEngine()), inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
    assert again.skipped == len(written) and again.ok == 8 - len(written)
    assert sorted(_ok(out)) == sorted(f"r{i}" for i in range(8))


def test_should_stop_ends_a_concurrent_run_after_the_groups_in_flight(work_dir: Path) -> None:
    inp = _rows(work_dir, 10, 10)
    out = work_dir / "out.jsonl"
    engine = _Slow(0.02, concurrency=2)
    seen: list[str] = []
    summary = run_batch(
        Judge(engine), inp, out, default_rubric="vqa-helpfulness", params=GREEDY,
        on_event=lambda e: seen.append(e.kind), should_stop=lambda: seen.count("row_done") >= 3,
    )  # fmt: skip
    assert summary.stopped and 3 <= summary.judged < 10
    assert summary.remaining == 10 - summary.judged
    assert len(_ok(out)) == summary.judged


def test_flow_in_order_with_one_lane() -> None:
    flow: Flow[int, int] = Flow([1, 2, 3], 1, None)
    assert list(flow.judged(lambda g: g * 10)) == [(1, 10), (2, 20), (3, 30)]
    assert not flow.stopped


def test_shards_split_the_rows_by_id_once_and_for_all(work_dir: Path) -> None:
    ids = [f"row-{i}" for i in range(300)]
    shares = [[i for i in ids if in_shard(i, (k, 3))] for k in (1, 2, 3)]
    assert sorted(sum(shares, [])) == sorted(ids)  # every id in exactly one shard
    assert all(60 < len(s) < 140 for s in shares)  # roughly even
    assert shard_of("row-7", 3) == shard_of("row-7", 3)  # stable, not Python's salted hash
    assert parse_shard(" 2/4 ") == (2, 4)
    for bad in ("0/3", "4/3", "x/2", "3", "1/0", ""):
        with pytest.raises(InputError, match="K/N"):
            parse_shard(bad)
    inp = _rows(work_dir, 9, 3)
    total = 0
    for k in (1, 2, 3):
        summary = run_batch(
            Judge(FakeEngine()), inp, work_dir / f"s{k}.jsonl", default_rubric="vqa-helpfulness",
            params=GREEDY, shard=(k, 3),
        )  # fmt: skip
        assert summary.shard == [k, 3] and summary.total == summary.ok
        total += summary.total
    assert total == 9
    with pytest.raises(InputError, match="K/N"):
        run_batch(Judge(FakeEngine()), inp, work_dir / "x.jsonl", shard=(3, 2))


def test_resume_keys_leave_the_engine_out_but_rows_record_it(work_dir: Path) -> None:
    inp = _rows(work_dir, 4, 2)
    out = work_dir / "out.jsonl"
    first = run_batch(Judge(FakeEngine()), inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
    assert first.ok == 4
    assert {r["settings"]["engine"] for r in _ok(out).values()} == {"fake"}

    class _Other(FakeEngine):
        @property
        def kind(self) -> str:
            return "llama-server"

    again = run_batch(Judge(_Other()), inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
    assert again.skipped == 4 and again.judged == 0  # same model, another engine: nothing to redo
    other_model = run_batch(
        Judge(FakeEngine(model_name="other")), inp, out, default_rubric="vqa-helpfulness", params=GREEDY
    )
    assert other_model.judged == 4  # another model: judged again


def test_an_overflow_on_servers_points_at_the_servers_context_not_n_ctx(work_dir: Path) -> None:
    from edgejudge.engine.base import ServerStats
    from edgejudge.errors import ContextOverflowError

    synthetic_image(64, seed=1).save(work_dir / "a.png")
    long_response = "word " * 3000
    cases = (((), "raise n_ctx to"), ((ServerStats("http://h:1"),), "start the servers with"))
    for servers, expected in cases:
        judge = Judge(FakeEngine(n_ctx=1024, servers=servers))
        with pytest.raises(ContextOverflowError) as err:
            judge.evaluate(
                work_dir / "a.png", instruction="What?", response=long_response, rubric="vqa-helpfulness",
                params=GREEDY,
            )  # fmt: skip
        assert expected in (err.value.hint or "")
        assert ("n_ctx" in (err.value.hint or "")) == (not servers)


def test_a_generations_own_warnings_reach_its_verdict_once(work_dir: Path) -> None:
    from dataclasses import replace

    class _Noted(FakeEngine):
        def generate(self, parts: PromptParts, params: GenerationParams, on_text: Any = None) -> Generation:
            gen = super().generate(parts, params, on_text)
            return replace(gen, warnings=("read at an approximate context",))

    synthetic_image(64, seed=1).save(work_dir / "a.png")
    verdict = Judge(_Noted()).evaluate(
        work_dir / "a.png", instruction="What?", response="A cat.", rubric="vqa-helpfulness",
        params=GREEDY, samples=2,
    )  # fmt: skip
    assert verdict.warnings.count("read at an approximate context") == 1
