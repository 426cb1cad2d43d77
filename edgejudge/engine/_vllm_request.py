"""What ``VllmEngine`` sends to a vLLM server and reads back, in plain values (no I/O here).

- the image: the fitted RGB pixels as a PNG ``data:`` URL (``images.png_bytes``: lossless, no resampling: the
  server's processor sees the pixels the judge fitted, at the tower's size);
- the constraint: ``grammar.VERDICT_REGEX`` (the verdict grammar as the regex vLLM's
  ``structured_outputs.regex`` takes) and ``grammar.tail_regex`` (the forced tail), kept beside the GBNF;
- the request body (``chat_body``): the prompt as ONE user message holding the image part and the text
  with the literal image token, sent with ``add_generation_prompt`` off (the served chat template renders
  BOS + the text, nothing else), every sampling setting explicit (so a model's generation defaults never
  apply: no top-k, no min-p), ``logprobs`` with ``logprob_token_ids`` = the digit tokens, and the tokens
  named by id (``return_tokens_as_token_ids``), the tokens the local model does not have (``<image>``,
  ``<pad>``) banned by ``logit_bias``; always streamed, with usage in the last event;
- the answer (``Reply``): the streamed events folded into the text (the server's own detokenization),
  each generated token (id, bytes, the listed ids' logprobs), the finish reason, usage and timings;
  ``ShownText``: what a caller's ``on_text`` sees of one generation over its tries (a try on another
  server after a stream broke shows only the text beyond what was shown);
- the score (``DigitIds.score_probs``): the digit distribution at the score position, with the semantics
  of ``engine._decoding`` (p_d ∝ Σ exp(logprob) over the tokens whose piece is exactly ``d`` after
  ``"[RESULT] "``, or ``" d"`` after ``"[RESULT]"``, byte-fallback tokens included, renormalised over
  d = 1..5). vLLM's logprobs are the raw ones (``logprobs_mode`` raw_logprobs: before temperature, top-p and
  penalties), masked by the constraint; at the score position the constraint allows every digit token, so
  the renormalised distribution equals the softmax of the raw logits over the digit tokens.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineError
from ._reading import score_groups, softmax_digits
from .base import GenerationParams, PromptParts

__all__ = ["DigitIds", "Reply", "ShownText", "Token", "chat_body", "image_url"]


def image_url(parts: PromptParts) -> str:
    """The prompt's fitted pixels as a ``data:image/png;base64,...`` URL."""
    from ..images import png_bytes

    png = png_bytes(parts.image_rgb, parts.image_width, parts.image_height)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- the request ---------------------------------------------------------------------------------------------
def chat_body(
    model: str,
    prompt: str,
    url: str | None,
    params: GenerationParams,
    *,
    max_tokens: int,
    regex: str | None,
    digit_ids: Sequence[int],
    continuation: str | None = None,
    banned: Sequence[int] = (),
) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body of one generation (see the module docstring). ``prompt`` is the
    whole text with the image token where the image goes; ``url`` the image (None: a text-only prompt, for
    tokenizing); ``continuation`` the text generated so far (the forced tail continues it); ``banned`` the
    token ids never to generate (``logit_bias`` -100, vLLM's floor: each one's odds scaled by e^-100)."""
    content: list[dict[str, Any]] = []
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if continuation is not None:
        messages.append({"role": "assistant", "content": continuation})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "add_generation_prompt": False,
        "continue_final_message": continuation is not None,
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": params.repeat_penalty,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "logprobs": True,
        "logprob_token_ids": list(digit_ids),
        "return_tokens_as_token_ids": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if regex is not None:
        body["structured_outputs"] = {"regex": regex}
    if banned:
        body["logit_bias"] = {str(t): -100.0 for t in banned}
    return body


# -- the answer ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    """One generated token: its id and the logprobs of the listed ids at its position. (Its text comes
    from the vocabulary scan: the ``bytes`` vLLM sends drop a SentencePiece piece's leading space.)"""

    id: int
    logprobs: dict[int, float]


def _token_id(name: object) -> int:
    if isinstance(name, str) and name.startswith("token_id:"):
        try:
            return int(name[len("token_id:") :])
        except ValueError:
            pass
    raise EngineError(
        f"the server named a token {name!r}, not by id", hint="use a vLLM server of 0.10 or later"
    )


@dataclass
class Reply:
    """One streamed chat completion, folded event by event (``add``)."""

    started: float = field(default_factory=time.perf_counter)
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0

    def add(self, event: dict[str, Any]) -> str:
        """Fold one event in; returns its new text."""
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict):
                self.cached_tokens = int(details.get("cached_tokens") or 0)
        self.total_s = time.perf_counter() - self.started
        new = ""
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                new += delta["content"]
            for entry in (choice.get("logprobs") or {}).get("content") or ():
                if self.first_token_s is None:
                    self.first_token_s = self.total_s
                listed = {
                    _token_id(e.get("token")): float(e.get("logprob"))
                    for e in entry.get("top_logprobs") or ()
                }
                token = _token_id(entry.get("token"))
                listed[token] = float(entry.get("logprob"))
                self.tokens.append(Token(token, listed))
            if choice.get("finish_reason") is not None:
                self.finish_reason = str(choice["finish_reason"])
        self.text += new
        return new

    def fold(self, events: Iterator[dict[str, Any]], on_text: Any = None) -> Reply:
        """Fold a whole stream; ``on_text(new_text)`` is called for each event that brings text."""
        for event in events:
            new = self.add(event)
            if new and on_text is not None:
                on_text(new)
        return self


class ShownText:
    """The text of one generation as ``on_text`` sees it, over all its tries (a server may die mid-stream
    and the generation run again elsewhere): without the leading whitespace (as the local engine streams),
    and a later try shows only what goes beyond the text already shown (nothing when it wrote otherwise)."""

    def __init__(self, on_text: Callable[[str], None] | None) -> None:
        self.on_text = on_text
        self.shown = ""

    def attempt(self) -> Callable[[str], None] | None:
        """The callback for the pieces of one try (None when nobody listens)."""
        on_text = self.on_text
        if on_text is None:
            return None
        seen = [""]  # this try's text so far, without the leading whitespace

        def add(piece: str) -> None:
            seen[0] = seen[0] + piece if seen[0] else piece.lstrip()
            if len(seen[0]) > len(self.shown) and seen[0].startswith(self.shown):
                new, self.shown = seen[0][len(self.shown) :], seen[0]
                on_text(new)

        return add


# -- the score -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitIds:
    """The score digits' token ids in the served vocabulary: ``digits[d-1]`` render ``"d"``,
    ``spaced[d-1]`` render ``" d"`` (several ids may render one digit: a piece and a byte-fallback token)."""

    digits: tuple[tuple[int, ...], ...]
    spaced: tuple[tuple[int, ...], ...]

    @property
    def all_ids(self) -> list[int]:
        return sorted({t for group in (*self.digits, *self.spaced) for t in group})

    def groups(self, text: str, piece: str) -> Sequence[Sequence[int]] | None:
        """The digit groups to read when ``piece`` is the score digit after ``text`` (``_reading``'s rule)."""
        return score_groups(text, piece.encode("utf-8", "surrogatepass"), self.digits, self.spaced)

    def score_probs(
        self, tokens: Sequence[Token], pieces: Sequence[str], skip: frozenset[int], before: str = ""
    ) -> dict[int, float] | None:
        """The distribution at the last score position of ``tokens`` (generated after ``before``; each
        token's text is ``pieces[id]``; the ids in ``skip``, control tokens such as the end of text, add no
        text), or None when there is none."""
        text = before
        probs = None
        for token in tokens:
            if token.id in skip:
                continue
            piece = pieces[token.id] if 0 <= token.id < len(pieces) else ""
            groups = self.groups(text, piece)
            if groups is not None:
                try:
                    probs = softmax_digits(token.logprobs, groups)
                except ValueError:
                    raise EngineError(
                        "the server gave no logprob for any digit token", hint="check the server's version"
                    ) from None
            text += piece
        return probs
