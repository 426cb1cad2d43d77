"""``edgejudge metrics``: join by id, count failed/unmatched rows, statistics equal to scipy's (with ties)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats
from typer.testing import CliRunner

from edgejudge.cli import app

runner = CliRunner()

GOLD = {"a": 5, "b": 4, "c": 4, "d": 2, "e": 1, "f": 3, "g": 3, "h": 5, "i": 2, "j": 4}
PRED = {"a": 5, "b": 4, "c": 3, "d": 2, "e": 2, "f": 3, "g": 4, "h": 4, "i": 1, "j": 4}


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture()
def files(work_dir: Path) -> tuple[Path, Path]:
    pred_rows: list[object] = [
        {"id": k, "status": "ok", "score": 1 if k == "c" else v} for k, v in PRED.items()
    ]
    pred_rows += [
        {"id": "x", "status": "error", "score": None, "error": "bad image"},  # failed, also unmatched in gold
        {"id": "k", "status": "error", "score": None},  # failed, matched
        {"id": "only-pred", "status": "ok", "score": 3},  # unmatched
        {"id": "c", "status": "ok", "score": 3},  # a later row for the same id wins (resume)
    ]
    gold_rows: list[object] = [{"id": k, "orig_score": v} for k, v in GOLD.items()]
    gold_rows += [{"id": "k", "orig_score": 2}, {"id": "only-gold", "orig_score": 1}, "{broken"]
    return _write(work_dir / "pred.jsonl", pred_rows), _write(work_dir / "gold.jsonl", gold_rows)


def test_metrics_json_matches_scipy(files: tuple[Path, Path]) -> None:
    pred, gold = files
    result = runner.invoke(
        app, ["metrics", str(pred), str(gold), "--gold-field", "orig_score", "--json", "--bootstrap", "200"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    keys = sorted(GOLD)
    x = [PRED[k] for k in keys]
    y = [GOLD[k] for k in keys]
    assert data["n"] == 10
    assert data["pearson"]["value"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert data["spearman"]["value"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert data["kendall"]["value"] == pytest.approx(stats.kendalltau(x, y, variant="b")[0])
    for name in ("pearson", "spearman", "kendall"):
        assert data[name]["ci_low"] <= data[name]["value"] <= data[name]["ci_high"]
    assert data["exact_agreement"] == pytest.approx(5 / 10)
    assert data["within_one"] == pytest.approx(1.0)
    assert data["failed_pred"] == 2 and data["unmatched_pred"] == 2 and data["unmatched_gold"] == 1
    assert data["malformed_lines"] == 1
    assert sum(map(sum, data["confusion"])) == 10
    assert data["confusion"][4][4] == 1  # gold 5, predicted 5 (row gold, column predicted)
    assert "gold.jsonl:" in result.stderr  # the malformed line is reported with its number


def test_metrics_human_tables_on_stderr(files: tuple[Path, Path]) -> None:
    pred, gold = files
    result = runner.invoke(
        app, ["metrics", str(pred), str(gold), "--gold-field", "orig_score", "--bootstrap", "50"]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    for needle in ("Pearson", "Spearman", "Kendall", "95% CI", "confusion", "histograms", "10 pairs"):
        assert needle in result.stderr


def test_metrics_pred_field_expected_score(work_dir: Path) -> None:
    pred = _write(work_dir / "p.jsonl", [{"id": i, "expected_score": 1 + i * 0.37} for i in range(8)])
    gold = _write(work_dir / "g.jsonl", [{"id": i, "human": [1, 2, 2, 3, 3, 4, 5, 5][i]} for i in range(8)])
    result = runner.invoke(
        app,
        [
            "metrics",
            str(pred),
            str(gold),
            "--gold-field",
            "human",
            "--pred-field",
            "expected_score",
            "--json",
            "--bootstrap",
            "0",
        ],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    x = [1 + i * 0.37 for i in range(8)]
    y = [1, 2, 2, 3, 3, 4, 5, 5]
    assert data["pearson"]["value"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert data["kendall"]["value"] == pytest.approx(stats.kendalltau(x, y)[0])


def test_metrics_nothing_matched_is_an_error(work_dir: Path) -> None:
    pred = _write(work_dir / "p.jsonl", [{"id": "a", "score": 3}])
    gold = _write(work_dir / "g.jsonl", [{"qid": "a", "orig_score": 3}])
    result = runner.invoke(app, ["metrics", str(pred), str(gold), "--gold-field", "orig_score"])
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error: no scored rows matched")
        and "hint: check --id-field" in result.stderr
    )
    result = runner.invoke(app, ["metrics", str(pred), str(gold)])
    assert result.exit_code == 2  # --gold-field is required


def test_metrics_unreadable_files_are_one_error_line(work_dir: Path) -> None:
    # issue 8, item 13 changed this: a non-UTF-8 line is a reported malformed line (the command goes on),
    # and the file is read with _fs.read_regular (folders, FIFOs and devices refused with its message)
    gold = _write(work_dir / "g.jsonl", [{"id": "a", "orig_score": 3}])
    latin = work_dir / "latin1.jsonl"
    latin.write_bytes(b'{"id": "a", "score": 3, "note": "caf\xe9"}\n')
    result = runner.invoke(app, ["metrics", str(latin), str(gold), "--gold-field", "orig_score"])
    assert result.exit_code == 1, result.output
    assert "warning: latin1.jsonl:1: not valid UTF-8" in result.stderr
    assert "error: no scored rows matched" in result.stderr
    result = runner.invoke(app, ["metrics", str(work_dir), str(gold), "--gold-field", "orig_score"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: file is a folder") and str(work_dir) in result.stderr


def test_metrics_duplicate_ids_preds_last_gold_first(work_dir: Path) -> None:
    # a resumed batch output holds a failed row and its retried row; the gold file repeats an id by mistake
    pred = _write(
        work_dir / "p.jsonl",
        [
            {"id": "a", "status": "error"},
            {"id": "a", "score": 5},
            {"id": "b", "score": 2},
            {"id": "c", "score": 3},
        ],
    )
    gold = _write(
        work_dir / "g.jsonl",
        [
            {"id": "a", "orig_score": 5},
            {"id": "b", "orig_score": 2},
            {"id": "b", "orig_score": 1},
            {"id": "c", "orig_score": 3},
        ],
    )
    result = runner.invoke(app, ["metrics", str(pred), str(gold), "--gold-field", "orig_score", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 3 and data["failed_pred"] == 0 and data["exact_agreement"] == 1.0
    assert data["malformed_lines"] == 1
    assert "g.jsonl:3: duplicate id 'b' ignored" in result.stderr


@pytest.mark.parametrize("which", ["pred", "gold"])
def test_metrics_reads_dash_as_stdin(files: tuple[Path, Path], which: str) -> None:
    pred, gold = files
    args = ["--gold-field", "orig_score", "--json", "--bootstrap", "50"]
    from_files = runner.invoke(app, ["metrics", str(pred), str(gold), *args])
    assert from_files.exit_code == 0, from_files.stderr
    piped = pred if which == "pred" else gold
    paths = ["-", str(gold)] if which == "pred" else [str(pred), "-"]
    from_stdin = runner.invoke(app, ["metrics", *paths, *args], input=piped.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout) == json.loads(from_files.stdout)
    if which == "gold":  # its broken line is reported under the name "-"
        assert "warning: -:" in from_stdin.stderr
