"""Issue #9 rule 7: an image file is read once and decoded once per judgment (judge CLI, Judge, batch).

Every open of a file is counted (``_fs.open_regular``, under every reader and the hash), not only the
reads that decode: a batch opens an image twice per group, once to hash it for the resume keys (before
it knows which rows to judge) and once to read it for judging, and hashes it once per run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgejudge import _fs
from edgejudge.batch import read_result_rows, run_batch
from edgejudge.cli import app
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import decode, synthetic_image
from edgejudge.judge import Judge


@pytest.fixture()
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every file read (``_fs.read_stamped``, under ``read_regular`` too) and every decode, by label; and
    under "hashed" every file hashed (``_fs.sha256_stamped``), a key that appears only once one is."""
    seen: dict[str, list[str]] = {"read": [], "decoded": []}
    real_read, real_decode, real_hash = _fs.read_stamped, decode._decode, _fs.sha256_stamped

    def read(path: Path, **kw: Any) -> Any:
        seen["read"].append(Path(path).name)
        return real_read(path, **kw)

    def hashed(path: Path, **kw: Any) -> Any:
        seen.setdefault("hashed", []).append(Path(path).name)
        return real_hash(path, **kw)

    def decoded(data: bytes, label: str, max_pixels: int) -> Any:
        seen["decoded"].append(Path(label).name)
        return real_decode(data, label, max_pixels)

    monkeypatch.setattr(_fs, "read_stamped", read)
    monkeypatch.setattr(_fs, "sha256_stamped", hashed)
    monkeypatch.setattr(decode, "_decode", decoded)
    return seen


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every open of a user file (``_fs.open_regular``: under every read and every hash), by name."""
    names: list[str] = []
    real_open = _fs.open_regular

    def open_(path: Path, **kw: Any) -> Any:
        names.append(Path(path).name)
        return real_open(path, **kw)

    monkeypatch.setattr(_fs, "open_regular", open_)
    return names


def test_the_judge_command_reads_and_decodes_the_image_once(
    fake: FakeEngine, work_dir: Path, counts: dict[str, list[str]], opened: list[str]
) -> None:
    synthetic_image(64).save(work_dir / "cat.png")
    result = CliRunner().invoke(
        app, ["judge", str(work_dir / "cat.png"), "-i", "What?", "--response", "A cat.", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert counts == {"read": ["cat.png"], "decoded": ["cat.png"]}
    assert opened == ["cat.png"]  # opened once: not hashed ("hashed" not in counts), read by nothing else
    assert json.loads(result.stdout)["image"] == "cat.png"  # the verdict still names the file


def test_judge_evaluate_many_reads_and_decodes_once(
    work_dir: Path, counts: dict[str, list[str]], opened: list[str]
) -> None:
    synthetic_image(64).save(work_dir / "a.png")
    verdicts = Judge(FakeEngine()).evaluate_many(
        work_dir / "a.png", instruction="i", responses=["r1", "r2", "r3"], rubric="vqa-helpfulness"
    )
    assert len(verdicts) == 3
    assert counts == {"read": ["a.png"], "decoded": ["a.png"]}
    assert opened == ["a.png"]


def test_a_batch_group_reads_and_decodes_its_image_once(
    work_dir: Path, counts: dict[str, list[str]], opened: list[str]
) -> None:
    synthetic_image(64).save(work_dir / "a.png")
    rows = [
        {
            "id": f"r{i}",
            "image": "a.png",
            "instruction": "i",
            "response": f"r{i}",
            "rubric": "vqa-helpfulness",
        }
        for i in range(3)
    ]
    inp = work_dir / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = run_batch(Judge(FakeEngine(max_parallel=4)), inp, work_dir / "out.jsonl")
    assert summary.ok == 3
    assert counts["read"].count("a.png") == 1 and counts["decoded"].count("a.png") == 1
    assert {r.image_sha256 for r in read_result_rows(work_dir / "out.jsonl").values()} != {None}
    assert counts["hashed"] == ["a.png"]  # hashed once for the three resume keys
    assert opened.count("a.png") == 2  # the hash, then the one read the group is judged from
    file_sha = hashlib.sha256((work_dir / "a.png").read_bytes()).hexdigest()
    assert [r.image_sha256 for r in read_result_rows(work_dir / "out.jsonl").values()] == [file_sha] * 3
