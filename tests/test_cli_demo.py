"""``edgejudge demo`` end to end: tiny fixture → real converter → real llama.cpp + mtmd → verdict, offline."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge import config
from edgejudge.cli import app

runner = CliRunner()


def test_demo_builds_once_and_judges(monkeypatch, tmp_path: Path) -> None:  # noqa: ANN001
    monkeypatch.setenv("EDGEJUDGE_CACHE", str(tmp_path / "cache"))  # a fresh machine: nothing cached
    result = runner.invoke(app, ["demo", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["random_weights"] is True and data["built"] is True
    assert data["next"] == "edgejudge models pull prometheus-vision-7b"
    assert data["score"] in range(1, 6)
    probs = data["verdict"]["score_probs"]
    assert set(probs) == {"1", "2", "3", "4", "5"} and abs(sum(probs.values()) - 1) < 1e-4
    assert "[RESULT]" in data["verdict"]["raw_output"]
    text = Path(data["text_model"])
    assert text.parent == config.cache_dir() / "demo" and text.name.endswith("-Q4_K_M.gguf")
    assert Path(data["picture"]).is_file()

    again = runner.invoke(
        app, ["demo"]
    )  # cached: no rebuild; human output says plainly the weights are random
    assert again.exit_code == 0, again.stderr
    assert again.stdout == ""
    assert "RANDOM weights" in again.stderr and "edgejudge models pull prometheus-vision-7b" in again.stderr
    assert "built the demo judge" not in again.stderr
    assert text.stat().st_mtime_ns == Path(data["text_model"]).stat().st_mtime_ns

    quiet_lines = len(again.stderr.splitlines())
    verbose = runner.invoke(app, ["demo", "--verbose"])  # llama.cpp's own log reaches stderr
    assert verbose.exit_code == 0, verbose.stderr
    assert verbose.stdout == "" and "RANDOM weights" in verbose.stderr
    assert len(verbose.stderr.splitlines()) > quiet_lines + 20 and "llama" in verbose.stderr


def test_demo_options_are_the_settings_records() -> None:
    """--seed and --max-tokens are built like the shared options (help, bounds, check from
    edgejudge.settings); only their defaults are the demo's own (review B3)."""
    from edgejudge.settings import SETTINGS

    help_text = " ".join(runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "400"}).output.split())
    for name in ("seed", "max_tokens"):
        assert " ".join(SETTINGS[name].help.split()) in help_text, name
    assert "picture" in help_text  # the demo's note on --seed
    for args in (["--max-tokens", "0"], ["--seed", "x"]):
        result = runner.invoke(app, ["demo", *args])
        assert result.exit_code == 2 and args[0] in result.output, args
