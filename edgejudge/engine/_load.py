"""The local engine's load path: the text model and its projector loaded and timed, and the memory rules.

``load_pair`` loads what ``LlamaCppEngine`` runs on (``TextModel`` with its first context, the projector,
the digit tokens) and records how long each stage took (``Loaded.times``). ``use_mmap`` is the ``mmap``
setting's rule, ``first_cells`` and ``grown_cells`` the ``kv_size`` setting's (their trade-offs:
``edgejudge._settings_memory``). Nothing here holds policy about prompts; the engine asks for cells.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..native.model import TextModel
    from ..native.mtmd import MtmdContext
    from ._decoding import DigitTokens

__all__ = ["Loaded", "load_pair", "use_mmap", "default_threads", "first_cells", "grown_cells", "KV_STEP"]

#: KV cells are allocated in multiples of this (``kv_size`` fit), so that similar prompts share one size.
KV_STEP = 512


def default_threads() -> int:
    """The available cores, half of them above 4 (the ``n_threads`` setting's default)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    return available if available <= 4 else available // 2


def use_mmap(mode: str, n_gpu_layers: int) -> bool:
    """Whether the text model's file is memory-mapped under the ``mmap`` setting ``mode``: auto maps it only
    when every layer runs on a GPU (``n_gpu_layers`` -1 on a build that offloads); on the CPU llama.cpp
    repacks quantized weights and the mapped pages would stay resident beside the repacked copy."""
    if mode != "auto":
        return mode == "on"
    from ..native.system import supports_gpu_offload

    return n_gpu_layers < 0 and bool(supports_gpu_offload())


def first_cells(kv_size: str, n_ctx: int, n_batch: int) -> int:
    """KV cells allocated at load: ``n_ctx`` (full), else one batch's worth (fit: grown on first use)."""
    return n_ctx if kv_size == "full" else min(n_ctx, n_batch)


def grown_cells(need: int, now: int, n_ctx: int) -> int | None:
    """The KV size to grow to when a call needs ``need`` cells and ``now`` are allocated (None: enough):
    ``need`` rounded up to ``KV_STEP``, at most ``n_ctx``."""
    if need <= now:
        return None
    return min(n_ctx, -(-need // KV_STEP) * KV_STEP)


@dataclass
class Loaded:
    """What ``load_pair`` loaded, and the seconds each stage took (``times``: ``text_model_s`` the weights
    and the first context, ``mmproj_s`` the projector)."""

    model: TextModel
    mtmd: MtmdContext
    digits: DigitTokens
    times: dict[str, float]


def load_pair(
    model_path: Path,
    mmproj_path: Path,
    *,
    n_cells: int,
    n_threads: int,
    n_batch: int,
    n_gpu_layers: int,
    seed: int | None,
    n_seq: int,
    verbose: bool,
    mmap: str,
    kv_cache_type: str,
    mmproj_offload: bool,
) -> Loaded:
    """Load the text model (a context of ``n_cells`` KV cells for ``n_seq`` sequences) and its projector;
    whatever raises frees what was loaded before."""
    from ..native.log import set_native_logging
    from ..native.model import TextModel
    from ._decoding import DigitTokens

    set_native_logging(verbose)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    model = TextModel(
        model_path,
        n_ctx=n_cells,
        n_threads=n_threads,
        n_batch=n_batch,
        n_gpu_layers=n_gpu_layers,
        seed=seed,
        n_seq=n_seq,
        verbose=verbose,
        use_mmap=use_mmap(mmap, n_gpu_layers),
        kv_cache_type=kv_cache_type,
    )
    times["text_model_s"] = time.perf_counter() - t0
    mtmd = None
    try:
        t0 = time.perf_counter()
        mtmd = model.open_projector(mmproj_path, use_gpu=mmproj_offload, n_threads=n_threads, verbose=verbose)
        times["mmproj_s"] = time.perf_counter() - t0
        digits = DigitTokens(model.vocab)
    except BaseException:
        if mtmd is not None:
            mtmd.close()
        model.close()
        raise
    return Loaded(model, mtmd, digits, times)
