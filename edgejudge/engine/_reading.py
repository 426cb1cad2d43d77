"""Reading a generation, one rule for every engine (pure: no native runtime, so the remote engines share it):
the score digits and the generated text.

- ``DigitTokens(vocab)``: the tokens whose piece is exactly ``"d"`` (``digits[d-1]``) or ``" d"``
  (``spaced_digits[d-1]``) for d = 1..5, every variant (e.g. the ``"4"`` piece and the ``<0x34>``
  byte-fallback token); ``vocab`` is anything with ``n_vocab`` and ``piece(token) -> bytes``.
- ``score_groups(text, piece, digits, spaced)``: the group read when ``piece`` is drawn after ``text``: the
  bare digits after ``"[RESULT] "``, the spaced ones after ``"[RESULT]"``; None anywhere else (and when a
  digit has no token at all).
- ``softmax_digits(values, groups)``: p_d ∝ Σ_{t in groups[d-1]} exp(values[t]), renormalised over d (raw
  logits or log-probabilities by token id: an array, or a mapping where a missing id counts as impossible).
  The semantics are in ``engine._decoding``'s docstring.
- ``TextStream``: generated text as the engines build it, ``raw`` (incremental UTF-8, a character split over
  tokens added when complete, bad bytes replaced) and ``text`` without the leading whitespace; ``add``
  returns what it added to ``text`` and streams it to ``on_text``.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from . import grammar as gbnf

__all__ = ["DigitTokens", "score_groups", "softmax_digits", "TextStream"]

Groups = Sequence[Sequence[int]]


class _Vocab(Protocol):
    @property
    def n_vocab(self) -> int: ...

    def piece(self, token: int) -> bytes: ...


V = TypeVar("V", bound=_Vocab)


def score_groups(text: str, piece: bytes, digits: Groups, spaced: Groups) -> Groups | None:
    """The digit groups to read when ``piece`` is the score digit after ``text``; None otherwise."""
    if len(piece) == 1 and b"1" <= piece <= b"5" and text.endswith(gbnf.MARKER):
        groups = digits
    elif len(piece) == 2 and piece[:1] == b" " and b"1" <= piece[1:] <= b"5" and text.endswith("[RESULT]"):
        groups = spaced
    else:
        return None
    return groups if all(groups) else None


def softmax_digits(values: Any, groups: Groups) -> dict[int, float]:
    """p_d ∝ Σ_{t in groups[d-1]} exp(values[t]), for d = 1..5 (see the module docstring). ValueError when
    no digit token has a value (nothing to read)."""
    get = values.get if hasattr(values, "get") else None
    per_digit = []
    for ids in groups:
        logs = [float(get(t, -math.inf) if get is not None else values[t]) for t in ids]
        top = max(logs, default=-math.inf)
        per_digit.append(top + math.log(sum(math.exp(v - top) for v in logs)) if top > -math.inf else top)
    best = max(per_digit)
    if best == -math.inf:
        raise ValueError("no digit token has a value")
    weights = [math.exp(v - best) for v in per_digit]
    total = sum(weights)
    return {d + 1: w / total for d, w in enumerate(weights)}


class DigitTokens(Generic[V]):
    """The score digits' token groups in a vocabulary (the module docstring)."""

    def __init__(self, vocab: V) -> None:
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
        groups = score_groups(text, piece, self.digits, self.spaced_digits)
        return None if groups is None else [list(g) for g in groups]


class TextStream:
    """Generated text (the module docstring)."""

    def __init__(self, on_text: Callable[[str], None] | None = None) -> None:
        self.raw = ""
        self.text = ""
        self._on_text = on_text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, data: bytes, *, final: bool = False) -> str:
        piece = self._decoder.decode(data, final=final)
        if not piece:
            return ""
        self.raw += piece
        if not self.text:
            piece = piece.lstrip()
            if not piece:
                return ""
        self.text += piece
        if self._on_text is not None:
            self._on_text(piece)
        return piece
