"""Decoding one sequence of the llama.cpp engine: the grammar phases and forced tail (``Decoding``), the
5-way score distribution read from raw logits at the digit position, and incremental UTF-8 text with
streaming. The native pieces (vocabulary, sampler chain, grammar sampler) are ``edgejudge.native.sampling``.

``score_probs`` semantics. At the position where the digit is drawn, p_d ∝ Σ exp(logit) over the tokens
whose piece is exactly the digit d (bare ``"d"`` after ``"[RESULT] "``, or ``" d"`` after ``"[RESULT]"``;
every variant, e.g. the ``"4"`` piece and the ``<0x34>`` byte-fallback token), renormalised over d = 1..5,
from the raw logits: softmax at temperature 1, before repetition penalty, temperature and top-p. It is
always a proper distribution (five keys, non-negative, summing to 1; a digit is 0 only when its logit is
~700 nats below the best) and it is the model's own belief, independent of the sampling settings:

- the grammar allows only digit tokens there, so it masks nothing that p_d counts: a draw at temperature 1
  without top-p is a draw from ``score_probs`` (per token; the digit's share is p_d);
- temperature, top-p and repetition penalty reshape the draw but not ``score_probs``, so a sampled digit
  can be one with a small p_d (it is never one with p_d = 0);
- greedy picks the single highest-logit digit token: that is argmax p_d, except when a digit's mass is
  split over several tokens (byte fallback) and another digit's single token is higher;
- ``expected_score`` = Σ d·p_d is computed from this distribution, not from the chosen digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..native.sampling import Sampler, Vocab
from . import grammar as gbnf
from ._reading import DigitTokens, TextStream, softmax_digits
from .base import TAIL_RESERVE, Generation, GenerationParams, StageTimings, TokenCallback

__all__ = ["Decoding", "DigitTokens", "PromptStats", "TextStream", "softmax_digits"]


@dataclass(frozen=True)
class PromptStats:
    """How one prompt was evaluated: encoder and prompt seconds, reused positions, image from the cache."""

    encode_s: float
    prompt_s: float
    reused: int
    cached: bool


class Decoding:
    """One sequence's generation: sampler, grammar phases, forced tail, digit distribution and text.

    ``step(logits)`` takes the raw logits at the sequence's current position and returns the next token
    to evaluate (at position ``pos - 1``), or None when the generation is over. The one-sequence and the
    parallel paths drive the same state machine, so they make the same decisions.
    """

    def __init__(
        self,
        tokens: DigitTokens[Vocab],
        n_ctx: int,
        params: GenerationParams,
        seed: int | None,
        n_prompt: int,
        on_text: TokenCallback | None,
    ) -> None:
        self.tokens = tokens
        self.vocab = tokens.vocab
        self.params = params
        self.n_ctx = n_ctx
        self.seed = seed
        self.stream = TextStream(on_text)
        self.probs: dict[int, float] | None = None
        self.forced = False
        self.n_gen = 0
        self.n_prompt = n_prompt
        self.pos = n_prompt  # the next position to fill
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self.n_ctx - n_prompt - TAIL_RESERVE)
        self.remaining = max(budget, 0)
        self.sampler: Sampler | None = self._sampler(gbnf.VERDICT_GRAMMAR if params.constrained else None)
        self.done = False

    def _sampler(self, grammar: str | None) -> Sampler:
        p = self.params
        return Sampler(
            self.vocab,
            temperature=p.temperature,
            top_p=p.top_p,
            repeat_penalty=p.repeat_penalty,
            grammar=grammar,
            seed=self.seed,
        )

    def step(self, logits: np.ndarray) -> int | None:
        while not self.done:
            assert self.sampler is not None
            if self.remaining > 0:
                self.remaining -= 1
                token = self.sampler.sample(logits)
                if not self.vocab.is_eog(token):
                    piece = self.vocab.piece(token)
                    groups = self.tokens.score_groups(self.stream.raw, piece)
                    if groups is not None:
                        self.probs = softmax_digits(logits, groups)
                    self.stream.add(piece)
                    self.n_gen += 1
                    scored = self.probs is not None and self.params.constrained
                    if not scored and self.pos < self.n_ctx:
                        self.pos += 1
                        return token
            # this phase is over: end of text, the score was read, the context is full or the budget is spent
            self.sampler.close()
            self.sampler = None
            if not self.params.constrained or self.probs is not None or self.forced:
                self.done = True
                break
            # max_tokens ran out before the score: force the tail, still read the digit
            self.forced = True
            self.remaining = TAIL_RESERVE
            self.sampler = self._sampler(gbnf.tail_grammar(self.stream.raw))
        return None

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    def result(self, stats: PromptStats, generation_s: float, *, parallel: int = 1) -> Generation:
        self.stream.add(b"", final=True)
        timings = StageTimings(
            image_encode_s=stats.encode_s,
            prompt_eval_s=stats.prompt_s,
            generation_s=generation_s,
            prompt_tokens=self.n_prompt,
            reused_tokens=stats.reused,
            generated_tokens=self.n_gen,
            image_cached=stats.cached,
            parallel=parallel,
        )
        return Generation(
            text=self.stream.text, score_probs=self.probs, forced_tail=self.forced, timings=timings
        )
