"""``edgejudge convert``: the tiny checkpoint through the real converter, JSON paths, errors, --register."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.registry import load_registry, resolve_model

runner = CliRunner()


def test_convert_json_and_register(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "convert",
        str(tiny_checkpoint),
        "--outdir",
        str(out),
        "--name",
        "tj",
        "--quant",
        "q8_0",
        "--mmproj-quant",
        "f16",
        "--register",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    text, mmproj = Path(data["text_model"]), Path(data["mmproj"])
    assert text.is_absolute() and text == out.resolve() / "tj-Q8_0.gguf" and text.is_file()
    assert mmproj == out.resolve() / "mmproj-tj-F16.gguf" and mmproj.is_file()
    assert data["quant"] == "Q8_0" and data["n_tensors"] > 0 and data["cls_position"] in ("first", "last")
    assert data["registered"]["name"] == "tj" and len(data["registered"]["text_sha256"]) == 64
    assert [m.key for m in load_registry().models] == ["tj:Q8_0"]
    assert resolve_model("tj") == (text, mmproj)
    # people's text (progress lines, summary) went to stderr only
    assert "converted" in result.stderr


def test_convert_errors_are_one_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = runner.invoke(app, ["convert", str(tmp_path / "missing"), "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "hint: " in result.stderr
    bad = runner.invoke(
        app, ["convert", str(tiny_checkpoint), "--outdir", str(tmp_path / "o"), "--quant", "q3"]
    )
    assert bad.exit_code == 1 and "unknown quantization 'q3'" in bad.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    usage = runner.invoke(app, ["convert", str(tiny_checkpoint)])
    assert usage.exit_code == 2 and "--outdir" in usage.stderr
