"""``TextModel``: the loaded text model, its context and its decode batch (llama-cpp-python's ``Llama``).

``Llama`` loads the GGUF and creates the context; this wrapper is the only code that touches its state, so
the rest of the package sees plain values: token ids, positions, sequence ids and numpy views of logits.

Invariants it owns:

- ``n_past`` is the number of positions of sequence 0 in the KV cache. ``eval`` and ``eval_image`` append
  there and ``truncate`` cuts every sequence there; llama-cpp-python's own record of it (``Llama.n_tokens``,
  ``input_ids``) is kept equal, since ``Llama.eval`` writes at that position.
- The context holds ``n_seq`` sequences in one unified KV cache of ``n_ctx`` cells (``Llama`` exposes
  neither ``n_seq_max`` nor ``kv_unified``: its fresh, still empty, context is replaced by one made from the
  same parameters plus those two; with one sequence in use it computes what the original does).
  ``resize(n_cells)`` replaces the context by one of another size the same way: the KV cache is emptied
  (``n_past`` 0), the weights stay. The cache's cell type is ``kv_cache_type`` (f16, or q8_0 with flash
  attention, which llama.cpp needs for a quantized V cache); f16 runs without flash attention.
- ``use_mmap`` False reads the weights into memory instead of mapping the file: weights that the CPU
  backend repacks (``CPU_REPACK``) are then held once, not twice (a mapped file's pages stay resident next
  to the repacked copy: llama.cpp's loader copies them out of the mapping and unmaps only what no tensor
  uses).
- On a build with AMX kernels (``system.has_amx``) the weights load without llama.cpp's extra buffer
  types (``use_extra_bufts`` off: no AMX and no ``CPU_REPACK`` copy): its AMX matrix multiply segfaults on
  Q4_K weights on some of these CPUs (llama.cpp issue 20824, unfixed; every judgment of the Q4_K_M demo
  judge crashed on an Intel Xeon with AMX_INT8). ``Llama`` takes no such argument; ``SafeLlama`` sets it on
  the model parameters ``Llama`` builds before it loads.
- ``decode`` writes at most the batch's capacity (``n_batch`` entries, checked before writing: the native
  batch is a fixed-size C array) and one sequence id per entry; the batch is freed with the model.
- ``close()`` frees the batch, the context and the model, once; every later call raises ``EngineError``.
  A constructor that fails after loading frees what it had allocated before it raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

from .._closing import Closing
from .._settings_memory import KV_CACHE_TYPES
from ..errors import EngineError
from ..settings import default
from .log import VERBOSE_HINT
from .sampling import Vocab
from .system import has_amx, supports_gpu_offload

if TYPE_CHECKING:
    from .mtmd import Chunk, MtmdContext

__all__ = ["TextModel", "BatchItem", "SafeLlama"]

#: One entry of a multi-sequence decode: (token id, position, sequence id, want the logits there).
BatchItem = tuple[int, int, int, bool]


class SafeLlama(llama_cpp.Llama):
    """``Llama`` with ``use_extra_bufts`` (llama.cpp's extra weight buffer types: AMX, CPU_REPACK), which its
    constructor does not take: the model parameters it creates are amended as they are assigned, before
    the model loads from them. The default (None) is the module's rule: off exactly on builds with AMX."""

    def __init__(self, *args: Any, use_extra_bufts: bool | None = None, **kwargs: Any) -> None:
        if use_extra_bufts is None:
            use_extra_bufts = not has_amx()
        self._use_extra_bufts = use_extra_bufts
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def model_params(self) -> Any:
        return self.__dict__["_model_params"]

    @model_params.setter
    def model_params(self, params: Any) -> None:
        params.use_extra_bufts = self._use_extra_bufts
        self.__dict__["_model_params"] = params


class TextModel(Closing):
    """A GGUF text model with one context (see the module docstring). A context manager.

    ``n_batch`` defaults to the ``n_batch`` setting (``edgejudge.settings``). ``n_gpu_layers`` -1 offloads
    every layer when the build supports it (0 on CPU builds); ``seed`` None is llama.cpp's default seed;
    ``logits_all`` keeps every evaluated position's logits (``scores``); ``verbose`` passes llama.cpp's own
    messages through (the caller sets the log routing). ``use_mmap`` maps the file (False: reads it);
    ``kv_cache_type`` is a value of the ``kv_cache_type`` setting.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int,
        n_threads: int,
        n_batch: int = default("n_batch"),
        n_gpu_layers: int = 0,
        seed: int | None = None,
        n_seq: int = 1,
        logits_all: bool = False,
        verbose: bool = False,
        use_mmap: bool = True,
        kv_cache_type: str = "f16",
    ) -> None:
        self._closed = True
        path = Path(path)
        if kv_cache_type not in KV_CACHE_TYPES:
            raise EngineError(
                f"unknown KV cache type {kv_cache_type!r}", hint=f"use one of {', '.join(KV_CACHE_TYPES)}"
            )
        quantized = kv_cache_type != "f16"
        cell_type = llama_cpp.GGML_TYPE_Q8_0 if quantized else llama_cpp.GGML_TYPE_F16
        if n_gpu_layers < 0:
            n_gpu_layers = -1 if supports_gpu_offload() else 0
        # several sequences need a context Llama cannot make: it makes a small one, replaced at once (so the
        # full-size KV cache is allocated and cleared once, not twice)
        first = n_ctx if n_seq == 1 else min(n_ctx, n_batch)
        try:
            self._llm = SafeLlama(
                str(path),
                n_ctx=first,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=n_gpu_layers,
                seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed % 2**32,
                logits_all=logits_all,
                verbose=verbose,
                use_mmap=use_mmap,
                flash_attn=quantized,
                type_k=cell_type,
                type_v=cell_type,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise EngineError(
                f"llama.cpp could not load {path.name}: {err}",
                hint=f"check that the file is a complete GGUF text model ({VERBOSE_HINT})",
            ) from None
        batch = None
        try:  # from here on, whatever raises frees what was allocated (the batch, the Llama)
            self._verbose = verbose
            try:
                if n_seq > 1:
                    params = self._llm.context_params
                    params.n_seq_max = n_seq
                    params.kv_unified = True
                    params.n_ctx = n_ctx
                    self._new_context()
                batch = llama_cpp.llama_batch_init(self._llm.n_batch, 0, 1)
            except (ValueError, RuntimeError) as err:
                raise EngineError(
                    f"llama.cpp could not create a context for {n_seq} sequences: {err}",
                    hint=f"lower n_ctx or set parallel to 1 ({VERBOSE_HINT})",
                ) from None
            self.n_seq = n_seq
            self.n_batch = int(self._llm.n_batch)
            self.n_vocab = int(self._llm.n_vocab())
            self.n_ctx = int(self._llm.n_ctx())  # the context window: KV cells, shared by all sequences
            self.vocab = Vocab(self._llm._model.vocab, self.n_vocab)
        except BaseException:
            if batch is not None:
                llama_cpp.llama_batch_free(batch)
            self._llm.close()
            raise
        self._batch = batch
        self._closed = False

    def _new_context(self) -> None:
        """Replace the context by one made from ``context_params`` (the KV cache starts empty) and size
        ``Llama``'s records of the context to it (``Llama.eval`` writes token ids, and logits when it keeps
        them all, at each position)."""
        llm = self._llm
        llm._ctx.close()
        llm._ctx = llm._stack.enter_context(
            contextlib.closing(
                _internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=self._verbose)
            )
        )
        llm.n_tokens = 0
        llm._n_ctx = int(llm._ctx.n_ctx())
        llm.input_ids = np.zeros((llm._n_ctx,), dtype=np.intc)
        if llm._logits_all:
            llm.scores = np.zeros((llm._n_ctx, llm._n_vocab), dtype=np.single)

    def resize(self, n_cells: int) -> None:
        """Make the KV cache ``n_cells`` cells (at least ``n_batch``); it is emptied, the weights stay."""
        self._check_open()
        llm = self._llm
        n_cells = max(n_cells, self.n_batch)
        llm.context_params.n_ctx = n_cells
        try:
            self._new_context()
        except (ValueError, RuntimeError) as err:
            raise EngineError(
                f"llama.cpp could not create a context of {n_cells} cells: {err}",
                hint=f"lower n_ctx or free memory ({VERBOSE_HINT})",
            ) from None
        self.n_ctx = int(llm._n_ctx)

    # -- sizes -----------------------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        """Positions of sequence 0 held in the KV cache."""
        return int(self._llm.n_tokens)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of ``text`` (``special`` False: control-token text stays plain text)."""
        self._check_open()
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    # -- sequence 0 ------------------------------------------------------------------------------------
    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` into sequence 0 at ``n_past`` (the logits of the last one stay readable)."""
        self._check_open()
        self._llm.eval(list(tokens))

    def eval_image(self, projector: MtmdContext, chunk: Chunk, embd: np.ndarray) -> None:
        """Decode an image chunk's pre-computed embeddings into sequence 0 at ``n_past``."""
        self._check_open()
        llm = self._llm
        end = projector.decode_image(llm._ctx.ctx, chunk, embd, llm.n_tokens, llm.n_batch)
        llm.input_ids[llm.n_tokens : end] = -1  # image positions have no token id
        llm.n_tokens = end

    def truncate(self, keep: int) -> None:
        """Drop every sequence's KV entries from position ``keep`` on; sequence 0 then ends at ``keep``."""
        self._check_open()
        self._llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        self._llm.n_tokens = keep

    def clear(self) -> None:
        """Empty the KV cache (every sequence)."""
        self._check_open()
        self._llm._ctx.kv_cache_clear()
        self._llm.n_tokens = 0

    def scores(self, n: int) -> np.ndarray:
        """A copy of the logits of the first ``n`` evaluated positions (a model made with ``logits_all``)."""
        self._check_open()
        return np.array(self._llm.scores[:n], dtype=np.float64)

    # -- several sequences -----------------------------------------------------------------------------
    def copy_sequence(self, src: int, dst: int, end: int) -> None:
        """Make sequence ``dst`` share sequence ``src``'s KV entries at positions [0, end)."""
        self._check_open()
        self._check_seq(dst)
        self._llm._ctx.kv_cache_seq_cp(src, dst, 0, end)

    def drop_sequence(self, seq: int) -> None:
        """Remove every KV entry of sequence ``seq`` (entries shared with others stay for them)."""
        self._check_open()
        self._llm._ctx.kv_cache_seq_rm(seq, 0, -1)

    def decode(self, items: Sequence[BatchItem]) -> None:
        """Decode one batch of (token, position, sequence, want logits) entries, at most ``n_batch``.

        Does not move ``n_past``: the caller places the entries and cleans up with ``drop_sequence`` and
        ``truncate``. The logits of the i-th entry that wanted them are ``logits(i)``."""
        self._check_open()
        if not 0 < len(items) <= self.n_batch:
            raise EngineError(
                f"a batch of {len(items)} entries does not fit {self.n_batch}", hint="report this as a bug"
            )
        batch = self._batch
        batch.n_tokens = len(items)
        for i, (token, pos, seq, want) in enumerate(items):
            self._check_seq(seq)
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, want
            batch.seq_id[i][0] = seq
        rc = llama_cpp.llama_decode(self._llm._ctx.ctx, batch)
        if rc != 0:
            raise EngineError(f"llama.cpp failed to decode a batch (code {rc})", hint="raise n_ctx")

    def logits(self, index: int = -1) -> np.ndarray:
        """A view of the logits at batch entry ``index`` of the last decode (valid until the next one)."""
        self._check_open()
        ptr = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # -- lifetime --------------------------------------------------------------------------------------
    def open_projector(
        self, mmproj_path: str | Path, *, use_gpu: bool, n_threads: int, verbose: bool = False
    ) -> MtmdContext:
        """An mtmd context (vision projector) bound to this model; the caller closes it before the model."""
        from .mtmd import MtmdContext

        self._check_open()
        return MtmdContext(
            mmproj_path, self._llm.model, use_gpu=use_gpu, n_threads=n_threads, verbose=verbose
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_batch_free(self._batch)
        self._llm.close()

    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq:
            raise EngineError(f"sequence {seq} is outside 0..{self.n_seq - 1}", hint="report this as a bug")

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the engine is closed", hint="create a new engine")
