"""``LlamaCppEngine``: the judge on llama.cpp + libmtmd, driven directly (no chat handler).

One prompt = [text before | image | text after], tokenized by mtmd without special-token parsing. Between
calls the engine remembers what its KV cache holds as a sequence of units (text token ids; one
``(pixels_sha256, i)`` per image position, see ``_prompt``), so a new prompt reuses the longest common
prefix: the cache is truncated there and only the tail is evaluated. Image embeddings live in an LRU keyed
by the fitted pixels' sha256, so returning to an earlier image skips the CLIP encoder. Generation samples
with a grammar that guarantees ``[RESULT] d`` (forcing the tail when ``max_tokens`` runs out), reads the raw
logits where the digit is chosen and turns them into a 5-way score distribution (see ``_decoding``).

The KV cache is sized by the ``kv_size`` setting: ``fit`` allocates, before a call evaluates anything,
the cells it needs (one prompt and its budget, or a parallel group's ``_prompt.cells``), in steps of
``_load.KV_STEP``, up to ``n_ctx``, and grows (emptying the cache) when a later call needs more; ``full``
allocates ``n_ctx`` at load. ``n_ctx`` is the limit every prompt is checked against either way, so the
size never changes what a generation may do. Loading, the ``mmap`` rule and the KV sizes are
``_load``'s; ``load_times`` records how long each stage of loading took.

Every native object (model, context, batch, mtmd, samplers) is a typed wrapper of ``edgejudge.native``;
this module holds the policy (what to reuse, evaluate, group and sample) in plain values. Settings and
prompts are checked by ``engine.base`` (the same checks as every engine).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._closing import Closing
from ..errors import EngineError
from ..settings import check, default
from ._load import default_threads, first_cells, grown_cells, load_pair
from ._mmproj import (
    CLS_KEY,
    MmprojInfo,
    check_cls_position,
    find_mmproj,
    read_mmproj_info,
    resolve_pair,
)
from ._prompt import Request, cells, group_requests, lcp, shared_prefix, units_of
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

if TYPE_CHECKING:
    from ..native.model import BatchItem
    from ..native.mtmd import Chunks
    from ._decoding import Decoding, PromptStats

__all__ = [
    "LlamaCppEngine",
    "find_mmproj",
    "read_mmproj_info",
    "MmprojInfo",
    "CLS_KEY",
    "TAIL_RESERVE",
]


class LlamaCppEngine(Closing):
    """The real engine (see the module docstring). A context manager; ``close()`` is idempotent.

    Defaults and bounds of the settings are those of ``edgejudge.settings`` (``max_parallel`` is the
    ``parallel`` setting). ``n_gpu_layers=-1`` offloads every layer when the llama.cpp build supports it
    (0 on CPU builds); ``mmproj_offload`` runs the vision encoder on the GPU; ``n_threads`` None uses the
    available cores (half of them above 4); ``image_cache_size`` is the number of image embeddings kept
    (0 disables it); ``seed`` is the default for generations without one; ``verbose`` lets llama.cpp/mtmd
    log to stderr; ``mmap``, ``kv_size`` and ``kv_cache_type`` are the memory settings
    (``edgejudge._settings_memory``).
    A projector stamped for the other CLS order than the installed libmtmd's is refused
    (``judgefile.check_cls``). ``runtime_cls`` is that order, or a function returning it (asked only for a
    stamped projector); None (the default) asks the cached runtime probe
    (``edgejudge.probe.runtime_cls_position``). Tests and benchmarks may inject a known value.
    """

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        n_ctx: int = default("n_ctx"),
        n_threads: int | None = default("n_threads"),
        n_gpu_layers: int = default("n_gpu_layers"),
        mmproj_offload: bool = default("mmproj_offload"),
        verbose: bool = default("verbose"),
        image_cache_size: int = default("image_cache_size"),
        n_batch: int = default("n_batch"),
        seed: int | None = default("seed"),
        max_parallel: int = default("parallel"),
        runtime_cls: str | Callable[[], str] | None = None,
        mmap: str = default("mmap"),
        kv_size: str = default("kv_size"),
        kv_cache_type: str = default("kv_cache_type"),
    ) -> None:
        self._closed = True
        self.model_path, self.mmproj_path = resolve_pair(model_path, mmproj_path)
        for name, value in (
            ("n_ctx", n_ctx),
            ("max_parallel", max_parallel),
            ("n_threads", n_threads),
            ("n_gpu_layers", n_gpu_layers),
            ("image_cache_size", image_cache_size),
            ("n_batch", n_batch),
            ("seed", seed),
            ("mmap", mmap),
            ("kv_size", kv_size),
            ("kv_cache_type", kv_cache_type),
        ):
            check(name, value)
        self._max_parallel = max_parallel
        self._n_ctx = n_ctx
        self.kv_cache_type = kv_cache_type
        began = time.perf_counter()
        times: dict[str, float] = {}
        info = read_mmproj_info(self.mmproj_path)
        if runtime_cls is None:
            from ..probe import runtime_cls_position  # lazy: the probe runs only for a stamped projector

            runtime_cls = runtime_cls_position
        self.warnings: tuple[str, ...] = tuple(check_cls_position(info, runtime_cls))
        times["probe_s"] = time.perf_counter() - began
        self._info = info
        self._image_cache_size = image_cache_size
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._kv_units: list[Hashable] = []
        self._default_seed = seed
        self.n_threads = n_threads if n_threads is not None else default_threads()
        loaded = load_pair(
            self.model_path, self.mmproj_path, n_cells=first_cells(kv_size, n_ctx, n_batch),
            n_threads=self.n_threads, n_batch=n_batch, n_gpu_layers=n_gpu_layers, seed=seed,
            n_seq=max_parallel, verbose=verbose, mmap=mmap, kv_cache_type=kv_cache_type,
            mmproj_offload=mmproj_offload,
        )  # fmt: skip
        self._model, self._mtmd, self._digits = loaded.model, loaded.mtmd, loaded.digits
        times.update(loaded.times)
        times["total_s"] = time.perf_counter() - began
        #: Seconds each stage of loading took: the projector's metadata and CLS check (``probe_s``), the
        #: text model with its first context (``text_model_s``), the projector (``mmproj_s``), in all.
        self.load_times = {k: round(v, 4) for k, v in times.items()}
        self._closed = False

    # -- Engine protocol -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "llama.cpp"

    @property
    def concurrency(self) -> int:
        return 1

    @property
    def servers(self) -> tuple[ServerStats, ...]:
        return ()

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
    def kv_cells(self) -> int:
        """KV cells allocated now (``n_ctx`` with ``kv_size`` full; what the calls so far needed with fit)."""
        return self._model.n_ctx

    def _reserve(self, need: int) -> None:
        """Make the KV cache hold ``need`` cells (at most ``n_ctx``) before anything is evaluated; a growth
        empties it (the cached prefix is gone, the image embeddings stay)."""
        cells_now = grown_cells(need, self._model.n_ctx, self._n_ctx)
        if cells_now is not None:
            self._model.resize(cells_now)
            self._kv_units = []

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        return self.model_path, self.mmproj_path

    def count_tokens(self, text: str) -> int:
        self._check_open()
        if not text:
            return 0
        return len(self._model.tokenize(text))

    def generate(
        self,
        parts: PromptParts,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        self._check_open()
        check_params(params)
        check_parts(parts, self.image_size)
        with self._tokenize(parts) as chunks:
            n_prompt = chunks.n_pos
            check_fits(n_prompt, params, self.n_ctx)
            self._reserve(n_prompt + params.max_tokens + TAIL_RESERVE)
            stats = self._evaluate_prompt(chunks, parts.pixels_sha256)
        return self._sample(params, n_prompt, stats, on_text)

    def clear_cache(self) -> None:
        """Forget the reusable KV prefix and the cached image embeddings (the next call starts cold)."""
        self._check_open()
        self._model.clear()
        self._kv_units = []
        self._images.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._mtmd.close()  # mtmd before the model it is bound to
        self._model.close()
        self._images.clear()
        self._kv_units = []

    def __del__(self) -> None:  # a forgotten engine still frees mtmd before the model goes away
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to report
            pass

    # -- prompt ----------------------------------------------------------------------------------------
    def _tokenize(self, parts: PromptParts) -> Chunks:
        return self._mtmd.tokenize(
            parts.before_image,
            parts.image_rgb,
            parts.image_width,
            parts.image_height,
            parts.pixels_sha256,
            parts.after_image,
        )

    def tokenize_chunks(self, parts: PromptParts) -> list[tuple[str, tuple[int, ...] | str]]:
        """How a prompt is split: ("text", token ids) / ("image", id) chunks, in order."""
        self._check_open()
        with self._tokenize(parts) as chunks:
            return [("text", c.tokens) if c.is_text else ("image", c.chunk_id or "") for c in chunks]

    def _evaluate_prompt(self, chunks: Chunks, sha: str, stop: int | None = None) -> PromptStats:
        """Evaluate the prompt into sequence 0, reusing the cached prefix; with ``stop``, only its first
        ``stop`` units (a shared prefix: no logits needed at its end, so it may be reused whole)."""
        from ._decoding import PromptStats

        units, layout = units_of(chunks, sha)
        end_at = len(units) if stop is None else stop
        keep = min(lcp(self._kv_units, units), len(units) - 1 if stop is None else stop)
        for start, end, c in layout:  # never resume inside an image chunk
            if start < keep < end and not c.is_text:
                keep = start
        model = self._model
        model.truncate(keep)
        self._kv_units = units[:keep]
        encode_s = 0.0
        cached = False
        t0 = time.perf_counter()
        for start, end, c in layout:
            if end <= keep or start >= end_at:
                continue
            if c.is_text:
                model.eval(c.tokens[max(keep - start, 0) : min(end, end_at) - start])
            else:
                embd = self._images.get(sha)
                if embd is not None:
                    self._images.move_to_end(sha)
                    cached = True
                else:
                    te = time.perf_counter()
                    embd = self._mtmd.encode(c)
                    encode_s += time.perf_counter() - te
                    if self._image_cache_size:
                        self._images[sha] = embd
                        while len(self._images) > self._image_cache_size:
                            self._images.popitem(last=False)
                model.eval_image(self._mtmd, c, embd)
            self._kv_units = units[: min(end, end_at)]
        return PromptStats(encode_s, time.perf_counter() - t0 - encode_s, keep, cached)

    # -- sampling --------------------------------------------------------------------------------------
    def _decoding(self, params: GenerationParams, n_prompt: int, on_text: TokenCallback | None) -> Decoding:
        from ._decoding import Decoding

        seed = params.seed if params.seed is not None else self._default_seed
        return Decoding(self._digits, self.n_ctx, params, seed, n_prompt, on_text)

    def _sample(
        self, params: GenerationParams, n_prompt: int, stats: PromptStats, on_text: TokenCallback | None
    ) -> Generation:
        decoding = self._decoding(params, n_prompt, on_text)
        model = self._model
        t0 = time.perf_counter()
        try:
            logits = model.logits()
            while (token := decoding.step(logits)) is not None:
                model.eval([token])
                logits = model.logits()
        finally:
            decoding.close()
        return decoding.result(stats, time.perf_counter() - t0)

    # -- parallel sequences ----------------------------------------------------------------------------
    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """Generate for several prompts, decoding those that share an image as parallel sequences.

        Consecutive requests with the same image form groups of up to ``max_parallel`` whose prompts and
        generation budgets fit the context together: the shared prefix (system, image, and whatever text
        follows identically) is evaluated once into sequence 0 and copied to the others, each tail is
        evaluated into its own sequence, and every decode step then samples one token for each unfinished
        sequence in one batch. Each request keeps its own sampler, seed, grammar and forced tail; results
        are in request order. A request alone in its group goes through the one-sequence path. Raises
        ``ContextOverflowError`` (before evaluating anything) when one request cannot fit on its own.
        """
        self._check_open()
        for parts, params in requests:
            check_params(params)
            check_parts(parts, self.image_size)
        with contextlib.ExitStack() as stack:
            prepared = []
            for index, (parts, params) in enumerate(requests):
                chunks = stack.enter_context(self._tokenize(parts))
                units, layout = units_of(chunks, parts.pixels_sha256)
                check_fits(len(units), params, self.n_ctx, index)
                prepared.append(Request(parts, params, chunks, units, layout))
            results: list[Generation] = []
            max_group = min(self.max_parallel, self._model.n_batch)
            for group in group_requests(prepared, max_group, self.n_ctx):
                shared = shared_prefix(group) if len(group) > 1 else None
                self._reserve(
                    cells(group, shared)
                    if shared is not None
                    else len(group[0].units) + group[0].params.max_tokens + TAIL_RESERVE
                )
                if len(group) == 1:
                    only = group[0]
                    stats = self._evaluate_prompt(only.chunks, only.parts.pixels_sha256)
                    results.append(self._sample(only.params, len(only.units), stats, None))
                else:
                    results.extend(self._generate_group(group))
            return results

    def _generate_group(self, group: list[Request]) -> list[Generation]:
        from ._decoding import PromptStats

        shared = shared_prefix(group)
        assert shared is not None
        model = self._model
        n_batch = model.n_batch
        decodings: list[Decoding] = []
        prefix_done = False
        try:
            stats = self._evaluate_prompt(group[0].chunks, group[0].parts.pixels_sha256, stop=shared)
            prefix_done = True
            for seq in range(1, len(group)):
                model.copy_sequence(0, seq, shared)

            tail_s: list[float] = []
            first: list[np.ndarray] = []
            for seq, req in enumerate(group):  # each tail into its own sequence; keep its last logits
                t0 = time.perf_counter()
                tail = [int(u) for u in req.units[shared:]]  # type: ignore[call-overload]
                for at in range(0, len(tail), n_batch):
                    piece = tail[at : at + n_batch]
                    last = at + len(piece) == len(tail)
                    model.decode(
                        [
                            (tok, shared + at + j, seq, last and j == len(piece) - 1)
                            for j, tok in enumerate(piece)
                        ]
                    )
                first.append(np.array(model.logits(-1), copy=True))
                tail_s.append(time.perf_counter() - t0)

            decodings = [self._decoding(req.params, len(req.units), None) for req in group]
            pending = dict(enumerate(first))
            t0 = time.perf_counter()
            while pending:
                items: list[BatchItem] = []
                for seq, logits in pending.items():
                    token = decodings[seq].step(logits)
                    if token is not None:
                        items.append((token, decodings[seq].pos - 1, seq, True))
                if not items:
                    break
                model.decode(items)
                pending = {seq: model.logits(j) for j, (_, _, seq, _) in enumerate(items)}
            loop_s = time.perf_counter() - t0
        finally:
            for decoding in decodings:
                decoding.close()
            for seq in range(1, len(group)):
                model.drop_sequence(seq)
            if prefix_done:  # sequence 0 keeps the shared prefix for the next call
                model.truncate(shared)
                self._kv_units = group[0].units[:shared]
        total_gen = sum(d.n_gen for d in decodings) or 1
        results = []
        for seq, decoding in enumerate(decodings):
            seq_stats = PromptStats(
                encode_s=stats.encode_s if seq == 0 else 0.0,
                prompt_s=tail_s[seq] + (stats.prompt_s if seq == 0 else 0.0),
                reused=stats.reused if seq == 0 else shared,
                cached=stats.cached if seq == 0 else True,
            )
            # the shared decode loop's time, split by each sequence's share of the generated tokens
            results.append(
                decoding.result(seq_stats, loop_s * decoding.n_gen / total_gen, parallel=len(group))
            )
        return results

    # -- misc ------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
