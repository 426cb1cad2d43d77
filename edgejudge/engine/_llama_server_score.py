"""Reading a llama-server generation the way the local engine reads its own: the text, the score position
and the 5-way score distribution (``engine._decoding``'s semantics).

``Track`` consumes generated token ids in order (a stream or a whole answer): it builds the text with the
local engine's decoder, streams it, stops at end-of-generation, and records where the score digit was
chosen (constrained: the first digit after ``[RESULT]``, after which nothing is read; unconstrained: the
last one), with the digit groups the local rule picks there.

The distribution is p_d ∝ Σ exp(raw logit) over the tokens of digit d's group, renormalised over d = 1..5.
Two exact ways to get it from the server:

- ``from_top``: the raw top-N log-probabilities the server reports at that position (``n_probs``, taken
  before the grammar and every sampler). Ratios of listed tokens are exact; a group token that is not
  listed has at most the smallest listed probability, so the distribution is accepted only when the
  unlisted tokens can hold at most ``EPS`` of the digits' mass (a trained judge: nearly always);
- ``from_post``: the post-sampling probabilities of a follow-up request that regenerates the same tokens
  (``_llama_server_wire.forced``), allows only the group's tokens at the score position, adds the same
  ``BIAS`` to each of them and samples at temperature 1 with nothing else: the probabilities the server
  reports for them are then proportional to exp(raw logit + BIAS), i.e. to exp(raw logit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ._llama_server_vocab import TextDecoder, TextVocab

__all__ = ["Track", "from_top", "from_post", "EPS", "BIAS"]

#: The most digit mass the unlisted group tokens may hold for a top-N distribution to be accepted.
EPS = 1e-6
#: The logit bias that lifts the digit tokens above every other token in the follow-up request.
BIAS = 32.0


class Track:
    """The state of one generation read from the server (module docstring). ``tokens`` are the ids read
    (end-of-generation excluded), ``unknown`` how many more were generated unnamed (``add_unknown``),
    ``hit`` the (index in ``tokens``, digit groups) of the score position."""

    def __init__(self, vocab: TextVocab, constrained: bool, on_text: Callable[[str], None] | None) -> None:
        self.vocab = vocab
        self.constrained = constrained
        self.on_text = on_text
        self.decoder = TextDecoder()
        self.tokens: list[int] = []
        self.hit: tuple[int, list[list[int]]] | None = None
        self.stopped = False
        self.unknown = 0

    def feed(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            if self.stopped:
                return
            if token in self.vocab.eog:
                self.stopped = True
                return
            piece = self.vocab.piece(token)
            groups = self.vocab.score_groups(self.decoder.raw, piece)
            if groups is not None:
                self.hit = (len(self.tokens), groups)
            self.tokens.append(token)
            self._emit(self.decoder.add(piece))
            if groups is not None and self.constrained:
                self.stopped = True

    def add_unknown(self, count: int) -> None:
        """``count`` tokens the server generated without naming them: a character left open at the end (its
        bytes are unknown; the decoder shows it as U+FFFD like the local engine once text follows)."""
        if count > 0 and not self.stopped:
            self.unknown += count
            self.decoder.add(b"\xf0")  # any start of a 4-byte character: decoded the same way

    def resume(self) -> None:
        """Read on after an end (the forced tail continues the same text)."""
        self.stopped = False

    def finish(self) -> str:
        """Flush the decoder (a character left incomplete becomes U+FFFD); the final text."""
        self._emit(self.decoder.add(b"", final=True))
        return self.decoder.text

    def _emit(self, text: str) -> None:
        if text and self.on_text is not None:
            self.on_text(text)


def _normalise(mass: list[float]) -> dict[int, float] | None:
    total = sum(mass)
    if not total > 0 or not math.isfinite(total):
        return None
    return {d + 1: m / total for d, m in enumerate(mass)}


def from_top(
    top: dict[int, float], groups: list[list[int]], listed_max: int, *, eps: float = EPS
) -> dict[int, float] | None:
    """The distribution from raw top-N log-probabilities ``top`` (id → logprob) when the unlisted group
    tokens can hold at most ``eps`` of the digits' mass, else None. ``listed_max`` is the N asked for: a
    shorter list lists the whole vocabulary."""
    if not top:
        return None
    mass = [sum(math.exp(top[t]) for t in ids if t in top) for ids in groups]
    missing = sum(1 for ids in groups for t in ids if t not in top)
    if missing and len(top) >= listed_max and math.isfinite(eps):
        bound = missing * math.exp(min(top.values()))
        if bound > eps * sum(mass):
            return None
    return _normalise(mass)


def from_post(top: dict[int, float], groups: list[list[int]]) -> dict[int, float] | None:
    """The distribution from post-sampling probabilities ``top`` (id → p) of the follow-up request; None
    when no group token is listed."""
    return _normalise([sum(top.get(t, 0.0) for t in ids) for ids in groups])
