"""``edgejudge batch`` at scale: ``--shard K/N`` (N shards judge every row exactly once, and their merged logs
are the unsharded run's rows: same ids, keys, scores; on the fake engine and on the tiny real model at
temperature 0), and the per-server lines and summary table of an engine with servers (a FakeEngine told
what its servers report: plumbing)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from edgejudge.batch import read_results
from edgejudge.batch.shard import in_shard
from edgejudge.cli import app
from edgejudge.cli._batch_view import BatchProgress, server_line
from edgejudge.engine.base import ServerStats
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

N = 3


def make_input(folder: Path, rows: int = 14) -> Path:
    for k in range(3):
        synthetic_image(48 + 8 * k, seed=k).save(folder / f"img{k}.png")
    lines = [
        json.dumps(
            {
                "id": f"r{i}",
                "image": f"img{i % 3}.png",
                "instruction": f"What is {i}?",
                "response": f"It is {i}.",
                "orig_score": 1 + i % 5,
            }  # fmt: skip
        )
        for i in range(rows)
    ]
    lines.insert(4, json.dumps({"id": "gone", "image": "missing.png", "instruction": "Q", "response": "R"}))
    lines.insert(7, "{not json")
    path = folder / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def batch(args: list[str]) -> dict:
    result = CliRunner().invoke(app, ["batch", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def identity(rows: dict[str, dict]) -> dict[str, tuple]:
    return {key: (row["id"], row["key"], row["status"], row["score"]) for key, row in rows.items()}


def test_the_shards_judge_every_row_exactly_once(work_dir: Path, fake_factory: list[FakeEngine]) -> None:
    bench = make_input(work_dir)
    common = ["--rubric", "vqa-helpfulness", "--temperature", "0"]
    whole = batch([str(bench), "-o", str(work_dir / "all.jsonl"), *common])
    seen: list[str] = []
    for k in range(1, N + 1):
        out = work_dir / f"out-{k}.jsonl"
        summary = batch([str(bench), "-o", str(out), "--shard", f"{k}/{N}", *common])
        ids = list(read_results(out))
        assert ids and all(in_shard(i, (k, N)) for i in ids)
        assert summary["shard"] == [k, N]
        assert summary["total"] == summary["judged"] == len(ids)  # the shard's rows only
        seen += ids
    assert sorted(seen) == sorted(read_results(work_dir / "all.jsonl"))
    assert len(seen) == len(set(seen)) == whole["total"]
    # every engine judged only its share: no generation twice across the shards
    assert sum(len(e.history) for e in fake_factory[1:]) == len(fake_factory[0].history)


def test_merged_shards_are_the_unsharded_run(work_dir: Path, fake_factory: list[FakeEngine]) -> None:
    bench = make_input(work_dir)
    common = ["--rubric", "vqa-helpfulness", "--temperature", "0"]
    batch([str(bench), "-o", str(work_dir / "all.jsonl"), *common])
    outs = []
    for k in range(1, N + 1):
        outs.append(str(work_dir / f"out-{k}.jsonl"))
        batch([str(bench), "-o", outs[-1], "--shard", f"{k}/{N}", *common])
        again = batch([str(bench), "-o", outs[-1], "--shard", f"{k}/{N}", *common])
        assert again["judged"] == 0  # a shard resumes on its own
    merged = work_dir / "merged.jsonl"
    result = CliRunner().invoke(app, ["merge", *outs, "--output", str(merged), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["conflicts"] == 0
    assert identity(read_results(merged)) == identity(read_results(work_dir / "all.jsonl"))
    # the merged log resumes as the unsharded run's output: nothing new to judge
    engines = len(fake_factory)
    resumed = batch([str(bench), "-o", str(merged), *common])
    assert (resumed["judged"], resumed["skipped"]) == (0, resumed["total"])
    assert len(fake_factory[engines].history) == 0


def test_a_bad_shard_is_a_usage_error(work_dir: Path, fake_factory: list[FakeEngine]) -> None:
    bench = make_input(work_dir)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        result = CliRunner().invoke(
            app, ["batch", str(bench), "-o", str(work_dir / "o.jsonl"), "--shard", bad]
        )
        assert result.exit_code == 2, (bad, result.output)
        assert "K/N" in result.output
    assert not (work_dir / "o.jsonl").exists() and not fake_factory


def test_shards_on_the_tiny_model_merge_to_the_unsharded_run(
    tiny_gguf: tuple[Path, Path], work_dir: Path
) -> None:
    text_model, mmproj = tiny_gguf
    bench = make_input(work_dir, rows=6)
    model = ["--model", str(text_model), "--mmproj", str(mmproj), "--rubric", "vqa-helpfulness"]
    common = [*model, "--temperature", "0", "--max-tokens", "24", "--n-ctx", "2048", "--threads", "1"]
    batch([str(bench), "-o", str(work_dir / "all.jsonl"), *common])
    outs = [str(work_dir / f"out-{k}.jsonl") for k in (1, 2)]
    for k, out in enumerate(outs, start=1):
        batch([str(bench), "-o", out, "--shard", f"{k}/2", *common])
    merged = work_dir / "merged.jsonl"
    result = CliRunner().invoke(app, ["merge", *outs, "-o", str(merged)])
    assert result.exit_code == 0, result.output
    whole, joined = read_results(work_dir / "all.jsonl"), read_results(merged)
    assert identity(joined) == identity(whole)
    assert sum(row["status"] == "ok" for row in joined.values()) == 6
    for key, row in joined.items():
        if row["status"] == "ok":
            assert row["feedback"] == whole[key]["feedback"]
            for k, p in row["score_probs"].items():
                assert (
                    abs(p - whole[key]["score_probs"][k]) < 1e-3
                )  # the same verdict; prefix reuse differs between the runs


SERVERS = (
    ServerStats(
        "http://127.0.0.1:8081",
        alive=True,
        lanes=4,
        in_flight=2,
        done=30,
        failed=1,
        prompt_tokens=1000,
        reused_tokens=750,
        generated_tokens=600,
        busy_s=12.0,
    ),  # fmt: skip
    ServerStats("http://127.0.0.1:8082", alive=False, lanes=2, done=6, failed=3),
)


def test_server_lines_show_rate_flight_state_and_cache_reuse() -> None:
    alive, dead = (server_line(s, elapsed_s=60.0) for s in SERVERS)
    assert alive.startswith("http://127.0.0.1:8081  alive  30.0 rows/min")
    assert "in flight 2/4" in alive and "failed 1" in alive and "cache reuse 75%" in alive
    assert "DOWN" in dead and "6.0 rows/min" in dead and "cache reuse --" in dead
    assert "-- rows/min" in server_line(SERVERS[0], elapsed_s=0.0)
    progress = BatchProgress(console=Console(file=io.StringIO(), force_terminal=True, width=200))
    progress.show_servers(SERVERS, 30.0)
    shown = [r.plain for r in progress.get_renderables() if isinstance(r, Text)]
    assert shown == ["  " + server_line(s, 30.0) for s in SERVERS]


def test_the_batch_summary_has_a_table_of_the_servers(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgejudge.cli import _common

    engine = FakeEngine(model_name="fleet", servers=SERVERS)
    monkeypatch.setattr(_common, "JUDGE_FACTORY", lambda options: Judge(engine, image_fit=options.image_fit))
    bench = make_input(work_dir, rows=4)
    monkeypatch.setenv("COLUMNS", "160")
    args = ["batch", str(bench), "-o", str(work_dir / "o.jsonl"), "-r", "vqa-helpfulness", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["url"] for s in summary["servers"]] == [s.url for s in SERVERS]
    assert summary["servers"][0]["reused_tokens"] == 750 and summary["servers"][1]["alive"] is False
    table = result.stderr
    for words in ("server", "rows/min", "cache reuse", "http://127.0.0.1:8081", "alive", "75%", "down"):
        assert words in table
    # a local engine has no servers: no table
    plain = CliRunner().invoke(
        app, ["batch", str(bench), "-o", str(work_dir / "p.jsonl"), "-r", "vqa-helpfulness"]
    )
    assert "cache reuse" not in plain.stderr
