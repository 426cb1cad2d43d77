"""One generation of the llama-server engine on one server slot: the up to three ``POST /completion``
requests the engine's module docstring lists, read into a ``Generation`` with the local engine's text,
forced tail and score distribution.

Every follow-up request sends the same prompt (its slot's cache holds it) and regenerates the tokens the
first request generated with a token-id grammar (``_llama_server_wire.forced``), so it continues exactly
that context, never a re-tokenization of its text. Some contexts cannot be regenerated that way and are
approximated, each with a note (``APPROX_CONTEXT``, ``APPROX_TOP_N``) for the verdict: a forced tail after
bytes llama.cpp's grammar cannot force (a character left open by the budget, or bytes that are not
UTF-8: the tail is read after the longest start that can be forced; the text still shows them as U+FFFD,
like the local engine's), and a distribution at a position that cannot be regenerated (after such bytes or
a control token: the top-N at that position is used as it is, unlisted digit tokens counted as 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError
from . import grammar as gbnf
from ._http import HttpClient, ServerResponseError
from ._llama_server_connect import ServerInfo
from ._llama_server_score import BIAS, Track, from_post, from_top
from ._llama_server_vocab import TextVocab
from ._llama_server_wire import Completion, forced, sampler_fields
from .base import TAIL_RESERVE, Generation, GenerationParams, PromptParts, StageTimings, TokenCallback

__all__ = ["Slot", "Request", "run_generation", "APPROX_CONTEXT", "APPROX_TOP_N"]

#: The note of a forced tail whose context llama-server could not be made to regenerate exactly.
APPROX_CONTEXT = (
    "score distribution read at an approximate context: the text ends in bytes that are not whole UTF-8 "
    "characters (max_tokens ended it inside one, or the model wrote invalid UTF-8), which llama-server "
    "cannot regenerate; the local engine's distribution can differ"
)
#: The note of a distribution read from the top-N alone (its position could not be regenerated).
APPROX_TOP_N = (
    "score distribution read from the server's top log-probabilities only (digit tokens outside them count "
    "as 0): its position follows bytes llama-server cannot regenerate"
)


@dataclass(frozen=True)
class Slot:
    """Where a generation runs: the server's client and facts, and the slot id."""

    client: HttpClient
    info: ServerInfo
    slot: int


@dataclass(frozen=True)
class Request:
    """A checked request: ``n_prompt`` prompt positions (``n_before`` of them up to the image), the
    generation ``budget``, its place ``index`` in a ``generate_many`` call and the image as base64 PNG."""

    parts: PromptParts
    params: GenerationParams
    index: int
    n_prompt: int
    n_before: int
    budget: int
    image_b64: str


def run_generation(
    at: Slot,
    req: Request,
    vocab: TextVocab,
    *,
    seed: int | None,
    top_n: int,
    image_tokens: int,
    on_text: TokenCallback | None,
) -> Generation:
    """The generation of ``req`` on ``at`` (module docstring)."""
    parts, params = req.parts, req.params
    info = at.info
    base: dict[str, Any] = {
        "prompt": {
            "prompt_string": parts.before_image + info.marker + parts.after_image,
            "multimodal_data": [req.image_b64],
        },
        "cache_prompt": True,
        "id_slot": at.slot,
        "return_tokens": True,
        "n_probs": top_n,
        **sampler_fields(params, seed),
    }
    stream = on_text is not None
    shown: list[str] = []

    def show(piece: str) -> None:
        shown.append(piece)
        if on_text is not None:
            on_text(piece)

    track = Track(vocab, params.constrained, show if stream else None)
    grammar = gbnf.VERDICT_GRAMMAR if params.constrained else ""
    body = {**base, "n_predict": req.budget, "grammar": grammar}
    main = _complete(at, vocab, body, track, 0, stream)
    if main.broken or (main.unknown and not params.constrained):
        # a stream whose token ids could not be followed (without the grammar, tokens the stream never
        # named may be any bytes): the same request again, whole
        track = Track(vocab, params.constrained, None)
        main = _complete(at, vocab, body, track, 0, False)
        stream = False  # the rest is shown once the text is known
    track.add_unknown(main.unknown)
    if main.evaluated and main.evaluated != req.n_prompt:
        raise EngineError(
            f"{info.url} counts {main.evaluated} prompt positions where the local projector and "
            f"tokenizer count {req.n_prompt}: it does not serve this projector",
            hint="start the server with the judge's projector (--mmproj)",
        )
    extra_s = 0.0
    notes: list[str] = []
    source, context = main, track.tokens[: track.hit[0]] if track.hit else []
    forced_tail = params.constrained and track.hit is None
    if forced_tail:
        replay = list(track.tokens)
        elements = forced(replay, vocab.grammar_pieces)
        while elements is None and replay:  # a character left open at the end cannot be replayed
            replay.pop()
            elements = forced(replay, vocab.grammar_pieces)
        assert elements is not None
        if len(replay) < len(track.tokens):
            notes.append(APPROX_CONTEXT)
        rest = gbnf.tail_text(track.decoder.raw)
        rule = " ".join(x for x in (elements[0], gbnf.gbnf_literal(rest) if rest else "") if x)
        body = {
            **base,
            "grammar": f"root ::= {rule} [1-5]\n",
            "n_predict": len(replay) + TAIL_RESERVE + 2 * len(elements[1]),
            "logit_bias": [[t, BIAS] for t in sorted(elements[1])],
        }
        tail = _complete(at, vocab, body, None, 0, False)
        extra_s += _seconds(tail)
        ids = _until_eog(tail.tokens, vocab)
        track.resume()
        track.feed(_tail_part(ids, replay, rest, vocab))
        source, context = tail, ids[:-1]
    probs = None
    if track.hit is not None:
        groups = track.hit[1]
        if top_n and len(context) in source.top:
            probs = from_top(source.top[len(context)], groups, top_n)
        if probs is None:
            probs, seconds = _distribution(at, vocab, base, context, groups)
            extra_s += seconds
            if probs is None and len(context) in source.top:  # not replayable: the top-N as it is
                probs = from_top(source.top[len(context)], groups, top_n, eps=math.inf)
                notes.append(APPROX_TOP_N)
    text = track.finish()
    seen = "".join(shown)
    if on_text is not None and not stream and text.startswith(seen) and len(text) > len(seen):
        on_text(text[len(seen) :])
    t = main.timings
    reused = int(t.get("cache_n", 0))
    timings = StageTimings(
        prompt_eval_s=t.get("prompt_ms", 0.0) / 1000,
        generation_s=t.get("predicted_ms", 0.0) / 1000 + extra_s,
        prompt_tokens=req.n_prompt,
        reused_tokens=reused,
        generated_tokens=len(track.tokens) + track.unknown,
        image_cached=reused >= req.n_before + image_tokens,
    )
    return Generation(
        text=text,
        score_probs=probs,
        forced_tail=forced_tail,
        timings=timings,
        warnings=tuple(dict.fromkeys(notes)),
    )


def _distribution(
    at: Slot, vocab: TextVocab, base: Mapping[str, Any], context: list[int], groups: list[list[int]]
) -> tuple[dict[int, float] | None, float]:
    """The score distribution after ``context`` by the follow-up request (``_llama_server_score``), and
    its seconds; None when ``context`` cannot be regenerated."""
    elements = forced(context, vocab.grammar_pieces)
    if elements is None:
        return None, 0.0
    choices = sorted({t for group in groups for t in group})
    choice = " | ".join(f"<[{t}]>" for t in choices)
    biased = sorted(set(choices) | elements[1])
    body = {
        **base,
        "grammar": f"root ::= {elements[0]} ({choice})\n",
        "n_predict": len(context) + 1 + 2 * len(elements[1]),
        "samplers": ["temperature"],
        "temperature": 1.0,
        "seed": 0,
        "logit_bias": [[t, BIAS] for t in biased],
        "post_sampling_probs": True,
        "n_probs": len(biased) + 8,
    }
    answer = _complete(at, vocab, body, None, 0, False)
    ids = _until_eog(answer.tokens, vocab)
    top = answer.top.get(len(ids) - 1)
    if top is None or not ids or ids[-1] not in choices:
        raise ServerResponseError(  # this request's failure (its row's error), not the server's
            f"{at.info.url} did not answer the score distribution request as expected",
            url=at.info.url,
            hint="judge this one with the local engine, and report it with the server's build",
        )
    return from_post(top, groups), _seconds(answer)


def _complete(
    at: Slot, vocab: TextVocab, body: Mapping[str, Any], track: Track | None, skip: int, stream: bool
) -> Completion:
    """One ``POST /completion``; its tokens after the first ``skip`` go to ``track`` as they come. A stream
    whose ids cannot be followed (``Completion.broken``) goes on showing the server's own text."""
    answer = Completion(vocab.pieces, vocab.byte_ids)
    shown = track.on_text if track is not None else None

    def take(event: Mapping[str, Any]) -> None:
        before = len(answer.tokens)
        new = answer.add(event, streamed=stream)
        if answer.broken:  # the ids are lost: show the server's text, the caller asks again
            if shown is not None and event.get("content"):
                shown(str(event["content"]))
        elif track is not None:
            track.feed(new[max(skip - before, 0) :])

    if stream:
        for event in at.client.stream_events("/completion", {**body, "stream": True}):
            take(event)
    else:
        take(at.client.post_json("/completion", body))
    return answer


def _until_eog(tokens: list[int], vocab: TextVocab) -> list[int]:
    """``tokens`` up to the first end-of-generation token."""
    for i, token in enumerate(tokens):
        if token in vocab.eog:
            return tokens[:i]
    return tokens


def _tail_part(ids: list[int], replay: list[int], rest: str, vocab: TextVocab) -> list[int]:
    """The tokens of a forced-tail answer after its replay: those after ``replay`` when the server
    regenerated it exactly; else the shortest end that spells ``rest`` and the digit (the replay spelled
    the same characters with other bytes: see ``_llama_server_wire.forced``)."""
    if ids[: len(replay)] == replay:
        return ids[len(replay) :]
    want, spelled = rest.encode(), b""
    for start in range(len(ids) - 1, -1, -1):
        spelled = vocab.piece(ids[start]) + spelled
        if len(spelled) == len(want) + 1 and spelled.startswith(want):
            return ids[start:]
        if len(spelled) > len(want) + 1:
            break
    return ids[len(replay) :]


def _seconds(answer: Completion) -> float:
    return (answer.timings.get("prompt_ms", 0.0) + answer.timings.get("predicted_ms", 0.0)) / 1000
