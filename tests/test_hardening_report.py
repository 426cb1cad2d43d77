"""Issue 8, report: bounded thumbnails whatever ``image_size`` says, images embedded only from under the
image root, hostile row values rendered (or skipped and counted), the results path's kind named, ``~``
expanded, and a page script that survives any ``#filter`` text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _support import cli, run_measured
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.images import synthetic_image
from edgejudge.report import MAX_THUMBNAIL_FIT, render_report, write_report

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
THUMB = '<img class="thumb" src="data:image/jpeg;base64,'


def _row(row_id: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {"id": row_id, "status": "ok", "score": 4, "feedback": "Fine.", "line": 1}
    base.update(fields)
    return base


def _results(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- item 12: image_size ---------------------------------------------------------------------------------


def test_huge_image_size_is_clamped_in_bounded_memory(work_dir: Path) -> None:
    # before: 10**12 raised OverflowError; 30000 took 5.9 GB and then MemoryError
    synthetic_image(64).save(work_dir / "a.png")
    rows = [
        _row("big", image="a.png", image_size=30000, line=1),
        _row("huge", image="a.png", image_size=10**12, line=2),
        _row("neg", image="a.png", image_size=-5, line=3),
        _row("text", image="a.png", image_size="336", line=4),
        _row("bool", image="a.png", image_size=True, line=5),
    ]
    results = _results(work_dir / "out.jsonl", rows)
    baseline = run_measured(cli("--version"))
    done = run_measured(cli("report", str(results), "-o", str(work_dir / "r.html"), "--json"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.peak_rss_mb - baseline.peak_rss_mb < 300 and done.elapsed_s < 60
    summary = json.loads(done.stdout)
    assert summary["rows"] == 5 and summary["images_missing"] == 0
    page = (work_dir / "r.html").read_text(encoding="utf-8")
    assert page.count(THUMB) == 5
    assert MAX_THUMBNAIL_FIT <= 1024


# -- item 12: the image root ---------------------------------------------------------------------------


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """results/ holds out.jsonl and inside.png; elsewhere/ holds private.png; results/link.png → private."""
    results_dir, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results_dir.mkdir()
    elsewhere.mkdir()
    synthetic_image(48, seed=1).save(results_dir / "inside.png")
    synthetic_image(48, seed=2).save(elsewhere / "private.png")
    (results_dir / "link.png").symlink_to(elsewhere / "private.png")
    (results_dir / "ok-link.png").symlink_to(results_dir / "inside.png")
    rows = [
        _row("inside", image="inside.png", line=1),
        _row("absolute", image=str(elsewhere / "private.png"), line=2),
        _row("recorded", image="gone.png", image_path=str(elsewhere / "private.png"), line=3),
        _row("dotdot", image="../elsewhere/private.png", line=4),
        _row("symlink-out", image="link.png", line=5),
        _row("symlink-in", image="ok-link.png", line=6),
        _row("tilde", image="~/private.png", line=7),
    ]
    _results(results_dir / "out.jsonl", rows)
    return {"results": results_dir / "out.jsonl", "dir": results_dir, "elsewhere": elsewhere}


def _cards(page: str) -> dict[str, str]:
    pattern = r'<article class="card[^"]*" data-score="[^"]*" data-id="([^"]*)">(.*?)</article>'
    return dict(re.findall(pattern, page))


def test_only_images_under_the_root_are_embedded(
    layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(layout["elsewhere"]))
    html_path = layout["dir"] / "r.html"
    result = runner.invoke(app, ["report", str(layout["results"]), "-o", str(html_path), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images_outside_root"] == 5 and summary["images_missing"] == 5
    assert "5 images outside the image root were not embedded" in result.stderr
    assert "--embed-outside-root" in result.stderr
    cards = _cards(html_path.read_text(encoding="utf-8"))
    assert THUMB in cards["inside"] and THUMB in cards["symlink-in"]
    for name in ("absolute", "recorded", "dotdot", "symlink-out", "tilde"):
        assert THUMB not in cards[name] and "outside the image root" in cards[name], name

    everything = runner.invoke(
        app, ["report", str(layout["results"]), "-o", str(html_path), "--json", "--embed-outside-root"]
    )
    assert everything.exit_code == 0, everything.stderr
    assert json.loads(everything.stdout)["images_missing"] == 0
    assert html_path.read_text(encoding="utf-8").count(THUMB) == 7


def test_image_root_option_moves_the_root(layout: dict[str, Path]) -> None:
    page, summary = render_report(
        json.loads(line) for line in layout["results"].read_text().splitlines()
    )  # results_dir "." and no root: nothing is under the current folder
    assert summary.images_missing == 7
    _, summary = render_report(
        [_row("a", image="private.png")], image_root=layout["elsewhere"], results_dir=layout["dir"]
    )
    assert summary.images_missing == 0 and summary.images_outside_root == 0
    _, summary = render_report(
        [_row("a", image="inside.png")], image_root=layout["elsewhere"], results_dir=layout["dir"]
    )
    assert summary.images_outside_root == 1  # the results folder is not the root when --image-root is given


# -- item 12/13: hostile row values ----------------------------------------------------------------------


def test_rows_with_wrong_types_become_cards(work_dir: Path) -> None:
    synthetic_image(32).save(work_dir / "a.png")
    rows: list[object] = [
        _row("string-score", score="5", line=1),
        _row("list-feedback", feedback=["a", {"b": 1}], line=2),
        _row("surrogates", feedback="bad \ud800 text \udfff", instruction="\udc80", line=3),
        {"id": "missing-keys"},
        _row("weird-probs", score_probs={"1": "x", "2": float("inf"), "3": 1e308, "4": -1, "5": 0}, line=5),
        _row("nan-expected", expected_score=float("nan"), line=6),
        _row("status-list", status=["ok"], line=7),
        _row("bool-score", score=True, line=8),
        _row("huge-line", line=10**30, image="a.png", image_fit=["pad"]),
        _row("nested", feedback=[[[[[[["deep"]]]]]]], rubric={"x": [1, 2]}, model=12, line=9),
    ]
    results = work_dir / "out.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in rows)  # json escapes the surrogates as \ud800
    results.write_text(text + '[1, 2, 3]\n"just a string"\n', encoding="utf-8")
    summary = write_report(results, work_dir / "r.html")
    page = (work_dir / "r.html").read_text(encoding="utf-8")
    assert summary.rows == len(rows) and page.count('<article class="card') == len(rows)
    assert "\ufffd" in page and page.count("<script") == 1
    assert 'data-id="string-score"' in page and "&#x27;a&#x27;" in page  # the list shown as text
    assert summary.ok == 8 and summary.errors == 2  # status-list and missing-keys are not "ok"
    assert summary.mean_score == 4.0  # only the real integer scores count


def test_an_image_that_is_not_text_is_never_a_file_to_embed(work_dir: Path) -> None:
    """Review A10: ``"image": 12345`` (or a list) names no file, even when ``<root>/12345`` is an image;
    the old report ignored such values, and so does the typed row (a text image still embeds)."""
    for name in ("12345", "['a.png']", "7"):
        synthetic_image(32).save(work_dir / name, format="PNG")
    rows = [
        _row("number", image=12345, line=1),
        _row("list", image=["a.png"], line=2),
        _row("recorded", image_path=7, line=3),
        _row("text", image="12345", line=4),
    ]
    summary = write_report(_results(work_dir / "out.jsonl", rows), work_dir / "r.html")
    cards = _cards((work_dir / "r.html").read_text(encoding="utf-8"))
    assert [name for name in cards if THUMB in cards[name]] == ["text"]
    assert summary.rows == 4 and summary.images_missing == 3 and summary.images_outside_root == 0


def test_render_report_skips_and_counts_non_objects() -> None:
    page, summary = render_report([_row("a"), [1, 2], "text", None, 7, _row("b", line=2)])
    assert summary.rows == 2 and summary.skipped == 4
    assert page.count('<article class="card') == 2


# -- item 17 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("folder", "is a folder"), ("device", "is a device"), ("missing", "results file not found")],
)
def test_results_path_kind_is_named(work_dir: Path, kind: str, needle: str) -> None:
    targets = {"folder": work_dir / "empty", "device": Path("/dev/null"), "missing": work_dir / "no.jsonl"}
    target = targets[kind]
    if kind == "folder":
        target.mkdir()
    result = runner.invoke(app, ["report", str(target), "-o", str(work_dir / "r.html")])
    assert result.exit_code == 1 and needle in result.stderr and "hint:" in result.stderr
    assert "unexpected" not in result.stderr


def test_output_and_results_paths_expand_tilde(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = work_dir / "home"
    home.mkdir()
    synthetic_image(32).save(home / "a.png")
    _results(home / "out.jsonl", [_row("a", image="a.png")])
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work_dir)
    result = runner.invoke(app, ["report", "~/out.jsonl", "-o", "~/site/x.html", "--image-root", "~"])
    assert result.exit_code == 0, result.stderr
    assert (home / "site" / "x.html").is_file() and not (work_dir / "~").exists()
    assert THUMB in (home / "site" / "x.html").read_text(encoding="utf-8")
    bad = runner.invoke(app, ["report", "~no-such-user-edgejudge/out.jsonl", "-o", "x.html"])
    assert bad.exit_code == 1 and "unknown user" in bad.stderr


def test_report_refuses_a_hard_link_to_the_results(work_dir: Path) -> None:
    results = _results(work_dir / "out.jsonl", [_row("a")])
    os.link(results, work_dir / "alias.html")
    before = results.read_bytes()
    result = runner.invoke(app, ["report", str(results), "-o", str(work_dir / "alias.html")])
    assert result.exit_code == 1 and "overwrite the results file" in result.stderr
    assert results.read_bytes() == before


def _dom(url: str, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--dump-dom", url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_script_survives_any_filter_text(work_dir: Path) -> None:
    assert Path(CHROMIUM).exists(), "install chromium (apt-get install -y chromium): the report test needs it"
    results = _results(work_dir / "out.jsonl", [_row("a", line=1), _row("b", score=2, line=2)])
    html_path = work_dir / "r.html"
    write_report(results, html_path)
    url = html_path.resolve().as_uri()
    for fragment in ("#filter=%", "#filter=%E0%A4%A", "#filter=%zz,4", "#filter=<script>", "#filter=4%2C2"):
        dom = _dom(url + fragment, work_dir / "profile")
        body = re.search(r"<body[^>]*>", dom)
        assert body and "data-shown=" in body.group(0), fragment  # the script ran to the end
    assert 'data-shown="2"' in _dom(url + "#filter=%", work_dir / "profile")  # unknown filter: all shown
    assert 'data-shown="1"' in _dom(url + "#filter=%zz,4", work_dir / "profile")  # the valid part applies
