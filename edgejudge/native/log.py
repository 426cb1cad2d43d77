"""Native log control: llama.cpp's and libmtmd's log callbacks, on (stderr) or off (dropped).

Native logs are silenced unless verbose logging is asked for: they write straight to the process's stderr
and would tear the UI's live displays. The no-op callback is a module-level ctypes object, so it stays
referenced for the life of the process (llama.cpp may call it from any thread, at any time).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

__all__ = ["set_native_logging", "quiet_native_logs", "VERBOSE_HINT"]

#: The hint of every native failure that llama.cpp's own log explains (the CLI names its --verbose flag).
VERBOSE_HINT = "turn on verbose logging to see llama.cpp's messages"


@llama_cpp.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:  # pragma: no cover - native
    return None


def set_native_logging(verbose: bool) -> None:
    """Route llama.cpp and mtmd logs to stderr (verbose) or drop them (the callbacks live at module level)."""
    if verbose:
        from llama_cpp import _logger

        _logger.set_verbose(True)
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    else:
        llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        mtmd.mtmd_log_set(_quiet_log, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(_quiet_log, ctypes.c_void_p(0))


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Drop llama.cpp and mtmd logs inside the block; afterwards llama.cpp's go back to llama-cpp-python's
    own handler (mtmd's stay dropped until the next ``set_native_logging``)."""
    set_native_logging(False)
    try:
        yield
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
