"""Fleets of two REAL llama-servers (127.0.0.1, tiny model), one killed with SIGKILL mid-way: a batch (its
rows move to the other server, every row is in the log exactly once, the log resumes on one server and on
the local engine, whose resume keys are the same) and a streamed judgment (it goes on on the other server
without showing any text twice)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edgejudge.batch import run_batch
from edgejudge.batch.run import BatchEvent
from edgejudge.engine._http import RetryPolicy
from edgejudge.engine.base import GenerationParams, PromptParts
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.engine.llama_server import LlamaServerEngine
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.prompt import conversation_parts, render_judge_prompt
from edgejudge.rubric import load_rubric
from tests.helpers.llama_server import running_server

N_CTX = 2048
FLAGS = ("-fa", "off", "--override-kv", f"llama.context_length=int:{N_CTX}")
ROWS, IMAGES = 14, 7
PARAMS = GenerationParams(temperature=0.0, max_tokens=12)


def _input(work_dir: Path) -> Path:
    for k in range(IMAGES):
        synthetic_image(64 + 8 * k, seed=k).save(work_dir / f"img{k}.png")
    rows = [
        {
            "id": f"row{i}",
            "image": f"img{i % IMAGES}.png",
            "instruction": "What is shown?",
            "response": f"Answer number {i}.",
            "rubric": "vqa-helpfulness",
        }
        for i in range(ROWS)
    ]
    path = work_dir / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _parts(size: int) -> PromptParts:
    rgb = np.random.default_rng(3).integers(0, 256, size=(size, size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt("Describe it.", "Two cats.", load_rubric("vqa-helpfulness"), "A red square.")
    before, after = conversation_parts(prompt)
    return PromptParts(before, rgb, size, size, hashlib.sha256(rgb).hexdigest(), after)


def test_a_server_killed_mid_batch_loses_and_duplicates_nothing(
    tiny_gguf: tuple[Path, Path], work_dir: Path
) -> None:
    inp, out = _input(work_dir), work_dir / "out.jsonl"
    with (
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as a,
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as b,
    ):
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1)
        engine = LlamaServerEngine(
            *tiny_gguf, servers=[a.url, b.url], max_parallel=2, timeout_s=30, retry=retry
        )
        done_before_kill: list[int] = []

        def on_event(event: BatchEvent) -> None:
            if event.kind == "row_done" and event.done >= 4 and not done_before_kill:
                done_before_kill.append(engine.servers[1].done)
                b.process.kill()  # SIGKILL: no goodbye, requests in flight break

        with Judge(engine) as judge:
            summary = run_batch(judge, inp, out, params=PARAMS, on_event=on_event)
            stats = engine.servers
        assert summary.ok == ROWS and summary.errors == 0
        assert done_before_kill and done_before_kill[0] >= 1  # b really served rows before it died
        assert stats[0].alive and not stats[1].alive and stats[1].failed >= 1  # the fleet moved its work
        assert stats[0].done + stats[1].done >= ROWS and stats[0].done > stats[1].done
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        ids = [r["id"] for r in rows if "id" in r and r.get("status")]
        assert sorted(ids) == sorted(f"row{i}" for i in range(ROWS))  # each row once
        assert all(r["status"] == "ok" and r["score"] in range(1, 6) for r in rows if r.get("status"))

        with LlamaServerEngine(*tiny_gguf, servers=[a.url]) as one, Judge(one) as judge:
            again = run_batch(judge, inp, out, params=PARAMS)
        assert again.skipped == ROWS and again.judged == 0

    with LlamaCppEngine(*tiny_gguf, n_ctx=N_CTX, n_threads=1) as native, Judge(native) as judge:
        local = run_batch(judge, inp, out, params=PARAMS)
    assert local.skipped == ROWS and local.judged == 0  # the same resume keys on the local engine


def test_a_server_killed_mid_stream_is_replaced_without_repeating_text(tiny_gguf: tuple[Path, Path]) -> None:
    with (
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as a,
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as b,
    ):
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1)
        with LlamaServerEngine(*tiny_gguf, servers=[a.url, b.url], timeout_s=30, retry=retry) as engine:
            parts = _parts(engine.image_size)
            params = GenerationParams(temperature=0.0, max_tokens=200)
            pieces: list[str] = []

            def on_text(piece: str) -> None:
                pieces.append(piece)
                if len(pieces) == 3:
                    a.process.kill()  # the server streaming to us dies after three pieces

            gen = engine.generate(parts, params, on_text)
            first, second = engine.servers
        assert not first.alive and first.failed == 1 and second.alive and second.done == 1
        assert len(pieces) > 3 and "".join(pieces) == gen.text  # nothing shown twice
        with LlamaCppEngine(*tiny_gguf, n_ctx=N_CTX, n_threads=1) as native:
            assert gen.text == native.generate(parts, params).text
