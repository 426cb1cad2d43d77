"""``Judge``: inputs → exact Prometheus-Vision prompt → engine → parsed ``Verdict``. No printing.

The judge owns a judgment's flow: the image fit (what the judge sees; ``images``), the checks and notes on
the inputs (``inputs``: non-blank instruction and response, text cleaned, user text imitating the prompt's
layout noted, a context overflow restated with the field to shorten), the sampling policy (``aggregate``:
``samples=N`` draws N generations with seeds ``seed, seed+1, …`` and takes the majority score), the
decoding of several samples or tasks as parallel sequences, the warnings that belong on a verdict (the
prompt longer than the judge's 2048-token training length, the engine's own) and the verdict's
``settings`` object (``settings.settings_object``, the same in ``judge --json`` and batch rows).
``Judge.from_options`` loads a GGUF pair (files → engine → CLS check); ``Judge.from_files`` is it with
keyword arguments, ``load.load_judge`` with registry names resolved first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._closing import Closing
from ._many import verdicts_or_first_error
from .aggregate import aggregate_samples, expected_score, seeds
from .decision import DEFAULT_REVIEW_BAND
from .engine.base import Engine, Generation, GenerationParams, PromptParts, TokenCallback
from .errors import ContextOverflowError, EdgeJudgeError, InputError, PromptRefusedError
from .inputs import (
    Task,
    check_run,
    check_texts,
    clean_rubric,
    clean_text,
    field_sizes,
    marker_notes,
    name_overflow,
    prompt_markers,
)
from .load_options import LoadOptions
from .settings import MAX_SAMPLES, GenerationSettings, default, settings_object
from .verdict import Sample, Verdict

if TYPE_CHECKING:
    from .images import FittedImage, ImageInput
    from .policy import Policy
    from .rubric import Rubric
    from .verdict import PolicyVerdict

__all__ = [
    "Judge",
    "Task",
    "TRAINING_CONTEXT",
    "MAX_SAMPLES",
    "expected_score",
    "aggregate_samples",
    "check_texts",
    "prompt_markers",
]

#: Prometheus-Vision was fine-tuned with model_max_length 2048: longer prompts are off-distribution.
TRAINING_CONTEXT = 2048


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


class Judge(Closing):
    """A loaded judge: load once, grade many. A context manager; ``close()`` frees the engine."""

    def __init__(self, engine: Engine, *, image_fit: str = default("image_fit")) -> None:
        from .images import check_fit

        check_fit(image_fit)
        self.engine = engine
        self.image_fit = image_fit

    @classmethod
    def from_files(
        cls,
        model: str | Path,
        mmproj: str | Path | None = None,
        *,
        image_fit: str = default("image_fit"),
        **engine_options: Any,
    ) -> Judge:
        """Load the GGUF pair at ``model`` (``mmproj`` None: the projector found beside it): ``from_options``
        with the ``LoadOptions`` these arguments name (``engine_options``: n_ctx, n_threads, n_gpu_layers,
        max_parallel or parallel, verbose, mmproj_offload, image_cache_size, n_batch, seed)."""
        return cls.from_options(LoadOptions.from_engine_options(model, mmproj, image_fit, engine_options))

    @classmethod
    def from_options(cls, options: LoadOptions) -> Judge:
        """Load the judge ``options`` name: with ``engine`` llama.cpp, the pair at ``options.model`` (a text
        ``.gguf`` path; ``load.load_judge`` resolves registry names to one) in ``LlamaCppEngine``, which
        checks the projector's CLS-position stamp against the runtime's order (by default through the
        cached ``probe.runtime_cls_position``; the pair rule of ``judgefile``); with llama-server, the same
        pair on the servers (``LlamaServerEngine`` checks they serve it, with a build of that CLS order);
        with vllm, the served model ``options.model`` names (``VllmEngine``). Remote engines send the key
        ``EDGEJUDGE_SERVER_API_KEY`` holds (``config.server_api_key``), if any."""
        from .images import check_fit

        check_fit(options.image_fit)  # fail before loading a model
        engine: Engine
        if options.engine == "vllm":
            from .config import server_api_key
            from .engine.vllm import VllmEngine

            model = None if options.model is None else str(options.model)
            engine = VllmEngine(model=model, api_key=server_api_key(), **options.remote_options())
            return cls(engine, image_fit=options.image_fit)
        if options.model is None:
            raise InputError("no model file given", hint="name the text model's .gguf file")
        if options.engine == "llama-server":
            from .config import server_api_key
            from .engine.llama_server import LlamaServerEngine

            engine = LlamaServerEngine(
                options.model, options.mmproj, api_key=server_api_key(), **options.remote_options()
            )
        else:
            from .engine.llama import LlamaCppEngine

            engine = LlamaCppEngine(options.model, options.mmproj, **options.engine_options())
        return cls(engine, image_fit=options.image_fit)

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

    def settings(self, params: GenerationParams, samples: int, parallel: int | None = None) -> dict[str, Any]:
        """THE ``settings`` object of a judgment with ``params`` and ``samples`` on this judge (the model,
        the image fit, the generation settings and the decoding group size ``parallel``, default the most
        this judge decodes together, its engine's ``max_parallel``; ``settings.settings_object``):
        verdicts (with their own group size) and batch rows carry it."""
        generation = GenerationSettings(
            temperature=params.temperature,
            top_p=params.top_p,
            repeat_penalty=params.repeat_penalty,
            max_tokens=params.max_tokens,
            seed=params.seed,
            samples=samples,
            grammar=params.constrained,
        )
        return settings_object(
            generation,
            model=self.engine.model_name,
            image_fit=self.image_fit,
            engine=self.engine.kind,
            parallel=self.engine.max_parallel if parallel is None else parallel,
        )

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
        """Judge one response to one image; see ``aggregate`` for the sampling policy.

        Several samples are decoded as parallel sequences (not while streaming through ``on_text``, which
        shows one sample after another). ``on_sample(done, total)`` is called as samples finish (after
        each one when streaming, once when they were decoded together)."""
        samples, params = check_run(samples, params)
        task = Task(image, instruction, response, rubric, reference, image_name)
        prepared = self._prepare(task)
        sample_seeds = seeds(params.seed, samples)
        requests = [(prepared.parts, replace(params, seed=seed)) for seed in sample_seeds]
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
        return self._verdict(prepared, gens, sample_seeds, params, samples)

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
        return verdicts_or_first_error(self.evaluate_tasks(tasks, samples=samples, params=params))

    def evaluate_policy(
        self,
        image: ImageInput,
        *,
        policy: Policy | str | Path,
        response: str,
        instruction: str | None = None,
        reference: str | None = None,
        samples: int = 1,
        params: GenerationParams | None = None,
        image_name: str | None = None,
        review_band: Sequence[float] = DEFAULT_REVIEW_BAND,
    ) -> PolicyVerdict:
        """Judge one response against every rule of ``policy`` (a ``Policy``, a built-in name or a policy
        file): one verdict per rule, the rules decoded together as parallel sequences sharing the prompt
        through the reference answer, and the decision they add up to (``policy_judge.evaluate_policy``)."""
        from .policy_judge import evaluate_policy

        return evaluate_policy(
            self, image, policy=policy, response=response, instruction=instruction, reference=reference,
            samples=samples, params=params, image_name=image_name, review_band=review_band,
        )  # fmt: skip

    def evaluate_tasks(
        self, tasks: Sequence[Task], *, samples: int = 1, params: GenerationParams | None = None
    ) -> list[Verdict | EdgeJudgeError]:
        """Judge several tasks (any images, instructions, rubrics) in one go; in order, each a ``Verdict``
        or the ``EdgeJudgeError`` that task got (a bad image, a prompt too long for the context...), so
        one bad task never costs the others. Consecutive tasks on the same image decode in parallel."""
        samples, params = check_run(samples, params)
        results: list[Verdict | EdgeJudgeError | None] = [None] * len(tasks)
        ready: list[tuple[int, _Prepared, list[int]]] = []
        for position, task in enumerate(tasks):
            try:
                ready.append((position, self._prepare(task), seeds(params.seed, samples)))
            except EdgeJudgeError as err:
                results[position] = err
        while ready:
            requests = [
                (prepared.parts, replace(params, seed=seed))
                for _, prepared, task_seeds in ready
                for seed in task_seeds
            ]
            try:
                gens = self._generate_many(requests)
            except ContextOverflowError as err:  # raised before anything ran: drop that task, go again
                at = (err.index or 0) // samples
                position, prepared, _ = ready.pop(at)
                results[position] = self._name_overflow(err, prepared, params.max_tokens)
                continue
            except PromptRefusedError as err:  # the same: the engine cannot send that task's prompt
                position, _, _ = ready.pop((err.index or 0) // samples)
                results[position] = err
                continue
            for k, (position, prepared, task_seeds) in enumerate(ready):
                own = gens[k * samples : (k + 1) * samples]
                results[position] = self._verdict(prepared, own, task_seeds, params, samples)
            break
        return [r for r in results if r is not None]

    def _generate_many(self, requests: list[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        if len(requests) > 1:
            return list(self.engine.generate_many(requests))
        gens = []
        for index, (parts, p) in enumerate(requests):
            try:
                gens.append(self.engine.generate(parts, p))
            except (ContextOverflowError, PromptRefusedError) as err:
                err.index = index
                raise
        return gens

    def _prepare(self, task: Task) -> _Prepared:
        from .prompt import conversation_parts

        check_texts(task.instruction, task.response)
        notes: list[str] = []
        instruction = clean_text("instruction", task.instruction, notes)
        response = clean_text("response", task.response, notes)
        rubric_obj = clean_rubric(self._rubric(task.rubric), notes)
        reference = self._reference(task.reference)
        if reference is not None:
            reference = clean_text("reference answer", reference, notes)
        rubric_text = "\n".join((rubric_obj.criteria, *rubric_obj.descriptions))
        notes += marker_notes(
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
            pixels_sha256=fitted.pixels_sha256,
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

    def _verdict(
        self,
        prepared: _Prepared,
        gens: Sequence[Generation],
        sample_seeds: Sequence[int],
        params: GenerationParams,
        samples: int,
    ) -> Verdict:
        from .parse import parse_output

        results: list[Sample] = []
        for gen, seed in zip(gens, sample_seeds, strict=True):
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
        warnings += [w for w in dict.fromkeys(w for g in gens for w in g.warnings) if w not in warnings]
        prompt_tokens = results[0].timings.prompt_tokens
        if prompt_tokens > TRAINING_CONTEXT:
            warnings.append(
                f"the prompt has {prompt_tokens} tokens, more than the {TRAINING_CONTEXT} the judge was "
                "trained on; verdicts on longer prompts are less reliable"
            )
        return Verdict(
            samples=tuple(results),
            reference=prepared.reference is not None,
            rubric=prepared.rubric.name,
            model=self.engine.model_name,
            image=prepared.image_label,
            image_fit=self.image_fit,
            settings=self.settings(params, samples, max((g.timings.parallel for g in gens), default=1)),
            warnings=tuple(warnings),
            **agg,
        )

    def _name_overflow(
        self, err: ContextOverflowError, prepared: _Prepared, max_tokens: int
    ) -> ContextOverflowError:
        sizes = field_sizes(
            self.engine.count_tokens,
            instruction=prepared.instruction,
            response=prepared.response,
            rubric=prepared.rubric,
            reference=prepared.reference,
        )
        engine = self.engine
        return name_overflow(
            err, sizes=sizes, n_ctx=engine.n_ctx, max_tokens=max_tokens, on_servers=bool(engine.servers)
        )

    # -- lifetime --------------------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.close()
