"""llama.cpp's ``llama-server`` for a judge pair: find or build the binary, compose its command, run it.

- ``build_server`` (in ``_serverctl_build``): builds the binary from the pinned llama-cpp-python sdist,
  cached under ``<cache>/llama-server/<key>/`` by llama.cpp commit (and extra cmake arguments).
- ``find_server_binary``: ``EDGEJUDGE_LLAMA_SERVER`` first, then the cached build of the pinned commit.
- ``server_command`` (pure): the argv and environment that serve a text model + projector pair with
  ``slots`` parallel sequences of ``ctx_per_seq`` tokens each; the media marker is pinned to
  ``MEDIA_MARKER`` (``LLAMA_MEDIA_MARKER``) so a prompt can be written before the server answers.
- ``start_server``: resolves the model like the judge does (``registry.resolve_model``), starts the
  server, waits for ``GET /health`` and returns a ``ServerHandle`` (``url``, ``process``, ``stop()``).

Security: llama-server has no authentication unless ``--api-key`` is among its arguments; the default host
is the loopback address.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from . import settings
from ._closing import Closing
from ._serverctl_build import (
    BINARY_NAME,
    CMAKE_FLAGS,
    KNOWN_COMMITS,
    BuildProgress,
    BuildResult,
    build_server,
    cache_key,
    cached_binary,
    parse_build_percent,
    pinned_version,
    server_root,
)
from .errors import EngineError, InputError

__all__ = [
    "MEDIA_MARKER",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BINARY_ENV",
    "CMAKE_FLAGS",
    "KNOWN_COMMITS",
    "BINARY_NAME",
    "BuildProgress",
    "BuildResult",
    "build_server",
    "cache_key",
    "cached_binary",
    "parse_build_percent",
    "pinned_version",
    "server_root",
    "find_server_binary",
    "ServerCommand",
    "server_command",
    "ServerHandle",
    "start_server",
    "is_loopback",
]

MEDIA_MARKER = "<__edgejudge_image__>"
"""The media marker every server edgejudge starts uses (``LLAMA_MEDIA_MARKER``); others report theirs in
``GET /props`` (``media_marker``)."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
BINARY_ENV = "EDGEJUDGE_LLAMA_SERVER"
_TAIL_LINES = 12
_LOG_LINE = re.compile(r"^[\d.]+ ([IWEDT]) ")  # llama.cpp's log prefix: time, level


def find_server_binary() -> Path | None:
    """``$EDGEJUDGE_LLAMA_SERVER`` when set (even if it does not exist: ``start_server`` says so), else the
    cached build of the pinned llama.cpp commit without extra cmake arguments, else None."""
    from .config import llama_server_binary

    explicit = llama_server_binary()
    if explicit is not None:
        return explicit
    commit = KNOWN_COMMITS.get(pinned_version())
    return cached_binary(commit) if commit else None


@dataclass(frozen=True)
class ServerCommand:
    """``argv`` to run, ``env`` the variables to add to the environment, ``n_ctx`` the server's whole
    context (``slots`` × per-sequence context)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    n_ctx: int = 0


def server_command(
    binary: str | Path,
    text: str | Path,
    mmproj: str | Path,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    slots: int = 1,
    ctx_per_seq: int | None = None,
    threads: int | None = None,
    extra: Sequence[str] = (),
) -> ServerCommand:
    """The llama-server command line for a pair: ``-m``, ``--mmproj``, ``--host``, ``--port``, ``-np slots``,
    ``-c slots × ctx_per_seq`` (default per sequence: the judge's ``n_ctx`` default), ``-fa off`` (as the
    local engine runs), ``-t threads`` when given, then ``extra`` as they are (so they can override any of
    these)."""
    per_seq = settings.default("n_ctx") if ctx_per_seq is None else ctx_per_seq
    if slots < 1:
        raise InputError(f"the server needs at least one slot, got {slots}", about="slots")
    if per_seq < 1:
        raise InputError(f"the context per sequence must be positive, got {per_seq}", about="ctx_per_seq")
    if threads is not None and threads < 1:
        raise InputError(f"the thread count must be positive, got {threads}", about="threads")
    if not 0 < port < 65536:
        raise InputError(f"port {port} is not a TCP port (1-65535)", about="port")
    n_ctx = slots * per_seq
    argv = [str(binary), "-m", str(text), "--mmproj", str(mmproj), "--host", host, "--port", str(port)]
    argv += ["-np", str(slots), "-c", str(n_ctx)]
    # flash attention off, as the local engine runs: llama-server's default (auto: on, on CPU too) changes
    # the logits enough to change greedy texts
    argv += ["-fa", "off"]
    if threads is not None:
        argv += ["-t", str(threads)]
    argv += list(extra)
    return ServerCommand(tuple(argv), {"LLAMA_MEDIA_MARKER": MEDIA_MARKER}, n_ctx)


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (``127.x``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerHandle(Closing):
    """A running llama-server: ``url`` (``http://host:port``), ``process``, ``command``, ``text``/``mmproj``
    (the pair it serves). ``stop()`` (also ``close()`` and leaving a ``with`` block) ends it: SIGTERM,
    then a kill after ``grace`` seconds; idempotent."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        url: str,
        command: ServerCommand,
        text: Path,
        mmproj: Path,
        log: IO[bytes],
    ) -> None:
        self.process = process
        self.url = url
        self.command = command
        self.text = text
        self.mmproj = mmproj
        self._log = log

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's output (stdout and stderr), for messages."""
        return _tail(self._log, lines)

    def stop(self, grace: float = 10.0) -> int | None:
        """End the server (SIGTERM, a kill after ``grace`` seconds) and return its exit status."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()
        return self.process.returncode

    def close(self) -> None:
        """``stop()``."""
        self.stop()


def start_server(
    model: str | Path | None,
    *,
    mmproj: str | Path | None = None,
    binary: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    slots: int = 1,
    ctx_per_seq: int | None = None,
    threads: int | None = None,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
    log: str | Path | None = None,
) -> ServerHandle:
    """Start llama-server on ``model`` (a registered name, ``name:QUANT``, a ``.gguf`` path or None for the
    default, resolved like the judge's; ``mmproj`` overrides the projector found for it) and wait until
    ``GET /health`` answers. The server's output goes to ``log`` (a file, appended) or an anonymous temp
    file. Raises ``ModelNotFoundError`` for an unknown model, ``EngineError`` when the binary is missing,
    the port is taken, the server exits while starting (the message ends with its last output lines) or
    is not healthy within ``timeout`` seconds."""
    from .registry import resolve_model

    text, proj = resolve_model(None if model is None else str(model), mmproj=mmproj)
    exe = Path(binary).expanduser() if binary is not None else find_server_binary()
    if exe is None:
        raise EngineError(
            "llama-server is not built yet",
            hint="build it once with `edgejudge server build` (about 4 minutes on 2 cores), or set "
            f"{BINARY_ENV} to your own llama-server",
        )
    named = "the binary given" if binary is not None else BINARY_ENV
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise EngineError(
            f"the llama-server binary {exe} does not exist or is not executable",
            hint=f"build it with `edgejudge server build`, or fix {named}",
            about="binary" if binary is not None else (),
        )
    command = server_command(
        exe,
        text,
        proj,
        port=port,
        host=host,
        slots=slots,
        ctx_per_seq=ctx_per_seq,
        threads=threads,
        extra=extra,
    )
    _check_port_free(host, port)
    try:
        log_file: IO[bytes] = open(log, "a+b") if log is not None else tempfile.TemporaryFile()  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot open the log file {log}: {exc.strerror or exc}", about="log") from exc
    try:
        process = subprocess.Popen(
            command.argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **command.env},
        )
    except OSError as exc:
        log_file.close()
        raise EngineError(f"cannot run {exe}: {exc.strerror or exc}", hint=f"check {named}") from exc
    handle = ServerHandle(process, _url(host, port), command, text, proj, log_file)
    try:
        _wait_healthy(handle, timeout)
    except BaseException:
        handle.stop(grace=2.0)
        raise
    return handle


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (else /health could be answered by another server)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return  # an address llama-server itself will judge (a UNIX socket path, a list)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as llama-server binds: a port left in TIME_WAIT by a server just stopped is free, one that
        # something listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise EngineError(
                f"port {port} on {host} is already in use ({exc.strerror or exc})",
                hint="choose another port, or stop the server that holds it",
                about="port",
            ) from exc


def _wait_healthy(handle: ServerHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            code = handle.process.poll()
            if code is not None:
                tail = _one_line(handle.log_tail())
                raise EngineError(
                    f"llama-server exited while starting (exit status {code}): {tail}",
                    hint="its last lines are quoted: a file that is not a GGUF model, a projector that "
                    "does not match, or not enough memory for the context",
                )
            try:
                if client.get(f"{handle.url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = _one_line(handle.log_tail())
                raise EngineError(
                    f"llama-server did not become healthy within {timeout:g} s: {tail}",
                    hint="a large model on a slow disk needs a longer timeout",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)


def _tail(log: IO[bytes], lines: int) -> str:
    """The last lines of the server's output file, read without moving the offset the server writes at."""
    try:
        fd = log.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - 16384)
        data = os.pread(fd, size - start, start).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
    kept = [line.strip() for line in data.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _one_line(tail: str, keep: int = 5) -> str:
    """The server's last lines as one: its error lines (``E``) when it logged some, timestamps dropped."""
    lines = [_LOG_LINE.sub("", line) if _LOG_LINE.match(line) else line for line in tail.splitlines()]
    errors = [
        _LOG_LINE.sub("", line) for line in tail.splitlines() if (m := _LOG_LINE.match(line)) and m[1] == "E"
    ]
    return " | ".join((errors or lines)[-keep:]) or "no output"
