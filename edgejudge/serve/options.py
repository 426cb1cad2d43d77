"""``ServeOptions``: how ``edgejudge serve`` listens and what it accepts (no web framework imported here).

The address (loopback by default; ``check_bind`` refuses any other host without an API key), the API key,
the queue (``max_queue``, the coalescing gather window, coalescing on or off), the request limits (body
bytes, image pixels: the CLI's ``images.DEFAULT_MAX_PIXELS`` unless lowered) and ``defaults``: the
generation settings a request gets for every setting it leaves out (the server's flags).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import InputError
from ..settings import GenerationSettings

__all__ = [
    "ServeOptions",
    "check_bind",
    "is_loopback",
    "DEFAULT_PORT",
    "DEFAULT_MAX_BODY_MB",
    "MAX_BODY_MB",
    "DEFAULT_MAX_SEQUENCES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_DRAIN_TIMEOUT_S",
    "DEFAULT_BODY_TIMEOUT_S",
]

DEFAULT_PORT = 8765
#: The largest request body by default (MiB): a 24 MiB image file in base64 fits; at most ``MAX_BODY_MB``.
DEFAULT_MAX_BODY_MB = 32
MAX_BODY_MB = 1024
#: The most sequences (responses × rubrics × samples) one request may decode.
DEFAULT_MAX_SEQUENCES = 256
#: The most connections and requests at once (uvicorn's ``limit_concurrency``; more get 503).
DEFAULT_MAX_CONNECTIONS = 128
#: How long SIGTERM waits for the requests in flight before the queued ones get 503.
DEFAULT_DRAIN_TIMEOUT_S = 60.0
#: How long a request body may take to arrive in full (408 after it).
DEFAULT_BODY_TIMEOUT_S = 60.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key (``InputError``, before anything is loaded)."""
    if not host.strip():
        raise InputError(
            "the host to listen on is empty", hint="give an address, e.g. 127.0.0.1", about="host"
        )
    if not is_loopback(host) and not api_key:
        raise InputError(
            f"refusing to listen on {host} without an API key: anyone who can reach it could use the judge",
            hint="give the server an API key (EDGEJUDGE_SERVE_API_KEY), or listen on 127.0.0.1",
        )


@dataclass(frozen=True)
class ServeOptions:
    """See the module docstring. ``gather_ms``: how long a worker waits for same-image requests to
    coalesce; ``max_body_bytes``: the largest request body; ``max_image_pixels``: the pixel limit of a
    decoded image (None: the CLI's, ``images.DEFAULT_MAX_PIXELS``; never above it); ``max_decodes``: how
    many images are decoded at once (each may take a few hundred MB); ``max_sequences``: the most
    sequences one request decodes; ``max_connections``: connections and requests at once (uvicorn's
    ``limit_concurrency``); ``drain_timeout_s``: how long a shutdown waits for the jobs in flight (then
    the queued ones get ``ShuttingDownError``); ``body_timeout_s``: how long a request body may take to
    arrive in full (then 408)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    max_queue: int = 64
    gather_ms: float = 10.0
    coalesce: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 2**20
    max_image_pixels: int | None = None
    max_decodes: int = 2
    max_sequences: int = DEFAULT_MAX_SEQUENCES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    defaults: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        from ..images import DEFAULT_MAX_PIXELS

        if self.max_image_pixels is None:
            object.__setattr__(self, "max_image_pixels", DEFAULT_MAX_PIXELS)
        elif isinstance(self.max_image_pixels, int) and self.max_image_pixels > DEFAULT_MAX_PIXELS:
            raise InputError(
                f"max_image_pixels must be at most {DEFAULT_MAX_PIXELS:,}, got {self.max_image_pixels!r}",
                hint="the server never decodes larger images than the command line does",
                about="max_image_pixels",
            )
        counts = ("max_queue", "max_body_bytes", "max_image_pixels", "max_decodes", "max_sequences")
        for name in (*counts, "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer of at least 1, got {value!r}", about=name)
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"port must be from 0 to 65535, got {self.port!r}", about="port")
        if not isinstance(self.gather_ms, (int, float)) or not 0 <= self.gather_ms <= 10_000:
            raise InputError(f"gather_ms must be from 0 to 10000, got {self.gather_ms!r}", about="gather_ms")
        if self.max_body_bytes > MAX_BODY_MB * 2**20:
            raise InputError(
                f"max_body_bytes must be at most {MAX_BODY_MB} MiB, got {self.max_body_bytes:,} bytes",
                about="max_body_bytes",
            )
        for name in ("drain_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
                raise InputError(
                    f"{name} must be a number of seconds from 0 to 86400, got {value!r}", about=name
                )

    @property
    def pixel_limit(self) -> int:
        """``max_image_pixels`` as set (``__post_init__`` fills in the default)."""
        assert self.max_image_pixels is not None
        return self.max_image_pixels
