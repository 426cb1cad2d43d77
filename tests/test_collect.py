"""``edgejudge collect``: a folder of images and caption files → a batch input the batch reads as written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.batch.rows import read_input_rows, resolve_image
from edgejudge.cli import app
from edgejudge.collect import MAX_CAPTION_BYTES, NO_CAPTION
from edgejudge.images import synthetic_image

runner = CliRunner()


def _folder(root: Path) -> Path:
    images = root / "listings"
    (images / "sub").mkdir(parents=True)
    (images / ".hidden").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.webp", ".hidden/x.png", ".dot.png"):
        fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
        synthetic_image(64, seed=len(name)).save(images / name, fmt)
    (images / "a.txt").write_text("  Road bike, 54 cm, barely used.\n", encoding="utf-8")
    (images / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    (images / "notes.md").write_text("not an image", encoding="utf-8")
    return images


def test_collect_writes_rows_batch_can_read(work_dir: Path) -> None:
    images = _folder(work_dir)
    out_dir = work_dir / "inputs"
    out_dir.mkdir()
    output = out_dir / "in.jsonl"
    result = runner.invoke(
        app, ["collect", str(images), "--output", str(output), "--instruction", "A listing"]
    )
    assert result.exit_code == 0, result.output
    assert "3 image(s), 1 with a caption file" in result.stderr
    assert "1 caption file(s) could not be read" in result.stderr
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a.jpg", "b.png", "sub/c.webp"]  # sorted, hidden skipped, .md skipped
    assert rows[0]["response"] == "Road bike, 54 cm, barely used." and rows[0]["instruction"] == "A listing"
    assert "response" not in rows[1]  # unreadable caption: the batch reports that row
    assert rows[2]["response"] == NO_CAPTION
    # the batch resolves the images from the input file's folder, as collect wrote them
    batch_rows = read_input_rows(output)
    for row in batch_rows:
        assert row.image is not None and resolve_image(row.image, out_dir).resolve().is_file()
    assert batch_rows[1].problem is not None and "response" in batch_rows[1].problem


def test_collect_refuses_existing_output_and_bad_folder(work_dir: Path) -> None:
    images = _folder(work_dir)
    output = work_dir / "in.jsonl"
    output.write_text("keep me\n", encoding="utf-8")
    refused = runner.invoke(app, ["collect", str(images), "-o", str(output)])
    assert refused.exit_code == 1 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert output.read_text(encoding="utf-8") == "keep me\n"
    assert runner.invoke(app, ["collect", str(images), "-o", str(output), "--force"]).exit_code == 0
    assert output.read_text(encoding="utf-8").count("\n") == 3
    missing = runner.invoke(app, ["collect", str(work_dir / "nope"), "-o", str(work_dir / "x.jsonl")])
    assert missing.exit_code == 1 and "not a folder" in missing.stderr
    empty = work_dir / "empty"
    empty.mkdir()
    none = runner.invoke(app, ["collect", str(empty), "-o", str(work_dir / "y.jsonl")])
    assert none.exit_code == 1 and "no images" in none.stderr
    assert not (work_dir / "y.jsonl").exists()


def test_collect_never_hangs_on_a_fifo_caption_or_reads_a_huge_one(work_dir: Path) -> None:
    images = work_dir / "imgs"
    images.mkdir()
    for name in ("fifo.png", "big.png"):
        synthetic_image(32, seed=1).save(images / name, "PNG")
    os.mkfifo(images / "fifo.txt")
    (images / "big.txt").write_bytes(b"a" * (MAX_CAPTION_BYTES + 1))
    output = work_dir / "in.jsonl"
    result = runner.invoke(app, ["collect", str(images), "-o", str(output)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert all("response" not in r for r in rows) and "2 caption file(s)" in result.stderr
