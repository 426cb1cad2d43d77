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

import os
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

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

__all__ = ["LlamaCppEngine", "find_mmproj", "read_mmproj_info", "MmprojInfo", "CLS_KEY", "TAIL_RESERVE"]

TAIL_RESERVE = 16  # tokens kept free for the forced " [RESULT] d" tail


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
    ) -> None:
        import llama_cpp

        from ._mtmd import MtmdContext, set_native_logging
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
            # a constrained run always keeps room for the forced " [RESULT] d" tail
            budget = max(params.max_tokens, TAIL_RESERVE) if params.constrained else params.max_tokens
            over_by = n_prompt + budget - self.n_ctx
            if over_by > 0:
                raise ContextOverflowError(
                    f"the prompt ({n_prompt} tokens) plus {budget} generated tokens exceed the "
                    f"context window ({self.n_ctx}) by {over_by} tokens",
                    over_by=over_by,
                    hint="shorten the inputs, lower max_tokens or raise n_ctx",
                )
            stats = self._evaluate_prompt(chunks, parts.image_sha256)
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
    def _tokenize(self, parts: PromptParts):  # type: ignore[no-untyped-def]
        return self._mtmd.tokenize(
            parts.before_image,
            parts.image_rgb,
            parts.image_width,
            parts.image_height,
            parts.image_sha256,
            parts.after_image,
        )

    def tokenize_chunks(self, parts: PromptParts) -> list[tuple[str, tuple[int, ...] | str]]:
        """The chunk structure of a prompt: ("text", token ids) / ("image", id) (for tests and tools)."""
        from ._mtmd import TEXT

        self._check_open()
        with self._tokenize(parts) as chunks:
            return [("text", c.tokens) if c.kind == TEXT else ("image", c.chunk_id or "") for c in chunks]

    def _evaluate_prompt(self, chunks, sha: str) -> _PromptStats:  # type: ignore[no-untyped-def]
        from ._mtmd import TEXT

        layout = []
        units: list[Hashable] = []
        for c in chunks:
            start = len(units)
            units.extend(c.tokens if c.kind == TEXT else [(sha, i) for i in range(c.n_pos)])
            layout.append((start, len(units), c))
        keep = min(_lcp(self._kv_units, units), len(units) - 1)
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
            if end <= keep:
                continue
            if c.kind == TEXT:
                llm.eval(list(c.tokens[max(keep - start, 0) :]))
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
            self._kv_units = units[:end]
        return _PromptStats(encode_s, time.perf_counter() - t0 - encode_s, keep, cached)

    # -- sampling --------------------------------------------------------------------------------------
    def _sample(
        self, params: GenerationParams, n_prompt: int, stats: _PromptStats, on_text: TokenCallback | None
    ) -> Generation:
        import llama_cpp

        from ._sampling import Sampler, TextStream, softmax_digits

        llm, vocab = self._llm, self._vocab
        seed = params.seed if params.seed is not None else self._default_seed
        stream = TextStream(on_text)
        probs: dict[int, float] | None = None
        forced = False
        n_gen = 0
        t0 = time.perf_counter()
        budget = params.max_tokens
        if params.constrained:
            budget = min(budget, self.n_ctx - n_prompt - TAIL_RESERVE)
        grammar: str | None = gbnf.VERDICT_GRAMMAR if params.constrained else None
        while True:
            sampler = Sampler(vocab.vocab, vocab.n_vocab, params, grammar, seed)
            try:
                for _ in range(max(budget, 0)):
                    token = sampler.sample(llm._ctx.ctx)
                    if vocab.is_eog(token):
                        break
                    piece = vocab.piece(token)
                    groups = vocab.score_groups(stream.raw, piece)
                    if groups is not None:
                        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
                        probs = softmax_digits(np.ctypeslib.as_array(ptr, shape=(vocab.n_vocab,)), groups)
                    stream.add(piece)
                    n_gen += 1
                    if (probs is not None and params.constrained) or llm.n_tokens >= self.n_ctx:
                        break
                    llm.eval([token])
            finally:
                sampler.close()
            if not params.constrained or probs is not None or forced:
                break
            forced = True  # max_tokens ran out before the score: force the tail, still read the digit
            grammar, budget = gbnf.tail_grammar(stream.raw), TAIL_RESERVE
        stream.add(b"", final=True)
        timings = StageTimings(
            image_encode_s=stats.encode_s,
            prompt_eval_s=stats.prompt_s,
            generation_s=time.perf_counter() - t0,
            prompt_tokens=n_prompt,
            reused_tokens=stats.reused,
            generated_tokens=n_gen,
            image_cached=stats.cached,
        )
        return Generation(text=stream.text, score_probs=probs, forced_tail=forced, timings=timings)

    # -- misc ------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
