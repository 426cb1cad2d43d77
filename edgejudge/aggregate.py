"""The sampling policy of a judgment, as pure functions: the seeds of N samples and the verdict from them.

``samples=N`` draws N generations with seeds ``seed, seed+1, …`` (fresh random seeds when the seed is
None). The verdict's score is the majority score, ties broken towards the mean expected score (then the
lower score); its distribution is the mean of the samples' distributions; ``agreement`` is the share of
samples that gave the majority score; feedback and raw text are those of the first sample with it.
``Judge`` (edgejudge.judge) calls these; nothing here touches an engine.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .verdict import Sample, StageTimings

__all__ = ["seeds", "expected_score", "aggregate_samples"]


def seeds(seed: int | None, samples: int) -> list[int]:
    """``seed, seed+1, …`` for the samples, or fresh random seeds when ``seed`` is None."""
    if seed is not None:
        return [seed + i for i in range(samples)]
    return [secrets.randbelow(2**31 - 1) for _ in range(samples)]


def expected_score(probs: dict[int, float] | None) -> float | None:
    """Σ k·p_k over the (renormalised) distribution, or None without one."""
    if not probs:
        return None
    total = sum(probs.values())
    if total <= 0:
        return None
    return sum(k * p for k, p in probs.items()) / total


def _mean_distribution(dists: Sequence[dict[int, float]]) -> dict[int, float] | None:
    if not dists:
        return None
    mean = {k: sum(d.get(k, 0.0) for d in dists) / len(dists) for k in range(1, 6)}
    total = sum(mean.values())
    return {k: v / total for k, v in mean.items()} if total > 0 else None


def _sum_timings(samples: Sequence[Sample]) -> StageTimings:
    first = samples[0].timings
    return StageTimings(
        image_encode_s=sum(s.timings.image_encode_s for s in samples),
        prompt_eval_s=sum(s.timings.prompt_eval_s for s in samples),
        generation_s=sum(s.timings.generation_s for s in samples),
        prompt_tokens=first.prompt_tokens,
        reused_tokens=first.reused_tokens,
        generated_tokens=sum(s.timings.generated_tokens for s in samples),
        image_cached=first.image_cached,
        parallel=max(s.timings.parallel for s in samples),
    )


def aggregate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """The verdict-level fields from samples.

    score, feedback, raw_output, parse_method, expected_score, score_probs, agreement and timings (stage
    seconds and generated tokens summed; prompt counts of the first sample).
    """
    if not samples:
        raise ValueError("no samples")
    expected = [s.expected_score for s in samples if s.expected_score is not None]
    mean_expected = sum(expected) / len(expected) if expected else None
    probs = _mean_distribution([s.score_probs for s in samples if s.score_probs])
    scored = [s.score for s in samples if s.score is not None]
    if scored:
        counts = Counter(scored)
        top = max(counts.values())
        tied = sorted(k for k, c in counts.items() if c == top)
        centre = mean_expected if mean_expected is not None else sum(scored) / len(scored)
        score: int | None = min(tied, key=lambda k: (abs(k - centre), k))
        chosen = next(s for s in samples if s.score == score)
        agreement: float | None = top / len(samples)
    else:
        score, chosen, agreement = None, samples[0], None
    return {
        "score": score,
        "feedback": chosen.feedback,
        "raw_output": chosen.raw_output,
        "parse_method": chosen.parse_method,
        "expected_score": mean_expected,
        "score_probs": probs,
        "agreement": agreement,
        "timings": _sum_timings(samples),
    }
