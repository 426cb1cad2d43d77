"""What the llama-server engine sends and reads on ``POST /completion``, in plain values.

- ``sampler_fields``: the local engine's sampler chain in llama-server's terms: [penalties when
  repeat_penalty ≠ 1, last 64 tokens] → temperature → top-p (min_keep 1) → draw with the seed; greedy at
  temperature 0 (temperature 0 keeps only the highest logit); no top-k, min-p, typical-p, XTC, DRY or
  mirostat. The grammar is applied lazily by both (draw, then mask and redraw when the grammar refuses);
- ``forced``: a GBNF sequence that makes the server regenerate *exactly* the given token ids (token
  elements ``<[id]>``), so a follow-up request continues the very context the first one generated
  instead of a re-tokenization of its text. llama.cpp's token elements cannot match a token that ends
  inside a UTF-8 character (a byte-fallback token), so a run of such tokens is forced as the literal
  character they spell, and their ids are returned to be favoured with ``logit_bias`` (the literal alone
  would let another tokenization of the character through); a run left open at the end cannot be forced;
- ``Completion``: one answer (non-streamed, or gathered from a stream): token ids, per-position raw
  top log-probabilities or post-sampling probabilities, stop type, timings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import GenerationParams

__all__ = ["sampler_fields", "forced", "Completion", "REPEAT_LAST_N"]

#: The repetition penalty's window, as the local engine's sampler (native.sampling).
REPEAT_LAST_N = 64


def sampler_fields(params: GenerationParams, seed: int | None) -> dict[str, Any]:
    """The request fields that make llama-server sample like the local engine (module docstring)."""
    samplers: list[str] = []
    if params.repeat_penalty != 1.0:
        samplers.append("penalties")
    samplers.append("temperature")
    if params.temperature > 0 and params.top_p < 1.0:
        samplers.append("top_p")
    return {
        "samplers": samplers,
        "temperature": max(params.temperature, 0.0),
        "top_p": params.top_p,
        "min_keep": 1,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": params.repeat_penalty,
        "repeat_last_n": REPEAT_LAST_N,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "mirostat": 0,
        "seed": -1 if seed is None else seed % 2**32,
    }


_LEAD = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)  # llama-grammar.cpp's UTF-8 length table


def _decode(piece: bytes, value: int, remain: int) -> tuple[list[int], int, int] | None:
    """llama.cpp's grammar decoder (``decode_utf8``): the code points ``piece`` completes after a partial
    character (``value``, ``remain`` bytes to go) and the partial character it leaves; None when llama.cpp
    finds it invalid. Structural only, as llama.cpp (surrogates and overlong forms pass)."""
    points: list[int] = []
    pos, start_remain = 0, remain
    while pos < len(piece) and remain > 0:
        if piece[pos] >> 6 != 2:
            return None
        value = (value << 6) + (piece[pos] & 0x3F)
        pos, remain = pos + 1, remain - 1
    if start_remain > 0 and remain == 0:
        points.append(value)
    while pos < len(piece):
        remain = _LEAD[piece[pos] >> 4] - 1
        if remain < 0:
            return None
        value = piece[pos] & ((1 << (7 - remain)) - 1)
        pos += 1
        while pos < len(piece) and remain > 0:
            value = (value << 6) + (piece[pos] & 0x3F)
            pos, remain = pos + 1, remain - 1
        if remain == 0:
            points.append(value)
    return points, value, remain


def _literal(points: list[int]) -> str:
    """Code points as a GBNF literal (printable ASCII as itself, the rest as \\U escapes)."""
    chars = (chr(c) if 0x20 <= c < 0x7F and chr(c) not in '"\\' else f"\\U{c:08X}" for c in points)
    return '"' + "".join(chars) + '"'


def forced(tokens: Sequence[int], pieces: Sequence[bytes]) -> tuple[str, frozenset[int]] | None:
    """GBNF elements forcing exactly ``tokens`` (``pieces[i]`` is token i's bytes as llama.cpp's grammar
    sees them: control tokens as their text) and the ids of the
    tokens forced as literal characters (to bias). A token that decodes, from a clean state, to whole
    characters is a token element ``<[id]>``; a run of tokens that splits characters is the literal of
    the characters it spells. None when llama.cpp's grammar would refuse a token: a piece that is empty
    or starts with NUL, invalid UTF-8, or a character left open at the end."""
    elements: list[str] = []
    biased: set[int] = set()
    run: list[int] = []
    value = remain = 0
    for token in tokens:
        piece = pieces[token] if 0 <= token < len(pieces) else b""
        if not piece or piece[0] == 0:
            return None
        decoded = _decode(piece, value, remain)
        if decoded is None:
            return None
        points, new_value, new_remain = decoded
        if remain == 0 and new_remain == 0 and points:
            elements.append(f"<[{token}]>")
        else:
            biased.add(token)
            run.extend(points)
            if new_remain == 0:
                elements.append(_literal(run))
                run = []
        value, remain = new_value, new_remain
    if remain != 0:
        return None
    return " ".join(elements), frozenset(biased)


def _incomplete(text: bytes) -> bool:
    """llama-server's ``validate_utf8`` test: ``text`` ends inside a multi-byte character."""
    for i in range(1, min(4, len(text)) + 1):
        c = text[-i]
        if (c & 0xE0) == 0xC0 and i < 2 or (c & 0xF0) == 0xE0 and i < 3 or (c & 0xF8) == 0xF0 and i < 4:
            return True
    return False


class Completion:
    """One ``/completion`` answer, non-streamed or gathered from a stream.

    ``tokens`` are the generated ids; ``top[i]`` maps token id → raw log-probability (``n_probs``) or
    post-sampling probability (``post_sampling_probs``) at the position of ``tokens[i]``; ``stop_type``
    ("eos", "limit", ...), ``timings`` (``cache_n``, ``prompt_ms``, ``predicted_ms`` ...) and
    ``evaluated`` (prompt positions) come with the last event. ``unknown`` counts tokens the stream never
    named (see below).

    llama-server reports a token only once the text is whole again: a token that ends inside a UTF-8
    character gets no probabilities, and a stream names no such token at all. In a non-streamed answer
    ``tokens`` is complete and the probabilities are matched to the tokens that completed the text. In a
    stream the missing ids are recovered from the event's ``tokens_predicted`` count and its text (the
    bytes before the named token's piece are the missing byte tokens'); tokens still missing when the
    stream ends (a character left open) are only counted in ``unknown``. ``broken`` is set when a stream
    cannot be followed that way.
    """

    def __init__(self, pieces: Sequence[bytes], byte_ids: Mapping[int, int]) -> None:
        self._pieces = pieces
        self._byte_ids = byte_ids
        self._text = b""
        self.tokens: list[int] = []
        self.top: dict[int, dict[int, float]] = {}
        self.stop_type = ""
        self.timings: dict[str, float] = {}
        self.evaluated = 0
        self.unknown = 0
        self.broken = False

    def add(self, event: Mapping[str, Any], *, streamed: bool) -> list[int]:
        """Take one answer or stream event; the token ids it adds."""
        got = [int(t) for t in event.get("tokens") or []]
        entries = [_top(e) for e in event.get("completion_probabilities") or []]
        new: list[int] = []
        if streamed and got:
            missing = int(event.get("tokens_predicted") or 0) - len(self.tokens) - len(got)
            if missing > 0:
                head = str(event.get("content", "")).encode("utf-8")
                piece = self._piece(got[0])
                lost = head[: len(head) - len(piece)] if head.endswith(piece) else b""
                if len(lost) != missing or any(b not in self._byte_ids for b in lost):
                    self.broken = True
                new = [self._byte_ids[b] for b in lost] if not self.broken else []
        new += got
        first = len(self.tokens)
        for token in new:
            self.tokens.append(token)
            self._text = (self._text + self._piece(token))[-8:]
            if not _incomplete(self._text) and entries:
                self.top[len(self.tokens) - 1] = entries.pop(0)
        if event.get("stop"):
            self.stop_type = str(event.get("stop_type", ""))
            self.timings = {k: float(v) for k, v in (event.get("timings") or {}).items()}
            self.evaluated = int(event.get("tokens_evaluated") or 0)
            if streamed:
                self.unknown = max(int(event.get("tokens_predicted") or 0) - len(self.tokens), 0)
        return self.tokens[first:]

    def _piece(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""


def _top(entry: Mapping[str, Any]) -> dict[int, float]:
    if "top_logprobs" in entry:
        return {int(e["id"]): float(e["logprob"]) for e in entry["top_logprobs"]}
    return {int(e["id"]): float(e["prob"]) for e in entry.get("top_probs") or []}
