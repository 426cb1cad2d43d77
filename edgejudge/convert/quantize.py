"""Quantizing a converted F16 GGUF (text model and mmproj alike) with llama.cpp's own quantizer.

The converter writes F16 GGUFs; ``quantize_gguf`` turns one into a quantization of the pair contract's
vocabulary (:data:`edgejudge.judgefile.QUANTS`: its ``llama_ftype``) through
:func:`edgejudge.native.quantize.quantize_file`, and turns a failure into one ``ConversionError``. llama.cpp
copies every metadata key (the CLS-position stamp included).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConversionError
from ..judgefile import quant_info

__all__ = ["quantize_gguf"]


def quantize_gguf(src: Path, dst: Path, quant: str, *, threads: int | None = None) -> None:
    """Quantize the F16 GGUF ``src`` into ``dst`` (``quant`` canonical, not F16). Raises ConversionError."""
    from ..native.quantize import quantize_file

    try:
        ftype = quant_info(quant).ftype
    except KeyError:
        raise ValueError(f"cannot quantize to {quant!r}") from None
    if quant == "F16":
        raise ValueError(f"cannot quantize to {quant!r}")
    rc = quantize_file(src, dst, ftype, threads=int(threads or os.cpu_count() or 1))
    if rc != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise ConversionError(
            f"llama.cpp could not quantize {src.name} to {quant} (code {rc})",
            hint="check free disk space; or choose quant F16 to keep the unquantized file",
            about="quant",
        )
