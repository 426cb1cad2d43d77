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

Servers: a ``Fleet`` with ``concurrency`` lanes per server (default ``DEFAULT_LANES``: vLLM batches what
is in flight itself), rows of one image on the server that last saw it (its prefix cache hits), a server
that fails after the retries of ``_http`` taken out and its work run on the others. ``clear_cache`` cannot
reach a server's prefix cache (vLLM resets it only in its development mode): results never depend on it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._closing import Closing
from ..errors import EngineError, PromptRefusedError
from ..settings import check, default
from ..verdict import StageTimings
from ._http import HttpClient
from ._vllm_request import DigitIds, Reply, chat_body, image_url
from ._vllm_vocab import (
    ServedModel,
    Vocabulary,
    check_template,
    image_tokens,
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
from .fleet import Fleet
from .grammar import VERDICT_REGEX, tail_regex

__all__ = ["VllmEngine", "DEFAULT_LANES", "DEFAULT_IMAGE_SIZE", "PATCH_SIZE"]

#: Requests in flight per server when ``concurrency`` is not given.
DEFAULT_LANES = 8
#: LLaVA-1.5's tower input (CLIP ViT-L/14-336) and patch side: the image size of a served model whose
#: llava-hf folder is not at hand is derived from the server's image token count with it.
DEFAULT_IMAGE_SIZE = 336
PATCH_SIZE = 14
_IMAGE_TOKEN = "<image>"


def _local_folder(model: str | None) -> Path | None:
    if model is None:
        return None
    path = Path(model).expanduser()
    return path if (path / "config.json").is_file() else None


def _folder_image_size(folder: Path) -> tuple[int, int]:
    """(image size, patch size) from a llava-hf folder's ``config.json``."""
    try:
        vision = json.loads((folder / "config.json").read_text(encoding="utf-8"))["vision_config"]
        return int(vision["image_size"]), int(vision["patch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EngineError(
            f"{folder / 'config.json'} has no vision_config with image_size and patch_size",
            hint="give the folder of a llava-hf export (edgejudge convert --to llava-hf)",
        ) from None


class _Stream:
    """Streams generated text to ``on_text`` without the leading whitespace (as the local engine does)."""

    def __init__(self, on_text: TokenCallback | None) -> None:
        self.on_text = on_text
        self.started = False

    def add(self, piece: str) -> None:
        if self.on_text is None:
            return
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return
            self.started = True
        self.on_text(piece)


class VllmEngine(Closing):
    """The judge on the vLLM servers at ``servers`` (see the module docstring). A context manager.

    ``model`` is a served model's name, a local llava-hf folder (its ``config.json`` gives the image size;
    the server must serve that folder) or None for the servers' only model. ``concurrency`` is the requests
    in flight per server (None: ``DEFAULT_LANES``), ``max_parallel`` how many requests of one
    ``generate_many`` call are sent at once, ``timeout_s`` the longest wait on a server, ``api_key`` the
    servers' ``--api-key``. Every server must answer and serve the same model when the engine connects.
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
    ) -> None:
        self._closed = True
        urls = [str(u) for u in servers]
        if not urls:
            raise EngineError(
                "no vLLM server given", hint="give the URL of a vLLM server, e.g. http://HOST:8000"
            )
        check("concurrency", concurrency)
        check("max_parallel", max_parallel)
        check("request_timeout", timeout_s)
        lanes = concurrency if concurrency is not None else DEFAULT_LANES
        self._max_parallel = max_parallel
        self._folder = _local_folder(model)
        wanted = [] if model is None else [model]
        if self._folder is not None:
            wanted.append(str(self._folder.resolve()))
        self._clients = [
            HttpClient(url, timeout_s=timeout_s, api_key=api_key, max_connections=lanes + 4) for url in urls
        ]
        try:
            self._connect(wanted)
        except BaseException:
            for client in self._clients:
                client.close()
            raise
        self._fleet = Fleet([c.url for c in self._clients], [lanes] * len(self._clients))
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
        self._vocab: Vocabulary = read_vocabulary(self._clients[0], first.name)
        for client in self._clients:
            check_template(client, first.name, self._vocab.bos)
        image_ids = [t for t, text in self._vocab.control.items() if text == _IMAGE_TOKEN]
        if not image_ids:
            raise EngineError(
                f"{self._clients[0].url}: the served vocabulary has no {_IMAGE_TOKEN} token",
                hint="serve a llava-hf export (edgejudge convert --to llava-hf)",
            )
        self._image_id = image_ids[0]
        warnings: list[str] = []
        if self._folder is not None:
            size, patch = _folder_image_size(self._folder)
            expected = (size // patch) ** 2
        else:
            size, expected = DEFAULT_IMAGE_SIZE, 0
        n = image_tokens(self._clients[0], first.name, self._image_id, _IMAGE_TOKEN, size)
        if self._folder is not None and n != expected:
            raise EngineError(
                f"{self._clients[0].url} gives an image {n} prompt positions, the folder's config {expected}",
                hint="start the server on that folder, with --chat-template-content-format string",
            )
        if self._folder is None:
            side = math.isqrt(n)
            if side * side == n:
                size = side * PATCH_SIZE
            warnings.append(
                f"image size {size} assumed from the server's {n} image tokens (LLaVA-1.5's "
                f"{PATCH_SIZE}-pixel patches); name the model's llava-hf folder to read it from its config"
            )
        self._image_size, self._image_tokens = size, n
        self._skip = frozenset(self._vocab.control)
        self.warnings: tuple[str, ...] = tuple(warnings)

    # -- Engine protocol -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "vllm"

    @property
    def model_name(self) -> str:
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

    def count_tokens(self, text: str) -> int:
        self._check_open()
        if not text:
            return 0
        return self._fleet.run(None, lambda s, _: len(tokenize(self._clients[s], self._served.name, text)))

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
        return self._run(parts, prompt, params, n_prompt, image_end, on_text)

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """One generation per request, in order, up to ``max_parallel`` in flight at once (the server
        batches them). Every request is checked (settings, image, control tokens, context) before any is
        sent; ``index`` in the error names the offending one."""
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
                pool.submit(self._run, parts, prompt, params, n, end, None)
                for (parts, params), prompt, (n, end) in zip(requests, prompts, measured, strict=True)
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

    # -- one generation --------------------------------------------------------------------------------
    def _prompt(self, parts: PromptParts) -> str:
        return parts.before_image + _IMAGE_TOKEN + parts.after_image

    def _measure(self, prompt: str, params: GenerationParams, index: int | None) -> tuple[int, int]:
        """(prompt positions, end of the image) of ``prompt`` on the servers; refuses control tokens in
        its text and a prompt that does not fit."""
        body = chat_body(self._served.name, prompt, None, params, max_tokens=1, regex=None, digit_ids=[])
        ids = self._fleet.run(None, lambda s, _: tokenize_chat(self._clients[s], body))
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
    ) -> Generation:
        url = image_url(parts)

        def work(server: int, _lane: int) -> Generation:
            return self._generate_on(server, prompt, url, params, n_prompt, image_end, on_text)

        return self._fleet.run(parts.pixels_sha256, work)

    def _generate_on(
        self,
        server: int,
        prompt: str,
        url: str,
        params: GenerationParams,
        n_prompt: int,
        image_end: int,
        on_text: TokenCallback | None,
    ) -> Generation:
        client = self._clients[server]
        name, digits = self._served.name, self._vocab.digits
        stream = _Stream(on_text)
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self.n_ctx - n_prompt - TAIL_RESERVE)
        replies: list[Reply] = []
        probs = None
        if budget > 0:
            regex = VERDICT_REGEX if params.constrained else None
            body = chat_body(
                name, prompt, url, params, max_tokens=budget, regex=regex, digit_ids=digits.all_ids
            )
            replies.append(self._stream(client, body, stream.add))
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
            )
            room = self.n_ctx - (len(tokenize_chat(client, body)) - 1 + self._image_tokens)
            if room < 1:
                raise EngineError(
                    f"no room left for the forced tail in the context window ({self.n_ctx})",
                    hint="lower max_tokens or raise the server's max_model_len",
                )
            body["max_tokens"] = min(TAIL_RESERVE, room)
            replies.append(self._stream(client, body, stream.add))
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

    def _stream(self, client: HttpClient, body: dict[str, Any], on_text: Callable[[str], None]) -> Reply:
        return Reply().fold(client.stream_events("/v1/chat/completions", body), on_text)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
