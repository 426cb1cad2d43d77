"""llama.cpp's own quantizer, ``llama_model_quantize``, as one typed call (text model and mmproj alike).

``quantize_file(src, dst, ftype, threads=...)`` rewrites the F16 GGUF ``src`` as ``dst`` with the
``llama_ftype`` ``ftype`` (the numbers are the pair contract's, :data:`edgejudge.judgefile.QUANTS`) and
returns llama.cpp's status code (0 = success). llama.cpp keeps 1-D tensors, norms and the vision
position/patch embeddings in float and copies every metadata key. Native logs are dropped while it runs
and llama.cpp's go back to llama-cpp-python's handler after (:func:`edgejudge.native.log.quiet_native_logs`).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from .log import quiet_native_logs

__all__ = ["quantize_file"]


def quantize_file(src: Path, dst: Path, ftype: int, *, threads: int) -> int:
    """Quantize ``src`` into ``dst`` as ``ftype`` with ``threads`` threads; llama.cpp's return code."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads)
    with quiet_native_logs():
        return int(llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params)))
