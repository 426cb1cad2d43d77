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

import codecs
from dataclasses import dataclass

import numpy as np

from ..native.sampling import Sampler, Vocab
from . import grammar as gbnf
from .base import TAIL_RESERVE, Generation, GenerationParams, StageTimings, TokenCallback

__all__ = ["Decoding", "DigitTokens", "PromptStats", "TextStream", "softmax_digits"]


@dataclass(frozen=True)
class PromptStats:
    """How one prompt was evaluated: encoder and prompt seconds, reused positions, image from the cache."""

    encode_s: float
    prompt_s: float
    reused: int
    cached: bool


def softmax_digits(logits: np.ndarray, groups: list[list[int]]) -> dict[int, float]:
    """p_d ∝ Σ_{t in groups[d-1]} exp(logits[t]), for d = 1..5 (raw logits; see the module docstring)."""
    logits = logits.astype(np.float64)
    per_digit = np.array([np.logaddexp.reduce(logits[ids]) for ids in groups])
    p = np.exp(per_digit - per_digit.max())
    p /= p.sum()
    return {d + 1: float(p[d]) for d in range(5)}


class DigitTokens:
    """The score digits' token groups in a vocabulary: ``digits[d-1]`` renders ``"d"``, ``spaced_digits[d-1]``
    renders ``" d"`` (several tokens may render the same digit, e.g. byte fallback)."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.digits: list[list[int]] = [[] for _ in range(5)]
        self.spaced_digits: list[list[int]] = [[] for _ in range(5)]
        wanted = {str(d).encode(): d for d in range(1, 6)}
        for token in range(vocab.n_vocab):
            piece = vocab.piece(token)
            if piece in wanted:
                self.digits[wanted[piece] - 1].append(token)
            elif len(piece) == 2 and piece[:1] == b" " and piece[1:] in wanted:
                self.spaced_digits[wanted[piece[1:]] - 1].append(token)

    def score_groups(self, text: str, piece: bytes) -> list[list[int]] | None:
        """The digit groups to read when ``piece`` is the score digit after ``text``; None otherwise."""
        if len(piece) == 1 and b"1" <= piece <= b"5" and text.endswith(gbnf.MARKER):
            groups = self.digits
        elif (
            len(piece) == 2 and piece[:1] == b" " and b"1" <= piece[1:] <= b"5" and text.endswith("[RESULT]")
        ):
            groups = self.spaced_digits
        else:
            return None
        return groups if all(groups) else None


class TextStream:
    """Generated text: ``raw`` as decoded (incremental UTF-8, never splitting a character) and ``text``
    without the leading whitespace, streamed piece by piece to ``on_text``."""

    def __init__(self, on_text: TokenCallback | None) -> None:
        self.raw = ""
        self.text = ""
        self._on_text = on_text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, data: bytes, *, final: bool = False) -> None:
        piece = self._decoder.decode(data, final=final)
        if not piece:
            return
        self.raw += piece
        if not self.text:
            piece = piece.lstrip()
            if not piece:
                return
        self.text += piece
        if self._on_text is not None:
            self._on_text(piece)


class Decoding:
    """One sequence's generation: sampler, grammar phases, forced tail, digit distribution and text.

    ``step(logits)`` takes the raw logits at the sequence's current position and returns the next token
    to evaluate (at position ``pos - 1``), or None when the generation is over. The one-sequence and the
    parallel paths drive the same state machine, so they make the same decisions.
    """

    def __init__(
        self,
        tokens: DigitTokens,
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
