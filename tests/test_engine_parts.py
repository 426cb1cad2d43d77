"""Pure pieces of the engine: the forced-tail literal, incremental UTF-8 streaming, the digit softmax, and
grammar acceptance by the real llama.cpp grammar parser (on the tiny model's vocabulary)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from llama_cpp import _internals

from edgejudge.engine._reading import TextStream, softmax_digits
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.grammar import VERDICT_GRAMMAR, tail_grammar, tail_text
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.native.sampling import Sampler


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("Good answer.", " [RESULT] "),
        ("Good answer.\n", "[RESULT] "),
        ("", "[RESULT] "),
        ("Good answer. [", "RESULT] "),
        ("Good answer. [RES", "ULT] "),
        ("Good answer. [RESULT]", " "),
        ("Good answer. [RESULT] ", ""),
        ("A [note] then more", " [RESULT] "),
    ],
)
def test_tail_text(generated: str, expected: str) -> None:
    assert tail_text(generated) == expected
    assert (generated + tail_text(generated)).endswith("[RESULT] ")


def test_text_stream_never_splits_a_character() -> None:
    pieces: list[str] = []
    stream = TextStream(pieces.append)
    for chunk in (b"  ", b"\nCaf", b"\xc3", b"\xa9 \xe2\x82", b"\xac", b" ok"):
        stream.add(chunk)
    stream.add(b"", final=True)
    assert stream.text == "Café € ok" and "".join(pieces) == stream.text
    assert stream.raw == "  \nCafé € ok"
    assert all("\ufffd" not in p for p in pieces)


def test_softmax_digits_sums_token_groups() -> None:
    logits = np.full(10, -50.0, dtype=np.float32)
    logits[[1, 2, 3, 4, 5]] = [0.0, 0.0, np.log(2.0), 0.0, 0.0]
    logits[9] = 0.0  # a second token rendering "1" (e.g. a byte-fallback token)
    probs = softmax_digits(logits, [[1, 9], [2], [3], [4], [5]])
    assert probs == pytest.approx({1: 2 / 7, 2: 1 / 7, 3: 2 / 7, 4: 1 / 7, 5: 1 / 7})


@pytest.fixture(scope="module")
def engine(tiny_gguf: tuple[Path, Path]) -> Iterator[LlamaCppEngine]:
    with LlamaCppEngine(*tiny_gguf, n_ctx=512, n_threads=1) as eng:
        yield eng


@pytest.fixture(scope="module")
def vocab(engine: LlamaCppEngine) -> llama_cpp.llama_vocab_p:
    return engine._model.vocab.ptr


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_lazy_grammar_matches_full_masking(engine: LlamaCppEngine, temperature: float) -> None:
    """Greedy: the lazy grammar check picks exactly what masking the whole vocabulary first picks."""
    model = engine._model
    ctx = model._llm._ctx.ctx  # the raw context, for llama.cpp's own sampler (the reference)
    params = GenerationParams(temperature=temperature, top_p=1.0, seed=5)
    lazy = Sampler(
        model.vocab,
        temperature=params.temperature,
        top_p=params.top_p,
        repeat_penalty=params.repeat_penalty,
        grammar=VERDICT_GRAMMAR,
        seed=5,
    )
    reference = _internals.LlamaSampler()
    g = llama_cpp.llama_sampler_init_grammar(model.vocab.ptr, VERDICT_GRAMMAR.encode(), b"root")
    llama_cpp.llama_sampler_chain_add(reference.sampler, g)
    reference.add_greedy()
    model.clear()
    model.eval(model.tokenize("USER: judge this ASSISTANT:", add_bos=True))
    engine._kv_units = []  # the engine's prefix record no longer matches the cache
    try:
        for _ in range(20):
            logits = model.logits(-1)
            token = lazy.sample(logits)
            if temperature == 0.0:
                assert token == llama_cpp.llama_sampler_sample(reference.sampler, ctx, -1)
            else:  # sampled: whatever was drawn must be allowed by the grammar
                reference.accept(token)
            if model.vocab.is_eog(token):
                break
            model.eval([token])
    finally:
        lazy.close()
        reference.close()


@pytest.mark.parametrize(
    "generated", ["", "Fine.", "Fine. [RES", "Fine. [RESULT] ", 'Quote " and \\ back\nslash']
)
def test_grammars_accepted_by_llama_cpp(vocab: llama_cpp.llama_vocab_p, generated: str) -> None:
    for grammar in (VERDICT_GRAMMAR, tail_grammar(generated)):
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler, grammar
        llama_cpp.llama_sampler_free(sampler)
