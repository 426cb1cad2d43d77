"""``Judge``: inputs → exact Prometheus-Vision prompt → engine → parsed ``Verdict``. No printing.

The judge owns the sampling policy (``samples=N``: N generations with seeds ``seed, seed+1, …``; majority
score, ties broken towards the mean expected score; mean distribution; agreement rate), the image fit
(what the judge sees), the naming of the field to shorten when the context overflows and the warnings that
belong on a verdict (prompt longer than the judge's 2048-token training length, engine warnings).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine._closing import Closing
from .engine.base import Engine, GenerationParams, PromptParts, StageTimings, TokenCallback
from .errors import ContextOverflowError, InputError
from .verdict import Sample, Verdict

if TYPE_CHECKING:
    from PIL.Image import Image

    from .images import FittedImage
    from .rubric import Rubric

    ImageInput = str | Path | bytes | Image | FittedImage

__all__ = ["Judge", "TRAINING_CONTEXT", "IMAGE_FITS", "expected_score", "aggregate_samples"]

#: Prometheus-Vision was fine-tuned with model_max_length 2048: longer prompts are off-distribution.
TRAINING_CONTEXT = 2048
IMAGE_FITS = ("crop", "pad")


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


class Judge(Closing):
    """A loaded judge: load once, grade many. A context manager; ``close()`` frees the engine."""

    def __init__(self, engine: Engine, *, image_fit: str = "crop") -> None:
        if image_fit not in IMAGE_FITS:
            raise InputError(f"unknown image fit {image_fit!r}", hint=f"use one of: {', '.join(IMAGE_FITS)}")
        self.engine = engine
        self.image_fit = image_fit

    @classmethod
    def from_files(
        cls,
        model: str | Path,
        mmproj: str | Path | None = None,
        *,
        image_fit: str = "crop",
        **engine_options: Any,
    ) -> Judge:
        """Load a GGUF pair with ``LlamaCppEngine`` (``engine_options`` go to its constructor)."""
        from .engine.llama import LlamaCppEngine

        if image_fit not in IMAGE_FITS:  # fail before loading a model
            raise InputError(f"unknown image fit {image_fit!r}", hint=f"use one of: {', '.join(IMAGE_FITS)}")
        return cls(LlamaCppEngine(model, mmproj, **engine_options), image_fit=image_fit)

    # -- inputs ----------------------------------------------------------------------------------------
    def fit(self, image: ImageInput, *, name: str | None = None) -> FittedImage:
        """The image exactly as the judge sees it (fitted to the tower's square input)."""
        from .images import FittedImage, prepare_image

        size = self.engine.image_size
        if isinstance(image, FittedImage):
            if image.width == size and image.height == size:
                return image if name is None or name == image.name else replace(image, name=name)
            return prepare_image(image.image, size, self.image_fit, name=name or image.name)
        return prepare_image(image, size, self.image_fit, name=name)

    @staticmethod
    def _rubric(rubric: Rubric | str | Path) -> Rubric:
        from .rubric import Rubric, load_rubric

        if isinstance(rubric, Rubric):
            return rubric
        return load_rubric(rubric)

    @staticmethod
    def _reference(reference: str | None) -> str | None:
        from .prompt import has_reference

        return reference if has_reference(reference) else None

    def _judge_prompt(self, instruction: str, response: str, rubric: Rubric, reference: str | None) -> str:
        from .prompt import render_judge_prompt

        for label, value in (("instruction", instruction), ("response", response)):
            if not isinstance(value, str):
                raise InputError(
                    f"{label} must be text, got {type(value).__name__}", hint=f"pass the {label} as a string"
                )
        return render_judge_prompt(instruction, response, rubric, reference)

    def prompt_text(
        self,
        *,
        instruction: str,
        response: str,
        rubric: Rubric | str | Path,
        reference: str | None = None,
    ) -> str:
        """The exact full conversation text (``<image>`` marks where the image goes)."""
        from .prompt import full_conversation

        judge_prompt = self._judge_prompt(
            instruction, response, self._rubric(rubric), self._reference(reference)
        )
        return full_conversation(judge_prompt)

    # -- judging ---------------------------------------------------------------------------------------
    def evaluate(
        self,
        image: ImageInput,
        *,
        instruction: str,
        response: str,
        rubric: Rubric | str | Path,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        on_text: TokenCallback | None = None,
        image_name: str | None = None,
    ) -> Verdict:
        """Judge one response to one image; see the module docstring for the sampling policy."""
        from .parse import parse_output
        from .prompt import conversation_parts

        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InputError(f"samples must be a positive integer, got {samples!r}", hint="use samples >= 1")
        params = params or GenerationParams()
        if params.max_tokens < 1:
            raise InputError(
                f"max_tokens must be positive, got {params.max_tokens}", hint="use max_tokens >= 1"
            )
        rubric_obj = self._rubric(rubric)
        reference = self._reference(reference)
        fitted = self.fit(image, name=image_name)
        judge_prompt = self._judge_prompt(instruction, response, rubric_obj, reference)
        before, after = conversation_parts(judge_prompt)
        parts = PromptParts(
            before_image=before,
            image_rgb=fitted.rgb,
            image_width=fitted.width,
            image_height=fitted.height,
            image_sha256=fitted.sha256,
            after_image=after,
        )
        base_seed = params.seed
        results: list[Sample] = []
        for i in range(samples):
            seed = base_seed + i if base_seed is not None else secrets.randbelow(2**31 - 1)
            try:
                gen = self.engine.generate(parts, replace(params, seed=seed), on_text)
            except ContextOverflowError as err:
                raise self._name_overflow(
                    err, instruction, response, rubric_obj, reference, params.max_tokens
                ) from None
            parsed = parse_output(gen.text)
            results.append(
                Sample(
                    score=parsed.score,
                    feedback=parsed.feedback,
                    raw_output=gen.text,
                    parse_method=parsed.method,
                    score_probs=gen.score_probs,
                    expected_score=expected_score(gen.score_probs),
                    seed=seed,
                    forced_tail=gen.forced_tail,
                    parse_error=parsed.reason,
                    timings=gen.timings,
                )
            )
        agg = aggregate_samples(results)
        warnings = list(self.engine.warnings)
        prompt_tokens = results[0].timings.prompt_tokens
        if prompt_tokens > TRAINING_CONTEXT:
            warnings.append(
                f"the prompt has {prompt_tokens} tokens, more than the {TRAINING_CONTEXT} the judge was "
                "trained on; verdicts on longer prompts are less reliable"
            )
        settings = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": base_seed,
            "constrained": params.constrained,
            "repeat_penalty": params.repeat_penalty,
            "samples": samples,
            "n_ctx": self.engine.n_ctx,
        }
        return Verdict(
            samples=tuple(results),
            reference=reference is not None,
            rubric=rubric_obj.name,
            model=self.engine.model_name,
            image=image_name or fitted.name,
            image_fit=self.image_fit,
            settings=settings,
            warnings=tuple(warnings),
            **agg,
        )

    def _name_overflow(
        self,
        err: ContextOverflowError,
        instruction: str,
        response: str,
        rubric: Rubric,
        reference: str | None,
        max_tokens: int,
    ) -> ContextOverflowError:
        rubric_text = "\n".join((rubric.criteria, *rubric.descriptions))
        sizes = {
            "response": self.engine.count_tokens(response),
            "reference": self.engine.count_tokens(reference) if reference else 0,
            "instruction": self.engine.count_tokens(instruction),
            "rubric": self.engine.count_tokens(rubric_text),
        }
        field = max(sizes, key=lambda k: sizes[k])
        over = err.over_by
        fixes = []  # only the changes that are enough on their own
        if over <= sizes[field]:
            fixes.append(f"shorten the {field} by {over}+ tokens")
        if over < max_tokens:
            fixes.append(f"lower max_tokens from {max_tokens} to {max_tokens - over} or less")
        if not fixes and over < sizes[field] + max_tokens:
            fixes.append(f"shorten the {field} and lower max_tokens ({max_tokens}) by {over}+ tokens in all")
        fixes.append(f"raise n_ctx to {self.engine.n_ctx + over}+")
        hint = ", or ".join(fixes)
        return ContextOverflowError(
            f"the prompt does not fit the context window ({self.engine.n_ctx} tokens): {over} tokens too "
            f"many; the {field} is the longest field ({sizes[field]} tokens)",
            over_by=over,
            field=field,
            hint=hint,
        )

    # -- lifetime --------------------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.close()
