"""``edgejudge batch --policy`` end to end on the tiny REAL model (real converter, real llama.cpp): the rule
rows, decisions and the audit record, then a child killed mid-policy and a rerun that judges only the
missing (row, rule) pairs. The random weights give arbitrary scores: structure, counts, keys and decisions
consistent with ``decision.decide`` are checked, never particular scores."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from _support import cli
from helpers.policies import listing_policy
from typer.testing import CliRunner

from edgejudge import __version__
from edgejudge.batch.records import outcome_of, policy_items, read_log, rules_key
from edgejudge.batch.result import record_key
from edgejudge.cli import app
from edgejudge.decision import DECISIONS, decide
from edgejudge.images import synthetic_image
from edgejudge.prompt import template_sha256

POLICY = listing_policy("tiny-shop", "0.1", "Three rules for a listing.")
RULES = ("accurate", "safe", "honest")


def _setup(work_dir: Path, n_rows: int) -> Path:
    (work_dir / "shop.toml").write_text(POLICY, encoding="utf-8")
    for k in range(3):
        synthetic_image(60 + 20 * k, seed=k).save(work_dir / f"img{k}.png")
    rows = [
        {
            "id": f"item-{n}",
            "image": f"img{n % 3}.png",
            "response": f"A used item number {n}, in good condition.",
            **({"reference": "A bicycle in good condition."} if n % 2 else {}),
            **({"student": f"s{n % 2}"} if n < 4 else {}),
        }
        for n in range(n_rows)
    ]
    inp = work_dir / "items.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return inp


def _model_args(tiny_gguf: tuple[Path, Path], *extra: str) -> list[str]:
    text_model, mmproj = tiny_gguf
    return [
        "--model", str(text_model), "--mmproj", str(mmproj), "--temperature", "0", "--max-tokens", "16",
        "--n-ctx", "4096", "--threads", "2", *extra,
    ]  # fmt: skip


def _check(out: Path, ids: list[str]) -> dict[str, Any]:
    log = read_log(out)
    for row_id in ids:
        rows = [log.rows[record_key({"id": row_id, "rule_id": rule})] for rule in RULES]
        assert all(r.ok and r.p_pass is not None and r.rule_state != "error" for r in rows)
        record = log.decisions[row_id]
        assert record.key == rules_key(r.key for r in rows)
        assert record.decision == decide([outcome_of(r, record.review_band) for r in rows])
    found = policy_items(log.rows.values(), log.decisions, log.overrides)
    assert sorted(i.id for i in found) == sorted(ids)
    return {i.id: i.decision.decision for i in found}


def test_policy_batch_on_the_tiny_model(tiny_gguf: tuple[Path, Path], work_dir: Path) -> None:
    inp = _setup(work_dir, 4)
    out = work_dir / "out.jsonl"
    args = ["batch", str(inp), "-o", str(out), "--policy", str(work_dir / "shop.toml"), "--json"]
    result = CliRunner().invoke(app, [*args, *_model_args(tiny_gguf)])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["results"], summary["ok"], summary["errors"]) == (4, 12, 12, 0)
    decisions = _check(out, [f"item-{n}" for n in range(4)])
    assert summary["decisions"] == {
        d: list(decisions.values()).count(d) for d in DECISIONS if d in decisions.values()
    }
    log = read_log(out)
    assert len(log.runs) == 1
    run = log.runs[0]
    text_model, mmproj = tiny_gguf
    assert run.edgejudge == __version__ and run.model["name"] == text_model.stem
    assert run.model["file"] == text_model.name and run.mmproj["file"] == mmproj.name
    assert run.model["sha256"] == hashlib.sha256(text_model.read_bytes()).hexdigest()
    assert run.mmproj["sha256"] == hashlib.sha256(mmproj.read_bytes()).hexdigest()
    assert (run.model["sha256_from"], run.mmproj["sha256_from"]) == ("file", "file")
    assert run.template_sha256 == template_sha256()
    assert run.input == {"file": str(inp), "sha256": hashlib.sha256(inp.read_bytes()).hexdigest()}
    assert run.policies[0]["name"] == "tiny-shop" and run.settings["temperature"] == 0.0
    assert log.rows[record_key({"id": "item-0", "rule_id": "safe"})].extra == (("student", "s0"),)
    # every rule row of one row was decoded in one group: the first rule paid for the image
    timings = [log.rows[record_key({"id": "item-1", "rule_id": rule})].timings or {} for rule in RULES]
    assert [t.get("parallel") for t in timings] == [3, 3, 3]
    assert all(t["reused_tokens"] > 576 for t in timings[1:])


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_policy_batch_killed_mid_way_resumes_per_row_and_rule(
    tiny_gguf: tuple[Path, Path], work_dir: Path
) -> None:
    inp = _setup(work_dir, 12)
    out = work_dir / "out.jsonl"
    policy = str(work_dir / "shop.toml")
    argv = cli(
        "batch", str(inp), "-o", str(out), "--policy", policy, *_model_args(tiny_gguf, "--parallel", "1")
    )
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while _count_lines(out) < 6 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    before = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    judged_before = {(r["id"], r["rule_id"]) for r in before if r.get("rule_id")}
    assert before[0]["kind"] == "run" and 3 <= len(judged_before) < 36  # lines: run, rule rows, decisions
    with out.open("ab") as fh:  # and a line cut short, as a crash while writing leaves it
        fh.write(b'{"id": "item-11", "line": 12, "status": "ok", "score": 3, "feedb')

    args = [
        "batch",
        str(inp),
        "-o",
        str(out),
        "--policy",
        policy,
        "--json",
        *_model_args(tiny_gguf, "--parallel", "1"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["repaired"] > 0 and "repaired" in result.stderr
    assert summary["skipped"] == len(judged_before) and summary["judged"] == 36 - len(judged_before)
    after = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    pairs = [(r["id"], r["rule_id"]) for r in after if r.get("rule_id")]
    assert len(pairs) == len(set(pairs)) == 36  # every (row, rule) judged exactly once over both runs
    assert [r["kind"] for r in after if r.get("kind") == "run"] == ["run", "run"]
    _check(out, [f"item-{n}" for n in range(12)])
    assert sum(summary["decisions"].values()) == 12


def test_the_run_record_takes_the_registrys_hashes_when_the_sizes_match(
    tiny_gguf: tuple[Path, Path], work_dir: Path
) -> None:
    from edgejudge.batch import run_batch
    from edgejudge.judge import Judge
    from edgejudge.registry import InstalledModel, register

    text_model, mmproj = tiny_gguf
    inp = _setup(work_dir, 1)
    register(
        InstalledModel(
            name="tiny", quant="F16", text_model=str(text_model), mmproj=str(mmproj),
            text_sha256="a" * 64, mmproj_sha256="b" * 64, text_bytes=text_model.stat().st_size,
            mmproj_bytes=mmproj.stat().st_size + 1,  # a size that no longer matches: hashed again
        )
    )  # fmt: skip
    with Judge.from_files(text_model, mmproj, n_ctx=4096, n_threads=2) as judge:
        run_batch(judge, inp, work_dir / "out.jsonl", policy=work_dir / "shop.toml")
    run = read_log(work_dir / "out.jsonl").runs[0]
    assert run.model["sha256"] == "a" * 64  # recorded, and the file still has the recorded size
    assert run.mmproj["sha256"] == hashlib.sha256(mmproj.read_bytes()).hexdigest()
    assert (run.model["sha256_from"], run.mmproj["sha256_from"]) == ("registry", "file")
