"""A real llama-server for tests: ``running_server(text, mmproj)`` starts one on a free loopback port.

Built on ``edgejudge.serverctl.start_server`` (the same code ``edgejudge server start`` runs), so the
server gets edgejudge's flags and the pinned media marker. The binary is the one ``find_server_binary``
finds: ``EDGEJUDGE_LLAMA_SERVER`` (tests/conftest.py sets it to the real cache's build before the session
cache replaces the cache folder; scripts/test.sh sets it to what ``edgejudge server build`` printed), else
the cache. Without one a test is skipped, naming the command that builds it, unless
``EDGEJUDGE_REQUIRE_SERVER=1`` (scripts/test.sh) makes that a failure. The server is always stopped.

    with running_server(*tiny_gguf, slots=2) as server:
        httpx.get(f"{server.url}/props")
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgejudge.serverctl import ServerHandle, find_server_binary, start_server

__all__ = ["running_server", "free_port", "server_binary", "require_server"]


def require_server() -> bool:
    """True when a missing llama-server must fail the test instead of skipping it."""
    return os.environ.get("EDGEJUDGE_REQUIRE_SERVER", "").strip() == "1"


def server_binary() -> Path:
    """The llama-server binary tests use, or a skip (a failure under ``EDGEJUDGE_REQUIRE_SERVER=1``)."""
    binary = find_server_binary()
    if binary is not None and binary.is_file() and os.access(binary, os.X_OK):
        return binary
    reason = (
        f"no llama-server binary ({binary} is missing)" if binary is not None else "no llama-server binary"
    ) + ": build it with `edgejudge server build` or set EDGEJUDGE_LLAMA_SERVER"
    if require_server():
        pytest.fail(reason + " (EDGEJUDGE_REQUIRE_SERVER=1)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on at the moment (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(
    text: Path,
    mmproj: Path,
    *,
    slots: int = 1,
    ctx_per_seq: int = 2048,
    threads: int = 1,
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> Iterator[ServerHandle]:
    """A healthy llama-server on ``text`` + ``mmproj`` (``.url``, ``.process``, ``.stop()``), stopped on exit.

    A port taken between choosing it and binding it (another test's server) is retried on a new port.
    """
    binary = server_binary()
    handle: ServerHandle | None = None
    for attempt in range(3):
        try:
            handle = start_server(
                text,
                mmproj=mmproj,
                binary=binary,
                port=free_port(),
                slots=slots,
                ctx_per_seq=ctx_per_seq,
                threads=threads,
                extra=extra,
                timeout=timeout,
            )
            break
        except Exception as exc:
            if attempt == 2 or not ("in use" in str(exc) or "bind" in str(exc)):
                raise
    assert handle is not None
    try:
        yield handle
    finally:
        handle.stop()
