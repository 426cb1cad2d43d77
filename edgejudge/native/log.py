"""Native log control: llama.cpp's and libmtmd's log callbacks, on (stderr) or off (dropped).

Native logs are silenced unless verbose logging is asked for: they write straight to the process's stderr
and would tear the UI's live displays. Inside ``verbose_native_logs()`` they are shown, the quiet blocks of
the probe and the quantizer (``quiet_native_logs``) included (``--verbose`` of convert, models pull, doctor).
The no-op callback is a module-level ctypes object, so it stays referenced
for the life of the process (llama.cpp may call it from any thread, at any time).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd

__all__ = ["set_native_logging", "quiet_native_logs", "verbose_native_logs", "VERBOSE_HINT"]

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


#: Inside ``verbose_native_logs``: ``quiet_native_logs`` then lets the logs through.
_shown = False


@contextmanager
def verbose_native_logs() -> Iterator[None]:
    """Show llama.cpp's and mtmd's logs inside the block, ``quiet_native_logs`` blocks included (what a
    user who asked for verbose logging wants to see); dropped again after it."""
    global _shown
    _shown = True
    set_native_logging(True)
    try:
        yield
    finally:
        _shown = False
        set_native_logging(False)


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Drop llama.cpp and mtmd logs inside the block; afterwards llama.cpp's go back to llama-cpp-python's
    own handler (mtmd's stay dropped until the next ``set_native_logging``). Inside
    ``verbose_native_logs`` it lets them through."""
    if _shown:
        yield
        return
    set_native_logging(False)
    try:
        yield
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
