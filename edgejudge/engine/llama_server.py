"""``LlamaServerEngine``: the judge on one or several llama-server processes, with the local engine's
semantics (``engine.llama`` and ``engine._decoding`` are the reference).

At construction every server is checked against the judge pair named (``_llama_server_connect``: model
identity, vision projector, a build whose CLS order matches the projector's stamp). A prompt is sent as
``before + <media marker> + after`` with the fitted pixels as a PNG; the server adds BOS. It tokenizes
prompts with special-token parsing (the local engine never does), so a text holding a control token's text
(``<s>``, ``</s>``, ...) or the media marker is refused for that request (``PromptRefusedError``).

One generation is up to three ``POST /completion`` requests on the same slot (its prompt cache hits):

1. the generation: the local sampler chain (``_llama_server_wire.sampler_fields``), the verdict grammar,
   the budget min(max_tokens, n_ctx - n_prompt - TAIL_RESERVE) when constrained, the raw top-N
   log-probabilities of every position (``score_top_n``); streamed to ``on_text`` by ``generate``;
2. when the budget ran out before the score: the forced tail, a request that regenerates exactly the
   tokens of (1) (token-id grammar) and then the tail grammar's literal and a digit;
3. when the top-N of the score position cannot give the distribution exactly: a request that regenerates
   the tokens up to the score position and reads the digit tokens' probabilities there
   (``_llama_server_score``).

Requests that share an image go to the same server and slot (``Fleet``: affinity by the fitted pixels'
sha256); ``generate_many`` runs each image's requests one after another on one lane and different images
at once; a server that stops answering is dropped and its work retried on the others, and readmitted when
its health check answers again and it still serves the pair (the fleet's probe, every ``reprobe_s``). A
request that fails on its own (refused, answered in an unexpected shape, or longer than the request
timeout on a server whose health check answers) is that request's ``PromptRefusedError``, not the
server's (``_http.row_error``).
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from .._closing import Closing
from ..errors import EngineError, PromptRefusedError
from ..settings import check, default
from ._http import HttpClient, RetryPolicy, row_error
from ._llama_server_connect import ServerInfo, connect
from ._llama_server_run import Request, Slot, run_generation
from ._llama_server_vocab import read_text_model
from ._mmproj import read_mmproj_info, resolve_pair
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
from .fleet import REPROBE_S, Fleet, unique_urls

__all__ = ["LlamaServerEngine", "SCORE_TOP_N"]

#: Raw top log-probabilities asked for at every generated position (0: always the follow-up request).
SCORE_TOP_N = 20
_CACHE = 256  # tokenized texts and encoded images kept


class LlamaServerEngine(Closing):
    """The judge pair ``model_path`` (+ ``mmproj_path``, found beside it by default) on the llama-servers
    at ``servers`` (see the module docstring). ``concurrency`` is the lanes per server (None: its slot
    count; lane k uses slot k mod slots); ``max_parallel`` the ``parallel`` setting (the batch's group
    size); ``timeout_s`` one request's timeout; ``seed`` the default for generations without one;
    ``api_key`` is sent as a bearer token; ``score_top_n`` as ``SCORE_TOP_N``; ``runtime_cls`` the CLS
    order of the known build (None: the local runtime's, ``probe.runtime_cls_position``); ``retry`` the
    HTTP retry policy; ``reprobe_s`` the shortest time between two probes of a dead server. Server URLs
    are normalised and each server is one member however often it is given (``fleet.unique_urls``)."""

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        servers: Sequence[str],
        concurrency: int | None = default("concurrency"),
        max_parallel: int = default("parallel"),
        timeout_s: float = default("request_timeout"),
        seed: int | None = default("seed"),
        api_key: str | None = None,
        score_top_n: int = SCORE_TOP_N,
        runtime_cls: str | Callable[[], str] | None = None,
        retry: RetryPolicy | None = None,
        reprobe_s: float = REPROBE_S,
    ) -> None:
        self._closed = True
        self.model_path, self.mmproj_path = resolve_pair(model_path, mmproj_path)
        for name, value in (
            ("concurrency", concurrency),
            ("max_parallel", max_parallel),
            ("request_timeout", timeout_s),
            ("seed", seed),
        ):
            check(name, value)
        if not servers:
            raise EngineError("no server given", hint="give the URL of at least one llama-server")
        self._info = read_mmproj_info(self.mmproj_path)
        self._facts, self._vocab = read_text_model(self.model_path)
        if runtime_cls is None:
            from ..probe import runtime_cls_position  # lazy: asked only for a stamped projector

            runtime_cls = runtime_cls_position
        self._max_parallel = max_parallel
        self._seed = seed
        self._top_n = max(score_top_n, 0)
        self._clients = [
            HttpClient(url, timeout_s=timeout_s, api_key=api_key, retry=retry, max_connections=64)
            for url in unique_urls(servers)
        ]
        try:
            self._servers: list[ServerInfo] = [
                connect(c, self._facts, self._info, runtime_cls) for c in self._clients
            ]
        except BaseException:
            for client in self._clients:
                client.close()
            raise
        self.warnings: tuple[str, ...] = tuple(dict.fromkeys(w for s in self._servers for w in s.warnings))
        self._n_ctx = min(s.n_ctx for s in self._servers)
        lanes = [concurrency or s.slots for s in self._servers]
        self._markers = tuple(dict.fromkeys(s.marker for s in self._servers))
        self._runtime_cls = runtime_cls
        self._fleet = Fleet([s.url for s in self._servers], lanes, probe=self._readmit, reprobe_s=reprobe_s)
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._images: OrderedDict[str, str] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=max(sum(lanes), 1), thread_name_prefix="llama-server")
        self._closed = False

    # -- Engine protocol -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "llama-server"

    @property
    def model_name(self) -> str:
        return self.model_path.stem

    @property
    def image_size(self) -> int:
        return self._info.image_size

    @property
    def image_tokens(self) -> int:
        return self._info.image_tokens

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def concurrency(self) -> int:
        return max(self._fleet.concurrency, 1)

    @property
    def servers(self) -> tuple[ServerStats, ...]:
        return self._fleet.stats

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        return self.model_path, self.mmproj_path

    def count_tokens(self, text: str) -> int:
        self._check_open()
        return len(self._tokenize(text)) if text else 0

    def generate(
        self, parts: PromptParts, params: GenerationParams, on_text: TokenCallback | None = None
    ) -> Generation:
        self._check_open()
        req = self._prepare(parts, params, 0)
        shown = [""]  # what ``on_text`` got so far, over the tries (a server may die mid-stream)

        def attempt(server: int, lane: int) -> Generation:
            seen = [""]

            def show(piece: str) -> None:  # a retry shows only what goes beyond the text already shown
                seen[0] += piece
                if on_text is not None and seen[0].startswith(shown[0]) and len(seen[0]) > len(shown[0]):
                    new, shown[0] = seen[0][len(shown[0]) :], seen[0]
                    on_text(new)

            return self._generate(server, lane, req, show if on_text is not None else None)

        return self._fleet.run(parts.pixels_sha256, attempt)

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """One generation per request, in order. Everything is checked first (``ContextOverflowError``,
        ``PromptRefusedError`` with the request's ``index``); then each image's requests run one after
        another on one lane (its slot's cache hits) and different images run at once."""
        self._check_open()
        prepared = [self._prepare(parts, params, i) for i, (parts, params) in enumerate(requests)]
        by_image: dict[str, list[Request]] = {}
        for req in prepared:
            by_image.setdefault(req.parts.pixels_sha256, []).append(req)
        results: list[Generation | None] = [None] * len(prepared)

        def run_group(group: list[Request]) -> None:
            def work(server: int, lane: int) -> list[Generation]:
                return [self._generate(server, lane, req, None) for req in group]

            for req, gen in zip(group, self._fleet.run(group[0].parts.pixels_sha256, work), strict=True):
                results[req.index] = gen

        groups = list(by_image.values())
        if len(groups) == 1:
            run_group(groups[0])
        else:
            futures = [self._pool.submit(run_group, g) for g in groups]
            wait(futures)  # every group ends before an error is raised (none is left running)
            for future in futures:
                future.result()
        return [r for r in results if r is not None]

    def clear_cache(self) -> None:
        """Erase every slot's prompt cache (``POST /slots/{id}?action=erase``). llama-server allows that
        only when started with ``--slot-save-path``; otherwise this is a no-op for that server (and its
        RAM prompt cache, ``--cache-ram``, is never reachable from here): results never depend on it."""
        self._check_open()
        for index in self._fleet.live():
            client, info = self._clients[index], self._servers[index]
            for slot in range(info.slots):
                try:
                    client.post_json(f"/slots/{slot}?action=erase", {}, retry=False)
                except EngineError:
                    break

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients:
            client.close()

    # -- preparing -------------------------------------------------------------------------------------
    def _prepare(self, parts: PromptParts, params: GenerationParams, index: int) -> Request:
        check_params(params)
        check_parts(parts, self.image_size)
        for where, text in (("before the image", parts.before_image), ("after the image", parts.after_image)):
            special = self._vocab.special_in(text) or next((m for m in self._markers if m in text), None)
            if special is not None:
                raise PromptRefusedError(
                    f"the prompt text {where} contains {special!r}, which llama-server would read as a "
                    "control token, not as text",
                    hint="judge this one with the local engine (it never reads special tokens in texts)",
                    index=index,
                )
        n_before = int(self._vocab.add_bos) + len(self._tokenize(parts.before_image))
        n_prompt = n_before + self.image_tokens + len(self._tokenize(parts.after_image))
        check_fits(n_prompt, params, self._n_ctx, index)
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self._n_ctx - n_prompt - TAIL_RESERVE)
        return Request(parts, params, index, n_prompt, n_before, max(budget, 0), self._image(parts))

    def _tokenize(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` as one segment (no BOS, no special parsing), by ``POST /tokenize`` on a
        live server; cached."""
        with self._lock:
            hit = self._tokens.get(text)
            if hit is not None:
                self._tokens.move_to_end(text)
                return hit
        body = {"content": text, "add_special": False, "parse_special": False}
        answer = self._fleet.call(lambda index: self._clients[index].post_json("/tokenize", body))
        tokens = tuple(int(t) for t in answer.get("tokens", [])) if isinstance(answer, dict) else ()
        with self._lock:
            self._tokens[text] = tokens
            while len(self._tokens) > _CACHE:
                self._tokens.popitem(last=False)
        return tokens

    def _image(self, parts: PromptParts) -> str:
        with self._lock:
            hit = self._images.get(parts.pixels_sha256)
        if hit is None:
            from ..images import png_bytes  # the server decodes exactly these pixels

            hit = base64.b64encode(png_bytes(parts.image_rgb, parts.image_width, parts.image_height)).decode()
            with self._lock:
                self._images[parts.pixels_sha256] = hit
                while len(self._images) > 8:
                    self._images.popitem(last=False)
        return hit

    # -- generating ------------------------------------------------------------------------------------
    def _generate(self, server: int, lane: int, req: Request, on_text: TokenCallback | None) -> Generation:
        client, info = self._clients[server], self._servers[server]
        try:
            gen = run_generation(
                Slot(client, info, lane % info.slots),
                req,
                self._vocab,
                seed=req.params.seed if req.params.seed is not None else self._seed,
                top_n=self._top_n,
                image_tokens=self.image_tokens,
                on_text=on_text,
            )
        except EngineError as err:
            row = row_error(client, err, req.index)  # this request's own failure: the server stays in
            if row is not None:
                raise row from None
            raise
        self._fleet.record(
            server,
            done=1,
            prompt_tokens=req.n_prompt,
            reused_tokens=gen.timings.reused_tokens,
            generated_tokens=gen.timings.generated_tokens,
        )
        return gen

    def _readmit(self, server: int) -> bool:
        """Whether a dead server is back, serving what it served (the fleet's probe): the connect checks
        again, a context at least the engine's and the same media marker."""
        client = self._clients[server]
        if self._closed or not client.healthy():
            return False
        info = connect(client, self._facts, self._info, self._runtime_cls)
        if info.n_ctx < self._n_ctx or info.marker not in self._markers:
            return False
        self._servers[server] = info
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
