"""Every environment variable and directory edgejudge reads, resolved in functions at call time.

Variables (all optional):

- ``EDGEJUDGE_HOME``: data directory (installed models, registry). Default ``$XDG_DATA_HOME/edgejudge``
  (``~/.local/share/edgejudge``).
- ``EDGEJUDGE_CACHE``: cache directory (self-test results, demo model, downloads staging). Default
  ``$XDG_CACHE_HOME/edgejudge`` (``~/.cache/edgejudge``).
- ``EDGEJUDGE_MODELS_DIR``: where converted models live. Default ``$EDGEJUDGE_HOME/models``.
- ``EDGEJUDGE_DEFAULT_MODEL``: model name or path used when no model is given (``edgejudge models default``
  sets the registry's default instead; this variable overrides it).
- ``EDGEJUDGE_DEBUG``: ``1`` shows tracebacks instead of one-line errors.
- ``EDGEJUDGE_LLAMA_SERVER``: the llama-server binary to start (default: the one ``edgejudge server build``
  cached).
- ``EDGEJUDGE_SERVER_API_KEY``: the key sent to inference servers (``Authorization: Bearer``) by the remote
  engines: llama-server started with ``--api-key``, vLLM with ``--api-key``. Kept out of command lines.
- ``EDGEJUDGE_SERVE_API_KEY``: the API key of ``edgejudge serve``: the key the service requires and the key
  ``Client`` sends when it is given none.
- ``NO_COLOR``: any value turns colour off (https://no-color.org).
- ``HF_HUB_OFFLINE``: ``1`` forbids network access for hub downloads (read by huggingface-hub itself).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "data_dir",
    "cache_dir",
    "models_dir",
    "default_model",
    "debug_enabled",
    "no_color",
    "hub_offline",
]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Directory for installed models and the registry (not created here)."""
    explicit = _env_path("EDGEJUDGE_HOME")
    if explicit is not None:
        return explicit
    base = _env_path("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return base / "edgejudge"


def cache_dir() -> Path:
    """Directory for caches: self-test results, the demo model, download staging (not created here)."""
    explicit = _env_path("EDGEJUDGE_CACHE")
    if explicit is not None:
        return explicit
    base = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return base / "edgejudge"


def models_dir() -> Path:
    """Directory where converted GGUF pairs are installed."""
    return _env_path("EDGEJUDGE_MODELS_DIR") or data_dir() / "models"


def default_model() -> str | None:
    """The model name or path to use when none is given, or None."""
    value = os.environ.get("EDGEJUDGE_DEFAULT_MODEL", "").strip()
    return value or None


def llama_server_binary() -> Path | None:
    """The llama-server binary ``EDGEJUDGE_LLAMA_SERVER`` names, or None when it is unset."""
    return _env_path("EDGEJUDGE_LLAMA_SERVER")


def server_api_key() -> str | None:
    """The API key for inference servers (``EDGEJUDGE_SERVER_API_KEY``), or None when unset."""
    value = os.environ.get("EDGEJUDGE_SERVER_API_KEY", "").strip()
    return value or None


def serve_api_key() -> str | None:
    """The API key of ``edgejudge serve`` (``EDGEJUDGE_SERVE_API_KEY``), or None when unset or blank."""
    value = os.environ.get("EDGEJUDGE_SERVE_API_KEY", "").strip()
    return value or None


def debug_enabled() -> bool:
    """True when ``EDGEJUDGE_DEBUG`` asks for tracebacks."""
    return os.environ.get("EDGEJUDGE_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def no_color() -> bool:
    """True when ``NO_COLOR`` is set to any non-empty value."""
    return bool(os.environ.get("NO_COLOR", ""))


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids hub network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
