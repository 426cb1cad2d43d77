"""Issue #9 rule 7: an image file is read once and decoded once per judgment (judge CLI, Judge, batch)."""

from __future__ import annotations

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
    """Every file read (``_fs.read_stamped``, under ``read_regular`` too) and every decode, by label."""
    seen: dict[str, list[str]] = {"read": [], "decoded": []}
    real_read, real_decode = _fs.read_stamped, decode._decode

    def read(path: Path, **kw: Any) -> Any:
        seen["read"].append(Path(path).name)
        return real_read(path, **kw)

    def decoded(data: bytes, label: str, max_pixels: int) -> Any:
        seen["decoded"].append(Path(label).name)
        return real_decode(data, label, max_pixels)

    monkeypatch.setattr(_fs, "read_stamped", read)
    monkeypatch.setattr(decode, "_decode", decoded)
    return seen


def test_the_judge_command_reads_and_decodes_the_image_once(
    fake: FakeEngine, work_dir: Path, counts: dict[str, list[str]]
) -> None:
    synthetic_image(64).save(work_dir / "cat.png")
    result = CliRunner().invoke(
        app, ["judge", str(work_dir / "cat.png"), "-i", "What?", "--response", "A cat.", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert counts == {"read": ["cat.png"], "decoded": ["cat.png"]}
    assert json.loads(result.stdout)["image"] == "cat.png"  # the verdict still names the file


def test_judge_evaluate_many_reads_and_decodes_once(work_dir: Path, counts: dict[str, list[str]]) -> None:
    synthetic_image(64).save(work_dir / "a.png")
    verdicts = Judge(FakeEngine()).evaluate_many(
        work_dir / "a.png", instruction="i", responses=["r1", "r2", "r3"], rubric="vqa-helpfulness"
    )
    assert len(verdicts) == 3
    assert counts == {"read": ["a.png"], "decoded": ["a.png"]}


def test_a_batch_group_reads_and_decodes_its_image_once(work_dir: Path, counts: dict[str, list[str]]) -> None:
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
