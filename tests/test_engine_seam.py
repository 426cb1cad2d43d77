"""The engine seam: ``FakeEngine`` and ``LlamaCppEngine`` (REAL llama.cpp on the tiny model) implement the
whole ``Engine`` Protocol and share its checks, so they refuse the same settings and prompts with the same
words and apply the same context-overflow rule (only the prompt's size is each engine's own)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgejudge.engine.base import TAIL_RESERVE, Engine, GenerationParams, PromptParts
from edgejudge.engine.fake import FakeEngine
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.errors import ContextOverflowError, InputError
from edgejudge.prompt import conversation_parts, render_judge_prompt
from edgejudge.rubric import load_rubric

GREEDY = GenerationParams(temperature=0.0, max_tokens=1)
SHORT = GenerationParams(temperature=0.0, max_tokens=1, constrained=False)  # fits a context of prompt + 1


@pytest.fixture(scope="module")
def real(tiny_gguf: tuple[Path, Path]) -> Iterator[LlamaCppEngine]:
    with LlamaCppEngine(*tiny_gguf, n_ctx=2048, n_threads=1) as eng:
        yield eng


def _parts(size: int, response: str = "A red square.", *, seed: int = 0) -> PromptParts:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt("Describe it.", response, load_rubric("vqa-helpfulness"), "A red square.")
    before, after = conversation_parts(prompt)
    return PromptParts(before, rgb, size, size, hashlib.sha256(rgb).hexdigest(), after)


def _fake_like(real: LlamaCppEngine, **kwargs: object) -> FakeEngine:
    return FakeEngine(image_size=real.image_size, image_tokens=real.image_tokens, **kwargs)  # type: ignore[arg-type]


def test_both_engines_implement_the_protocol(real: LlamaCppEngine) -> None:
    fake = _fake_like(real, max_parallel=3)
    for engine in (real, fake):
        assert isinstance(engine, Engine)
    assert real.max_parallel == 4 and fake.max_parallel == 3 and FakeEngine().max_parallel == 1


BAD_PARAMS = [
    GenerationParams(temperature=-0.5),
    GenerationParams(temperature=float("nan")),
    GenerationParams(top_p=0.0),
    GenerationParams(top_p=1.5),
    GenerationParams(repeat_penalty=0.0),
    GenerationParams(repeat_penalty=-1.0),
    GenerationParams(max_tokens=0),
    GenerationParams(max_tokens=2.5),  # type: ignore[arg-type]
    GenerationParams(seed=1.5),  # type: ignore[arg-type]
    GenerationParams(seed=True),  # type: ignore[arg-type]
    GenerationParams(constrained="yes"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("params", BAD_PARAMS, ids=repr)
def test_both_engines_refuse_the_same_settings(real: LlamaCppEngine, params: GenerationParams) -> None:
    fake = _fake_like(real)
    parts = _parts(real.image_size)
    refusals = []
    for engine in (real, fake):
        with pytest.raises(InputError) as one:
            engine.generate(parts, params)
        with pytest.raises(InputError) as many:
            engine.generate_many([(parts, GREEDY), (parts, params)])
        assert (str(one.value), one.value.hint) == (str(many.value), many.value.hint)
        refusals.append((str(one.value), one.value.hint))
    assert refusals[0] == refusals[1]
    assert fake.history == []  # refused before anything ran
    hint = refusals[0][1] or ""
    assert "--" not in hint and not re.search(r"\w=", hint)  # library words: no CLI flag, no keyword


def _bad_parts(size: int) -> list[PromptParts]:
    good = _parts(size)
    other = _parts(size + 14)
    return [
        other,  # another square size than the tower's
        PromptParts(good.before_image, good.image_rgb[:-3], size, size, good.pixels_sha256, good.after_image),
        PromptParts(good.before_image, good.image_rgb, size, size, "not-a-digest", good.after_image),
        PromptParts(good.before_image, good.image_rgb, size, size, "A" * 64, good.after_image),
    ]


@pytest.mark.parametrize("case", range(4))
def test_both_engines_refuse_the_same_prompts(real: LlamaCppEngine, case: int) -> None:
    fake = _fake_like(real)
    parts = _bad_parts(real.image_size)[case]
    refusals = []
    for engine in (real, fake):
        with pytest.raises(InputError) as info:
            engine.generate(parts, GREEDY)
        refusals.append((str(info.value), info.value.hint))
    assert refusals[0] == refusals[1]


def _prompt_size(engine: Engine, parts: PromptParts) -> int:
    return engine.generate(parts, SHORT).timings.prompt_tokens


def _parts_of_size(engine: LlamaCppEngine, n_prompt: int) -> PromptParts:
    """A prompt of exactly ``n_prompt`` positions on ``engine`` (the response padded with words, then
    with single characters)."""

    def size(response: str) -> tuple[int, PromptParts]:
        parts = _parts(engine.image_size, response)
        chunks = engine.tokenize_chunks(parts)
        return sum(len(t) if kind == "text" else engine.image_tokens for kind, t in chunks), parts

    base = "A red square."
    while size(base + " word")[0] < n_prompt:
        base += " word"
    for filler in (".", "!", "?", ",", ";", "-"):
        padded = base
        while (got := size(padded))[0] < n_prompt:
            padded += filler
        if got[0] == n_prompt:
            return got[1]
    raise AssertionError(f"no padding gives {n_prompt} positions")


def test_both_engines_report_the_same_overflow(real: LlamaCppEngine, tiny_gguf: tuple[Path, Path]) -> None:
    """Each engine gets a context 10 positions larger than its own prompt: the same settings then fit or
    overflow by the same amount on both, with the same message and the request's index."""
    room = 10
    # llama.cpp rounds the context up to a multiple of 256: make the prompt fit the context instead
    with LlamaCppEngine(*tiny_gguf, n_ctx=1280, n_threads=1, max_parallel=1) as tight:
        parts = _parts_of_size(tight, tight.n_ctx - room)
        real_prompt = _prompt_size(tight, parts)
        assert real_prompt == tight.n_ctx - room
        fake_prompt = _prompt_size(_fake_like(real), parts)
        fake = _fake_like(real, n_ctx=fake_prompt + room)
        cases = [
            (GenerationParams(temperature=0, max_tokens=2), TAIL_RESERVE - room),  # the forced tail's room
            (GenerationParams(temperature=0, max_tokens=2, constrained=False), None),  # fits
            (GenerationParams(temperature=0, max_tokens=room + 5, constrained=False), 5),
            (GenerationParams(temperature=0, max_tokens=room + 30), 30),
        ]
        for params, over_by in cases:
            outcomes = []
            for engine, prompt in ((tight, real_prompt), (fake, fake_prompt)):
                if over_by is None:
                    assert engine.generate(parts, params).timings.prompt_tokens == prompt
                    continue
                with pytest.raises(ContextOverflowError) as one:
                    engine.generate(parts, params)
                with pytest.raises(ContextOverflowError) as many:
                    engine.generate_many([(parts, SHORT), (parts, params)])
                assert one.value.over_by == many.value.over_by == over_by
                assert one.value.index is None and many.value.index == 1
                words = str(one.value).replace(str(prompt), "P").replace(str(engine.n_ctx), "N")
                outcomes.append((words, one.value.hint))
            assert len(set(outcomes)) <= 1, outcomes
