"""The one exception tree of edgejudge.

::

    EdgeJudgeError                      every error edgejudge raises on purpose
    ├── ConversionError                 a checkpoint cannot be converted (bad shard, dtype, config, disk…)
    │   └── UnsafePickleError           a pickle asked for a global outside the allow-list
    ├── ModelNotFoundError              (also FileNotFoundError) a model file/name cannot be found
    ├── InvalidImageError               (also ValueError) an image cannot be read or is unsafe
    ├── PolicyError                     (also ValueError) a policy is unknown or malformed
    ├── RubricError                     (also ValueError) a rubric is unknown or malformed
    ├── ContextOverflowError            the prompt + generation budget exceed n_ctx
    ├── EngineError                     the native runtime failed (load, tokenize, decode)
    │   ├── CLSOrderMismatchError       an mmproj was converted for another llama.cpp behaviour
    │   └── ServerUnavailableError      an inference server cannot be reached (url: which)
    ├── InputError                      (also ValueError) bad user input: batch rows, JSONL, options
    │   ├── OutputBusyError             a batch output is being written by another edgejudge run
    │   └── PromptRefusedError          an engine cannot send one request as it is (index: which)
    └── RegistryError                   the model manifest/registry is inconsistent

Every error carries a one-line ``message``, an optional ``hint`` (what to do about it, in library words)
and ``about``: the library parameters the hint asks to change (``("outdir",)``, ``("output",)``,
``("quant",)`` …; empty when none), so a caller can name its own spelling of them (the CLI appends the flag
that sets each one). The CLI prints ``error: <message>`` and ``hint: <hint>``; nothing else in the library
prints.
"""

from __future__ import annotations

__all__ = [
    "EdgeJudgeError",
    "ConversionError",
    "UnsafePickleError",
    "ModelNotFoundError",
    "InvalidImageError",
    "ImageTooLargeError",
    "RubricError",
    "ContextOverflowError",
    "EngineError",
    "CLSOrderMismatchError",
    "ServerUnavailableError",
    "InputError",
    "OutputBusyError",
    "PromptRefusedError",
    "PolicyError",
    "RegistryError",
]


class EdgeJudgeError(Exception):
    """Base class. ``str(err)`` is the one-line message; ``err.hint`` says how to fix it (or is None);
    ``err.about`` names the parameters (library names: ``"outdir"``, ``"model"``, a settings field …) the hint
    asks to change, as a tuple (a single name may be given as a string)."""

    def __init__(
        self, message: str, *, hint: str | None = None, about: str | tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.about: tuple[str, ...] = (about,) if isinstance(about, str) else tuple(about or ())

    def __str__(self) -> str:  # keep it one line whatever the caller passed
        return " ".join(self.message.split())


class ConversionError(EdgeJudgeError):
    """A checkpoint cannot be converted: missing/truncated shard, unknown dtype or arch, bad config."""


class UnsafePickleError(ConversionError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


class ModelNotFoundError(EdgeJudgeError, FileNotFoundError):
    """A model file, projector file or registered model name cannot be found."""


class InvalidImageError(EdgeJudgeError, ValueError):
    """An image is missing, corrupt, truncated, empty, not an image, or too large (decompression bomb)."""


class ImageTooLargeError(InvalidImageError):
    """An image over the pixel limit (``InvalidImageError`` otherwise; a server answers it with 413)."""


class PolicyError(EdgeJudgeError, ValueError):
    """A policy cannot be used: unknown name, unreadable file, a missing or bad field, duplicate rule ids."""


class RubricError(EdgeJudgeError, ValueError):
    """A rubric name is unknown, or a rubric file is malformed (the message names the missing field)."""


class ContextOverflowError(EdgeJudgeError):
    """The prompt plus the generation budget do not fit the context window.

    ``over_by`` is the number of tokens too many; ``field`` names the longest user field to shorten;
    ``index`` is the position of the offending request when several were given at once.
    """

    def __init__(
        self,
        message: str,
        *,
        over_by: int = 0,
        field: str | None = None,
        hint: str | None = None,
        index: int | None = None,
        about: str | tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(message, hint=hint, about=about)
        self.over_by = over_by
        self.field = field
        self.index = index


class EngineError(EdgeJudgeError):
    """The native runtime (llama.cpp / mtmd) failed to load a model, tokenize, encode or decode."""


class CLSOrderMismatchError(EngineError):
    """The mmproj's recorded CLS-position layout does not match the installed libmtmd's behaviour."""


class ServerUnavailableError(EngineError):
    """An inference server (llama-server, vLLM) cannot be reached or keeps failing after the retries;
    ``url`` names it. A fleet moves the work to another server."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


class InputError(EdgeJudgeError, ValueError):
    """Bad user input that is not an image or rubric: malformed JSONL, a missing field, a bad option."""


class PromptRefusedError(InputError):
    """An engine cannot send one request of several as it is (e.g. a server would read a text as a control
    token); ``index`` is the request's position. Raised before anything runs, like a context overflow."""

    def __init__(self, message: str, *, hint: str | None = None, index: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.index = index


class OutputBusyError(InputError):
    """A batch output is locked by another edgejudge run writing it (the message names its pid when known);
    nothing was written."""


class RegistryError(EdgeJudgeError):
    """The model manifest or the local registry of installed models is inconsistent."""
