"""What the installed llama.cpp build says about itself, for ``edgejudge doctor``: its system-info line
(backends and CPU features it was built with), whether it can offload layers to a GPU, and whether it runs
the AMX kernels (which the model loader then turns off, see ``model.TextModel``).

Both answer None instead of raising when the bindings cannot be loaded: doctor reports that as a problem.
"""

from __future__ import annotations

__all__ = ["system_info", "supports_gpu_offload", "has_amx"]


def system_info() -> str | None:
    """``llama_print_system_info()`` as text, or None when llama-cpp-python cannot be loaded."""
    try:
        import llama_cpp

        raw = llama_cpp.llama_print_system_info()
    except Exception:  # noqa: BLE001 - reported as a problem by the caller
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def supports_gpu_offload() -> bool | None:
    """Whether this build can offload layers to a GPU; None when llama-cpp-python cannot be loaded."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # noqa: BLE001
        return None


def has_amx() -> bool:
    """Whether this build runs llama.cpp's AMX matrix kernels (``AMX_INT8 = 1``: built for and running on an
    Intel CPU with AMX, e.g. Sapphire Rapids); False when llama-cpp-python cannot be loaded."""
    info = system_info()
    return info is not None and "AMX_INT8 = 1" in info
