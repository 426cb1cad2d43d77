"""``serve(load, options)``: load the judge once and run the app on uvicorn until SIGTERM or SIGINT.

Order: the bind is checked first (a host other than loopback without an API key is an ``InputError``
before anything is loaded), then the judge is loaded (``load.load_judge``), then uvicorn listens
(``on_listening(url)`` is called once it does). SIGTERM and SIGINT shut down gracefully: uvicorn stops
accepting connections and waits for the requests in flight; after ``drain_timeout_s`` (or at once on a
second signal) every request still waiting is answered 503 ``ShuttingDownError`` (``ServeState.abort``;
never a 500), then the app's lifespan drains the worker, then the judge is closed and ``serve`` returns
(the process exits 0). A judge thread still busy then (a generation that cannot be interrupted) is left
to the process's exit and the judge is not closed under it (``serve`` returns False). uvicorn limits the
connections and requests at once (``max_connections``: more get 503) and closes idle keep-alive
connections after 5 s; the body read timeout is ``limits.Gate``'s. A port that cannot be bound is an
``InputError`` naming it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from ..errors import InputError
from .options import ServeOptions, check_bind

if TYPE_CHECKING:
    from types import FrameType

    from ..judge import Judge
    from ..load_options import LoadOptions
    from .state import ServeState

__all__ = ["serve", "run_app", "url_of"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Idle keep-alive connections are closed after this many seconds.
KEEP_ALIVE_S = 5
#: uvicorn's own backstop past the drain timeout (the app answers every waiting request before it).
_BACKSTOP_S = 10.0


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def serve(
    load: LoadOptions,
    options: ServeOptions,
    *,
    on_loaded: Callable[[Judge], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> bool:
    """See the module docstring. True when every judge thread ended and the judge was closed; False when
    one was still inside the engine: the judge is left open and the caller should end the process at once
    (``os._exit``), since tearing the interpreter down under a running generation can crash it."""
    from ..load import load_judge

    check_bind(options.host, options.api_key)
    judge = load_judge(load)
    try:
        if on_loaded is not None:
            on_loaded(judge)
        clean = run_app(judge, options, on_listening=on_listening)
    except BaseException:
        judge.close()
        raise
    if clean:
        judge.close()
    return clean


def run_app(
    judge: Judge, options: ServeOptions, *, on_listening: Callable[[str], None] | None = None
) -> bool:
    """Serve the app around a loaded ``judge`` until a signal stops it (the judge stays open); whether
    every judge thread ended (the judge may then be closed)."""
    from .app import create_app

    check_bind(options.host, options.api_key)
    holder: dict[str, uvicorn.Server] = {}
    app = create_app(judge, options, draining=lambda: "server" in holder and holder["server"].should_exit)
    state: ServeState = app.state.serve
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        limit_concurrency=options.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=int(options.drain_timeout_s + _BACKSTOP_S),
    )
    server = _Server(config, state)
    holder["server"] = server
    # uvicorn re-raises a caught signal once it has shut down; with these handlers that is a no-op and
    # serve returns normally (exit 0) instead of dying by SIGTERM or raising KeyboardInterrupt
    previous = {sig: signal.signal(sig, _ignore) for sig in _SIGNALS}
    try:
        asyncio.run(_serve(server, options, on_listening))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return state.drained


class _Server(uvicorn.Server):
    """uvicorn's server, but a second signal answers every waiting request 503 at once
    (``ServeState.abort``) instead of uvicorn's forced exit, which cancels them (500s)."""

    def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
        super().__init__(config)
        self.serve_state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.serve_state.abort()
            return
        super().handle_exit(sig, frame)


def _ignore(signum: int, frame: Any) -> None:
    return None


async def _until_stopped(server: uvicorn.Server) -> None:
    """``server.serve()``; uvicorn's ``sys.exit`` when it cannot bind is caught here (asyncio would let a
    task's SystemExit out of the loop at once)."""
    try:
        await server.serve()
    except SystemExit:
        if server.started:
            raise


async def _serve(server: _Server, options: ServeOptions, on_listening: Callable[[str], None] | None) -> None:
    task = asyncio.ensure_future(_until_stopped(server))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if not server.started:
        await task
        raise InputError(
            f"cannot listen on {url_of(options.host, options.port)} (the address is in use or not this "
            "machine's)",
            hint="choose another port",
            about="port",
        )
    port = options.port
    for listener in getattr(server, "servers", ()):
        for sock in listener.sockets:
            port = sock.getsockname()[1]
            break
    if on_listening is not None:
        on_listening(url_of(options.host, port))
    while not task.done() and not server.should_exit:
        await asyncio.sleep(0.05)
    if not task.done():  # shutting down: the requests in flight get drain_timeout_s
        asyncio.get_running_loop().call_later(options.drain_timeout_s, server.serve_state.abort)
    await task
