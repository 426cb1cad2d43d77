"""ResultRow: the typed batch output row (exact JSON round trip, tolerant reader) and rule 7 of issue #9 in
the batch (each image file hashed once per run, read and decoded once per group of rows)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgejudge import _fs, _jsonl
from edgejudge.batch import ResultRow, RowSample, read_result_rows, read_results, run_batch
from edgejudge.batch.result import ROW_KEYS, base_row, error_row, is_batch_row
from edgejudge.batch.rows import BatchRow
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i: int, image: str = "a.png", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "image": image,
        "instruction": "What is shown?",
        "response": f"answer {i}",
        "rubric": "vqa-helpfulness",
        **extra,
    }


@pytest.fixture()
def batch(work_dir: Path) -> Path:
    """An output with ok rows (a reference, a pass-through gold score, samples) and every kind of error."""
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(48, seed=2).save(work_dir / "b.png")
    (work_dir / "bad.png").write_bytes(b"not an image")
    inp = _write(
        work_dir / "in.jsonl",
        [
            _row(1, reference="A house.", orig_score=4),
            _row(2, orig_score={"nested": [1, 2.5, None]}),
            _row(3, image="b.png"),
            _row(4, image="bad.png"),
            _row(5, image="missing.png"),
            {"id": "r6", "image": "a.png"},
        ],
    )
    (work_dir / "in.jsonl").write_text(inp.read_text() + "{not json\n", encoding="utf-8")
    out = work_dir / "out.jsonl"
    run_batch(Judge(FakeEngine()), inp, out, samples=2, params=GenerationParams(temperature=0.7))
    return out


def test_every_written_row_round_trips_exactly(batch: Path) -> None:
    lines = batch.read_bytes().splitlines(keepends=True)
    assert len(lines) == 7
    statuses = set()
    for line in lines:
        data = json.loads(line)
        row = ResultRow.from_dict(data)
        statuses.add(row.status)
        assert list(row.to_dict()) == list(data)  # same keys in the same order
        assert row.to_dict() == data
        assert _jsonl.dumps_line(row.to_dict()) == line  # byte for byte what the batch wrote
        assert ResultRow.from_json(line.decode("utf-8")) == row
        assert ResultRow.from_dict(row.to_dict()) == row
        assert is_batch_row(row.to_dict())
        assert json.loads(row.to_json()) == data
    assert statuses == {"ok", "error"}


def test_ok_and_error_rows_are_typed(batch: Path) -> None:
    rows = read_result_rows(batch)
    assert set(rows) == set(read_results(batch))
    one = rows["r1"]
    assert one.ok and one.score in range(1, 6) and isinstance(one.expected_score, float)
    assert one.reference_given is True and rows["r3"].reference_given is False
    assert one.extra == (("orig_score", 4),) and rows["r2"].extra == (
        ("orig_score", {"nested": [1, 2.5, None]}),
    )
    assert len(one.samples) == 2 and all(isinstance(s, RowSample) for s in one.samples)
    assert one.score_probs is not None and set(one.score_probs) <= {"1", "2", "3", "4", "5"}
    assert one.settings["samples"] == 2 and one.elapsed_s is not None
    assert one.image_sha256 is not None and len(one.image_sha256) == 64
    for name in ("r4", "r5", "r6", "line-7"):
        bad = rows[name]
        assert not bad.ok and bad.error and bad.reference_given is None and bad.score is None
    assert rows["r5"].image_sha256 is None  # a missing file has no file hash


def test_the_image_hash_is_the_file_bytes_hash(batch: Path) -> None:
    import hashlib

    rows = read_result_rows(batch)
    assert rows["r1"].image_sha256 == hashlib.sha256((batch.parent / "a.png").read_bytes()).hexdigest()
    assert rows["r3"].image_sha256 == hashlib.sha256((batch.parent / "b.png").read_bytes()).hexdigest()


def test_an_older_row_without_warnings_is_read() -> None:
    old = {
        "id": "a", "line": 1, "status": "ok", "score": 4, "expected_score": 3.9, "score_probs": {"4": 0.9},
        "agreement": None, "feedback": "Fine.", "error": None, "hint": None, "key": "0" * 64,
        "image": "a.png", "image_path": "/x/a.png", "image_sha256": None, "image_size": 336,
        "instruction": "i", "response": "r", "reference": None, "rubric": "vqa-helpfulness", "criteria": "c",
        "model": "m", "image_fit": "crop", "settings": {"model": "m", "constrained": True},
        "parse_method": "strict", "raw_output": "Fine. [RESULT] 4",
        "samples": [{"score": 4, "expected_score": 3.9, "seed": 0, "forced_tail": False}], "timings": None,
        "reference_given": False, "elapsed_s": 0.5, "orig_score": 5,
    }  # fmt: skip
    row = ResultRow.from_dict(old)
    assert row.warnings == () and row.ok and row.score == 4 and row.extra == (("orig_score", 5),)
    assert row.settings == {"model": "m", "constrained": True}  # the settings object is kept as it was
    back = row.to_dict()
    assert back["warnings"] == [] and {k: v for k, v in back.items() if k != "warnings"} == old


def test_the_tolerant_reader_never_raises_on_hostile_values() -> None:
    row = ResultRow.from_dict(
        {
            "id": 7,
            "status": ["ok"],
            "score": "5",
            "expected_score": float("nan"),
            "score_probs": {"1": "x", "2": float("inf"), "3": 0.5, 4: 0.25},
            "feedback": ["a", {"b": 1}],
            "model": 12,
            "line": True,
            "image_size": 10**30,
            "samples": [1, {"score": "x", "seed": 3, "forced_tail": "no"}],
            "warnings": "not a list",
            "settings": [1],
            "mystery": {"kept": True},
        }
    )
    assert (row.id, row.status, row.score, row.expected_score) == ("7", "error", None, None)
    assert row.score_probs == {"3": 0.5, "4": 0.25}
    assert row.feedback == "['a', {'b': 1}]" and row.model == "12"  # other JSON types keep their text
    assert row.line is None and row.image_size == 10**30 and row.key == ""
    assert row.samples == (RowSample(None, None, 3, False),)
    assert row.warnings == () and row.settings == {}
    assert row.extra == (("mystery", {"kept": True}),)
    assert ResultRow.from_dict({}).id == ""
    with pytest.raises(InputError):
        ResultRow.from_json("[1, 2]")
    with pytest.raises(InputError):
        ResultRow.from_json("{not json")


def test_row_keys_are_what_base_row_writes() -> None:
    base = base_row(
        BatchRow(id="x", line=3, problem="p"), "a" * 64, Path("/"), {"model": "m", "image_fit": "crop"}, 336
    )
    data = error_row(base, "p", "fix it", 0.0).to_dict()
    assert ROW_KEYS <= data.keys() and set(data) - ROW_KEYS == {"warnings", "elapsed_s"}
    assert list(data)[:3] == ["id", "line", "status"]  # the start batch.log's cut-row rule relies on


def test_each_image_file_is_hashed_once_and_read_once_per_group(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(64, seed=2).save(work_dir / "b.png")
    inp = _write(work_dir / "in.jsonl", [_row(1), _row(2, image="b.png"), _row(3), _row(4)])
    hashed: list[str] = []
    read: list[str] = []
    real_hash, real_read = _fs.sha256_stamped, _fs.read_stamped

    def spy_hash(path: Path, **kw: Any) -> Any:
        hashed.append(Path(path).name)
        return real_hash(path, **kw)

    def spy_read(path: Path, **kw: Any) -> Any:
        read.append(Path(path).name)
        return real_read(path, **kw)

    from edgejudge.batch import judging as run_module

    monkeypatch.setattr(_fs, "RACY_NS", -(10**12))  # the files are fresh: trust their stamps anyway
    monkeypatch.setattr(_fs, "sha256_stamped", spy_hash)
    monkeypatch.setattr(_fs, "read_stamped", spy_read)
    monkeypatch.setattr(run_module, "_file_sha", lambda *a: pytest.fail("an image was hashed twice"))
    summary = run_batch(Judge(FakeEngine(max_parallel=4)), inp, work_dir / "out.jsonl")
    assert summary.ok == 4
    assert sorted(hashed) == ["a.png", "b.png"]  # once per file, not once per row
    assert sorted(read) == ["a.png", "b.png"]  # rows on a.png judged as one group: read and decoded once


@pytest.mark.parametrize("trusted", [False, True], ids=["fresh-file-hash-compared", "stamp-compared"])
def test_an_image_changed_after_hashing_is_an_error_row(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    from edgejudge.batch import run as run_module

    if trusted:
        monkeypatch.setattr(_fs, "RACY_NS", -(10**12))
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    inp = _write(work_dir / "in.jsonl", [_row(1)])
    real_schedule = run_module.schedule

    def change_then_schedule(todo: Any, root: Path) -> Any:
        before = (work_dir / "a.png").stat().st_size
        synthetic_image(80, seed=9).save(work_dir / "a.png")  # after the key pass hashed it
        assert (work_dir / "a.png").stat().st_size != before
        return real_schedule(todo, root)

    monkeypatch.setattr(run_module, "schedule", change_then_schedule)
    summary = run_batch(Judge(FakeEngine()), inp, work_dir / "out.jsonl")
    row = read_result_rows(work_dir / "out.jsonl")["r1"]
    assert summary.errors == 1 and "changed while the batch was running" in (row.error or "")
    monkeypatch.setattr(run_module, "schedule", real_schedule)
    again = run_batch(Judge(FakeEngine()), inp, work_dir / "out.jsonl")  # a rerun judges the new image
    assert again.ok == 1


def _rewrite_on_open(monkeypatch: pytest.MonkeyPatch, image: Path, at: int, new: bytes | None) -> list[str]:
    """Make the ``at``-th open of ``image`` (1: the key pass's hash, 2: the judging read) write the file in
    place right after the open, before a byte is read (``new`` None: the same bytes again, a bare write)."""
    opened: list[str] = []
    real_open = _fs.open_regular

    def open_then_write(path: Path, **kw: Any) -> Any:
        fd, info = real_open(path, **kw)
        if Path(path).name == image.name:
            opened.append(image.name)
            if len(opened) == at:
                data = image.read_bytes() if new is None else new
                with open(image, "r+b") as fh:  # the same inode: the open descriptor sees the write
                    fh.write(data)
                    fh.truncate()
        return fd, info

    monkeypatch.setattr(_fs, "open_regular", open_then_write)
    return opened


def test_an_image_rewritten_during_the_judging_read_is_an_error_row(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review A1: the stamp taken at the judging read's open does not cover a write landing during the
    read; the old code hashed the bytes it read. The read's stamp is checked again after the last byte."""
    import hashlib

    monkeypatch.setattr(_fs, "RACY_NS", -(10**12))  # an old file: the hash pass's stamp is trusted
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    hashed = hashlib.sha256((work_dir / "a.png").read_bytes()).hexdigest()
    synthetic_image(80, seed=9).save(work_dir / "b.png")
    opened = _rewrite_on_open(monkeypatch, work_dir / "a.png", 2, (work_dir / "b.png").read_bytes())
    summary = run_batch(Judge(FakeEngine()), _write(work_dir / "in.jsonl", [_row(1)]), work_dir / "out.jsonl")
    row = read_result_rows(work_dir / "out.jsonl")["r1"]
    assert opened == ["a.png", "a.png"]  # hashed, then read for judging (the write landed in that read)
    assert summary.errors == 1 and not row.ok
    assert row.error == f"image a.png changed while the batch was running (looked at {work_dir / 'a.png'})"
    assert row.hint == "run the batch again: the row is judged with the new image"
    assert row.image_sha256 == hashed  # the row names the bytes its key was made from


def test_an_image_rewritten_while_hashed_is_judged_by_its_hash(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write landing during the key pass's hash leaves no trusted stamp: the judging read hashes what it
    read and, finding the bytes the key was made from, judges them (as the old code did)."""
    import hashlib

    monkeypatch.setattr(_fs, "RACY_NS", -(10**12))
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(80, seed=9).save(work_dir / "b.png")
    new = (work_dir / "b.png").read_bytes()
    opened = _rewrite_on_open(monkeypatch, work_dir / "a.png", 1, new)
    summary = run_batch(Judge(FakeEngine()), _write(work_dir / "in.jsonl", [_row(1)]), work_dir / "out.jsonl")
    row = read_result_rows(work_dir / "out.jsonl")["r1"]
    assert opened == ["a.png", "a.png"] and summary.ok == 1 and row.ok, row.error
    assert row.image_sha256 == hashlib.sha256(new).hexdigest()


def test_an_image_touched_after_hashing_but_not_changed_is_judged(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new stamp with the same bytes (``touch`` between the key pass and the judging read, or a bare
    rewrite during the read) is compared by hash and judged, as the old code (which always compared
    hashes) did; only other bytes make the error row."""
    from edgejudge.batch import run as run_module

    monkeypatch.setattr(_fs, "RACY_NS", -(10**12))
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    synthetic_image(64, seed=2).save(work_dir / "b.png")
    real_schedule = run_module.schedule

    def touch_then_schedule(todo: Any, root: Path) -> Any:
        before = os.stat(work_dir / "a.png").st_ctime_ns
        while os.stat(work_dir / "a.png").st_ctime_ns == before:  # a new ctime, the same bytes
            os.utime(work_dir / "a.png")
        return real_schedule(todo, root)

    monkeypatch.setattr(run_module, "schedule", touch_then_schedule)
    opened = _rewrite_on_open(monkeypatch, work_dir / "b.png", 2, None)
    inp = _write(work_dir / "in.jsonl", [_row(1), _row(2, image="b.png")])
    summary = run_batch(Judge(FakeEngine()), inp, work_dir / "out.jsonl")
    assert opened == ["b.png", "b.png"] and summary.ok == 2


def test_read_stamped_gives_no_stamp_when_the_file_changes_while_read(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = work_dir / "f.bin"
    target.write_bytes(b"old bytes")
    data, stamp = _fs.read_stamped(target, max_bytes=None)
    assert data == b"old bytes" and stamp == _fs.FileStamp.of(target.stat())
    _rewrite_on_open(monkeypatch, target, 1, b"new bytes!")
    assert _fs.read_stamped(target, max_bytes=None) == (b"new bytes!", None)
    _rewrite_on_open(monkeypatch, target, 1, b"newer bytes")
    assert _fs.sha256_stamped(target, max_bytes=None)[1] is None


def test_to_json_is_the_output_line_the_batch_writes() -> None:
    """Review D: ``to_json`` is ``_jsonl.dumps_line`` of ``to_dict`` (one JSON writer, surrogates too)."""
    settings = {"model": "m", "image_fit": "crop"}
    base = base_row(BatchRow(id="x", line=1, problem="p"), "a" * 64, Path("/"), settings, 336)
    plain, lone = error_row(base, "p", "fix it", 0.0), error_row(base, "bad \ud800 text", None, 0.0)
    for row in (plain, lone):
        assert (row.to_json() + "\n").encode("utf-8") == _jsonl.dumps_line(row.to_dict())
    assert "\\ud800" in lone.to_json() and ResultRow.from_json(plain.to_json()) == plain
    assert ResultRow.from_json(lone.to_json()).error == "bad \ufffd text"  # read back as every line is


def test_a_path_field_that_is_not_text_names_no_file() -> None:
    """Review A10: ``image``/``image_path`` holding a number or a list are None (the old report ignored
    them), while other text fields keep their text."""
    row = ResultRow.from_dict({"id": "a", "image": 12345, "image_path": ["/etc/passwd"], "model": 12})
    assert row.image is None and row.image_path is None and row.model == "12"
    assert ResultRow.from_dict({"image": "a.png", "image_path": "/x/a.png"}).image_path == "/x/a.png"
