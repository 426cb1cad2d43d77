"""The HTML report: content, escaping, the image as judged, the CLI, and a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgejudge.batch import read_results, run_batch
from edgejudge.cli import app
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError
from edgejudge.images import prepare_image, synthetic_image, thumbnail_data_uri
from edgejudge.judge import Judge
from edgejudge.report import THUMBNAIL_SIDE, render_report, write_report

XSS_FEEDBACK = (
    'Looks fine <script>document.body.setAttribute("data-pwned", "1")</script> '
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', '2')\"> & more. [RESULT] 4"
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _wide_image(path: Path) -> Path:
    """200x100: left half red, right half blue (crop keeps the middle, pad keeps both ends)."""
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = (220, 30, 30)
    pixels[:, 100:] = (30, 30, 220)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def results(work_dir: Path) -> Path:
    synthetic_image(120, seed=4).save(work_dir / "house.png")
    _wide_image(work_dir / "wide.png")
    rows = [
        {"id": "ok-1", "image": "house.png", "instruction": "What is shown?", "response": "A house."},
        {
            "id": "xss",
            "image": "wide.png",
            "instruction": "Q </textarea> & <b>bold</b>?",
            "response": "<i>r</i>",
        },
        {"id": '"><script>alert(1)</script>', "image": "house.png", "instruction": "Q", "response": "R"},
        {"id": "missing", "image": "gone.png", "instruction": "Q", "response": "R"},
        {"id": "ok-2", "image": "wide.png", "instruction": "What colour?", "response": "Red and blue."},
    ]
    (work_dir / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    engine = FakeEngine()
    engine.enqueue("The house is drawn clearly. [RESULT] 5")
    engine.enqueue("The colours are right. [RESULT] 3")
    engine.enqueue(XSS_FEEDBACK)
    engine.enqueue("Short. [RESULT] 2")
    run_batch(
        Judge(engine),
        work_dir / "in.jsonl",
        work_dir / "out.jsonl",
        default_rubric="vqa-helpfulness",
        params=GenerationParams(temperature=0),
    )
    return work_dir / "out.jsonl"


def test_report_content_and_escaping(results: Path) -> None:
    page, summary = render_report(
        read_results(results).values(), title="Grades <3", results_dir=results.parent
    )
    assert (summary.rows, summary.ok, summary.errors, summary.images_missing) == (6, 4, 2, 2)
    assert page.count("<script") == 1 and page.count('<article class="card') == 6
    assert "data-pwned" not in page.replace("&quot;data-pwned&quot;", "").replace(
        "&#x27;data-pwned&#x27;", ""
    )
    assert "&lt;script&gt;document.body.setAttribute(&quot;data-pwned&quot;" in page
    assert "&lt;img src=x onerror=" in page and "<img src=x" not in page
    assert "Q &lt;/textarea&gt; &amp; &lt;b&gt;bold&lt;/b&gt;?" in page and "&lt;i&gt;r&lt;/i&gt;" in page
    assert 'data-id="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "<title>Grades &lt;3</title>" in page
    assert "Content-Security-Policy" in page and not re.search(r"""(src|href)=["']?https?:""", page)
    assert "line 6: malformed JSON" in page and "gone.png" in page  # error rows say why
    assert page.count('class="card c5"') == 1 and page.count('class="card cerror"') == 2
    assert "no reference answer" not in page and "(none given)" in page


def test_thumbnail_is_the_image_as_judged(results: Path, work_dir: Path) -> None:
    page, _ = render_report(read_results(results).values(), results_dir=results.parent)
    crop = thumbnail_data_uri(prepare_image(work_dir / "wide.png", 336, "crop").image, THUMBNAIL_SIDE)
    pad = thumbnail_data_uri(prepare_image(work_dir / "wide.png", 336, "pad").image, THUMBNAIL_SIDE)
    assert crop != pad and crop in page and pad not in page

    out_pad = work_dir / "out-pad.jsonl"
    run_batch(
        Judge(FakeEngine(), image_fit="pad"), work_dir / "in.jsonl", out_pad, default_rubric="vqa-helpfulness"
    )
    page_pad, _ = render_report(read_results(out_pad).values(), results_dir=work_dir)
    assert pad in page_pad and crop not in page_pad

    moved = work_dir / "moved"
    moved.mkdir()
    for name in ("house.png", "wide.png"):
        (work_dir / name).rename(moved / name)
    _, lost = render_report(read_results(results).values(), results_dir=work_dir)
    _, found = render_report(read_results(results).values(), results_dir=work_dir, image_root=moved)
    assert lost.images_missing == 6 and found.images_missing == 2


def test_report_cli_and_atomic_write(results: Path, work_dir: Path) -> None:
    html_path = work_dir / "site" / "report.html"
    result = CliRunner().invoke(
        app, ["report", str(results), "-o", str(html_path), "--title", "Week 3", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 6 and summary["output"] == str(html_path) and summary["bytes"] > 1000
    assert "6 rows" in result.stderr and "no thumbnail" in result.stderr
    assert "<title>Week 3</title>" in html_path.read_text(encoding="utf-8")
    assert [p.name for p in html_path.parent.iterdir()] == ["report.html"]  # no temp file left behind

    missing = CliRunner().invoke(app, ["report", str(work_dir / "nope.jsonl"), "-o", str(html_path)])
    assert missing.exit_code == 1 and "results file not found" in missing.stderr
    (work_dir / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="no batch results"):
        write_report(work_dir / "empty.jsonl", work_dir / "x.html")


def _chromium(url: str, profile: Path, *extra: str) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *extra,
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_in_headless_chromium(results: Path, work_dir: Path) -> None:
    assert Path(CHROMIUM).exists(), "install chromium (apt-get install -y chromium): the report test needs it"
    html_path = work_dir / "report.html"
    write_report(results, html_path)
    url = html_path.resolve().as_uri()
    profile = work_dir / "chromium-profile"

    dom = _chromium(url, profile, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom)
    assert body and 'data-shown="6"' in body.group(0) and "data-pwned" not in body.group(0)
    assert "6 of 6 rows shown" in dom and len(re.findall(r'<article class="card', dom)) == 6

    errors_only = _chromium(url + "#filter=error", profile, "--dump-dom")
    assert 'data-shown="2"' in errors_only and "2 of 6 rows shown" in errors_only
    hidden = re.findall(r'<article class="card ([^"]+)"[^>]*?( hidden="")?>', errors_only)
    assert sorted(cls for cls, h in hidden if not h) == ["cerror", "cerror"]
    high = _chromium(url + "#filter=4,5", profile, "--dump-dom")
    assert 'data-shown="2"' in high and 'data-filter="4,5"' in high

    shot = work_dir / "shot.png"
    _chromium(url, profile, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars")
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (1400, 1200)
    assert pixels.std() > 20  # not a blank page
    colours = {tuple(c) for c in (pixels[::7, ::7] // 32).reshape(-1, 3).astype(int)}
    assert len(colours) > 20  # thumbnails, score colours and text rendered
    red_badges = np.all(np.abs(pixels - (180, 35, 24)) < 12, axis=-1).sum()
    assert red_badges > 500  # the error cards' red badges/borders are drawn


def test_report_never_overwrites_the_results_or_a_folder(results: Path, work_dir: Path) -> None:
    before = results.read_bytes()
    same = CliRunner().invoke(app, ["report", str(results), "-o", str(results)])
    assert same.exit_code == 1 and "overwrite the results file" in same.stderr and "hint:" in same.stderr
    assert results.read_bytes() == before
    folder = CliRunner().invoke(app, ["report", str(results), "-o", str(work_dir)])
    assert folder.exit_code == 1 and "is a folder" in folder.stderr and "unexpected" not in folder.stderr
    blocked = work_dir / "blocker"
    blocked.write_text("a file, not a folder")
    nested = CliRunner().invoke(app, ["report", str(results), "-o", str(blocked / "r.html")])
    assert nested.exit_code == 1 and "cannot write the report" in nested.stderr
    assert "unexpected" not in nested.stderr
