"""``edgejudge doctor``: parsing of the machine facts, the JSON report, the self-test numbers and the memory
estimate of an installed (tiny, real) model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.doctor import cpu_info, gpu_info, memory_info, model_needs
from edgejudge.registry import make_entry, register

runner = CliRunner()

CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | AVX2 = 1 | "


def test_parsers() -> None:
    info = cpu_info(
        "processor : 0\nmodel name : Test CPU 9000\nflags : fpu sse4_2 avx avx2 fma f16c avx512f\n"
    )
    assert info["model"] == "Test CPU 9000"
    assert set(info["features"]) >= {"avx2", "fma", "avx512f"} and "avx512_vnni" not in info["features"]
    gpu = gpu_info(CUDA_INFO)
    assert gpu["backends"] == ["CUDA", "CPU"] and gpu["gpu_backend"] == "CUDA"
    assert gpu_info("CPU : SSE3 = 1 | ")["gpu_backend"] is None
    mem = memory_info("MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    8192 kB\n")
    assert mem == {"total_bytes": 16384 * 1024, "available_bytes": 8192 * 1024}


def test_doctor_json_without_selftest() -> None:
    result = runner.invoke(app, ["doctor", "--json", "--no-selftest"])
    assert result.exit_code == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["versions"]["llama-cpp-python"] == "0.3.36" and data["versions"]["gguf"] == "0.19.0"
    assert data["gpu"]["offload_supported"] in (True, False)
    assert "CPU" in data["gpu"]["backends"]
    assert data["memory"]["total_bytes"] > 0 and data["selftest"] is None
    assert data["models"] == [] and any("no models installed" in n for n in data["notes"])
    assert data["ok"] is True and data["problems"] == []


def test_doctor_with_selftest_and_a_model(tiny_gguf: tuple[Path, Path]) -> None:
    text, mmproj = tiny_gguf
    register(make_entry("tiny", text, mmproj, hash_files=False))
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.stdout
    data = json.loads(result.stdout)
    test = data["selftest"]
    assert test["cls_position"] in ("first", "last")
    assert test["text_max_abs_err"] < 1e-2 and test["vision_rel_err"] < 1e-2
    (model,) = data["models"]
    need = model_needs(text, mmproj)
    assert model["model"] == "tiny:F16" and model["total_bytes"] == need["total_bytes"]
    assert need["files_bytes"] == text.stat().st_size + mmproj.stat().st_size and need["parts"]["kv"] > 0
    assert model["batch_bytes"] == need["batch_bytes"] >= need["total_bytes"]  # the context full: more cells
    assert model["fits_in_memory"] is True
    human = runner.invoke(app, ["doctor"])
    assert human.exit_code == 0 and human.stdout == ""
    for needle in ("Versions", "CLS position", "tiny:F16", "all checks passed"):
        assert needle in human.stderr
