"""ggml's SIMD float32 → float16 row conversion (``ggml_cpu_fp32_to_fp16``, public ggml-cpu API), if loadable.

The converter casts every float32 matrix to float16; ggml's routine is about ten times numpy's cast. It is
looked up once in the ggml-cpu libraries bundled with llama-cpp-python and only used if it rounds a probe
vector exactly as numpy does (IEEE round-to-nearest-even), so the output never depends on which one ran.
``f32_to_f16_kernel()`` returns ``fn(src_ptr, dst_ptr, n)`` or None (the caller falls back to numpy).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["f32_to_f16_kernel"]

_KERNEL: Any = None  # the function once probed, False if unavailable


def _load() -> Callable[[int, int, int], None] | None:
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    for candidate in sorted(libdir.glob("*ggml-cpu*")):
        try:
            fn = ctypes.CDLL(str(candidate)).ggml_cpu_fp32_to_fp16
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        probe = np.array([1.0, -2.5, 1e-7, 7e4, 3.14159], dtype=np.float32)
        got = np.empty(5, dtype=np.float16)
        fn(probe.ctypes.data, got.ctypes.data, 5)
        with np.errstate(over="ignore"):
            want = probe.astype(np.float16)
        if got.view(np.uint16).tolist() == want.view(np.uint16).tolist():
            return fn  # type: ignore[no-any-return]
    return None


def f32_to_f16_kernel() -> Callable[[int, int, int], None] | None:
    """ggml's ``fn(src, dst, n)`` converting ``n`` contiguous float32 at ``src`` to float16 at ``dst``, or
    None when no bundled ggml-cpu library has it (or it rounds differently from numpy)."""
    global _KERNEL
    if _KERNEL is None:
        try:
            _KERNEL = _load() or False
        except Exception:  # noqa: BLE001 - any problem: numpy's cast is the (slower) fallback
            _KERNEL = False
    return _KERNEL or None
