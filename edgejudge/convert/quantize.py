"""Quantization through llama.cpp's own ``llama_model_quantize`` (text model and mmproj alike).

The converter writes F16 GGUFs; ``quantize_gguf`` turns one into ``Q8_0`` / ``Q5_K_M`` / ``Q4_K_M`` (the
mmproj: ``Q8_0``). llama.cpp keeps 1-D tensors, norms and the vision position/patch embeddings in
float and copies every metadata key (``edgejudge.clip.cls_position`` included). Native logs are silenced
while it runs (the engine layer's ``quiet_native_logs``) and restored to llama-cpp-python's handler after.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import ConversionError

__all__ = ["FTYPES", "quantize_gguf", "size_ratio"]

#: canonical quant name → llama_ftype.
FTYPES = {"F16": 1, "Q8_0": 7, "Q5_K_M": 17, "Q4_K_M": 15}

#: approximate output/input size ratio of 2-D tensors vs F16 (bits per weight / 16; upper estimates).
_RATIOS = {"F16": 1.0, "Q8_0": 8.5 / 16, "Q5_K_M": 6.0 / 16, "Q4_K_M": 5.2 / 16}


def size_ratio(quant: str) -> float:
    """Upper estimate of (quantized bytes / F16 bytes) for matrices, used by the disk-space check."""
    return _RATIOS[quant]


def quantize_gguf(src: Path, dst: Path, quant: str, *, threads: int | None = None) -> None:
    """Quantize the F16 GGUF ``src`` into ``dst`` (``quant`` canonical, not F16). Raises ConversionError."""
    import llama_cpp

    from ..native.mtmd import quiet_native_logs

    if quant not in FTYPES or quant == "F16":
        raise ValueError(f"cannot quantize to {quant!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant]
    params.nthread = int(threads or os.cpu_count() or 1)
    with quiet_native_logs():
        rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise ConversionError(
            f"llama.cpp could not quantize {src.name} to {quant} (code {rc})",
            hint="check free disk space; try --quant F16 to keep the unquantized file",
        )
