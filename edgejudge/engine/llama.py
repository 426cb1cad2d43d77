"""``LlamaCppEngine``: the judge on llama-cpp-python's ``Llama`` + libmtmd, driven directly (no chat handler).

One prompt = [text before | image | text after], tokenized by mtmd without special-token parsing. Between
calls the engine remembers what its KV cache holds as a sequence of units (text token ids; one
``(sha256, i)`` per image position), so a new prompt reuses the longest common prefix: the cache is
truncated there and only the tail is evaluated. Image embeddings live in an LRU keyed by the image's
sha256, so returning to an earlier image skips the CLIP encoder. Generation samples with a grammar that
guarantees ``[RESULT] d`` (forcing the tail when ``max_tokens`` runs out), reads the raw logits where the
digit is chosen and turns them into a 5-way score distribution (see ``_sampling``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ContextOverflowError, EngineError, InputError, ModelNotFoundError
from . import grammar as gbnf
from ._closing import Closing
from ._mmproj import (
    CLS_KEY,
    MmprojInfo,
    check_cls_position,
    check_text_model_name,
    find_mmproj,
    read_mmproj_info,
)
from .base import Generation, GenerationParams, PromptParts, StageTimings, TokenCallback

if TYPE_CHECKING:
    from llama_cpp import Llama

    from ..native.mtmd import Chunk, Chunks
    from ._sampling import Sampler

__all__ = ["LlamaCppEngine", "find_mmproj", "read_mmproj_info", "MmprojInfo", "CLS_KEY", "TAIL_RESERVE"]

TAIL_RESERVE = 16  # tokens kept free for the forced " [RESULT] d" tail
MAX_PARALLEL = 16  # most sequences one context decodes together (generate_many)


def _parallel_context(llm: Llama, n_seq: int, verbose: bool) -> None:
    """Give ``llm`` a context that holds ``n_seq`` sequences in one unified KV cache of ``n_ctx`` cells.

    ``Llama`` exposes neither ``n_seq_max`` nor ``kv_unified``, so its fresh (still empty) context is
    freed first and replaced by one made from the same parameters plus those two. With one sequence in
    use it computes what the original context does (tests/test_parallel.py compares the two)."""
    from llama_cpp import _internals

    params = llm.context_params
    params.n_seq_max = n_seq
    params.kv_unified = True
    llm._ctx.close()
    llm._ctx = llm._stack.enter_context(
        contextlib.closing(_internals.LlamaContext(model=llm._model, params=params, verbose=verbose))
    )


def _default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return available if available <= 4 else available // 2


def _lcp(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class _PromptStats:
    encode_s: float
    prompt_s: float
    reused: int
    cached: bool


@dataclass(frozen=True)
class _Request:
    """One prompt of ``generate_many``, tokenized: its chunks (alive until the call ends) and units."""

    parts: PromptParts
    params: GenerationParams
    chunks: Chunks
    units: list[Hashable]
    layout: list[tuple[int, int, Chunk]]


def _check_fits(n_prompt: int, params: GenerationParams, n_ctx: int, index: int | None = None) -> None:
    """Raise ``ContextOverflowError`` when the prompt plus the generation budget exceed ``n_ctx`` (a
    constrained run always keeps room for the forced " [RESULT] d" tail)."""
    budget = max(params.max_tokens, TAIL_RESERVE) if params.constrained else params.max_tokens
    over_by = n_prompt + budget - n_ctx
    if over_by > 0:
        raise ContextOverflowError(
            f"the prompt ({n_prompt} tokens) plus {budget} generated tokens exceed the "
            f"context window ({n_ctx}) by {over_by} tokens",
            over_by=over_by,
            hint="shorten the inputs, lower max_tokens or raise n_ctx",
            index=index,
        )


def _shared_prefix(group: Sequence[_Request]) -> int | None:
    """Units every prompt of ``group`` starts with, image included and at least one unit short of the
    shortest prompt (each sequence evaluates a tail of its own); None when the image is not shared."""
    from ..native.mtmd import TEXT

    first = group[0]
    shared = min(len(r.units) for r in group) - 1
    for other in group[1:]:
        shared = min(shared, _lcp(first.units, other.units))
    image_end = max((end for _, end, c in first.layout if c.kind != TEXT), default=0)
    return shared if shared >= image_end else None


def _cells(group: Sequence[_Request], shared: int) -> int:
    """KV cells a group with ``shared`` prefix units may need: the prefix once, then each tail, its
    max_tokens and, when constrained, room for a forced tail after them."""
    extra = sum(r.params.max_tokens + (TAIL_RESERVE if r.params.constrained else 0) for r in group)
    return shared + sum(len(r.units) - shared for r in group) + extra


class _Decoding:
    """One sequence's generation: sampler, grammar phases, forced tail, digit distribution and text.

    ``step(logits)`` takes the raw logits at the sequence's current position and returns the next token
    to evaluate (at position ``pos - 1``), or None when the generation is over. The one-sequence and the
    parallel paths drive the same state machine, so they make the same decisions.
    """

    def __init__(
        self, engine: LlamaCppEngine, params: GenerationParams, n_prompt: int, on_text: TokenCallback | None
    ) -> None:
        from ._sampling import Sampler, TextStream

        self.vocab = engine._vocab
        self.params = params
        self.n_ctx = engine.n_ctx
        self.seed = params.seed if params.seed is not None else engine._default_seed
        self.stream = TextStream(on_text)
        self.probs: dict[int, float] | None = None
        self.forced = False
        self.n_gen = 0
        self.n_prompt = n_prompt
        self.pos = n_prompt  # the next position to fill
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self.n_ctx - n_prompt - TAIL_RESERVE)
        self.remaining = max(budget, 0)
        grammar = gbnf.VERDICT_GRAMMAR if params.constrained else None
        self.sampler: Sampler | None = Sampler(
            self.vocab.vocab, self.vocab.n_vocab, params, grammar, self.seed
        )
        self.done = False

    def step(self, logits: np.ndarray) -> int | None:
        from ._sampling import softmax_digits

        while not self.done:
            assert self.sampler is not None
            if self.remaining > 0:
                self.remaining -= 1
                token = self.sampler.sample(logits)
                if not self.vocab.is_eog(token):
                    piece = self.vocab.piece(token)
                    groups = self.vocab.score_groups(self.stream.raw, piece)
                    if groups is not None:
                        self.probs = softmax_digits(logits, groups)
                    self.stream.add(piece)
                    self.n_gen += 1
                    scored = self.probs is not None and self.params.constrained
                    if not scored and self.pos < self.n_ctx:
                        self.pos += 1
                        return token
            # this phase is over: end of text, the score was read, the context is full or the budget is spent
            self.sampler.close()
            self.sampler = None
            if not self.params.constrained or self.probs is not None or self.forced:
                self.done = True
                break
            # max_tokens ran out before the score: force the tail, still read the digit
            self.forced = True
            self.remaining = TAIL_RESERVE
            from ._sampling import Sampler

            self.sampler = Sampler(
                self.vocab.vocab,
                self.vocab.n_vocab,
                self.params,
                gbnf.tail_grammar(self.stream.raw),
                self.seed,
            )
        return None

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    def result(self, stats: _PromptStats, generation_s: float, *, parallel: int = 1) -> Generation:
        self.stream.add(b"", final=True)
        timings = StageTimings(
            image_encode_s=stats.encode_s,
            prompt_eval_s=stats.prompt_s,
            generation_s=generation_s,
            prompt_tokens=self.n_prompt,
            reused_tokens=stats.reused,
            generated_tokens=self.n_gen,
            image_cached=stats.cached,
            parallel=parallel,
        )
        return Generation(
            text=self.stream.text, score_probs=self.probs, forced_tail=self.forced, timings=timings
        )


class LlamaCppEngine(Closing):
    """The real engine (see the module docstring). A context manager; ``close()`` is idempotent.

    ``n_gpu_layers=-1`` offloads every layer when the llama.cpp build supports it (0 on CPU builds);
    ``mmproj_offload`` runs the vision encoder on the GPU; ``n_threads`` None uses the available cores
    (half of them above 4); ``image_cache_size`` is the number of image embeddings kept (0 disables it);
    ``seed`` is the default for generations without one; ``verbose`` lets llama.cpp/mtmd log to stderr.
    """

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = -1,
        mmproj_offload: bool = True,
        verbose: bool = False,
        image_cache_size: int = 8,
        n_batch: int = 512,
        seed: int | None = None,
        max_parallel: int = 4,
    ) -> None:
        import llama_cpp

        from ..native.mtmd import MtmdContext, set_native_logging
        from ._sampling import Vocab

        self._closed = True
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelNotFoundError(
                f"model file not found: {self.model_path}", hint="pass the path of the text-model .gguf"
            )
        check_text_model_name(self.model_path)
        self.mmproj_path = Path(mmproj_path) if mmproj_path is not None else find_mmproj(self.model_path)
        if not self.mmproj_path.is_file():
            raise ModelNotFoundError(
                f"projector file not found: {self.mmproj_path}", hint="pass the path of the mmproj .gguf"
            )
        if n_ctx < 64:
            raise InputError(f"n_ctx {n_ctx} is too small", hint="use n_ctx >= 2048 (4096 recommended)")
        if not 1 <= max_parallel <= MAX_PARALLEL:
            raise InputError(
                f"max_parallel must be from 1 to {MAX_PARALLEL}, got {max_parallel}",
                hint="use 4 (1 decodes one sequence at a time)",
            )
        self.max_parallel = max_parallel
        info = read_mmproj_info(self.mmproj_path)
        self.warnings: tuple[str, ...] = tuple(check_cls_position(info))
        self._info = info
        self._image_cache_size = max(0, int(image_cache_size))
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._kv_units: list[Hashable] = []
        self._default_seed = seed
        self.n_threads = n_threads if n_threads and n_threads > 0 else _default_threads()
        if n_gpu_layers < 0:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        set_native_logging(verbose)
        try:
            self._llm = llama_cpp.Llama(
                str(self.model_path),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_gpu_layers=n_gpu_layers,
                seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed % 2**32,
                logits_all=False,
                verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise EngineError(
                f"llama.cpp could not load {self.model_path.name}: {err}",
                hint="check that the file is a complete GGUF text model (re-run with verbose=True)",
            ) from None
        if max_parallel > 1:
            try:
                _parallel_context(self._llm, max_parallel, verbose)
            except (ValueError, RuntimeError) as err:
                self._llm.close()
                raise EngineError(
                    f"llama.cpp could not create a context for {max_parallel} sequences: {err}",
                    hint="lower n_ctx or pass max_parallel=1 (re-run with verbose=True)",
                ) from None
        try:
            self._mtmd = MtmdContext(
                self.mmproj_path,
                self._llm.model,
                use_gpu=mmproj_offload,
                n_threads=self.n_threads,
                verbose=verbose,
            )
            self._vocab = Vocab(self._llm._model.vocab, self._llm.n_vocab())
        except BaseException:
            if hasattr(self, "_mtmd"):
                self._mtmd.close()
            self._llm.close()
            raise
        self._closed = False

    # -- Engine protocol -------------------------------------------------------------------------------
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
        return int(self._llm.n_ctx())

    def count_tokens(self, text: str) -> int:
        self._check_open()
        if not text:
            return 0
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(
        self,
        parts: PromptParts,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        from ._sampling import validate_params

        self._check_open()
        validate_params(params)
        with self._tokenize(parts) as chunks:
            n_prompt = chunks.n_pos
            _check_fits(n_prompt, params, self.n_ctx)
            stats = self._evaluate_prompt(chunks, parts.pixels_sha256)
        return self._sample(params, n_prompt, stats, on_text)

    def clear_cache(self) -> None:
        """Forget the reusable KV prefix and the cached image embeddings (the next call starts cold)."""
        self._check_open()
        self._llm._ctx.kv_cache_clear()
        self._llm.n_tokens = 0
        self._kv_units = []
        self._images.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._mtmd.close()
        self._llm.close()
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
        """The chunk structure of a prompt: ("text", token ids) / ("image", id) (for tests and tools)."""
        from ..native.mtmd import TEXT

        self._check_open()
        with self._tokenize(parts) as chunks:
            return [("text", c.tokens) if c.kind == TEXT else ("image", c.chunk_id or "") for c in chunks]

    @staticmethod
    def _units(chunks: Chunks, sha: str) -> tuple[list[Hashable], list[tuple[int, int, Chunk]]]:
        """The prompt as units (text token ids; ``(sha, i)`` per image position) and each chunk's span."""
        from ..native.mtmd import TEXT

        layout = []
        units: list[Hashable] = []
        for c in chunks:
            start = len(units)
            units.extend(c.tokens if c.kind == TEXT else [(sha, i) for i in range(c.n_pos)])
            layout.append((start, len(units), c))
        return units, layout

    def _evaluate_prompt(self, chunks: Chunks, sha: str, stop: int | None = None) -> _PromptStats:
        """Evaluate the prompt into sequence 0, reusing the cached prefix; with ``stop``, only its first
        ``stop`` units (a shared prefix: no logits needed at its end, so it may be reused whole)."""
        from ..native.mtmd import TEXT

        units, layout = self._units(chunks, sha)
        end_at = len(units) if stop is None else stop
        keep = min(_lcp(self._kv_units, units), len(units) - 1 if stop is None else stop)
        for start, end, c in layout:  # never resume inside an image chunk
            if start < keep < end and c.kind != TEXT:
                keep = start
        llm = self._llm
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = keep
        self._kv_units = units[:keep]
        encode_s = 0.0
        cached = False
        t0 = time.perf_counter()
        for start, end, c in layout:
            if end <= keep or start >= end_at:
                continue
            if c.kind == TEXT:
                llm.eval(list(c.tokens[max(keep - start, 0) : min(end, end_at) - start]))
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
                new_n_past = self._mtmd.decode_image(llm._ctx.ctx, c, embd, llm.n_tokens, llm.n_batch)
                llm.input_ids[llm.n_tokens : new_n_past] = -1
                llm.n_tokens = new_n_past
            self._kv_units = units[: min(end, end_at)]
        return _PromptStats(encode_s, time.perf_counter() - t0 - encode_s, keep, cached)

    def _last_logits(self, index: int = -1) -> np.ndarray:
        """A view of the logits at batch position ``index`` of the last decode (valid until the next)."""
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self._vocab.n_vocab,))

    # -- sampling --------------------------------------------------------------------------------------
    def _sample(
        self, params: GenerationParams, n_prompt: int, stats: _PromptStats, on_text: TokenCallback | None
    ) -> Generation:
        decoding = _Decoding(self, params, n_prompt, on_text)
        t0 = time.perf_counter()
        try:
            logits = self._last_logits()
            while (token := decoding.step(logits)) is not None:
                self._llm.eval([token])
                logits = self._last_logits()
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
        are in request order. A request alone in its group goes through ``generate``. Raises
        ``ContextOverflowError`` (before evaluating anything) when one request cannot fit on its own.
        """
        from ._sampling import validate_params

        self._check_open()
        for _, params in requests:
            validate_params(params)
        with contextlib.ExitStack() as stack:
            prepared = []
            for index, (parts, params) in enumerate(requests):
                chunks = stack.enter_context(self._tokenize(parts))
                units, layout = self._units(chunks, parts.pixels_sha256)
                _check_fits(len(units), params, self.n_ctx, index)
                prepared.append(_Request(parts, params, chunks, units, layout))
            results: list[Generation] = []
            for group in self._groups(prepared):
                if len(group) == 1:
                    only = group[0]
                    results.append(
                        self._sample(
                            only.params,
                            len(only.units),
                            self._evaluate_prompt(only.chunks, only.parts.pixels_sha256),
                            None,
                        )
                    )
                else:
                    results.extend(self._generate_group(group))
            return results

    def _groups(self, requests: list[_Request]) -> list[list[_Request]]:
        groups: list[list[_Request]] = []
        for req in requests:
            group = groups[-1] if groups else None
            if (
                group is not None
                and len(group) < self.max_parallel
                and req.parts.pixels_sha256 == group[0].parts.pixels_sha256
            ):
                shared = _shared_prefix([*group, req])
                if shared is not None and _cells([*group, req], shared) <= self.n_ctx:
                    group.append(req)
                    continue
            groups.append([req])
        return groups

    def _generate_group(self, group: list[_Request]) -> list[Generation]:
        import llama_cpp

        shared = _shared_prefix(group)
        assert shared is not None
        llm = self._llm
        ctx = llm._ctx.ctx
        batch = llama_cpp.llama_batch_init(llm.n_batch, 0, 1)
        decodings: list[_Decoding] = []
        prefix_done = False
        try:
            stats = self._evaluate_prompt(group[0].chunks, group[0].parts.pixels_sha256, stop=shared)
            prefix_done = True
            for seq in range(1, len(group)):
                llm._ctx.kv_cache_seq_cp(0, seq, 0, shared)

            def decode(items: list[tuple[int, int, int, bool]]) -> None:
                batch.n_tokens = len(items)
                for i, (token, pos, seq, want) in enumerate(items):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, want
                    batch.seq_id[i][0] = seq
                rc = llama_cpp.llama_decode(ctx, batch)
                if rc != 0:
                    raise EngineError(f"llama.cpp failed to decode a batch (code {rc})", hint="raise n_ctx")

            tail_s: list[float] = []
            first: list[np.ndarray] = []
            for seq, req in enumerate(group):  # each tail into its own sequence; keep its last logits
                t0 = time.perf_counter()
                tail = [int(u) for u in req.units[shared:]]  # type: ignore[call-overload]
                for at in range(0, len(tail), llm.n_batch):
                    piece = tail[at : at + llm.n_batch]
                    last = at + len(piece) == len(tail)
                    decode(
                        [
                            (tok, shared + at + j, seq, last and j == len(piece) - 1)
                            for j, tok in enumerate(piece)
                        ]
                    )
                first.append(np.array(self._last_logits(-1), copy=True))
                tail_s.append(time.perf_counter() - t0)

            decodings = [_Decoding(self, req.params, len(req.units), None) for req in group]
            pending = dict(enumerate(first))
            t0 = time.perf_counter()
            while pending:
                items: list[tuple[int, int, int, bool]] = []
                for seq, logits in pending.items():
                    token = decodings[seq].step(logits)
                    if token is not None:
                        items.append((token, decodings[seq].pos - 1, seq, True))
                if not items:
                    break
                decode(items)
                pending = {seq: self._last_logits(j) for j, (_, _, seq, _) in enumerate(items)}
            loop_s = time.perf_counter() - t0
        finally:
            for decoding in decodings:
                decoding.close()
            llama_cpp.llama_batch_free(batch)
            for seq in range(1, len(group)):
                llm._ctx.kv_cache_seq_rm(seq, 0, -1)
            if prefix_done:  # sequence 0 keeps the shared prefix for the next call
                llm._ctx.kv_cache_seq_rm(0, shared, -1)
                llm.n_tokens = shared
                self._kv_units = group[0].units[:shared]
        total_gen = sum(d.n_gen for d in decodings) or 1
        results = []
        for seq, decoding in enumerate(decodings):
            seq_stats = _PromptStats(
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
