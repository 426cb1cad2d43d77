"""_fs.atomic_write: the one tmp-file-and-rename every artefact writer uses."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from edgejudge._fs import atomic_write


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


def test_mode_is_applied_exactly(work_dir: Path) -> None:
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
