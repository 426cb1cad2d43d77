"""_fs.atomic_write: the one tmp-file-and-rename every artefact writer uses, and the modes it gives."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from edgejudge import _fs
from edgejudge._fs import atomic_write


@pytest.fixture()
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(params=[0o077, 0o022], ids=["umask-077", "umask-022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_and_replaces_an_existing_file(work_dir: Path) -> None:
    target = work_dir / "out.json"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert _names(work_dir) == ["out.json"]  # no temp file left behind


def test_a_writer_function_gets_a_binary_handle(work_dir: Path) -> None:
    target = work_dir / "page.html"

    def write(handle: BinaryIO) -> None:
        handle.write(b"<p>")
        handle.write("é".encode())

    atomic_write(target, write)
    assert target.read_bytes() == b"<p>\xc3\xa9"


def test_mode_is_applied_exactly(work_dir: Path, umask_022: None) -> None:
    atomic_write(work_dir / "a", b"x")
    assert stat.S_IMODE((work_dir / "a").stat().st_mode) == 0o644  # not mkstemp's 0o600
    atomic_write(work_dir / "b", b"x", mode=0o600)
    assert stat.S_IMODE((work_dir / "b").stat().st_mode) == 0o600


def test_a_failing_writer_leaves_the_old_file_and_no_temp(work_dir: Path) -> None:
    target = work_dir / "registry.json"
    target.write_bytes(b"old")

    def boom(handle: BinaryIO) -> None:
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert _names(work_dir) == ["registry.json"]


def test_a_failing_rename_leaves_no_temp(work_dir: Path) -> None:
    (work_dir / "taken").mkdir()
    (work_dir / "taken" / "inside").write_bytes(b"")  # a non-empty folder: os.replace fails
    with pytest.raises(OSError):
        atomic_write(work_dir / "taken", b"data")
    assert _names(work_dir) == ["taken"]


def test_a_missing_folder_is_an_oserror_and_writes_nothing(work_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(work_dir / "nope" / "file", b"data")
    assert _names(work_dir) == []


def test_the_temp_file_is_hidden_in_the_same_folder(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(work_dir / "x.txt", b"1")
    atomic_write(work_dir / "x.txt", b"2")
    assert len(seen) == 2 and seen[0] != seen[1]  # a unique name each time
    for src in seen:
        assert Path(src).parent == work_dir
        assert Path(src).name.startswith(".x.txt.") and src.endswith(".tmp")


def test_concurrent_writers_never_expose_a_partial_file(work_dir: Path) -> None:
    target = work_dir / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(4)]
    atomic_write(target, payloads[0])
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(10):
                atomic_write(target, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert target.read_bytes() in payloads
    for t in threads:
        t.join()
    assert not errors
    assert target.read_bytes() in payloads
    assert _names(work_dir) == ["shared.bin"]


def test_the_default_mode_follows_the_umask(work_dir: Path, umask: int) -> None:
    """Review A4: like ``open(path, "w")`` (the probe cache and the demo picture were written so before)."""
    (work_dir / "old").write_bytes(b"")
    os.chmod(work_dir / "old", 0o600)
    for name in ("new", "old"):  # a new file, and one replacing a file of another mode
        atomic_write(work_dir / name, b"x")
        assert _mode(work_dir / name) == 0o666 & ~umask
    atomic_write(work_dir / "shared", b"x", mode=0o644)  # a mode given is applied whatever the umask
    assert _mode(work_dir / "shared") == 0o644


def test_the_umask_is_read_without_changing_it(umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    changed: list[int] = []
    real_umask = os.umask

    def spy(mask: int) -> int:
        changed.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(os, "umask", spy)
    assert _fs.current_umask() == umask
    if os.path.exists("/proc/self/status"):
        assert changed == []  # Linux: read, never set (no window where another thread sees 0o077)

    def no_proc(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no /proc")

    monkeypatch.setattr(_fs, "open", no_proc, raising=False)
    assert _fs.current_umask() == umask and real_umask(umask) == umask  # the fallback sets it back


def test_private_artefacts_stay_0600_and_the_report_0644(
    work_dir: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review A4: registry.json, saved rubrics and wizard-saved verdicts were written with mkstemp (0o600)
    before, the report chmod-ed to 0o644; both whatever the umask."""
    import json

    from rich.console import Console

    from edgejudge.batch import run_batch
    from edgejudge.cli._common import GenerationOptions
    from edgejudge.cli.tui import Wizard
    from edgejudge.engine.fake import FakeEngine
    from edgejudge.images import synthetic_image
    from edgejudge.judge import Judge
    from edgejudge.registry import update_registry
    from edgejudge.report import write_report
    from edgejudge.rubric import load_rubric, save_rubric

    save_rubric(load_rubric("vqa-helpfulness"), work_dir / "mine.toml")
    save_rubric(load_rubric("vqa-helpfulness"), work_dir / "mine.json")
    monkeypatch.setenv("EDGEJUDGE_MODELS_DIR", str(work_dir / "models"))
    update_registry(lambda registry: registry)
    judge = Judge(FakeEngine())
    synthetic_image(32).save(work_dir / "a.png")
    wizard = Wizard(Console(record=True, force_terminal=False), lambda options: judge, GenerationOptions())
    wizard.verdict = judge.evaluate(
        work_dir / "a.png", instruction="Q", response="R", rubric="vqa-helpfulness"
    )
    wizard.ask = lambda label, **kwargs: str(work_dir / "verdict.json")  # type: ignore[method-assign]
    wizard.save()
    row = {"id": "r1", "image": "a.png", "instruction": "Q", "response": "R", "rubric": "vqa-helpfulness"}
    (work_dir / "in.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    run_batch(judge, work_dir / "in.jsonl", work_dir / "out.jsonl")
    write_report(work_dir / "out.jsonl", work_dir / "report.html")
    private = ["mine.toml", "mine.json", "models/registry.json", "verdict.json"]
    assert {name: _mode(work_dir / name) for name in private} == dict.fromkeys(private, 0o600)
    assert _mode(work_dir / "report.html") == 0o644
