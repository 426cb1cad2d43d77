"""``VllmEngine``: the judge on one or several vLLM servers (``vllm serve`` of a llava-hf export), with the
semantics of the local engine (``engine.llama`` + ``engine._decoding``).

The prompt is BOS + ``before_image`` + the image + ``after_image``: one user message holding the fitted
pixels as a PNG and the text with the literal image token, rendered by the served chat template, which must
render BOS + the raw text (checked at connect; the server must run with
``--chat-template-content-format string``, or it adds a placeholder of its own). A constrained generation
sends ``structured_outputs.regex`` (the verdict grammar as a regex; vLLM ignores the old ``guided_*``
fields) with a budget of min(``max_tokens``, n_ctx − prompt − ``TAIL_RESERVE``); when the budget runs out
before the score a second request continues the text with the tail regex (the forced tail). The score
distribution comes from ``logprob_token_ids`` of the digit tokens at the score position (``_vllm_request``);
the ids come from the server's own tokenizer at connect (``_vllm_vocab``), never from a table. Sampling:
temperature (0 = greedy), top-p, repetition penalty, seed; no top-k, no min-p (sent explicitly, so the
model's generation defaults never apply). vLLM's repetition penalty counts the prompt and all the generated
tokens (llama.cpp's the last 64); with the default 1 (off) they agree.

A text that the server's tokenizer would read as a control token (``</s>``, ``<s>``, ``<image>`` …; the
local engine reads them as plain text) is refused with ``PromptRefusedError`` before anything is generated.
The tokens the local model does not have (``<image>``, ``<pad>``; their ids from the server's tokenizer) are
banned from the output (``logit_bias``), so a feedback never holds them.

Errors: what is one request's own (a 4xx, a malformed answer, a 5xx or a timeout while the server's health
check answers, no room for the forced tail) is that request's ``PromptRefusedError`` (``index``: its place in
``generate_many``; a judge makes it that task's error) and the server stays in (``_http.row_error``, the
rule the llama-server engine follows too); only a server that is down or unhealthy fails over.

Servers: a ``Fleet`` with ``concurrency`` lanes per server (default ``DEFAULT_LANES``: vLLM batches what
is in flight itself), rows of one image on the server that last saw it (its prefix cache hits), a server
that fails after the retries of ``_http`` taken out and its work run on the others (a stream shown live
shows only what goes beyond the text already shown), and taken back once its health check answers and it
serves the model again. Tokenizing runs on any live server without holding a generation lane
(``Fleet.call``). ``clear_cache`` cannot reach a server's prefix cache (vLLM resets it only in its
development mode): results never depend on it.

``model_name`` (the verdicts' ``model`` setting, part of every resume key) is the same on every machine:
the local llava-hf folder's name when ``model`` is one; else the served model's name when the server was
given one (``--served-model-name``), or the last part of the path (or hub repository) it was started on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .._closing import Closing
from ..errors import EngineError, PromptRefusedError, ServerUnavailableError
from ..settings import check, default
from ..verdict import StageTimings
from ._http import HttpClient, RetryPolicy, row_error
from ._vllm_model import (
    DEFAULT_IMAGE_SIZE,
    IMAGE_TOKEN,
    LLAVA_HF_HINT,
    PATCH_SIZE,
    image_geometry,
    local_folder,
    model_identity,
)
from ._vllm_request import DigitIds, Reply, ShownText, chat_body, image_url
from ._vllm_vocab import (
    ServedModel,
    Vocabulary,
    check_template,
    read_vocabulary,
    served_model,
    tokenize,
    tokenize_chat,
)
from .base import (
    TAIL_RESERVE,
    Generation,
    GenerationParams,
    PromptParts,
    ServerStats,
    TokenCallback,
    check_fits,
    check_params,
    check_parts,
)
from .fleet import Fleet, unique_urls
from .grammar import VERDICT_REGEX, tail_regex

__all__ = ["VllmEngine", "DEFAULT_LANES", "DEFAULT_IMAGE_SIZE", "PATCH_SIZE"]

#: Requests in flight per server when ``concurrency`` is not given.
DEFAULT_LANES = 8

#: Served tokens the local model (the GGUF) does not have: never generated (``logit_bias``).
_BANNED = (IMAGE_TOKEN, "<pad>")
T = TypeVar("T")


class VllmEngine(Closing):
    """The judge on the vLLM servers at ``servers`` (see the module docstring). A context manager.

    ``model`` is a served model's name, a local llava-hf folder (its ``config.json`` gives the image size;
    the server must serve that folder) or None for the servers' only model. ``concurrency`` is the requests
    in flight per server (None: ``DEFAULT_LANES``), ``max_parallel`` how many requests of one
    ``generate_many`` call are sent at once, ``timeout_s`` the longest wait on a server, ``api_key`` the
    servers' ``--api-key``, ``retry`` how failures are retried (``_http.RetryPolicy``). Every server must
    answer and serve the same model when the engine connects.
    """

    def __init__(
        self,
        servers: Sequence[str],
        model: str | None = None,
        *,
        concurrency: int | None = default("concurrency"),
        max_parallel: int = default("parallel"),
        timeout_s: float = default("request_timeout"),
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._closed = True
        urls = unique_urls(str(u) for u in servers)  # one client per server, however its URL is spelt
        if not urls:
            raise EngineError(
                "no vLLM server given", hint="give the URL of a vLLM server, e.g. http://HOST:8000"
            )
        check("concurrency", concurrency)
        check("max_parallel", max_parallel)
        check("request_timeout", timeout_s)
        lanes = concurrency if concurrency is not None else DEFAULT_LANES
        self._max_parallel = max_parallel
        self._folder = local_folder(model)
        wanted = [] if model is None else [model]
        if self._folder is not None:
            wanted.append(str(self._folder.resolve()))
        self._clients = [
            HttpClient(url, timeout_s=timeout_s, api_key=api_key, retry=retry, max_connections=lanes + 4)
            for url in urls
        ]
        try:
            self._connect(wanted)
        except BaseException:
            for client in self._clients:
                client.close()
            raise
        self._fleet = Fleet([c.url for c in self._clients], [lanes] * len(self._clients), probe=self._back)
        self._closed = False

    def _connect(self, wanted: list[str]) -> None:
        folder = self._folder.resolve().name if self._folder is not None else None
        served = [served_model(client, wanted, folder) for client in self._clients]
        first = served[0]
        for client, other in zip(self._clients[1:], served[1:], strict=True):
            if (other.name, other.n_ctx) != (first.name, first.n_ctx):
                raise EngineError(
                    f"{client.url} serves {other.name!r} with max_model_len {other.n_ctx}, "
                    f"{self._clients[0].url} serves {first.name!r} with {first.n_ctx}",
                    hint="serve the same model with the same max_model_len on every server",
                )
        self._served: ServedModel = first
        self._identity = model_identity(first, self._folder)
        self._vocab: Vocabulary = read_vocabulary(self._clients[0], first.name)
        for client in self._clients:
            check_template(client, first.name, self._vocab.bos)
        image_ids = [t for t, text in self._vocab.control.items() if text == IMAGE_TOKEN]
        if not image_ids:
            raise EngineError(
                f"{self._clients[0].url}: the served vocabulary has no {IMAGE_TOKEN} token",
                hint=LLAVA_HF_HINT,
            )
        self._image_id = image_ids[0]
        self._banned = tuple(sorted(t for t, text in self._vocab.control.items() if text in _BANNED))
        size, n, warnings = image_geometry(self._clients[0], first.name, self._image_id, self._folder)
        self._image_size, self._image_tokens = size, n
        self._skip = frozenset(self._vocab.control)
        self.warnings: tuple[str, ...] = tuple(warnings)

    # -- Engine protocol -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "vllm"

    @property
    def model_name(self) -> str:
        """The judge's identity, the same on every machine (the module docstring's rule)."""
        return self._identity

    @property
    def served_name(self) -> str:
        """The model name the requests send (vLLM's ``id`` of it)."""
        return self._served.name

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def image_tokens(self) -> int:
        return self._image_tokens

    @property
    def n_ctx(self) -> int:
        return self._served.n_ctx

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def concurrency(self) -> int:
        return self._fleet.concurrency

    @property
    def servers(self) -> tuple[ServerStats, ...]:
        return self._fleet.stats

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        return self._folder, None

    @property
    def digit_ids(self) -> DigitIds:
        """The score digits' token ids found in the served vocabulary."""
        return self._vocab.digits

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """The served tokens never generated (``<image>``, ``<pad>``: the local model has no such tokens)."""
        return self._banned

    def count_tokens(self, text: str) -> int:
        self._check_open()
        if not text:
            return 0
        return len(self._on_any(lambda client: tokenize(client, self._served.name, text), None))

    def generate(
        self,
        parts: PromptParts,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        self._check_open()
        check_params(params)
        check_parts(parts, self.image_size)
        prompt = self._prompt(parts)
        n_prompt, image_end = self._measure(prompt, params, None)
        return self._run(parts, prompt, params, n_prompt, image_end, on_text, None)

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """One generation per request, in order, up to ``max_parallel`` in flight at once (the server
        batches them). Every request is checked (settings, image, control tokens, context) before any is
        sent; ``index`` in the error names the offending one (also for a request the server then fails on:
        the module docstring's rule)."""
        self._check_open()
        for parts, params in requests:
            check_params(params)
            check_parts(parts, self.image_size)
        prompts = [self._prompt(parts) for parts, _ in requests]
        workers = max(1, min(len(requests), self._max_parallel))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgejudge-vllm") as pool:
            measured = list(
                pool.map(lambda i: self._measure(prompts[i], requests[i][1], i), range(len(requests)))
            )
            jobs = [
                pool.submit(self._run, parts, prompt, params, n, end, None, i)
                for i, ((parts, params), prompt, (n, end)) in enumerate(
                    zip(requests, prompts, measured, strict=True)
                )
            ]
            return [job.result() for job in jobs]

    def clear_cache(self) -> None:
        """Nothing to forget here: the servers' prefix caches are theirs (see the module docstring)."""
        self._check_open()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            client.close()

    # -- servers ---------------------------------------------------------------------------------------
    def _back(self, server: int) -> bool:
        """Whether a dead server may be taken back: it is healthy and serves the model as at connect."""
        client = self._clients[server]
        if not client.healthy():
            return False
        try:
            again = served_model(client, [self._served.name])
        except EngineError:
            return False
        return (again.name, again.n_ctx) == (self._served.name, self._served.n_ctx)

    def _on_any(self, call: Callable[[HttpClient], T], index: int | None) -> T:
        """``call(client)`` on a live server without holding a lane (tokenizing); a failure that is the
        request's own is ``index``'s ``PromptRefusedError`` (module docstring), a server down the next one."""

        def work(server: int) -> T:
            return self._own_errors(server, index, lambda: call(self._clients[server]))

        return self._fleet.call(work)

    def _own_errors(self, server: int, index: int | None, call: Callable[[], T]) -> T:
        """``call()``, with a failure of the one request turned into its ``PromptRefusedError``."""
        try:
            return call()
        except EngineError as err:
            row = row_error(self._clients[server], err, index)
            if row is not None:
                raise row from None
            raise

    # -- one generation --------------------------------------------------------------------------------
    def _prompt(self, parts: PromptParts) -> str:
        return parts.before_image + IMAGE_TOKEN + parts.after_image

    def _measure(self, prompt: str, params: GenerationParams, index: int | None) -> tuple[int, int]:
        """(prompt positions, end of the image) of ``prompt`` on the servers; refuses control tokens in
        its text and a prompt that does not fit."""
        body = chat_body(self._served.name, prompt, None, params, max_tokens=1, regex=None, digit_ids=[])
        ids = self._on_any(lambda client: tokenize_chat(client, body), index)
        control = Counter(t for t in ids[1:] if t in self._vocab.control)
        control[self._image_id] -= 1
        surplus = sorted(self._vocab.control[t] for t, n in control.items() if n > 0)
        if surplus or not ids or ids[0] != self._vocab.bos:
            shown = ", ".join(repr(text) for text in surplus) or "a misplaced BOS"
            raise PromptRefusedError(
                f"the prompt's text holds {shown}, which the vLLM server would read as a control token",
                hint="remove or reword that text in the inputs (the local engines read it as plain text)",
                index=index,
            )
        n_prompt = len(ids) - 1 + self._image_tokens
        check_fits(n_prompt, params, self.n_ctx, index)
        return n_prompt, ids.index(self._image_id) + self._image_tokens

    def _run(
        self,
        parts: PromptParts,
        prompt: str,
        params: GenerationParams,
        n_prompt: int,
        image_end: int,
        on_text: TokenCallback | None,
        index: int | None,
    ) -> Generation:
        url = image_url(parts)
        shown = ShownText(on_text)  # over the tries: a server may die mid-stream

        def work(server: int, _lane: int) -> Generation:
            args = (server, prompt, url, params, n_prompt, image_end, shown.attempt(), index)
            return self._own_errors(server, index, lambda: self._generate_on(*args))

        return self._fleet.run(parts.pixels_sha256, work)

    def _generate_on(
        self,
        server: int,
        prompt: str,
        url: str,
        params: GenerationParams,
        n_prompt: int,
        image_end: int,
        on_text: Callable[[str], None] | None,
        index: int | None,
    ) -> Generation:
        client = self._clients[server]
        name, digits = self._served.name, self._vocab.digits
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self.n_ctx - n_prompt - TAIL_RESERVE)
        replies: list[Reply] = []
        probs = None
        if budget > 0:
            regex = VERDICT_REGEX if params.constrained else None
            body = chat_body(
                name,
                prompt,
                url,
                params,
                max_tokens=budget,
                regex=regex,
                digit_ids=digits.all_ids,
                banned=self._banned,
            )
            replies.append(self._stream(client, body, on_text))
            probs = digits.score_probs(replies[0].tokens, self._vocab.pieces, self._skip)
        raw = replies[0].text if replies else ""
        forced = params.constrained and probs is None
        if forced:  # max_tokens ran out before the score: force the tail, still read the digit
            body = chat_body(
                name,
                prompt,
                url,
                params,
                max_tokens=TAIL_RESERVE,
                regex=tail_regex(raw),
                digit_ids=digits.all_ids,
                continuation=raw or None,
                banned=self._banned,
            )
            room = self.n_ctx - (len(tokenize_chat(client, body)) - 1 + self._image_tokens)
            if room < 1:  # the server re-tokenized the text into more positions than it generated
                raise PromptRefusedError(
                    f"no room left for the forced tail in the context window ({self.n_ctx}): the "
                    "generated text re-tokenizes into more positions than were generated",
                    hint="lower max_tokens, or raise the servers' max_model_len",
                    index=index,
                )
            body["max_tokens"] = min(TAIL_RESERVE, room)
            replies.append(self._stream(client, body, on_text))
            probs = digits.score_probs(replies[-1].tokens, self._vocab.pieces, self._skip, raw)
        generated = sum(1 for r in replies for t in r.tokens if t.id not in self._skip)
        first = replies[0]
        prompt_s = first.first_token_s or 0.0
        reused = first.cached_tokens
        timings = StageTimings(
            prompt_eval_s=prompt_s,
            generation_s=sum(r.total_s for r in replies) - prompt_s,
            prompt_tokens=first.prompt_tokens or n_prompt,
            reused_tokens=reused,
            generated_tokens=generated,
            image_cached=reused >= image_end,
        )
        self._fleet.record(
            server,
            done=1,
            prompt_tokens=timings.prompt_tokens,
            reused_tokens=reused,
            generated_tokens=generated,
        )
        text = "".join(r.text for r in replies).lstrip()
        return Generation(text=text, score_probs=probs, forced_tail=forced, timings=timings)

    def _stream(
        self, client: HttpClient, body: dict[str, Any], on_text: Callable[[str], None] | None
    ) -> Reply:
        reply = Reply().fold(client.stream_events("/v1/chat/completions", body), on_text)
        if reply.finish_reason is None:  # the connection ended without the end of the generation
            raise ServerUnavailableError(
                f"{client.url}: the stream of POST /v1/chat/completions ended before the generation did",
                url=client.url,
                hint="check the server; a fleet retries the request on another server",
            )
        return reply

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
