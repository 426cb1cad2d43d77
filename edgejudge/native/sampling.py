"""Native sampling: the model's vocabulary (token pieces, end of generation) and the sampler chain with an
optional GBNF grammar, on llama.cpp's sampler API.

Sampler chain (as in Hugging Face ``generate``): [repeat penalty when ≠ 1] → [grammar] → temperature →
top-p → draw with the seed; temperature 0 → greedy. No top-k and no min-p (the reference evaluation used
neither). Settings cross as plain values; which grammar and why is the engine's business.

Invariants it owns: a ``Sampler`` writes llama.cpp's candidate array into a buffer of exactly ``n_vocab``
entries it allocated itself, checks the selected index before reading it, and frees its grammar and chain
once (``close``).
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
from llama_cpp import _internals

from .._closing import Closing
from ..errors import EngineError

__all__ = ["Sampler", "Vocab"]

#: numpy mirror of ``llama_token_data`` (id int32, logit float, p float)
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Vocab:
    """A model's vocabulary: token pieces (cached bytes), end-of-generation, BOS and EOS tokens. Lives as
    long as the model that owns it (``TextModel.vocab``)."""

    def __init__(self, ptr: llama_cpp.llama_vocab_p, n_vocab: int) -> None:
        self.ptr = ptr
        self.n_vocab = n_vocab
        self._pieces: dict[int, bytes] = {}

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` renders as (no special-token rendering, no leading-space stripping)."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, False)
            piece = buf.raw[: max(n, 0)]
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.ptr, token))

    @property
    def bos(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self.ptr))

    @property
    def eos(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self.ptr))


def _chain(
    n_vocab: int, temperature: float, top_p: float, repeat_penalty: float, seed: int | None
) -> _internals.LlamaSampler:
    sampler = _internals.LlamaSampler()
    if repeat_penalty != 1.0:
        sampler.add_penalties(n_vocab, 64, repeat_penalty, 0.0, 0.0)
    if temperature <= 0:
        sampler.add_greedy()
    else:
        sampler.add_temp(temperature)
        if top_p < 1.0:
            sampler.add_top_p(top_p, 1)
        sampler.add_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed % 2**32)
    return sampler


class Sampler(Closing):
    """The sampler chain plus an optional grammar, applied lazily as llama.cpp's own ``common_sampler``
    does: draw from the chain first and keep the token when the grammar accepts it; otherwise mask every
    candidate with the grammar and draw again. Greedy picks are identical to masking first, and sampled
    tokens keep the masked distribution (accept-or-resample), but the grammar is checked against one token
    instead of the whole vocabulary on almost every step."""

    def __init__(
        self,
        vocab: Vocab,
        *,
        temperature: float,
        top_p: float,
        repeat_penalty: float,
        grammar: str | None,
        seed: int | None,
    ) -> None:
        self.n_vocab = vocab.n_vocab
        self._chain = _chain(vocab.n_vocab, temperature, top_p, repeat_penalty, seed)
        self._grammar: llama_cpp.llama_sampler_p | None = None
        if grammar is not None:
            g = llama_cpp.llama_sampler_init_grammar(vocab.ptr, grammar.encode("utf-8"), b"root")
            if not g:
                self._chain.close()
                raise EngineError("llama.cpp rejected the verdict grammar", hint="report this as a bug")
            self._grammar = g
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._cur = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)

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
            if not np.isfinite(single.logit):  # rejected by the grammar: draw again from the masked ones
                token = self._draw(logits, masked=True)
            llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain.sampler, token)
        return token

    def close(self) -> None:
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None
        self._chain.close()
