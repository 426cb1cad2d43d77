"""``edgejudge merge`` from the command line (fake engine: plumbing): the conflict listing on stderr and in
``--json``, ``--strict``, ``--force``, and the merged log read by ``report``, ``metrics`` and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgejudge.batch import read_results
from edgejudge.cli import app
from edgejudge.cli.merge import SHOWN_CONFLICTS
from edgejudge.engine.fake import FakeEngine
from edgejudge.images import synthetic_image

ROWS = 9


@pytest.fixture()
def bench(work_dir: Path) -> Path:
    synthetic_image(64, seed=1).save(work_dir / "a.png")
    rows = [
        {
            "id": f"r{i}",
            "image": "a.png",
            "instruction": "What?",
            "response": f"ans {i}",
            "orig_score": 1 + i % 5,
        }
        for i in range(ROWS)
    ]
    path = work_dir / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def batch(bench: Path, out: Path, *extra: str) -> None:
    code, _, err = invoke(
        "batch", str(bench), "-o", str(out), "-r", "vqa-helpfulness", "--temperature", "0", *extra
    )
    assert code == 0, err


def test_merge_writes_a_log_that_report_metrics_and_resume_read(
    bench: Path, fake_factory: list[FakeEngine]
) -> None:
    outs = [bench.parent / f"out-{k}.jsonl" for k in (1, 2)]
    for k, out in enumerate(outs, start=1):
        batch(bench, out, "--shard", f"{k}/2")
    with outs[1].open("a", encoding="utf-8") as fh:
        fh.write('{"id": "r1", "line": 2, "sta')  # a killed run's last line
    merged = bench.parent / "all.jsonl"
    code, out, err = invoke("merge", *map(str, outs), "--output", str(merged), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["rows"], summary["ok"], summary["conflicts"], summary["malformed"]) == (ROWS, ROWS, 0, 1)
    assert [i["malformed"] for i in summary["inputs"]] == [0, 1]
    assert f"wrote {merged}: {ROWS} result rows" in " ".join(err.split())
    assert len(read_results(merged)) == ROWS
    # report and metrics read it
    code, _, err = invoke("report", str(merged), "--output", str(bench.parent / "report.html"))
    assert code == 0, err
    code, out, err = invoke("metrics", str(merged), str(bench), "--gold-field", "orig_score", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == ROWS
    # resume: the unsharded command on the merged log judges nothing new
    engines = len(fake_factory)
    args = ("batch", str(bench), "-o", str(merged), "-r", "vqa-helpfulness", "--temperature", "0", "--json")
    code, out, err = invoke(*args)
    assert code == 0, err
    assert (json.loads(out)["judged"], json.loads(out)["skipped"]) == (0, ROWS)
    assert not fake_factory[engines].history


def test_conflicts_are_listed_and_strict_refuses_them(bench: Path, fake_factory: list[FakeEngine]) -> None:
    first, second = bench.parent / "first.jsonl", bench.parent / "second.jsonl"
    batch(bench, first)
    batch(bench, second, "--max-tokens", "300")  # other settings: every row's key differs
    merged = bench.parent / "all.jsonl"
    code, out, err = invoke("merge", str(first), str(second), "-o", str(merged), "--strict", "--json")
    assert code == 1 and out == ""
    flat = " ".join(err.split())
    assert f"{ROWS} conflict(s)" in flat and "nothing was written" in flat
    assert flat.count("judged from other inputs or settings") == SHOWN_CONFLICTS + 1  # listed, and the error
    assert f"and {ROWS - SHOWN_CONFLICTS} more" in flat
    assert not merged.exists()
    code, out, err = invoke("merge", str(first), str(second), "-o", str(merged), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["conflicts"] == ROWS == len(summary["conflict_list"])
    assert {c["kept"] for c in summary["conflict_list"]} == {str(second)}
    assert all(c["kinds"] == ["key"] for c in summary["conflict_list"])
    assert {r["key"] for r in read_results(merged).values()} == {
        r["key"] for r in read_results(second).values()
    }


def test_an_existing_output_needs_force_and_an_input_is_never_the_output(
    bench: Path, fake_factory: list[FakeEngine]
) -> None:
    out = bench.parent / "out.jsonl"
    batch(bench, out)
    target = bench.parent / "all.jsonl"
    target.write_text("mine\n", encoding="utf-8")
    code, _, err = invoke("merge", str(out), "-o", str(target))
    assert code == 1 and "already exists" in err and "--force" in err
    assert target.read_text(encoding="utf-8") == "mine\n"
    code, _, err = invoke("merge", str(out), "-o", str(target), "--force")
    assert code == 0, err
    assert len(read_results(target)) == ROWS
    code, _, err = invoke("merge", str(out), str(target), "-o", str(out), "--force")
    assert code == 1 and "one of the logs being merged" in err
    code, _, err = invoke("merge", str(out), str(bench), "-o", str(bench.parent / "x.jsonl"))
    assert code == 1 and "not an edgejudge batch log" in err
    assert not (bench.parent / "x.jsonl").exists()
