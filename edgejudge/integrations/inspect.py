"""The Inspect AI scorer ``prometheus_vision``: the sample's image judged by edgejudge, and its metrics.

::

    from inspect_ai import Task
    from edgejudge.integrations.inspect import prometheus_vision

    Task(dataset=..., solver=..., scorer=prometheus_vision(rubric="vqa-helpfulness", model="NAME"))
    # or through a shared judge: prometheus_vision(server="http://127.0.0.1:8765")

What the judge is given, from each sample:

- the image: the first ``ContentImage`` of the sample's input user messages (Inspect itself turns a
  sample's file paths and web images into data URLs before the solver runs; a file path reaching the
  scorer is read, an ``http(s)`` URL is not fetched). A sample with several images is judged with the
  first (the judge sees one image), with a warning in the score's metadata and the log;
- the instruction: the text of the sample's input user messages, joined by blank lines;
- the response: the model's output, ``state.output.completion``;
- the reference answer: the target (its first text; none when blank). A target that is only a score,
  ``1`` … ``5``, is the sample's gold score instead (no reference); so is ``metadata["gold_score"]``.

The ``Score``: ``value`` the judge's score (1..5), ``answer`` the response, ``explanation`` the judge's
feedback, ``metadata`` the score distribution (``score_probs``), ``expected_score``, the verdict's
``settings`` and ``warnings``, the rubric, the model, the image's label and the gold score (None without
one). A sample without an image, or whose judgment failed (a blank response, a bad image, a prompt too
long, a server that cannot be reached) is *unscored*: ``value`` NaN, what ``Score.unscored`` makes
(Inspect's reducers and metrics skip it and count it as unscored), the error as ``explanation``, and
``reason`` ``no_image``, ``grader_failed``, or ``invalid_response_format`` for a judge text without a
score. Never a crash.

Metrics (over the samples that have a judge score; Inspect reduces the epochs of a sample first, skipping
unscored ones):

- ``mean_score``: the mean judge score;
- ``agreement``: among those with a gold score, the share whose judge score (rounded) equals it;
- ``pearson``: Pearson's r between judge scores and gold scores (at least two pairs, neither constant).
Each is NaN when no sample qualifies.

Judging runs in-process (``model``: a registered name, a text ``.gguf`` path, or None for the default
model; one ``Judge`` loaded on first use per scorer, reused and closed with it, one judgment at a time)
or through ``edgejudge serve`` (``server``: its URL; ``api_key`` or ``EDGEJUDGE_SERVE_API_KEY``, never
written into the eval log; judgments sent concurrently, which the server coalesces: a verdict then
depends on which samples were in flight with it, greedy score probabilities by thousandths, see
``settings.parallel`` in the metadata; for bitwise-reproducible scores across runs run the server with
``edgejudge serve --no-coalesce``, or the scorer in-process). ``settings``:
generation settings by name (``temperature``, ``max_tokens``, ``seed``, ``samples``...; the rest are the
library defaults, in both modes, so both judge alike) and, in-process, load settings (``mmproj``,
``n_ctx``, ``n_threads``, ``image_fit``...).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import logging
import math
import re
import threading
import weakref
from dataclasses import fields
from typing import Any

import anyio
from inspect_ai.model import ChatMessageUser, ContentImage, ContentText
from inspect_ai.scorer import Metric, SampleScore, Score, Scorer, Target, metric, scorer
from inspect_ai.solver import TaskState

from ..errors import EdgeJudgeError, InputError, InvalidImageError
from ..settings import GENERATION, check, default

__all__ = ["prometheus_vision", "mean_score", "agreement", "pearson", "GOLD_KEY"]

#: The sample metadata key (and the score metadata key) of a gold score 1..5.
GOLD_KEY = "gold_score"
_log = logging.getLogger(__name__)
_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)
_GENERATION_NAMES = tuple(s.name for s in GENERATION)
_SCORES = ("1", "2", "3", "4", "5")


# -- metrics -----------------------------------------------------------------------------------------------
def _judged(sample: SampleScore) -> float | None:
    value = sample.score.value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _gold(sample: SampleScore) -> int | None:
    gold = (sample.score.metadata or {}).get(GOLD_KEY)
    return gold if isinstance(gold, int) and not isinstance(gold, bool) else None


def _pairs(scores: list[SampleScore]) -> list[tuple[float, int]]:
    pairs = [(_judged(s), _gold(s)) for s in scores]
    return [(j, g) for j, g in pairs if j is not None and g is not None]


@metric
def mean_score() -> Metric:
    """The mean judge score over the samples that have one (NaN when none has)."""

    def compute(scores: list[SampleScore]) -> float:
        values = [v for v in map(_judged, scores) if v is not None]
        return sum(values) / len(values) if values else math.nan

    return compute


@metric
def agreement() -> Metric:
    """Among the judged samples with a gold score, the share whose judge score (rounded) equals it."""

    def compute(scores: list[SampleScore]) -> float:
        pairs = _pairs(scores)
        return sum(round(j) == g for j, g in pairs) / len(pairs) if pairs else math.nan

    return compute


@metric
def pearson() -> Metric:
    """Pearson's r between judge scores and gold scores (NaN under two pairs or for a constant side)."""

    def compute(scores: list[SampleScore]) -> float:
        pairs = _pairs(scores)
        if len(pairs) < 2:
            return math.nan
        xs, ys = [p[0] for p in pairs], [float(p[1]) for p in pairs]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
        return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan

    return compute


# -- what the judge is given -------------------------------------------------------------------------------
def sample_inputs(state: TaskState) -> tuple[list[str], str]:
    """(the images, the instruction) of the sample's input: its user messages' images and texts."""
    messages = state.input if isinstance(state.input, list) else []
    if not messages:
        return [], state.input_text
    images: list[str] = []
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, ChatMessageUser):
            continue
        if isinstance(message.content, str):
            texts.append(message.content)
            continue
        for part in message.content:
            if isinstance(part, ContentImage):
                images.append(part.image)
            elif isinstance(part, ContentText):
                texts.append(part.text)
    return images, "\n\n".join(t for t in texts if t.strip())


def image_source(value: str) -> str | bytes:
    """What the judge takes for an Inspect image: a data URL's bytes, else the file path
    (``InvalidImageError`` for an ``http(s)`` URL, which is not fetched, or a data URL not in base64)."""
    text = value.strip()
    match = _DATA_URL.match(text)
    if match:
        try:
            return base64.b64decode("".join(text[match.end() :].split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImageError("the sample's image is a data URL that is not valid base64") from None
    if text[:5].lower() == "data:":
        raise InvalidImageError("the sample's image is a data URL without base64 data", hint="use ;base64,")
    if text.lower().startswith(("http://", "https://")):
        raise InvalidImageError(
            f"the sample's image is a web address, which is not fetched: {text[:120]}",
            hint="give the image as a file path or a data URL",
        )
    return text.removeprefix("file://")


def reference_and_gold(state: TaskState, target: Target) -> tuple[str | None, int | None]:
    """(the reference answer, the gold score): see the module docstring."""
    first = target[0].strip() if len(target) else ""
    gold = state.metadata.get(GOLD_KEY) if isinstance(state.metadata, dict) else None
    if re.fullmatch(r"[1-5]", first):
        return None, int(first) if gold is None else _gold_value(gold)
    return (first or None), _gold_value(gold)


def _gold_value(gold: Any) -> int | None:
    if gold is None:
        return None
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    if isinstance(gold, bool) or not isinstance(gold, (int, str)) or str(gold).strip() not in _SCORES:
        raise InputError(f"{GOLD_KEY} must be a score from 1 to 5, got {gold!r}", about=GOLD_KEY)
    return int(str(gold).strip())


# -- judging -----------------------------------------------------------------------------------------------
class _Judging:
    """One scorer's judge: the settings checked at once, the judge (a ``Judge`` or a ``Client``) made on
    first use and kept."""

    def __init__(
        self,
        rubric: Any,
        model: str | None,
        server: str | None,
        api_key: str | None,
        settings: dict[str, Any],
    ) -> None:
        from ..engine.base import GenerationParams
        from ..load_options import LoadOptions

        if model is not None and server is not None:
            raise InputError("give model or server, not both", hint="server judges with the server's model")
        load_names = {f.name for f in fields(LoadOptions)} - {"model"}
        generation = {k: check(k, v) for k, v in settings.items() if k in _GENERATION_NAMES}
        load = {k: v for k, v in settings.items() if k in load_names}
        unknown = sorted(set(settings) - set(generation) - set(load))
        if unknown:
            raise InputError(
                f"unknown setting '{unknown[0]}'",
                hint=f"generation settings: {', '.join(_GENERATION_NAMES)}; "
                f"load settings: {', '.join(sorted(load_names))}",
            )
        if load and server is not None:
            raise InputError(
                f"the load setting '{next(iter(load))}' does not apply to a server",
                hint="set it on the server",
            )
        self.samples = int(generation.pop("samples", default("samples")))
        grammar = generation.pop("grammar", default("grammar"))
        self.params = GenerationParams(**generation, constrained=grammar)
        self.rubric = rubric
        self.options = None if server is not None else LoadOptions(model=model, **load)
        self.server, self.api_key = server, api_key
        self._judge: Any = None
        self._failed: EdgeJudgeError | None = None
        self._open_lock = threading.Lock()
        self._run_lock = threading.Lock() if server is None else None

    def judge(self) -> Any:
        with self._open_lock:
            if self._failed is not None:
                raise self._failed
            if self._judge is None:
                try:
                    if self.options is None:
                        from ..client import Client

                        self._judge = Client(str(self.server), self.api_key)
                    else:
                        from ..load import load_judge

                        self._judge = load_judge(self.options)
                    weakref.finalize(self, self._judge.close)  # the judge lives as long as its scorer
                except EdgeJudgeError as err:
                    self._failed = err  # a judge that cannot load fails every sample the same way
                    raise
            return self._judge

    def evaluate(self, image: str | bytes, instruction: str, response: str, reference: str | None) -> Any:
        judge = self.judge()
        kwargs = dict(instruction=instruction, response=response, rubric=self.rubric, reference=reference)
        if self._run_lock is None:
            return judge.evaluate(image, samples=self.samples, params=self.params, **kwargs)
        with self._run_lock:  # one judgment at a time on the in-process judge
            return judge.evaluate(image, samples=self.samples, params=self.params, **kwargs)

    async def score(self, state: TaskState, target: Target) -> Score:
        response = state.output.completion if state.output is not None else ""
        gold: int | None = None
        try:
            reference, gold = reference_and_gold(state, target)
            images, instruction = sample_inputs(state)
            if not images:
                return _unscored(response, gold, "no_image", "not judged: the sample's input has no image")
            notes: list[str] = []
            if len(images) > 1:
                notes.append(
                    f"the sample has {len(images)} images; the judge sees one: judged with the first"
                )
                _log.warning("sample %s: %s", state.sample_id, notes[-1])
            image = image_source(images[0])
            verdict = await anyio.to_thread.run_sync(self.evaluate, image, instruction, response, reference)
        except EdgeJudgeError as err:
            hint = f" ({err.hint})" if err.hint else ""
            return _unscored(
                response, gold, "grader_failed", f"not judged: {err}{hint}", error=type(err).__name__
            )
        metadata = {
            "score_probs": None
            if verdict.score_probs is None
            else {str(k): v for k, v in sorted(verdict.score_probs.items())},
            "expected_score": verdict.expected_score,
            "settings": verdict.settings,
            "warnings": [*notes, *verdict.warnings],
            "rubric": verdict.rubric,
            "model": verdict.model,
            "image": verdict.image,
            GOLD_KEY: gold,
        }
        if verdict.score is None:
            return Score(
                value=math.nan,  # unscored
                answer=response,
                explanation=f"the judge's text has no score ({verdict.parse_method}): {verdict.raw_output}",
                reason="invalid_response_format",
                metadata=metadata,
            )
        return Score(value=verdict.score, answer=response, explanation=verdict.feedback, metadata=metadata)


def _unscored(
    response: str, gold: int | None, reason: str, explanation: str, error: str | None = None
) -> Score:
    metadata: dict[str, Any] = {GOLD_KEY: gold}
    if error is not None:
        metadata["error"] = error
    return Score(value=math.nan, answer=response, explanation=explanation, reason=reason, metadata=metadata)


#: The judge ``prometheus_vision`` made, handed to the registered scorer factory below (which Inspect calls
#: and whose arguments it writes into the eval log: the API key never reaches it).
_MADE: contextvars.ContextVar[_Judging | None] = contextvars.ContextVar(
    "edgejudge_inspect_judging", default=None
)


def prometheus_vision(
    rubric: str = "vqa-helpfulness",
    model: str | None = None,
    server: str | None = None,
    api_key: str | None = None,
    **settings: Any,
) -> Scorer:
    """Score each sample's output with the Prometheus-Vision judge (see the module docstring): ``rubric`` a
    built-in name or a rubric file; ``model`` (in-process) or ``server`` (``edgejudge serve``'s URL) with
    ``api_key`` (default ``EDGEJUDGE_SERVE_API_KEY``; never written into the eval log, which records the
    other arguments); ``settings`` generation settings by name (and, in-process, load settings)."""
    token = _MADE.set(_Judging(rubric, model, server, api_key, dict(settings)))
    try:
        return _prometheus_vision(rubric=rubric, model=model, server=server, **settings)
    finally:
        _MADE.reset(token)


@scorer(metrics=[mean_score(), agreement(), pearson()], name="prometheus_vision")
def _prometheus_vision(
    rubric: str = "vqa-helpfulness", model: str | None = None, server: str | None = None, **settings: Any
) -> Scorer:
    """The registered scorer (Inspect records these arguments; called again from a log, e.g. by ``inspect
    score``, it judges with the key in ``EDGEJUDGE_SERVE_API_KEY``)."""
    judging = _MADE.get() or _Judging(rubric, model, server, None, dict(settings))

    async def score(state: TaskState, target: Target) -> Score:
        return await judging.score(state, target)

    return score
