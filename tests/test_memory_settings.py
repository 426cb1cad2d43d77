"""The memory settings on the tiny judge through REAL llama.cpp (never mocked): mmap, kv_size, kv_cache_type.

What they promise: reading the file instead of mapping it and sizing the KV cache to the prompts change
where memory goes, never what the judge answers (same greedy texts, same score distributions as the old
defaults); the KV cache grows when a longer call comes, and a grown engine answers as a fresh one does;
``kv_size`` full allocates ``n_ctx`` at load; q8_0 cells run (with flash attention) and are a setting
checked like every other; the CLI takes the three flags and refuses an unknown value naming the flag.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.engine._load import KV_STEP, first_cells, grown_cells, use_mmap
from edgejudge.engine.base import GenerationParams, PromptParts
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.errors import InputError
from edgejudge.load_options import LoadOptions
from edgejudge.prompt import conversation_parts, render_judge_prompt
from edgejudge.rubric import load_rubric
from edgejudge.settings import check, default

GREEDY = GenerationParams(temperature=0.0, max_tokens=24)


def _parts(engine: LlamaCppEngine, response: str, seed: int = 0) -> PromptParts:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(engine.image_size, engine.image_size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt("Describe it.", response, load_rubric("vqa-helpfulness"), "A red square.")
    before, after = conversation_parts(prompt)
    return PromptParts(
        before, rgb, engine.image_size, engine.image_size, hashlib.sha256(rgb).hexdigest(), after
    )


def _run(engine: LlamaCppEngine, responses: list[str]) -> list[tuple[str, dict[int, float] | None]]:
    return [(g.text, g.score_probs) for g in (engine.generate(_parts(engine, r), GREEDY) for r in responses)]


def test_the_defaults_read_the_file_and_fit_the_cache() -> None:
    assert (default("mmap"), default("kv_size"), default("kv_cache_type")) == ("auto", "fit", "f16")
    assert use_mmap("on", 0) is True and use_mmap("off", -1) is False
    assert use_mmap("auto", 0) is False  # on the CPU: read, so repacked weights are held once
    assert first_cells("full", 4096, 512) == 4096 and first_cells("fit", 4096, 512) == 512
    assert grown_cells(400, 512, 4096) is None  # enough already
    assert grown_cells(1400 + 1024 + 16, 512, 4096) == 5 * KV_STEP  # a judge prompt and its budget
    assert grown_cells(9000, 512, 4096) == 4096  # never past n_ctx


def test_mmap_and_kv_size_change_nothing_the_judge_answers(tiny_gguf: tuple[Path, Path]) -> None:
    responses = ["A red square.", "A blue circle on a white background, drawn with a thick line."]
    answers = []
    for mmap, kv_size in (("on", "full"), ("off", "fit"), ("auto", "fit")):
        with LlamaCppEngine(*tiny_gguf, n_ctx=2048, n_threads=1, mmap=mmap, kv_size=kv_size) as eng:
            answers.append(_run(eng, responses))
            if kv_size == "full":
                assert eng.kv_cells == 2048
            else:  # fit: the prompt and its budget, in steps
                assert eng.kv_cells < 2048 and eng.kv_cells % KV_STEP == 0
            assert eng.n_ctx == 2048  # the limit prompts are checked against, either way
    assert answers[0] == answers[1] == answers[2]
    assert all(probs is not None for _, probs in answers[0])


def test_the_cache_grows_for_a_longer_call_and_then_answers_as_a_fresh_engine(
    tiny_gguf: tuple[Path, Path],
) -> None:
    long_budget = GenerationParams(temperature=0.0, max_tokens=700)
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1) as eng:
        eng.generate(_parts(eng, "A red square."), GREEDY)
        small = eng.kv_cells
        grown = eng.generate(_parts(eng, "A red square."), long_budget)
        assert eng.kv_cells > small and eng.kv_cells % KV_STEP == 0
        again = eng.generate(_parts(eng, "A red square."), GREEDY)  # fits: no shrink, prefix reused
        assert eng.kv_cells > small and again.timings.reused_tokens > 0
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1, kv_size="full") as fresh:
        assert fresh.generate(_parts(fresh, "A red square."), long_budget).text == grown.text
        assert fresh.generate(_parts(fresh, "A red square."), GREEDY).text == again.text


def test_parallel_groups_get_the_cells_they_need(tiny_gguf: tuple[Path, Path]) -> None:
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1, max_parallel=3) as eng:
        parts = [_parts(eng, r) for r in ("A red square.", "A square.", "Red.")]
        gens = eng.generate_many([(p, GREEDY) for p in parts])
        assert [g.timings.parallel for g in gens] == [3, 3, 3]
        assert KV_STEP <= eng.kv_cells <= 4096
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1, max_parallel=3, kv_size="full") as full:
        assert [g.text for g in full.generate_many([(p, GREEDY) for p in parts])] == [g.text for g in gens]


def test_q8_0_cells_run_with_flash_attention(tiny_gguf: tuple[Path, Path]) -> None:
    with LlamaCppEngine(*tiny_gguf, n_ctx=2048, n_threads=1, kv_cache_type="q8_0") as eng:
        ((text, probs),) = _run(eng, ["A red square."])
        assert probs is not None and abs(sum(probs.values()) - 1) < 1e-6 and "[RESULT]" in text


def test_the_memory_settings_are_checked_like_the_others() -> None:
    for name, bad in (("mmap", "maybe"), ("kv_size", "half"), ("kv_cache_type", "q4_0")):
        with pytest.raises(InputError, match=name) as info:
            check(name, bad)
        assert info.value.hint and name in info.value.hint
        with pytest.raises(InputError):
            LoadOptions(**{name: bad})
    with pytest.raises(InputError, match="mmap"):  # the servers load their own files
        LoadOptions(engine="llama-server", servers=("http://127.0.0.1:1",), mmap="on")


def test_the_cli_takes_the_flags_and_names_a_bad_value(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["judge", "x.png", "-i", "?", "--response", "r", "--kv-cache-type", "q4"]
    )
    assert result.exit_code == 2 and "--kv-cache-type" in result.output
    help_text = CliRunner().invoke(app, ["judge", "--help"], env={"COLUMNS": "200"}).output
    assert "--mmap" in help_text and "--kv-size" in help_text and "--kv-cache-type" in help_text
