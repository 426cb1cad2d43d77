"""``edgejudge batch`` from the command line: CliRunner plumbing, and real processes killed mid-run.

The kill/interrupt tests run ``edgejudge.cli.main`` in a child process whose FakeEngine blocks on a gate
file at a chosen row: the test waits until that row is in flight, then sends SIGKILL or SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgejudge.cli._common as common
from edgejudge.batch import read_results
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

DRIVER = '''
import os, sys, time, pathlib
import edgejudge.cli._common as common
from edgejudge.cli import main
from edgejudge.engine.fake import FakeEngine
from edgejudge.judge import Judge

GATE = pathlib.Path(os.environ["GATE_DIR"])

class GatedEngine(FakeEngine):
    """Blocks at call number GATE_AT until the test creates GATE_DIR/release."""
    def generate(self, parts, params, on_text=None):
        if os.environ.get("GATE_AT") and len(self.history) == int(os.environ["GATE_AT"]):
            (GATE / "in-flight").touch()
            while not (GATE / "release").exists():
                time.sleep(0.01)
        return super().generate(parts, params, on_text)

common.JUDGE_FACTORY = lambda options: Judge(GatedEngine(), image_fit=options.image_fit)
main(sys.argv[1:])
'''


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture()
def batch_input(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(64, seed=2).save(work_dir / "b.png")
    rows = [
        {
            "id": f"r{i}",
            "image": "a.png" if i % 2 else "b.png",
            "instruction": "What?",
            "response": f"answer {i}",
        }
        for i in range(1, 9)
    ]
    rows.insert(3, {"id": "bad", "image": "missing.png", "instruction": "What?", "response": "x"})
    text = "\n".join(json.dumps(r) for r in rows) + "\n{not json\n"
    path = work_dir / "in.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_batch_cli_json_summary_and_resume(batch_input: Path, fake_factory: list[FakeEngine]) -> None:
    out = batch_input.parent / "out.jsonl"
    args = ["batch", str(batch_input), "--output", str(out), "--rubric", "vqa-helpfulness", "--json"]
    result = CliRunner().invoke(app, [*args, "--temperature", "0", "--seed", "3", "--image-fit", "pad"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout holds the JSON summary and nothing else
    assert (summary["total"], summary["ok"], summary["errors"], summary["malformed"]) == (10, 8, 2, 1)
    assert sum(summary["histogram"].values()) == 8 and summary["stopped"] is False
    assert "error" in result.stderr and "missing.png" in result.stderr and "line 10" in result.stderr
    rows = read_results(out)
    assert rows["r1"]["image_fit"] == "pad" and rows["r1"]["settings"]["seed"] == 3
    assert fake_factory[-1].history[0][1].temperature == 0

    again = CliRunner().invoke(app, [*args, "--temperature", "0", "--seed", "3", "--image-fit", "pad"])
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 10
    assert len(fake_factory[-1].history) == 0

    limited = CliRunner().invoke(app, [*args, "--limit", "2", "--retry-errors"])  # new settings: re-judged
    assert limited.exit_code == 0 and json.loads(limited.stdout)["judged"] == 2


def test_batch_cli_errors(batch_input: Path, fake_factory: list[FakeEngine]) -> None:
    out = batch_input.parent / "out.jsonl"
    unknown = CliRunner().invoke(app, ["batch", str(batch_input), "-o", str(out), "--rubric", "nope"])
    assert unknown.exit_code == 1 and "error:" in unknown.stderr and "hint:" in unknown.stderr
    assert not out.exists() and fake_factory == []  # failed before loading a model
    missing = CliRunner().invoke(app, ["batch", str(batch_input.parent / "no.jsonl"), "-o", str(out)])
    assert missing.exit_code == 1 and "input file not found" in missing.stderr
    usage = CliRunner().invoke(app, ["batch", str(batch_input)])
    assert usage.exit_code == 2
    fit = CliRunner().invoke(app, ["batch", str(batch_input), "-o", str(out), "--image-fit", "stretch"])
    assert fit.exit_code == 2
    blocker = batch_input.parent / "a-file"
    blocker.write_text("x", encoding="utf-8")
    unwritable = CliRunner().invoke(app, ["batch", str(batch_input), "-o", str(blocker / "out.jsonl")])
    assert unwritable.exit_code == 1 and unwritable.stderr.startswith("error: cannot write the output")
    assert "hint:" in unwritable.stderr and fake_factory == []  # failed before loading a model


def _spawn(batch_input: Path, out: Path, gate: Path, gate_at: int | None) -> tuple[subprocess.Popen, Path]:
    driver = gate / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    env = dict(os.environ, GATE_DIR=str(gate), GATE_AT="" if gate_at is None else str(gate_at))
    stderr = gate / f"stderr-{gate_at}.txt"
    cmd = [
        sys.executable,
        str(driver),
        "batch",
        str(batch_input),
        "-o",
        str(out),
        "--rubric",
        "vqa-helpfulness",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=stderr.open("w"))
    return proc, stderr


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]


def test_batch_killed_mid_run_resumes_without_duplicates(batch_input: Path, work_dir: Path) -> None:
    gate = work_dir / "gate"
    gate.mkdir()
    out = work_dir / "out.jsonl"
    proc, _ = _spawn(batch_input, out, gate, gate_at=3)
    wait_for(lambda: (gate / "in-flight").exists() or proc.poll() is not None, "the 4th judgment to start")
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = _ids(out)  # every line complete; the row in flight is lost, nothing else
    assert written == ["r1", "r3", "r5"]  # rows sharing image a.png run first
    with out.open("ab") as fh:  # and a crash in the middle of a write on top of it
        fh.write(b'{"id": "r9", "line": 9, "status": "o')  # as edgejudge writes a row: id, line, status

    proc, stderr = _spawn(batch_input, out, gate, gate_at=None)
    assert proc.wait(timeout=60) == 0
    log = stderr.read_text(encoding="utf-8")
    assert "repaired" in log and "3 already done" in log
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 10  # no duplicate and no lost row
    assert set(read_results(out)) == {f"r{i}" for i in range(1, 9)} | {"bad", "line-10"}


def test_batch_sigint_finishes_row_in_flight_then_exits_130(batch_input: Path, work_dir: Path) -> None:
    gate = work_dir / "gate"
    gate.mkdir()
    out = work_dir / "out.jsonl"
    proc, stderr = _spawn(batch_input, out, gate, gate_at=2)
    wait_for(lambda: (gate / "in-flight").exists() or proc.poll() is not None, "the 3rd judgment to start")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping after the rows in flight" in stderr.read_text(), "the stop message")
    (gate / "release").touch()
    assert proc.wait(timeout=60) == 130
    log = stderr.read_text(encoding="utf-8")
    assert f"resume with: edgejudge batch {batch_input} --output {out}" in log
    assert _ids(out) == ["r1", "r3", "r5"]  # the row in flight was finished and written
    (gate / "release").unlink()
    (gate / "in-flight").unlink()

    proc, stderr = _spawn(batch_input, out, gate, gate_at=1)  # now a double Ctrl-C drops the row in flight
    wait_for(lambda: (gate / "in-flight").exists() or proc.poll() is not None, "the 2nd judgment to start")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping after the rows in flight" in stderr.read_text(), "the stop message")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "rows in flight were dropped" in stderr.read_text() and _ids(out) == ["r1", "r3", "r5", "r2"]

    proc, _ = _spawn(batch_input, out, gate, gate_at=None)
    assert proc.wait(timeout=60) == 0
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 10


def test_a_model_that_fails_to_load_leaves_no_output_file(
    batch_input: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgejudge.errors import ModelNotFoundError

    def no_model(options: object) -> Judge:
        raise ModelNotFoundError("model file not found: nope.gguf", hint="check the path")

    monkeypatch.setattr(common, "JUDGE_FACTORY", no_model)
    out = batch_input.parent / "new" / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(batch_input), "-o", str(out), "-r", "vqa-helpfulness"])
    assert result.exit_code == 1 and result.stderr.startswith("error: model file not found")
    assert not out.exists() and out.parent.is_dir()
