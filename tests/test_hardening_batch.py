"""Hardening of ``edgejudge batch`` (issue 8): no lost data, one writer, no hangs, one bad row never stops it.

Every test goes through the command line where a user meets the problem: ``CliRunner`` with the FakeEngine
``JUDGE_FACTORY`` (as tests/test_batch_cli.py), or a child process (the lock: two real processes; special
files: a hang must be a timeout, not a frozen test run).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _support import run_measured
from typer.testing import CliRunner

from edgejudge.batch import OutputLock, read_results, repair_output, run_batch
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.images import MAX_FILE_BYTES, synthetic_image
from edgejudge.judge import Judge

#: Runs the CLI with the FakeEngine in a child; GATE_AT=N blocks the N-th judgment until GATE_DIR/release.
DRIVER = """
import os, sys, time, pathlib
import edgejudge.cli._common as common
from edgejudge.cli import main
from edgejudge.engine.fake import FakeEngine
from edgejudge.judge import Judge

class GatedEngine(FakeEngine):
    def generate(self, parts, params, on_text=None):
        gate = os.environ.get("GATE_DIR")
        if gate and os.environ.get("GATE_AT") and len(self.history) == int(os.environ["GATE_AT"]):
            (pathlib.Path(gate) / "in-flight").touch()
            while not (pathlib.Path(gate) / "release").exists():
                time.sleep(0.01)
        return super().generate(parts, params, on_text)

common.JUDGE_FACTORY = lambda options: Judge(GatedEngine(), image_fit=options.image_fit)
main(sys.argv[1:])
"""

HOLDER = """
import pathlib, sys, time
from edgejudge.batch import OutputLock
lock = OutputLock(sys.argv[1]).acquire()
pathlib.Path(sys.argv[2]).touch()
time.sleep(600)
"""

ROW = {"image": "a.png", "instruction": "What is shown?", "response": "A house."}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def strict_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as strict JSON (valid UTF-8, no NaN/Infinity); fails the test otherwise."""

    def no_constant(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line.decode("utf-8"), parse_constant=no_constant) for line in data.split(b"\n")[:-1]]


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture()
def data(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    rows = [{"id": f"r{i}", **ROW, "response": f"answer {i}"} for i in range(1, 5)]
    (work_dir / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return work_dir


def batch(*args: str) -> Any:
    return CliRunner().invoke(app, ["batch", *args, "--rubric", "vqa-helpfulness"])


def driver(work_dir: Path) -> Path:
    path = work_dir / "driver.py"
    path.write_text(DRIVER, encoding="utf-8")
    return path


# -- 1. only an edgejudge batch log is repaired or appended to ---------------------------------------------

NOT_OURS = {
    "gold.json": json.dumps({"id": "set-1", "rows": [{"id": "a", "score": 4}]}).encode(),  # minified, no \n
    "gold-cut.json": b'{"id": "set-1", "rows": [{"id": "a", "score": 4',
    "scores.csv": b"id,score\na,4\nb,5",
    "scores-nl.csv": b"id,score\na,4\n",
    "photo.png": synthetic_image(16, seed=3).tobytes()[:200] + b"\x89PNG\r\n\x1a\n",
    "garbage.bin": b"\x00\x01\x02",
    "blank.txt": b"\n\n",
    "brace.txt": b"{",
    "other.jsonl": b'{"id": "a", "score": 4}\n{"id": "b", "score": 5}\n',
    "other-cut.jsonl": b'{"id": "a", "score": 4}\n{"id": "b", "sc',
    # complete JSON documents that begin the way a batch row does: somebody's file, never a row cut short
    "rowlike.json": json.dumps({"id": "set-1", "line": 1, "status": "ok", "rows": [1, 2]}).encode(),
    "rowlike-error.json": b'{"id": "x", "line": 7, "status": "error", "note": "kept"}',
}


@pytest.mark.parametrize("name", sorted(NOT_OURS))
def test_a_file_that_is_not_a_batch_log_is_refused_and_left_as_it_was(
    data: Path, fake_factory: list[FakeEngine], name: str
) -> None:
    out = data / name
    out.write_bytes(NOT_OURS[name])
    before = sha(out)
    result = batch(str(data / "in.jsonl"), "--output", str(out))
    assert result.exit_code == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ") and str(out) in first and "not an edgejudge batch log" in first
    assert sha(out) == before and fake_factory == []  # refused before a model was loaded
    if NOT_OURS[name].endswith(b"\n"):
        assert repair_output(out) == 0  # nothing to repair: left alone
    else:
        with pytest.raises(InputError, match="not an edgejudge batch log"):
            repair_output(out)
    with pytest.raises(InputError, match="not an edgejudge batch log"):
        run_batch(Judge(FakeEngine()), data / "in.jsonl", out, default_rubric="vqa-helpfulness")
    assert sha(out) == before and not OutputLock(data / name).path.exists()


def test_a_batch_log_with_a_foreign_last_line_is_not_cut(data: Path, fake_factory: list[FakeEngine]) -> None:
    out = data / "out.jsonl"
    assert batch(str(data / "in.jsonl"), "-o", str(out), "--limit", "2").exit_code == 0
    with out.open("ab") as fh:
        fh.write(b"my notes about this run")
    before = sha(out)
    result = batch(str(data / "in.jsonl"), "-o", str(out))
    assert result.exit_code == 1 and "not a batch row cut short" in result.stderr and sha(out) == before
    # a foreign complete line plus a cut row: nothing may be cut either
    cut_row = b'note\n{"id": "r3", "line": 3, "st'
    out.write_bytes(out.read_bytes().replace(b"my notes about this run", cut_row))
    before = sha(out)
    result = batch(str(data / "in.jsonl"), "-o", str(out))
    assert result.exit_code == 1 and "nothing was cut" in result.stderr and sha(out) == before


def test_a_batch_log_is_repaired_and_resumed(data: Path, fake_factory: list[FakeEngine]) -> None:
    out = data / "out.jsonl"
    assert batch(str(data / "in.jsonl"), "-o", str(out), "--limit", "2").exit_code == 0
    whole = out.read_bytes()
    out.write_bytes(whole[:-1])  # the last row complete but for its newline: it is kept, the newline added
    result = batch(str(data / "in.jsonl"), "-o", str(out))
    assert result.exit_code == 0 and "added the missing newline" in result.stderr
    assert "2 already done" in result.stderr and len(strict_lines(out)) == 4
    cut = out.read_bytes()
    out.write_bytes(cut + b'{"id": "r9", "line": 9, "status": "ok", "score": 4, "feed')  # a crash mid-write
    result = batch(str(data / "in.jsonl"), "-o", str(out))
    assert result.exit_code == 0 and "cut a truncated last line" in result.stderr
    assert out.read_bytes() == cut and "4 already done" in result.stderr


@pytest.mark.parametrize(
    ("tail", "cut"),
    [
        (b"\xc2", False),  # a cut UTF-8 character alone is not a row
        (b"x", False),
        (b'{"id": "r9", "status": "o', False),  # not the order edgejudge writes
        (b'{"id": "r9", "line": 9\t', False),  # a raw control character
        (b"{", True),
        (b'{"id": "caf\xc3', True),  # cut inside a character of the id
        (b'{"id": "r9", "line": 9, "status": "error", "score": nu', True),
    ],
)
def test_repair_cuts_only_a_row_cut_short(data: Path, tail: bytes, cut: bool) -> None:
    out = data / "out.jsonl"
    run_batch(Judge(FakeEngine()), data / "in.jsonl", out, default_rubric="vqa-helpfulness", limit=1)
    whole = out.read_bytes()
    out.write_bytes(whole + tail)
    if cut:
        assert repair_output(out) == len(tail) and out.read_bytes() == whole
    else:
        with pytest.raises(InputError, match="not a batch row cut short"):
            repair_output(out)
        assert out.read_bytes() == whole + tail


# -- 2. the output is never the input, whatever its name ---------------------------------------------------


@pytest.mark.parametrize("kind", ["hard link", "symlink", "other spelling"])
def test_the_input_under_another_name_is_refused(
    data: Path, fake_factory: list[FakeEngine], kind: str
) -> None:
    inp = data / "in.jsonl"
    inp.write_bytes(inp.read_bytes().rstrip(b"\n"))  # no final newline: the old repair step cut the input
    before = sha(inp)
    other = data / "other.jsonl"
    if kind == "hard link":
        os.link(inp, other)
    elif kind == "symlink":
        other.symlink_to(inp)
    else:
        (data / "sub").mkdir()
        other = data / "sub" / ".." / "in.jsonl"
    result = batch(str(inp), "--output", str(other))
    assert result.exit_code == 1 and "the output file is the input file" in result.stderr
    assert sha(inp) == before and fake_factory == []
    with pytest.raises(InputError, match="is the input file"):
        run_batch(Judge(FakeEngine()), inp, other, default_rubric="vqa-helpfulness")
    assert sha(inp) == before


# -- 3. one writer per output ------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_output_is_refused_and_a_stale_lock_never_blocks(
    data: Path, fake_factory: list[FakeEngine]
) -> None:
    out = data / "out.jsonl"
    ready = data / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready)])
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, "the lock holder")
        result = batch(str(data / "in.jsonl"), "--output", str(out))
        assert result.exit_code == 1 and fake_factory == []
        assert f"is already being written by another edgejudge (pid {holder.pid})" in result.stderr
        assert not out.exists()
        alias = data / "alias.jsonl"  # another name of the same output: the same lock
        alias.symlink_to(out.name)
        assert "already being written" in batch(str(data / "in.jsonl"), "-o", str(alias)).stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    lock_file = OutputLock(data / "out.jsonl").path
    assert lock_file.read_text().strip() == str(holder.pid)  # left behind by the killed run
    result = batch(str(data / "in.jsonl"), "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert len(strict_lines(out)) == 4 and not lock_file.exists()


def test_two_real_runs_on_one_output_judge_each_row_once(data: Path, work_dir: Path) -> None:
    gate = work_dir / "gate"
    gate.mkdir()
    out = data / "out.jsonl"
    argv = [sys.executable, str(driver(work_dir)), "batch", str(data / "in.jsonl"), "-o", str(out)]
    argv += ["--rubric", "vqa-helpfulness"]
    env = dict(os.environ, GATE_DIR=str(gate), GATE_AT="2")
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (gate / "in-flight").exists() or first.poll() is not None, "the 3rd judgment")
        written = out.read_bytes()
        assert written.count(b"\n") == 2
        second = run_measured([*argv], env={"GATE_DIR": ""}, timeout=60)
        assert second.returncode == 1
        assert f"already being written by another edgejudge (pid {first.pid})" in second.stderr
        assert out.read_bytes() == written  # the second run neither repaired nor appended
        hard = data / "hard.jsonl"  # a hard link: another name, caught by the lock on the file itself
        os.link(out, hard)
        third = run_measured([*argv[:5], str(hard), *argv[6:]], env={"GATE_DIR": ""}, timeout=60)
        assert third.returncode == 1 and "already being written by another edgejudge" in third.stderr
        (gate / "release").touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    ids = [row["id"] for row in strict_lines(out)]
    assert sorted(ids) == ["r1", "r2", "r3", "r4"]


# -- 10. special files: regular files only, size limits, never a hang --------------------------------------


def test_special_and_huge_images_are_error_rows_and_the_batch_goes_on(data: Path, work_dir: Path) -> None:
    os.mkfifo(data / "pipe.png")
    with (data / "huge.png").open("wb") as fh:  # sparse: over the limit on disk, nothing to read in memory
        fh.truncate(MAX_FILE_BYTES + 1)
    rows = [
        {"id": "pipe", **ROW, "image": "pipe.png"},
        {"id": "zero", **ROW, "image": "/dev/zero"},
        {"id": "huge", **ROW, "image": "huge.png"},
        {"id": "folder", **ROW, "image": "."},
        {"id": "good", **ROW},
    ]
    inp = data / "special.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = data / "out.jsonl"
    argv = [sys.executable, str(driver(work_dir)), "batch", str(inp), "-o", str(out), "-r", "vqa-helpfulness"]
    run = run_measured(argv, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.peak_rss_mb < 400  # the 512 MiB file was never read
    results = {row["id"]: row for row in strict_lines(out)}
    assert results["good"]["status"] == "ok"
    assert "named pipe" in results["pipe"]["error"] and "pipe.png" in results["pipe"]["error"]
    assert "device" in results["zero"]["error"]
    assert "too large" in results["huge"]["error"]
    assert "not a regular file" in results["folder"]["error"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "named pipe"),
        ("/dev/zero", "is a device"),
        ("/dev/null", "is a device"),
        ("folder", "is a folder"),
    ],
)
def test_an_input_that_is_not_a_regular_file_is_named_for_what_it_is(
    work_dir: Path, kind: str, message: str
) -> None:
    path = Path(kind)
    if kind == "fifo":
        path = work_dir / "in.jsonl"
        os.mkfifo(path)
    elif kind == "folder":
        path = work_dir / "empty"
        path.mkdir()
    out = work_dir / "out.jsonl"
    argv = [sys.executable, str(driver(work_dir)), "batch", str(path), "-o", str(out)]
    run = run_measured([*argv, "-r", "vqa-helpfulness"], timeout=60)
    assert run.returncode == 1 and run.stderr.startswith("error: input file ") and message in run.stderr
    assert "not found" not in run.stderr and not out.exists()


def test_rubric_paths_that_are_special_files_never_hang(data: Path, work_dir: Path) -> None:
    os.mkfifo(data / "pipe.toml")
    inp = data / "rubrics.jsonl"
    inp.write_text(json.dumps({"id": "p", **ROW, "rubric": str(data / "pipe.toml")}) + "\n", encoding="utf-8")
    out = data / "out.jsonl"
    base = [sys.executable, str(driver(work_dir)), "batch", str(inp), "-o", str(out)]
    for rubric in ("/dev/zero", str(data / "pipe.toml")):
        run = run_measured([*base, "--rubric", rubric], timeout=60)
        assert run.returncode == 1 and run.stderr.startswith("error: rubric") and not out.exists()
    run = run_measured(base, timeout=60)  # a row naming a FIFO rubric: an error row
    assert run.returncode == 0, run.stderr
    (row,) = strict_lines(out)
    assert row["status"] == "error" and "named pipe" in row["error"]


# -- 13 and 15. hostile lines are error rows (or warned rows); the output stays valid UTF-8 JSON -----------

HOSTILE = [
    "[" * 100_000 + "]" * 100_000,
    '{"id": "bigint", "image": "a.png", "instruction": "q", "response": "r", "orig_score": '
    + "9" * 5000
    + "}",
    json.dumps({"id": "user", **ROW, "image": "~nosuchuser-edgejudge/a.png"}),
    json.dumps({"id": "g", **ROW, "image": "~g/a.png"}),
    json.dumps({"id": "nul", **ROW, "image": "a\u0000.png"}),
    json.dumps({"id": "nan", **ROW, "orig_score": float("nan")}),
    '{"id": "surrogate", "image": "a.png", "instruction": "q\\ud800", "response": "r\\udfff"}',
    '{"id": "surrogate-key\\ud800", "image": "a.png", "instruction": "q", "response": "r"}',
]


def hostile_input(data: Path) -> Path:
    inp = data / "hostile.jsonl"
    lines = [line.encode() for line in HOSTILE] + [
        '{"id": "latin1", "image": "a.png", "instruction": "q", "response": "café"}'.encode("latin-1")
    ]
    lines.append(json.dumps({"id": "fine", **ROW}).encode())
    inp.write_bytes(b"\n".join(lines) + b"\n")
    return inp


def test_hostile_lines_become_rows_and_the_batch_goes_on(data: Path, fake_factory: list[FakeEngine]) -> None:
    out = data / "out.jsonl"
    result = CliRunner().invoke(
        app, ["batch", str(hostile_input(data)), "-o", str(out), "-r", "vqa-helpfulness", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = strict_lines(out)
    assert summary["total"] == summary["judged"] == len(rows) == len(HOSTILE) + 2
    by_id = {row["id"]: row for row in rows}
    assert "nested deeper" in by_id["line-1"]["error"] and by_id["line-1"]["status"] == "error"
    assert "integer" in by_id["line-2"]["error"]
    assert "unknown user" in by_id["user"]["error"] and "unknown user" in by_id["g"]["error"]
    assert "NUL" in by_id["nul"]["error"]
    assert by_id["nan"]["status"] == "ok" and "orig_score" not in by_id["nan"]
    assert any("NaN" in w for w in by_id["nan"]["warnings"])
    assert by_id["surrogate"]["status"] == "ok" and by_id["surrogate"]["instruction"] == "q\ufffd"
    assert any("surrogate" in w for w in by_id["surrogate"]["warnings"])
    assert "surrogate-key\ufffd" in by_id
    assert by_id["latin1"]["response"] == "caf\ufffd"
    assert any("not valid UTF-8" in w for w in by_id["latin1"]["warnings"])
    assert by_id["fine"]["warnings"] == [] and all(isinstance(row["warnings"], list) for row in rows)
    assert summary["warned"] == 4


def test_hostile_lines_in_the_output_break_neither_resume_nor_report(
    data: Path, fake_factory: list[FakeEngine]
) -> None:
    out = data / "out.jsonl"
    assert batch(str(data / "in.jsonl"), "-o", str(out), "--limit", "2").exit_code == 0
    with out.open("ab") as fh:  # hand edits and lines an old version could not have read back
        fh.write(b"\n".join(line.encode() for line in HOSTILE) + b"\n\xff\xfe not utf-8\n")
    assert set(read_results(out)) >= {"r1", "r2"}
    result = batch(str(data / "in.jsonl"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    log = " ".join(result.stderr.split())
    assert "2 already done" in log and f"{len(HOSTILE) + 1} line(s) of {out} are not batch rows" in log
    assert {"r1", "r2", "r3", "r4"} <= set(read_results(out))


def test_hostile_lines_in_the_output_do_not_break_report(data: Path, fake_factory: list[FakeEngine]) -> None:
    out = data / "out.jsonl"
    assert batch(str(data / "in.jsonl"), "-o", str(out), "--limit", "2").exit_code == 0
    with out.open("ab") as fh:  # what report reads: any object with a string id, ~user image paths too
        fh.write(b"\n".join(line.encode() for line in HOSTILE) + b"\n\xff\xfe not utf-8\n")
    report = CliRunner().invoke(app, ["report", str(out), "-o", str(data / "report.html")])
    assert report.exit_code == 0, report.stderr
    assert "surrogate-key" in (data / "report.html").read_text(encoding="utf-8")


# -- 17. ~ in output paths, empty inputs -------------------------------------------------------------------


def test_tilde_in_output_and_image_root_is_expanded(
    data: Path, fake_factory: list[FakeEngine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "imgs").mkdir(parents=True)
    (data / "a.png").rename(home / "imgs" / "a.png")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(data)
    result = batch("in.jsonl", "--output", "~/results/x.jsonl", "--image-root", "~/imgs")
    assert result.exit_code == 0, result.stderr
    assert not (data / "~").exists() and len(strict_lines(home / "results" / "x.jsonl")) == 4
    assert all(row["status"] == "ok" for row in strict_lines(home / "results" / "x.jsonl"))


@pytest.mark.parametrize("content", [b"", b"\n  \n\r\n"])
def test_an_input_without_rows_creates_no_output(
    work_dir: Path, fake_factory: list[FakeEngine], content: bytes
) -> None:
    inp = work_dir / "empty.jsonl"
    inp.write_bytes(content)
    out = work_dir / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(inp), "-o", str(out), "--json"])
    assert result.exit_code == 0 and f"no rows in {inp}" in result.stderr
    assert json.loads(result.stdout)["total"] == 0
    assert not out.exists() and not OutputLock(work_dir / "out.jsonl").path.exists() and fake_factory == []
    summary = run_batch(Judge(FakeEngine()), inp, out)  # the library makes no file either
    assert summary.total == 0 and not out.exists()


def test_the_lock_is_per_output_and_released(work_dir: Path) -> None:
    out = work_dir / "out.jsonl"
    with OutputLock(out) as lock:
        assert lock.held and OutputLock(work_dir / "out.jsonl").path.read_text().strip() == str(os.getpid())
        busy = f"already being written by another edgejudge \\(pid {os.getpid()}\\)"
        with pytest.raises(InputError, match=busy):
            OutputLock(work_dir / "." / "out.jsonl").acquire()
        with OutputLock(work_dir / "other.jsonl"):
            pass
    assert not OutputLock(work_dir / "out.jsonl").path.exists()


def test_the_library_writes_into_a_new_folder_and_leaves_no_lock(data: Path) -> None:
    out = data / "new" / "deeper" / "out.jsonl"
    summary = run_batch(Judge(FakeEngine()), data / "in.jsonl", out, default_rubric="vqa-helpfulness")
    assert summary.ok == 4 and len(strict_lines(out)) == 4 and list(out.parent.iterdir()) == [out]


def test_the_lock_never_takes_another_tools_lock_file(data: Path, fake_factory: list[FakeEngine]) -> None:
    """``uv.lock``, ``poetry.lock``…: an output named ``uv`` must not truncate or delete ``uv.lock``."""
    for name in ("uv", "poetry", "out.jsonl"):
        theirs = data / f"{name}.lock"
        theirs.write_bytes(b"important\n")
        with OutputLock(data / name) as lock:
            assert lock.path != theirs and theirs.read_bytes() == b"important\n"
        assert theirs.read_bytes() == b"important\n"
        result = batch(str(data / "in.jsonl"), "--output", str(data / name))
        assert result.exit_code == 0, result.stderr
        assert theirs.read_bytes() == b"important\n"
