"""Fleets of two REAL llama-servers (127.0.0.1, tiny model), one killed with SIGKILL mid-way: a batch (its
rows move to the other server, every row is in the log exactly once, the log resumes on one server and on
the local engine, whose resume keys are the same), a streamed judgment (it goes on on the other server
without showing any text twice) and a server restarted on its port (readmitted). A batch whose rows take
longer than the request timeout: each row is an error, the batch goes on, the server stays in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
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
from edgejudge.serverctl import server_command
from tests.helpers.llama_server import running_server, server_binary

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
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1, outage_s=0.3)
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

        # resumed with the same decoding group size (--parallel is in the resume key)
        with LlamaServerEngine(*tiny_gguf, servers=[a.url], max_parallel=2) as one, Judge(one) as judge:
            again = run_batch(judge, inp, out, params=PARAMS)
        assert again.skipped == ROWS and again.judged == 0

    with (
        LlamaCppEngine(*tiny_gguf, n_ctx=N_CTX, n_threads=1, max_parallel=2) as native,
        Judge(native) as judge,
    ):
        local = run_batch(judge, inp, out, params=PARAMS)
    assert local.skipped == ROWS and local.judged == 0  # the same resume keys on the local engine


def test_a_server_killed_mid_stream_is_replaced_without_repeating_text(tiny_gguf: tuple[Path, Path]) -> None:
    with (
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as a,
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as b,
    ):
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1, outage_s=0.3)
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


def _parts_of(size: int, seed: int) -> PromptParts:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt("Describe it.", "Two cats.", load_rubric("vqa-helpfulness"), None)
    before, after = conversation_parts(prompt)
    return PromptParts(before, rgb, size, size, hashlib.sha256(rgb).hexdigest(), after)


def test_a_dead_server_is_readmitted_when_it_comes_back(tiny_gguf: tuple[Path, Path]) -> None:
    """A server killed, then started again on its port: the fleet's probe (here every second) finds it
    healthy and serving the same pair, and it gets work again; nothing waited for the probe."""
    with (
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as a,
        running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as b,
    ):
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1, outage_s=0.3)
        with LlamaServerEngine(
            *tiny_gguf, servers=[a.url, b.url], timeout_s=30, retry=retry, reprobe_s=1.0
        ) as engine:
            params = GenerationParams(temperature=0.0, max_tokens=4)
            a.process.kill()
            a.process.wait()
            engine.generate(_parts_of(engine.image_size, 0), params)  # a first (idle, first): moved to b
            assert [s.alive for s in engine.servers] == [False, True]
            port = int(a.url.rsplit(":", 1)[1])
            command = server_command(
                server_binary(), *tiny_gguf, port=port, slots=1, ctx_per_seq=N_CTX, threads=1, extra=FLAGS
            )
            again = subprocess.Popen(
                command.argv,
                env={**os.environ, **command.env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 60
                seed = 1
                while not engine.servers[0].alive and time.monotonic() < deadline:
                    engine.generate(_parts_of(engine.image_size, seed), params)  # on b meanwhile
                    seed += 1
                    time.sleep(0.2)
                assert engine.servers[0].alive, "the restarted server was not readmitted"
                assert httpx.get(f"{a.url}/health", timeout=5, trust_env=False).status_code == 200
                engine.generate(_parts_of(engine.image_size, 1000), params)  # a new image: a has done less
                first, second = engine.servers
                assert first.alive and first.done >= 1 and first.done + second.done == seed + 1
            finally:
                again.terminate()
                again.wait(10)


def test_rows_longer_than_the_request_timeout_are_errors_and_the_server_stays(
    tiny_gguf: tuple[Path, Path], work_dir: Path
) -> None:
    """Review bug 1's repro: a request timeout shorter than a row's generation gave "all 1 server are
    down" and no rows; now each such row is an error naming the timeout and the batch goes on."""
    rows = 3
    inp, out = _input(work_dir), work_dir / "out.jsonl"
    inp.write_text(
        "".join(inp.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]), encoding="utf-8"
    )
    long = GenerationParams(temperature=0.0, max_tokens=800)
    with running_server(*tiny_gguf, slots=1, ctx_per_seq=N_CTX, extra=FLAGS) as server:
        with LlamaServerEngine(*tiny_gguf, servers=[server.url], timeout_s=120) as patient:
            parts = _parts_of(patient.image_size, 5)
            patient.generate(parts, GenerationParams(temperature=0.0, max_tokens=2))
            started = time.perf_counter()
            full = patient.generate(parts, long)
            took = time.perf_counter() - started
        assert full.timings.generated_tokens >= 400 and took > 0.5, (full.timings, took)
        with (
            LlamaServerEngine(*tiny_gguf, servers=[server.url], timeout_s=took / 6) as engine,
            Judge(engine) as judge,
        ):
            summary = run_batch(judge, inp, out, params=long)
            (stats,) = engine.servers
        assert summary.errors == rows and summary.ok == 0
        assert stats.alive and stats.failed == rows
        logged = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        errors = [r for r in logged if r.get("status") == "error"]
        assert len(errors) == rows
        assert all("took longer than the request timeout" in r["error"] for r in errors), errors[0]
