"""``Judge``: inputs → exact Prometheus-Vision prompt → engine → parsed ``Verdict``. No printing.

The judge owns the sampling policy (``samples=N``: N generations with seeds ``seed, seed+1, …``; majority
score, ties broken towards the mean expected score; mean distribution; agreement rate), the image fit
(what the judge sees), the naming of the field to shorten when the context overflows, the validation of
the inputs every caller shares (non-empty instruction and response, at most ``MAX_SAMPLES`` samples) and
the warnings that belong on a verdict: prompt longer than the judge's 2048-token training length, engine
warnings, text that was not valid Unicode (lone surrogates, e.g. from undecodable bytes, replaced with
U+FFFD) and user text that imitates the prompt's layout (the wrapper's ``USER:``/``ASSISTANT:`` role
markers, the template's ``###`` section headers): such text tokenizes exactly like the real turn, so a
response can forge one; the verdict says so rather than pretending it cannot happen.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._closing import Closing
from .engine.base import Engine, Generation, GenerationParams, PromptParts, StageTimings, TokenCallback
from .errors import ContextOverflowError, EdgeJudgeError, InputError
from .verdict import Sample, Verdict

if TYPE_CHECKING:
    from PIL.Image import Image

    from .images import FittedImage
    from .rubric import Rubric

    ImageInput = str | Path | bytes | Image | FittedImage

__all__ = [
    "Judge",
    "Task",
    "TRAINING_CONTEXT",
    "IMAGE_FITS",
    "MAX_SAMPLES",
    "expected_score",
    "aggregate_samples",
    "check_texts",
    "prompt_markers",
]

#: Prometheus-Vision was fine-tuned with model_max_length 2048: longer prompts are off-distribution.
TRAINING_CONTEXT = 2048
IMAGE_FITS = ("crop", "pad")
#: The most samples one judgment may draw (the CLI's ``--samples`` bound is this same constant).
MAX_SAMPLES = 64
#: The role markers of the vicuna_v1 wrapper, as ``prompt.conversation_parts`` writes them.
ROLE_MARKERS = ("USER:", "ASSISTANT:")


def _template_headers() -> tuple[str, ...]:
    from .prompt import JUDGE_TEMPLATE

    return tuple(line for line in JUDGE_TEMPLATE.split("\n") if line.startswith("###"))


def prompt_markers(text: str) -> list[str]:
    """The wrapper's role markers and the template's ``###`` headers that ``text`` contains, in order."""
    return [marker for marker in (*ROLE_MARKERS, *_template_headers()) if marker in text]


def check_texts(instruction: object, response: object) -> None:
    """Refuse what no judgment can use: an instruction or response that is not text, or is empty/blank."""
    for label, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str):
            raise InputError(
                f"{label} must be text, got {type(value).__name__}", hint=f"pass the {label} as a string"
            )
        if not value.strip():
            raise InputError(f"the {label} is empty", hint=f"give the {label} to judge (it is blank)")


def _clean_text(label: str, value: str, notes: list[str]) -> str:
    """``value`` with lone surrogates replaced by U+FFFD (the tokenizer cannot encode them); noted."""
    from ._jsonl import scrub

    cleaned, count = scrub(value)
    if count:
        notes.append(
            f"the {label} held {count} character(s) that are not valid text (undecodable bytes or lone "
            "surrogates); they were replaced with U+FFFD"
        )
    return str(cleaned)


def _marker_notes(fields: dict[str, str | None]) -> list[str]:
    notes = []
    for label, value in fields.items():
        found = prompt_markers(value) if value else []
        if found:
            shown = ", ".join(repr(m) for m in found)
            notes.append(
                f"the {label} contains {shown}, text of the judge's own prompt layout: it can imitate a "
                "conversation turn or prompt section and steer the verdict; check this verdict by hand"
            )
    return notes


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


@dataclass(frozen=True)
class Task:
    """One judgment for ``Judge.evaluate_tasks``: the arguments ``Judge.evaluate`` takes, as a record."""

    image: Any  # a path, bytes, a PIL image or a FittedImage
    instruction: str
    response: str
    rubric: Any  # a Rubric, a built-in name or a rubric file
    reference: str | None = None
    image_name: str | None = None


@dataclass(frozen=True)
class _Prepared:
    task: Task
    rubric: Rubric
    reference: str | None
    image_label: str
    parts: PromptParts
    instruction: str
    response: str
    notes: tuple[str, ...] = ()


def _check_run(samples: int, params: GenerationParams | None) -> tuple[int, GenerationParams]:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples must be a positive integer, got {samples!r}", hint="use samples >= 1")
    if samples > MAX_SAMPLES:
        raise InputError(
            f"samples must be at most {MAX_SAMPLES}, got {samples}",
            hint=f"use {MAX_SAMPLES} samples or fewer (the majority settles long before)",
        )
    params = params or GenerationParams()
    if params.max_tokens < 1:
        raise InputError(f"max_tokens must be positive, got {params.max_tokens}", hint="use max_tokens >= 1")
    return samples, params


def _seeds(params: GenerationParams, samples: int) -> list[int]:
    """``seed, seed+1, …`` for the samples, or fresh random seeds when ``params.seed`` is None."""
    if params.seed is not None:
        return [params.seed + i for i in range(samples)]
    return [secrets.randbelow(2**31 - 1) for _ in range(samples)]


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

        check_texts(instruction, response)
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
        on_sample: Callable[[int, int], None] | None = None,
    ) -> Verdict:
        """Judge one response to one image; see the module docstring for the sampling policy.

        Several samples are decoded as parallel sequences when the engine can (not while streaming
        through ``on_text``, which shows one sample after another). ``on_sample(done, total)`` is called
        as samples finish (after each one when streaming, once when they were decoded together)."""
        samples, params = _check_run(samples, params)
        task = Task(image, instruction, response, rubric, reference, image_name)
        prepared = self._prepare(task)
        seeds = _seeds(params, samples)
        requests = [(prepared.parts, replace(params, seed=seed)) for seed in seeds]
        try:
            if on_text is not None:  # streamed: one sample after another
                gens = []
                for parts, p in requests:
                    gens.append(self.engine.generate(parts, p, on_text))
                    if on_sample is not None:
                        on_sample(len(gens), samples)
            else:
                gens = self._generate_many(requests)
                if on_sample is not None:
                    on_sample(samples, samples)
        except ContextOverflowError as err:
            raise self._name_overflow(err, prepared, params.max_tokens) from None
        return self._verdict(prepared, gens, seeds, params, samples)

    def evaluate_many(
        self,
        image: ImageInput,
        *,
        instruction: str,
        responses: Sequence[str],
        rubric: Rubric | str | Path,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
    ) -> list[Verdict]:
        """Judge several responses to one image and instruction, in order: the image is encoded once and
        the responses are decoded as parallel sequences (up to the engine's ``max_parallel`` at a time).
        Raises the first error (a context overflow names the response's position)."""
        if isinstance(responses, str):
            raise InputError("responses must be a list of texts, not one text", hint="pass [response]")
        fitted = self.fit(image, name=image_name)  # once, not once per response
        tasks = [Task(fitted, instruction, r, rubric, reference, image_name) for r in responses]
        results = self.evaluate_tasks(tasks, samples=samples, params=params)
        for position, result in enumerate(results):
            if isinstance(result, EdgeJudgeError):
                if len(results) > 1:
                    result.message = f"response {position + 1}: {result.message}"
                raise result
        return [r for r in results if isinstance(r, Verdict)]

    def evaluate_tasks(
        self, tasks: Sequence[Task], *, samples: int = 1, params: GenerationParams | None = None
    ) -> list[Verdict | EdgeJudgeError]:
        """Judge several tasks (any images, instructions, rubrics) in one go; in order, each a ``Verdict``
        or the ``EdgeJudgeError`` that task got (a bad image, a prompt too long for the context...), so
        one bad task never costs the others. Consecutive tasks on the same image decode in parallel."""
        samples, params = _check_run(samples, params)
        results: list[Verdict | EdgeJudgeError | None] = [None] * len(tasks)
        ready: list[tuple[int, _Prepared, list[int]]] = []
        for position, task in enumerate(tasks):
            try:
                ready.append((position, self._prepare(task), _seeds(params, samples)))
            except EdgeJudgeError as err:
                results[position] = err
        while ready:
            requests = [
                (prepared.parts, replace(params, seed=seed)) for _, prepared, seeds in ready for seed in seeds
            ]
            try:
                gens = self._generate_many(requests)
            except ContextOverflowError as err:  # raised before anything ran: drop that task, go again
                at = (err.index or 0) // samples
                position, prepared, _ = ready.pop(at)
                results[position] = self._name_overflow(err, prepared, params.max_tokens)
                continue
            for k, (position, prepared, seeds) in enumerate(ready):
                own = gens[k * samples : (k + 1) * samples]
                results[position] = self._verdict(prepared, own, seeds, params, samples)
            break
        return [r for r in results if r is not None]

    def _generate_many(self, requests: list[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        if len(requests) > 1:
            return list(self.engine.generate_many(requests))
        gens = []
        for index, (parts, p) in enumerate(requests):
            try:
                gens.append(self.engine.generate(parts, p))
            except ContextOverflowError as err:
                err.index = index
                raise
        return gens

    def _prepare(self, task: Task) -> _Prepared:
        from .prompt import conversation_parts

        check_texts(task.instruction, task.response)
        notes: list[str] = []
        instruction = _clean_text("instruction", task.instruction, notes)
        response = _clean_text("response", task.response, notes)
        rubric_obj = self._clean_rubric(self._rubric(task.rubric), notes)
        reference = self._reference(task.reference)
        if reference is not None:
            reference = _clean_text("reference answer", reference, notes)
        rubric_text = "\n".join((rubric_obj.criteria, *rubric_obj.descriptions))
        notes += _marker_notes(
            {
                "instruction": instruction,
                "response": response,
                "reference answer": reference,
                "rubric": rubric_text,
            }
        )
        fitted = self.fit(task.image, name=task.image_name)
        judge_prompt = self._judge_prompt(instruction, response, rubric_obj, reference)
        before, after = conversation_parts(judge_prompt)
        parts = PromptParts(
            before_image=before,
            image_rgb=fitted.rgb,
            image_width=fitted.width,
            image_height=fitted.height,
            pixels_sha256=fitted.sha256,
            after_image=after,
        )
        return _Prepared(
            task,
            rubric_obj,
            reference,
            task.image_name or fitted.name,
            parts,
            instruction,
            response,
            tuple(notes),
        )

    @staticmethod
    def _clean_rubric(rubric: Rubric, notes: list[str]) -> Rubric:
        criteria = _clean_text("rubric criterion", rubric.criteria, notes)
        descriptions = tuple(
            _clean_text(f"rubric's score {k}", d, notes) for k, d in enumerate(rubric.descriptions, 1)
        )
        if criteria == rubric.criteria and descriptions == rubric.descriptions:
            return rubric
        return replace(rubric, criteria=criteria, descriptions=descriptions)  # type: ignore[arg-type]

    def _verdict(
        self,
        prepared: _Prepared,
        gens: Sequence[Generation],
        seeds: Sequence[int],
        params: GenerationParams,
        samples: int,
    ) -> Verdict:
        from .parse import parse_output

        results: list[Sample] = []
        for gen, seed in zip(gens, seeds, strict=True):
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
        warnings = [*self.engine.warnings, *prepared.notes]
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
            "seed": params.seed,
            "constrained": params.constrained,
            "repeat_penalty": params.repeat_penalty,
            "samples": samples,
            "n_ctx": self.engine.n_ctx,
        }
        return Verdict(
            samples=tuple(results),
            reference=prepared.reference is not None,
            rubric=prepared.rubric.name,
            model=self.engine.model_name,
            image=prepared.image_label,
            image_fit=self.image_fit,
            settings=settings,
            warnings=tuple(warnings),
            **agg,
        )

    def _name_overflow(
        self, err: ContextOverflowError, prepared: _Prepared, max_tokens: int
    ) -> ContextOverflowError:
        instruction, response = prepared.instruction, prepared.response
        rubric, reference = prepared.rubric, prepared.reference
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
