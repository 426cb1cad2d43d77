"""Sampling pieces of the llama.cpp engine: the sampler chain, token pieces, the 5-way score distribution
read from raw logits at the digit position, and incremental UTF-8 text with streaming.

Sampler chain (as in Hugging Face ``generate``): [repeat penalty when ≠ 1] → [grammar] → temperature →
top-p → draw with the seed; temperature 0 → greedy. No top-k and no min-p (the reference evaluation used
neither).

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
import ctypes

import llama_cpp
import numpy as np
from llama_cpp import _internals

from ..errors import EngineError, InputError
from .base import GenerationParams, TokenCallback
from .grammar import MARKER

#: numpy mirror of ``llama_token_data`` (id int32, logit float, p float)
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])

__all__ = ["Sampler", "Vocab", "TextStream", "validate_params", "softmax_digits"]


def validate_params(params: GenerationParams) -> None:
    if params.max_tokens < 1:
        raise InputError(f"max_tokens must be positive, got {params.max_tokens}", hint="use max_tokens >= 1")
    if params.temperature < 0:
        raise InputError(f"temperature must be >= 0, got {params.temperature}", hint="0 means greedy")
    if not 0 < params.top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {params.top_p}", hint="the reference uses 0.9")


def _chain(n_vocab: int, params: GenerationParams, seed: int | None) -> _internals.LlamaSampler:
    sampler = _internals.LlamaSampler()
    if params.repeat_penalty != 1.0:
        sampler.add_penalties(n_vocab, 64, params.repeat_penalty, 0.0, 0.0)
    if params.temperature <= 0:
        sampler.add_greedy()
    else:
        sampler.add_temp(params.temperature)
        if params.top_p < 1.0:
            sampler.add_top_p(params.top_p, 1)
        sampler.add_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed % 2**32)
    return sampler


class Sampler:
    """The sampler chain plus an optional grammar, applied lazily as llama.cpp's own ``common_sampler``
    does: draw from the chain first and keep the token when the grammar accepts it; otherwise mask every
    candidate with the grammar and draw again. Greedy picks are identical to masking first, and sampled
    tokens keep the masked distribution (accept-or-resample), but the grammar is checked against one token
    instead of the whole vocabulary on almost every step."""

    def __init__(
        self,
        vocab: llama_cpp.llama_vocab_p,
        n_vocab: int,
        params: GenerationParams,
        grammar: str | None,
        seed: int | None,
    ) -> None:
        self.n_vocab = n_vocab
        self._chain = _chain(n_vocab, params, seed)
        self._grammar: llama_cpp.llama_sampler_p | None = None
        if grammar is not None:
            g = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not g:
                self._chain.close()
                raise EngineError("llama.cpp rejected the verdict grammar", hint="report this as a bug")
            self._grammar = g
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._cur = np.zeros(n_vocab, dtype=_TOKEN_DATA)

    def _draw(self, logits: np.ndarray, masked: bool) -> int:
        cur = self._cur
        cur["id"] = self._ids
        cur["logit"] = logits
        cur["p"] = 0.0
        arr = llama_cpp.llama_token_data_array(
            cur.ctypes.data_as(llama_cpp.llama_token_data_p), self.n_vocab, -1, False
        )
        if masked and self._grammar is not None:
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        llama_cpp.llama_sampler_apply(self._chain.sampler, ctypes.byref(arr))
        if not 0 <= arr.selected < arr.size:
            raise EngineError("the sampler selected no token", hint="report this as a bug")
        return int(arr.data[arr.selected].id)

    def sample(self, logits: np.ndarray) -> int:
        """Draw the next token from one position's raw ``logits`` and accept it (grammar and chain)."""
        token = self._draw(logits, masked=False)
        if self._grammar is not None:
            single = llama_cpp.llama_token_data(token, 1.0, 0.0)
            one = llama_cpp.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(one))
            if not np.isfinite(
                single.logit
            ):  # rejected by the grammar: draw again from the masked candidates
                token = self._draw(logits, masked=True)
            llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain.sampler, token)
        return token

    def close(self) -> None:
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
        self._chain.close()


def softmax_digits(logits: np.ndarray, groups: list[list[int]]) -> dict[int, float]:
    """p_d ∝ Σ_{t in groups[d-1]} exp(logits[t]), for d = 1..5 (raw logits; see the module docstring)."""
    logits = logits.astype(np.float64)
    per_digit = np.array([np.logaddexp.reduce(logits[ids]) for ids in groups])
    p = np.exp(per_digit - per_digit.max())
    p /= p.sum()
    return {d + 1: float(p[d]) for d in range(5)}


class Vocab:
    """Token pieces (cached) and the digit token groups, looked up in the model's vocabulary."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int) -> None:
        self.vocab = vocab
        self.n_vocab = n_vocab
        self._pieces: dict[int, bytes] = {}
        self.digits: list[list[int]] = [[] for _ in range(5)]
        self.spaced_digits: list[list[int]] = [[] for _ in range(5)]
        wanted = {str(d).encode(): d for d in range(1, 6)}
        for token in range(n_vocab):
            piece = self.piece(token)
            if piece in wanted:
                self.digits[wanted[piece] - 1].append(token)
            elif len(piece) == 2 and piece[:1] == b" " and piece[1:] in wanted:
                self.spaced_digits[wanted[piece[1:]] - 1].append(token)

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            piece = buf.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def score_groups(self, text: str, piece: bytes) -> list[list[int]] | None:
        """The digit groups to read when ``piece`` is the score digit after ``text``; None otherwise."""
        if len(piece) == 1 and b"1" <= piece <= b"5" and text.endswith(MARKER):
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
