"""The memory settings' records: how the weights are loaded and how the KV cache is sized and stored.

Part of the one settings table (``edgejudge.settings`` lists them among its load settings, ``LOAD``);
written here, beside nothing else, so that the trade-offs they choose between are explained in one place:

- ``mmap``: a memory-mapped GGUF costs nothing for weights used as they are in the file (F16, or on a GPU),
  but llama.cpp's CPU backend repacks quantized weights (Q4_0, Q4_K, Q8_0, ...) into a second copy for its
  kernels, and the mapped file's pages of those weights stay resident beside that copy (the loader unmaps
  only the file's head and tail). ``auto`` reads the file instead of mapping it whenever the model runs
  on the CPU (F16 weights, which are not repacked, take the same memory either way) and maps it when every
  layer is offloaded to a GPU. Reading costs about what mapping does on a warm page cache; what a read file
  loses is the sharing of its pages between processes (two judges of one model hold two copies).
- ``kv_size``: ``fit`` allocates the KV cells the prompts of a call need (prompt + generation budget, each
  parallel sequence's tail and budget after one shared prefix), at least ``n_batch`` and at most ``n_ctx``,
  and grows the cache when a later call needs more (a growth empties the cache: the next prompt is
  evaluated from its start); ``full`` allocates ``n_ctx`` cells at load, as before. Neither changes what
  the judge answers.
- ``kv_cache_type``: ``f16`` cells, exact; ``q8_0`` cells take 53 % of the memory and need llama.cpp's
  flash attention (for the quantized V cache), so the attention rounds differently: verdicts can differ
  in their last digits and, at near-ties, in a greedy text.
"""

from __future__ import annotations

from ._setting_record import MODEL_PANEL, Setting

__all__ = ["MEMORY", "MMAP_MODES", "KV_SIZES", "KV_CACHE_TYPES"]

#: ``mmap`` values: auto (off on the CPU, on when every layer is on a GPU), on, off.
MMAP_MODES = ("auto", "on", "off")
#: ``kv_size`` values: fit (what the prompts need, up to n_ctx), full (n_ctx cells at load).
KV_SIZES = ("fit", "full")
#: ``kv_cache_type`` values.
KV_CACHE_TYPES = ("f16", "q8_0")

MEMORY: tuple[Setting, ...] = (
    Setting(
        "mmap",
        str,
        "auto",
        "Memory-map the model file: auto = only when every layer runs on a GPU (on the CPU llama.cpp "
        "repacks quantized weights: reading the file keeps one copy in memory, not two); on; off.",
        flag="--mmap",
        panel=MODEL_PANEL,
        choices=MMAP_MODES,
        metavar="auto|on|off",
        advice="use mmap auto, on or off",
    ),
    Setting(
        "kv_size",
        str,
        "fit",
        "KV cache size: fit = the cells the prompts need, up to --n-ctx (grown when a longer prompt comes); "
        "full = --n-ctx cells from the start.",
        flag="--kv-size",
        panel=MODEL_PANEL,
        choices=KV_SIZES,
        metavar="fit|full",
        advice="use kv_size fit or full",
    ),
    Setting(
        "kv_cache_type",
        str,
        "f16",
        "KV cache cells: f16 (exact) or q8_0 (about half the memory, with flash attention; scores may "
        "differ slightly).",
        flag="--kv-cache-type",
        panel=MODEL_PANEL,
        choices=KV_CACHE_TYPES,
        metavar="f16|q8_0",
        advice="use kv_cache_type f16 or q8_0",
    ),
)
