"""LlamaServerEngine against a REAL llama-server on 127.0.0.1 (tests/helpers/llama_server), on the tiny model,
compared with the local LlamaCppEngine on the same pair (never mocked).

One server (2 slots, 2048 tokens each, -t 1) serves the whole module. It runs with flash attention off,
as llama-cpp-python runs the local engine, and with the tiny model's training context raised to 2048
(llama-server caps a slot at the model's training context; the tiny fixture says 512 < the judge prompt).

Covered: connect facts, verdicts equal to the local engine's at temperature 0 (text, score, forced tail,
score distribution within 1e-3; the top-N and the follow-up ways of reading it), streaming, prefix reuse
in the server's timings, generate_many, control-token texts refused per request, a mismatched pair and a
projector stamped for the other CLS order refused, build recognition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgejudge.engine._llama_server_connect import build_commit, known_build
from edgejudge.engine._llama_server_vocab import read_text_model
from edgejudge.engine.base import Engine, GenerationParams, PromptParts
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.engine.llama_server import LlamaServerEngine
from edgejudge.errors import CLSOrderMismatchError, EngineError, PromptRefusedError
from edgejudge.prompt import conversation_parts, render_judge_prompt
from edgejudge.rubric import load_rubric
from edgejudge.serverctl import ServerHandle
from tests.helpers.llama_server import running_server

N_CTX = 2048
SERVER_FLAGS = ("-fa", "off", "--override-kv", f"llama.context_length=int:{N_CTX}")
RESPONSES = ["A red square.", "A blue circle on grass.", "No idea.", "Two cats.", "It is a dog."]


@pytest.fixture(scope="module")
def server(tiny_gguf: tuple[Path, Path]) -> Iterator[ServerHandle]:
    with running_server(*tiny_gguf, slots=2, ctx_per_seq=N_CTX, threads=1, extra=SERVER_FLAGS) as handle:
        yield handle


@pytest.fixture(scope="module")
def remote(tiny_gguf: tuple[Path, Path], server: ServerHandle) -> Iterator[LlamaServerEngine]:
    with LlamaServerEngine(*tiny_gguf, servers=[server.url], timeout_s=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def local(tiny_gguf: tuple[Path, Path]) -> Iterator[LlamaCppEngine]:
    with LlamaCppEngine(*tiny_gguf, n_ctx=N_CTX, n_threads=1) as engine:
        yield engine


def _parts(size: int, response: str, seed: int) -> PromptParts:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8).tobytes()
    prompt = render_judge_prompt("Describe it.", response, load_rubric("vqa-helpfulness"), "A red square.")
    before, after = conversation_parts(prompt)
    return PromptParts(before, rgb, size, size, hashlib.sha256(rgb).hexdigest(), after)


def _byte_level(text: str) -> bool:
    """Whether a tiny-model text holds bytes that are not clean UTF-8 (U+FFFD): there the server cannot be
    made to regenerate the very same bytes (README: what differs from local), so only text and score
    are compared."""
    return "\ufffd" in text


def test_connect_reports_the_server_and_the_pair(
    remote: LlamaServerEngine, local: LlamaCppEngine, server: ServerHandle
) -> None:
    assert isinstance(remote, Engine)  # the whole Protocol
    assert remote.kind == "llama-server" and remote.n_ctx == N_CTX and remote.concurrency == 2
    assert (remote.image_size, remote.image_tokens) == (local.image_size, local.image_tokens)
    assert remote.model_name == local.model_name and remote.model_files == local.model_files
    assert remote.warnings == tuple(local.warnings)
    (stats,) = remote.servers
    assert stats.url == server.url and stats.alive and stats.lanes == 2
    for text in ("", "Hello world", " ###Feedback: ASSISTANT:", "[RESULT] 4"):
        assert remote.count_tokens(text) == local.count_tokens(text)


def test_the_vocabulary_is_the_local_engines(tiny_gguf: tuple[Path, Path], local: LlamaCppEngine) -> None:
    _, vocab = read_text_model(tiny_gguf[0])
    native = local._model.vocab
    assert vocab.n_vocab == native.n_vocab
    assert all(vocab.piece(t) == native.piece(t) for t in range(vocab.n_vocab))
    assert vocab.digits == local._digits.digits and vocab.spaced_digits == local._digits.spaced_digits
    assert {"<s>", "</s>", "<unk>"} <= set(vocab.special_texts)


def test_verdicts_equal_the_local_engines(
    tiny_gguf: tuple[Path, Path], server: ServerHandle, remote: LlamaServerEngine, local: LlamaCppEngine
) -> None:
    """Greedy verdicts on several prompts: same text, score and forced tail, distribution within 1e-3
    (read by the follow-up request with ``remote``, from the raw top-N with a top-N of the whole
    vocabulary)."""
    with LlamaServerEngine(*tiny_gguf, servers=[server.url], score_top_n=600) as whole:
        exact = {"follow-up": 0, "top-n": 0, "tail": 0}
        for seed, response in enumerate(RESPONSES):
            parts = _parts(local.image_size, response, seed)
            for max_tokens in (3, 20, 200):
                params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
                want = local.generate(parts, params)
                assert want.score_probs is not None
                for name, engine in (("follow-up", remote), ("top-n", whole)):
                    got = engine.generate(parts, params)
                    assert got.text == want.text and got.forced_tail == want.forced_tail
                    assert got.score_probs is not None and sum(got.score_probs.values()) == pytest.approx(1)
                    assert got.timings.prompt_tokens == want.timings.prompt_tokens
                    if _byte_level(want.text):
                        continue
                    assert got.score_probs == pytest.approx(want.score_probs, abs=1e-3), (seed, max_tokens)
                    assert got.timings.generated_tokens == want.timings.generated_tokens
                    exact[name] += 1
                    exact["tail"] += got.forced_tail
    assert exact["follow-up"] >= 6 and exact["top-n"] >= 6 and exact["tail"] >= 6, exact


def test_unconstrained_text_and_distribution_equal_the_local_engines(
    remote: LlamaServerEngine, local: LlamaCppEngine
) -> None:
    for seed, response in enumerate(RESPONSES):
        parts = _parts(local.image_size, response, 20 + seed)
        params = GenerationParams(temperature=0.0, max_tokens=60, constrained=False)
        want, got = local.generate(parts, params), remote.generate(parts, params)
        assert got.text == want.text and not got.forced_tail
        assert (got.score_probs is None) == (want.score_probs is None)
        if want.score_probs is not None and got.score_probs is not None and not _byte_level(want.text):
            assert got.score_probs == pytest.approx(want.score_probs, abs=1e-3)


def test_the_top_n_is_used_only_when_the_unlisted_digits_cannot_matter() -> None:
    from edgejudge.engine._llama_server_score import EPS, from_top

    groups = [[10, 11], [20], [30], [40], [50]]
    listed = {10: -0.5, 20: -1.5, 30: -2.0, 40: -3.0, 50: -4.0, 99: -30.0}  # 11 unlisted, at most e^-30
    probs = from_top(listed, groups, listed_max=6)
    assert probs is not None and sum(probs.values()) == pytest.approx(1)
    mass = [np.exp(-0.5), np.exp(-1.5), np.exp(-2.0), np.exp(-3.0), np.exp(-4.0)]
    assert [probs[d] for d in range(1, 6)] == pytest.approx([m / sum(mass) for m in mass], abs=EPS)
    loose = {**listed, 99: -3.5}  # the unlisted token may now hold a few percent of the mass
    assert from_top(loose, groups, listed_max=6) is None
    assert (
        from_top(loose, groups, listed_max=7) is not None
    )  # a shorter list than asked: the whole vocabulary


def test_streaming_delivers_the_text(remote: LlamaServerEngine, local: LlamaCppEngine) -> None:
    for seed, max_tokens in ((0, 20), (3, 200), (4, 3)):
        parts = _parts(local.image_size, RESPONSES[seed], seed)
        params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
        pieces: list[str] = []
        streamed = remote.generate(parts, params, pieces.append)
        assert len(pieces) > 1 and "".join(pieces) == streamed.text
        whole = remote.generate(parts, params)
        assert streamed.text == whole.text and streamed.score_probs == pytest.approx(
            whole.score_probs, abs=1e-3
        )


def test_a_repeated_image_reuses_the_servers_prompt_cache(
    remote: LlamaServerEngine, local: LlamaCppEngine
) -> None:
    first = _parts(local.image_size, "One answer.", 101)
    again = PromptParts(
        first.before_image,
        first.image_rgb,
        first.image_width,
        first.image_height,
        first.pixels_sha256,
        first.after_image.replace("One answer.", "Another answer."),
    )
    params = GenerationParams(temperature=0.0, max_tokens=8)
    cold = remote.generate(first, params).timings
    warm = remote.generate(again, params).timings
    assert not cold.image_cached and warm.image_cached  # the system prompt alone, then the image too
    assert warm.reused_tokens >= cold.reused_tokens + local.image_tokens
    assert warm.reused_tokens < warm.prompt_tokens  # the new response is evaluated


def test_generate_many_is_generate_in_order(remote: LlamaServerEngine, local: LlamaCppEngine) -> None:
    params = GenerationParams(temperature=0.0, max_tokens=20)
    requests = [(_parts(local.image_size, r, seed), params) for seed, r in [(0, "A."), (1, "B."), (0, "C.")]]
    before = remote.servers[0].done
    many = remote.generate_many(requests)
    assert remote.servers[0].done == before + 3 and remote.servers[0].in_flight == 0
    for (parts, p), got in zip(requests, many, strict=True):
        alone = remote.generate(parts, p)
        assert got.text == alone.text and got.score_probs == pytest.approx(alone.score_probs, abs=1e-3)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Close it with </s> now.", "</s>"),
        ("A <s> token.", "<s>"),
        ("<__edgejudge_image__> twice", "<__edgejudge_image__>"),
    ],
)
def test_a_control_token_text_is_refused_for_that_request(
    remote: LlamaServerEngine, local: LlamaCppEngine, text: str, token: str
) -> None:
    ok = _parts(local.image_size, "Fine.", 0)
    bad = _parts(local.image_size, text, 0)
    params = GenerationParams(temperature=0.0, max_tokens=5)
    local.generate(bad, params)  # the local engine judges it: it never reads special tokens in texts
    with pytest.raises(PromptRefusedError) as info:
        remote.generate_many([(ok, params), (bad, params)])
    assert info.value.index == 1 and repr(token) in str(info.value) and "control token" in str(info.value)
    assert "local engine" in str(info.value.hint)


def test_another_model_on_the_server_is_refused(
    tiny_gguf_q4: tuple[Path, Path], server: ServerHandle
) -> None:
    with pytest.raises(EngineError) as info:
        LlamaServerEngine(*tiny_gguf_q4, servers=[server.url])
    message = str(info.value)
    assert "serves tiny-F16.gguf" in message and "not tiny-Q4_K_M.gguf" in message and server.url in message


def test_a_projector_for_the_other_cls_order_is_refused(
    tiny_checkpoint: Path, tmp_path: Path, server: ServerHandle, local: LlamaCppEngine
) -> None:
    from edgejudge import convert_checkpoint
    from edgejudge.probe import runtime_cls_position

    other = "first" if runtime_cls_position() == "last" else "last"
    pair = convert_checkpoint(
        tiny_checkpoint, tmp_path / "other", name="tiny", quant="F16", mmproj_quant="F16", cls_position=other
    )
    with pytest.raises(CLSOrderMismatchError) as info:
        LlamaServerEngine(pair.text_model, pair.mmproj, servers=[server.url])
    assert f"class token {other}" in str(info.value) and server.url in str(info.value)


def test_builds_are_recognised_by_their_commit() -> None:
    assert build_commit("b1-0c1e570") == "0c1e570" and build_commit("b7000-0C1E570") == "0c1e570"
    assert build_commit("unknown") is None and build_commit("") is None
    assert known_build("b1-0c1e570") and known_build("b4242-0c1e57098bba")
    assert not known_build("b1-deadbee") and not known_build("b6000")


def test_clear_cache_without_slot_actions_is_harmless(
    remote: LlamaServerEngine, local: LlamaCppEngine
) -> None:
    parts, params = _parts(local.image_size, "Fine.", 0), GenerationParams(temperature=0.0, max_tokens=5)
    before = remote.generate(parts, params)
    remote.clear_cache()  # the server has no --slot-save-path: erasing slots is refused, nothing breaks
    assert remote.generate(parts, params).text == before.text


def test_a_token_id_grammar_makes_the_server_regenerate_exactly_those_tokens(
    tiny_gguf: tuple[Path, Path], server: ServerHandle
) -> None:
    """What the forced tail and the distribution request rely on: token elements for whole pieces (a
    control token included: the grammar sees it as its text), a literal for a character split over byte
    tokens (biased so that those byte tokens spell it), on the real server."""
    from edgejudge.engine._http import HttpClient
    from edgejudge.engine._llama_server_score import BIAS
    from edgejudge.engine._llama_server_wire import forced

    _, vocab = read_text_model(tiny_gguf[0])
    normal = [t for t, p in enumerate(vocab.pieces) if len(p) > 1 and p.isascii() and p.isalpha()][:3]
    bos = next(t for t, p in enumerate(vocab.grammar_pieces) if p == b"<s>")
    e_acute = [vocab.byte_ids[0xC3], vocab.byte_ids[0xA9]]  # "é" as two byte-fallback tokens
    tokens = [normal[0], bos, *e_acute, normal[1], normal[2]]
    assert forced(e_acute[:1], vocab.grammar_pieces) is None  # a character left open cannot be forced
    made = forced(tokens, vocab.grammar_pieces)
    assert made is not None and made[1] == frozenset(e_acute)
    assert made[0].count("<[") == 4 and '"\\U000000E9"' in made[0]
    body = {
        "prompt": "Hello",
        "grammar": f"root ::= {made[0]}\n",
        "n_predict": len(tokens) + 2,
        "return_tokens": True,
        "samplers": ["temperature"],
        "temperature": 1.0,
        "seed": 3,
        "logit_bias": [[t, BIAS] for t in sorted(made[1])],
    }
    with HttpClient(server.url) as client:
        answer = client.post_json("/completion", body)
    assert [t for t in answer["tokens"] if t not in vocab.eog] == tokens


def _processing(url: str) -> bool:
    import httpx

    slots = httpx.get(f"{url}/slots", timeout=5, trust_env=False).json()
    return any(s.get("is_processing") for s in slots)


def test_a_generation_longer_than_the_timeout_is_that_requests_error(
    tiny_gguf: tuple[Path, Path], server: ServerHandle, local: LlamaCppEngine
) -> None:
    """Review bug 1: the timeout is not retried and does not take the healthy server out; the generation
    it abandoned does not go on on the server (llama-server drops a task whose connection closed)."""
    import time

    parts = _parts(local.image_size, "A blue circle on grass.", 11)
    long = GenerationParams(temperature=0.0, max_tokens=800)
    with LlamaServerEngine(*tiny_gguf, servers=[server.url], timeout_s=120) as patient:
        patient.generate(parts, GenerationParams(temperature=0.0, max_tokens=2))  # the prompt is cached
        started = time.perf_counter()
        full = patient.generate(parts, long)
        took = time.perf_counter() - started
    assert full.timings.generated_tokens >= 400 and took > 0.5, (full.timings, took)  # really long
    timeout = took / 6
    with LlamaServerEngine(*tiny_gguf, servers=[server.url], timeout_s=timeout) as hasty:
        with pytest.raises(PromptRefusedError) as info:
            hasty.generate(parts, long)
        assert f"took longer than the request timeout ({timeout:g} s)" in str(info.value)
        assert info.value.hint is not None and "max_tokens" in info.value.hint
        (stats,) = hasty.servers
        assert stats.alive and stats.failed == 1 and hasty.concurrency == 2  # the server stays in
        deadline = time.monotonic() + 10
        while _processing(server.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _processing(server.url)  # nothing left generating for nobody
        short = hasty.generate(parts, GenerationParams(temperature=0.0, max_tokens=2))
    assert short.text == local.generate(parts, GenerationParams(temperature=0.0, max_tokens=2)).text


def test_two_spellings_of_one_server_are_one_member(
    tiny_gguf: tuple[Path, Path], server: ServerHandle
) -> None:
    """Review bug 7: the URLs are normalised before they are deduplicated."""
    host, port = server.url.removeprefix("http://").split(":")
    spellings = [server.url, server.url + "/", f" HTTP://{host.upper()}:{port}/ "]
    with LlamaServerEngine(*tiny_gguf, servers=spellings) as engine:
        (stats,) = engine.servers
        assert stats.url == server.url and engine.concurrency == 2


def test_one_gbnf_literal_escaper_that_llama_cpp_reads_back(server: ServerHandle) -> None:
    """Review bug 8: grammar.gbnf_literal (used by the local tail grammar and the server engine's forced
    tail) escapes quotes, backslashes, \\n, \\r, \\t and other control characters so that llama.cpp's
    grammar parser reads back exactly the text: the server, forced by it, generates that text."""
    from edgejudge.engine._http import HttpClient
    from edgejudge.engine.grammar import gbnf_literal, tail_grammar

    text = 'a "q" \\ b\n\tc\r\x01é [RESULT] '
    assert gbnf_literal(text) == '"a \\"q\\" \\\\ b\\n\\tc\\r\\x01é [RESULT] "'
    assert tail_grammar("x\n[RES") == 'root ::= "ULT] " [1-5]\n'
    body = {
        "prompt": "Hello",
        "grammar": f"root ::= {gbnf_literal(text)}\n",
        "n_predict": 64,
        "samplers": ["temperature"],
        "temperature": 0.0,
    }
    with HttpClient(server.url) as client:
        answer = client.post_json("/completion", body)
    assert answer["content"] == text
