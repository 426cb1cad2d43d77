"""``FakeEngine``: a scripted engine for plumbing tests and demos of the UI (no model, no native code).

Queued outputs (``enqueue``) are returned in order; when the queue is empty the engine writes a
deterministic, plausible Prometheus-style verdict derived from a hash of the prompt (and of the seed when
sampling at temperature > 0), ending ``[RESULT] N`` with a score distribution peaked at N. Every call is
recorded in ``history``. Text is streamed through ``on_text`` word by word, and a too-small ``max_tokens``
truncates the text (forcing the ``[RESULT]`` tail when ``constrained``), like the real engine.

It implements the whole ``Engine`` Protocol and shares the real engine's checks (``engine.base``): the same
settings and prompts are refused, and the context window is enforced by the same overflow rule; only the
prompt's size is its own (a rough count: one BOS, about a token per 4 characters, the image's positions).
``max_parallel`` is what it declares (default 1); ``generate_many`` still generates one request at a time.
``concurrency`` (default 1) and ``servers`` are what it is told to declare (to drive a batch's threads and
a UI's server lines as a remote engine would); its calls are safe from several threads.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._closing import Closing
from ..errors import EngineError, InputError
from ..settings import check, default
from .base import (
    Generation,
    GenerationParams,
    PromptParts,
    ServerStats,
    StageTimings,
    TokenCallback,
    check_fits,
    check_params,
    check_parts,
)

__all__ = ["FakeEngine", "peaked_distribution"]

_RESULT_AT_END = re.compile(r"\[RESULT\]\s*([1-5])\s*$")
_WORDS = re.compile(r"\S+\s*|\s+")

_OPENINGS = (
    "The response addresses the instruction and refers to what is visible in the image.",
    "The response describes the scene, but some details do not match the picture.",
    "The response answers the question directly and stays close to the visual content.",
    "The response is partly relevant; it misses elements that the image clearly shows.",
    "The response gives a fluent answer, though its grounding in the image is uneven.",
)
_MIDDLES = (
    "Compared with the reference answer, the key objects are named correctly.",
    "Compared with the reference answer, several important details are missing.",
    "Some claims cannot be verified from the image and may be hallucinated.",
    "The explanation is clear and follows the criterion of the rubric closely.",
    "The wording is vague in places, which weakens the assessment against the rubric.",
)


def peaked_distribution(score: int, sharpness: float = 1.6) -> dict[int, float]:
    """A plausible 5-way distribution peaked at ``score``: p_k ∝ exp(-sharpness·|k - score|)."""
    weights = {k: math.exp(-sharpness * abs(k - score)) for k in range(1, 6)}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def _rough_tokens(text: str) -> int:
    """About one token per 4 characters, at least one per word (a cheap stand-in for a tokenizer)."""
    if not text:
        return 0
    return max(len(text.split()), math.ceil(len(text) / 4))


class FakeEngine(Closing):
    """A scripted ``Engine``. See the module docstring."""

    def __init__(
        self,
        outputs: Iterable[str] | None = None,
        *,
        image_size: int = 336,
        image_tokens: int = 576,
        n_ctx: int = default("n_ctx"),
        model_name: str = "fake",
        max_parallel: int = 1,
        concurrency: int = 1,
        servers: Sequence[ServerStats] = (),
    ) -> None:
        check("n_ctx", n_ctx)
        check("max_parallel", max_parallel)
        check("concurrency", concurrency)
        self._queue: deque[tuple[str, dict[int, float] | None]] = deque()
        self.history: list[tuple[PromptParts, GenerationParams]] = []
        # the Engine protocol's read-only properties, as plain attributes
        self.warnings: tuple[str, ...] = ()
        self.model_name = model_name
        self.image_size = image_size
        self.image_tokens = image_tokens
        self.n_ctx = n_ctx
        self._max_parallel = max_parallel
        self.concurrency = concurrency
        #: what ``servers`` reports: set it to show a UI a remote engine's servers
        self.server_stats: tuple[ServerStats, ...] = tuple(servers)
        self.closed = False
        for text in outputs or ():
            self.enqueue(text)

    # -- Engine protocol -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "fake"

    @property
    def servers(self) -> tuple[ServerStats, ...]:
        return self.server_stats

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        """No files: the fake has no model."""
        return None, None

    def count_tokens(self, text: str) -> int:
        return _rough_tokens(text)

    def enqueue(self, text: str, score_probs: dict[int, float] | None = None) -> None:
        """Queue one output. Without ``score_probs``, a text ending ``[RESULT] N`` gets a distribution
        peaked at N and any other text gets None (as a real unconstrained run without a score would)."""
        if score_probs is not None:
            values = list(score_probs.values())
            total = sum(values)
            bad_value = any(not math.isfinite(v) or v < 0 for v in values)
            if set(score_probs) - set(range(1, 6)) or bad_value or not total > 0:
                raise InputError(
                    "score_probs must map scores 1..5 to non-negative weights",
                    hint="pass e.g. {1: 0.1, 2: 0.1, 3: 0.6, 4: 0.1, 5: 0.1}",
                )
            score_probs = {k: score_probs.get(k, 0.0) / total for k in range(1, 6)}
        self._queue.append((text, score_probs))

    def generate(
        self,
        parts: PromptParts,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        self._check_open()
        check_params(params)
        check_parts(parts, self.image_size)
        self.history.append((parts, params))
        prompt_tokens = self.prompt_tokens(parts)
        check_fits(prompt_tokens, params, self.n_ctx)
        if self._queue:
            text, probs = self._queue.popleft()
            if probs is None:
                match = _RESULT_AT_END.search(text)
                probs = peaked_distribution(int(match.group(1))) if match else None
        else:
            text, probs = self._default_output(parts, params)

        forced = False
        words = _WORDS.findall(text)
        if len(words) > params.max_tokens and params.constrained:
            score = max(probs.items(), key=lambda kv: kv[1])[0] if probs else 3
            probs = probs or peaked_distribution(score)
            kept = "".join(words[: max(params.max_tokens - 1, 0)]).rstrip()
            text = f"{kept} [RESULT] {score}"
            words = _WORDS.findall(text)
            forced = True
        elif len(words) > params.max_tokens:
            words = words[: params.max_tokens]
            text = "".join(words)
            probs = None
        if on_text is not None:
            for word in words:
                on_text(word)
        timings = StageTimings(prompt_tokens=prompt_tokens, generated_tokens=len(words))
        return Generation(text=text, score_probs=probs, forced_tail=forced, timings=timings)

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """One ``generate`` per request, in order (the fake has no parallel sequences); an overflowing
        request raises ``ContextOverflowError`` with its ``index`` before any other is generated."""
        self._check_open()
        for parts, params in requests:
            check_params(params)
            check_parts(parts, self.image_size)
        for index, (parts, params) in enumerate(requests):
            check_fits(self.prompt_tokens(parts), params, self.n_ctx, index)
        return [self.generate(parts, params) for parts, params in requests]

    def clear_cache(self) -> None:
        """Nothing to forget: the fake keeps no state between calls but its queue and history."""
        self._check_open()

    def close(self) -> None:
        self.closed = True

    def prompt_tokens(self, parts: PromptParts) -> int:
        """The fake's prompt size: one BOS, the rough count of each text, the image's positions."""
        return 1 + _rough_tokens(parts.before_image) + self.image_tokens + _rough_tokens(parts.after_image)

    # -- internals -------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("the engine is closed", hint="create a new engine")

    def _default_output(self, parts: PromptParts, params: GenerationParams) -> tuple[str, dict[int, float]]:
        digest = hashlib.sha256()
        for piece in (parts.before_image, parts.pixels_sha256, parts.after_image):
            digest.update(piece.encode("utf-8"))
            digest.update(b"\0")
        if params.temperature > 0 and params.seed is not None:
            digest.update(str(params.seed).encode())
        h = digest.digest()
        score = 1 + h[0] % 5
        opening = _OPENINGS[h[1] % len(_OPENINGS)]
        middle = _MIDDLES[h[2] % len(_MIDDLES)]
        text = f"{opening} {middle} So the overall score is {score}.\n[RESULT] {score}"
        return text, peaked_distribution(score, sharpness=1.2 + (h[3] % 8) / 10)
