"""``serve(load, options)``: load the judge once and run the app on uvicorn until SIGTERM or SIGINT.

Order: the bind is checked first (a host other than loopback without an API key is an ``InputError``
before anything is loaded), then the judge is loaded (``load.load_judge``), then uvicorn listens
(``on_listening(url)`` is called once it does). SIGTERM and SIGINT shut down gracefully: uvicorn stops
accepting connections and waits for the requests in flight, then the app's lifespan drains the worker,
then the judge is closed and ``serve`` returns (the process exits 0). A port that cannot be bound is an
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
    from ..judge import Judge
    from ..load_options import LoadOptions

__all__ = ["serve", "run_app", "url_of"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def serve(
    load: LoadOptions,
    options: ServeOptions,
    *,
    on_loaded: Callable[[Judge], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """See the module docstring."""
    from ..load import load_judge

    check_bind(options.host, options.api_key)
    judge = load_judge(load)
    with judge:
        if on_loaded is not None:
            on_loaded(judge)
        run_app(judge, options, on_listening=on_listening)


def run_app(
    judge: Judge, options: ServeOptions, *, on_listening: Callable[[str], None] | None = None
) -> None:
    """Serve the app around a loaded ``judge`` until a signal stops it (the judge stays open)."""
    from .app import create_app

    check_bind(options.host, options.api_key)
    holder: dict[str, uvicorn.Server] = {}
    app = create_app(judge, options, draining=lambda: "server" in holder and holder["server"].should_exit)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=None,
    )
    server = uvicorn.Server(config)
    holder["server"] = server
    # uvicorn re-raises a caught signal once it has shut down; with these handlers that is a no-op and
    # serve returns normally (exit 0) instead of dying by SIGTERM or raising KeyboardInterrupt
    previous = {sig: signal.signal(sig, _ignore) for sig in _SIGNALS}
    try:
        asyncio.run(_serve(server, options, on_listening))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


async def _serve(
    server: uvicorn.Server, options: ServeOptions, on_listening: Callable[[str], None] | None
) -> None:
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
    await task
