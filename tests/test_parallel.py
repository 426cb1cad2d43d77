"""Parallel-sequence generation (``LlamaCppEngine.generate_many``) through REAL llama.cpp + mtmd.

Several prompts for one image are decoded as parallel sequences sharing the image prefix. Checked against
the one-at-a-time path on fresh engines: the same greedy texts and scores, score distributions within float
rounding of a batched matrix product, the forced tail, per-request seeds, grouping by image and context
room, the KV cache left holding only the shared prefix, and context overflow before anything runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgejudge.engine.base import GenerationParams, PromptParts
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.errors import ContextOverflowError, InputError
from edgejudge.prompt import conversation_parts, render_judge_prompt
from edgejudge.rubric import load_rubric

GREEDY = GenerationParams(temperature=0.0, max_tokens=12)
RESPONSES = ("A red square.", "A blue circle on a pale background, drawn carefully.", "Nothing.", "Shapes.")


@pytest.fixture(scope="module")
def engine(tiny_gguf: tuple[Path, Path]) -> Iterator[LlamaCppEngine]:
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1) as eng:
        yield eng


@pytest.fixture(scope="module")
def sequential(tiny_gguf: tuple[Path, Path]) -> Iterator[LlamaCppEngine]:
    with LlamaCppEngine(*tiny_gguf, n_ctx=4096, n_threads=1, max_parallel=1) as eng:
        yield eng


def _parts(
    engine: LlamaCppEngine, response: str, *, seed: int = 0, instruction: str = "Describe it."
) -> PromptParts:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(engine.image_size, engine.image_size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt(instruction, response, load_rubric("vqa-helpfulness"), "A red square.")
    before, after = conversation_parts(prompt)
    return PromptParts(
        before, rgb, engine.image_size, engine.image_size, hashlib.sha256(rgb).hexdigest(), after
    )


def _one_by_one(engine: LlamaCppEngine, requests: list[tuple[PromptParts, GenerationParams]]) -> list:
    out = []
    for parts, params in requests:
        engine.clear_cache()
        out.append(engine.generate(parts, params))
    return out


def _assert_same(parallel: list, alone: list) -> None:
    assert len(parallel) == len(alone)
    for p, a in zip(parallel, alone, strict=True):
        assert p.text == a.text
        assert p.forced_tail == a.forced_tail
        assert p.score_probs is not None and a.score_probs is not None
        for k in range(1, 6):
            assert p.score_probs[k] == pytest.approx(a.score_probs[k], abs=2e-3)


def test_parallel_greedy_matches_one_by_one(engine: LlamaCppEngine, sequential: LlamaCppEngine) -> None:
    requests = [(_parts(engine, r), GREEDY) for r in RESPONSES]
    engine.clear_cache()
    parallel = engine.generate_many(requests)
    _assert_same(parallel, _one_by_one(sequential, requests))
    assert [g.timings.parallel for g in parallel] == [4, 4, 4, 4]
    # evaluated prompt tokens: the shared prefix once, then each tail
    first = parallel[0].timings
    assert first.reused_tokens == 0 and not first.image_cached and first.image_encode_s > 0
    assert all(
        g.timings.reused_tokens > engine.image_tokens + 100 and g.timings.image_cached for g in parallel[1:]
    )
    assert all(g.timings.generated_tokens > 0 and g.timings.generation_s > 0 for g in parallel)


def test_parallel_sampling_keeps_each_seed(engine: LlamaCppEngine) -> None:
    # Sampled texts are not compared with the one-by-one path: a random-weight model's flat distributions
    # turn float-rounding differences of the batched product into other draws. What must hold: each
    # sequence samples with its own seed, reproducibly, and ends with a score.
    def sampled(seed: int) -> GenerationParams:
        return GenerationParams(temperature=1.0, top_p=0.9, max_tokens=10, seed=seed)

    requests = [(_parts(engine, "A red square."), sampled(s)) for s in range(3)]
    parallel = engine.generate_many(requests)
    assert all(g.score_probs is not None and "[RESULT]" in g.text for g in parallel)
    assert len({g.text for g in parallel}) > 1  # three seeds, not one stream
    again = engine.generate_many(requests)
    assert [g.text for g in again] == [g.text for g in parallel]


def test_parallel_forced_tail(engine: LlamaCppEngine, sequential: LlamaCppEngine) -> None:
    tiny = GenerationParams(temperature=0.0, max_tokens=2)
    requests = [(_parts(engine, r), tiny) for r in RESPONSES[:2]]
    parallel = engine.generate_many(requests)
    assert all(g.forced_tail and "[RESULT]" in g.text for g in parallel)
    _assert_same(parallel, _one_by_one(sequential, requests))


def test_groups_by_image_and_keeps_order(engine: LlamaCppEngine, sequential: LlamaCppEngine) -> None:
    requests = [
        (_parts(engine, "A red square.", seed=0), GREEDY),
        (_parts(engine, "A red square.", seed=1), GREEDY),  # another image: its own group of one
        (_parts(engine, "Shapes.", seed=1), GREEDY),
        (_parts(engine, "Nothing.", seed=0), GREEDY),  # back to the first image: a new group
    ]
    parallel = engine.generate_many(requests)
    assert [g.timings.parallel for g in parallel] == [1, 2, 2, 1]
    _assert_same(parallel, _one_by_one(sequential, requests))


def test_cache_holds_the_shared_prefix_afterwards(engine: LlamaCppEngine) -> None:
    requests = [(_parts(engine, r), GREEDY) for r in RESPONSES[:3]]
    engine.clear_cache()
    engine.generate_many(requests)
    # the next one-sequence judgment of the same image reuses the prefix and matches a fresh run
    reused = engine.generate(_parts(engine, "Shapes."), GREEDY)
    assert reused.timings.reused_tokens > engine.image_tokens + 100  # past the image, into the text
    engine.clear_cache()
    fresh = engine.generate(_parts(engine, "Shapes."), GREEDY)
    assert reused.text == fresh.text
    assert reused.score_probs == pytest.approx(fresh.score_probs, abs=1e-5)


def test_groups_split_when_the_context_is_full(tiny_gguf: tuple[Path, Path]) -> None:
    with LlamaCppEngine(*tiny_gguf, n_ctx=2560, n_threads=1) as small:
        requests = [
            (_parts(small, r), GenerationParams(temperature=0.0, max_tokens=200)) for r in RESPONSES[:3]
        ]
        out = small.generate_many(requests)
        assert all(g.score_probs is not None for g in out)
        assert max(g.timings.parallel for g in out) < 3  # all three together would not fit 2560 cells


def test_overflow_is_raised_before_anything_runs(tiny_gguf: tuple[Path, Path]) -> None:
    with LlamaCppEngine(*tiny_gguf, n_ctx=1100, n_threads=1) as small:
        requests = [(_parts(small, "A red square."), GREEDY), (_parts(small, "x " * 400), GREEDY)]
        with pytest.raises(ContextOverflowError) as info:
            small.generate_many(requests)
        assert info.value.over_by > 0
        assert small._kv_units == []  # nothing was evaluated


def test_max_parallel_is_checked(tiny_gguf: tuple[Path, Path]) -> None:
    with pytest.raises(InputError, match="max_parallel"):
        LlamaCppEngine(*tiny_gguf, max_parallel=0)


def test_one_sequence_on_a_parallel_context_is_unchanged(
    engine: LlamaCppEngine, sequential: LlamaCppEngine
) -> None:
    parts = _parts(engine, "A red square.", seed=4)
    engine.clear_cache()
    sequential.clear_cache()
    a, b = engine.generate(parts, GREEDY), sequential.generate(parts, GREEDY)
    assert a.text == b.text and a.score_probs == b.score_probs  # bit for bit
