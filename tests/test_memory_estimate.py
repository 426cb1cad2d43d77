"""``memory.estimate`` against what ``edgejudge judge`` really takes, on the tiny judge (REAL llama.cpp).

The estimate is THE figure ``edgejudge doctor`` and ``models list`` report. It must hold within
``TOLERANCE`` of the peak RSS a verdict's process reaches (measured by ``wait4`` in a child,
``_support.run_measured``), at the defaults and with a context whose KV cache dominates, and it must use
the engine's own numbers: the KV cells it counts are the cells the engine allocated for that verdict.
``models list --json`` carries the same figures as ``doctor``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _support import cli, run_measured
from PIL import Image
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.doctor import model_needs
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.errors import InputError
from edgejudge.judge import Judge
from edgejudge.load_options import LoadOptions
from edgejudge.memory import estimate, judge_cells
from edgejudge.registry import make_entry, register

#: How far the estimate may be from the measured peak, as a share of the measured peak.
TOLERANCE = 0.15


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("flags", "options"),
    [
        ((), LoadOptions()),
        (("--n-ctx", "32768", "--kv-size", "full"), LoadOptions(n_ctx=32768, kv_size="full")),
        (("--mmap", "on", "--kv-cache-type", "q8_0"), LoadOptions(mmap="on", kv_cache_type="q8_0")),
    ],
)
def test_the_estimate_holds_against_a_verdicts_measured_peak(
    tiny_gguf: tuple[Path, Path], tmp_path: Path, flags: tuple[str, ...], options: LoadOptions
) -> None:
    text, mmproj = tiny_gguf
    argv = cli(
        "judge", str(_image(tmp_path)), "-i", "What is it?", "--response", "A cat.", "--model", str(text),
        "--mmproj", str(mmproj), "--json", "--temperature", "0", "--max-tokens", "8", "--threads", "1",
        *flags,
    )  # fmt: skip
    measured = run_measured(argv, timeout=180)
    assert measured.returncode == 0, measured.stderr
    verdict = json.loads(measured.stdout)
    need = estimate(text, mmproj, options, max_tokens=8, prompt_tokens=verdict["timings"]["prompt_tokens"])
    peak = measured.peak_rss_mb * 2**20
    print(f"{flags}: estimated {need.total / 2**20:.1f} MiB, measured {measured.peak_rss_mb:.1f} MiB")
    assert abs(need.total - peak) <= TOLERANCE * peak, (need.to_dict(), measured.peak_rss_mb)


def test_the_estimate_counts_the_cells_the_engine_allocates(tiny_gguf: tuple[Path, Path]) -> None:
    options = LoadOptions(model=str(tiny_gguf[0]), mmproj=tiny_gguf[1], n_ctx=4096, n_threads=1)
    judge = Judge.from_options(options)
    try:
        verdict = judge.evaluate(
            _array_image(), instruction="What is it?", response="A cat.", rubric="vqa-helpfulness",
            params=None, samples=1,
        )  # fmt: skip
        engine = judge.engine
        assert isinstance(engine, LlamaCppEngine)
        need = estimate(*tiny_gguf, options, prompt_tokens=verdict.timings.prompt_tokens)
        assert need.kv_cells == engine.kv_cells == judge_cells(options, verdict.timings.prompt_tokens, 1024)
        assert need.mmap is False and need.repack_copy == 0  # read, not mapped, on the CPU
    finally:
        judge.close()
    batch = estimate(*tiny_gguf, options, case="batch")
    assert batch.kv_cells == 4096 and batch.total > need.total
    mapped = estimate(*tiny_gguf, LoadOptions(mmap="on"))
    assert mapped.mmap is True and mapped.repack_copy == 0  # F16 weights: nothing is repacked
    with pytest.raises(InputError, match="unknown case"):
        estimate(*tiny_gguf, options, case="serve")


def test_models_list_reports_what_doctor_reports(tiny_gguf: tuple[Path, Path]) -> None:
    text, mmproj = tiny_gguf
    register(make_entry("tiny", text, mmproj, hash_files=False))
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    (installed,) = json.loads(result.stdout)["installed"]
    assert installed["memory"] == model_needs(text, mmproj)
    assert installed["memory"]["total_bytes"] == estimate(text, mmproj, LoadOptions()).total
    table = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "needs" in table.output


def _array_image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
