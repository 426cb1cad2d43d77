"""The FastAPI app of ``edgejudge serve``: ``create_app(judge, config) -> FastAPI``.

The app owns the HTTP side: the lifespan (the ``JudgeWorker`` started with the app and drained when it
stops), the error handlers (every non-2xx is ``limits.error_body``: the library's errors by class, a
schema violation 422 in the CLI's words, an unknown route 404, a full queue 429 with ``Retry-After``,
shutting down or the engine failing 503, a body too slow 408, a client gone ``CLIENT_GONE`` (499: nobody
reads it; it is what the metrics count); never a 5xx for what a client sends), the middleware (``Gate``:
the API key, the body limit and timeout; ``Metrics``: counts and latency) and the OpenAPI document (the
request models of ``schema`` as components, with examples; HTTP bearer auth declared when there is a
key). The routes are in ``routes``. The judge runs only in the worker's threads; bodies are parsed and
images decoded in worker threads of the event loop's pool.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from .. import __version__
from ..errors import EdgeJudgeError
from .limits import OPEN_PATHS, BodyTimeout, BodyTooLarge, Gate, error_body
from .metrics import Metrics
from .options import ServeOptions
from .replies import ClientGone, SchemaViolation, error_of, json_response, status_of
from .routes import add_routes
from .schema import BatchRequest, JudgeRequest, PolicyRequest
from .state import ServeState
from .worker import Cancelled, QueueFullError

if TYPE_CHECKING:
    from ..judge import Judge

__all__ = ["create_app", "CLIENT_GONE"]

#: The status counted for a request whose client went away (never seen by anyone).
CLIENT_GONE = 499

_DESCRIPTION = """\
A local Prometheus-Vision judge as an HTTP service: an image, an instruction, a response and a rubric in; \
feedback, a score 1-5 and the probability of each score out (the verdict exactly as `edgejudge judge --json` \
prints it). Errors are `{"error": {"type", "message", "hint"}}`. With an API key every route but /healthz \
needs `Authorization: Bearer <key>`.
"""


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgeJudgeError)
    async def library_error(request: Request, err: EdgeJudgeError) -> Response:
        headers = {}
        if isinstance(err, QueueFullError):
            headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
        return json_response({"error": error_of(err)}, status_of(err), headers)

    @app.exception_handler(SchemaViolation)
    async def schema_violation(request: Request, err: SchemaViolation) -> Response:
        return json_response(error_body("ValidationError", err.error.message, err.error.hint), 422)

    @app.exception_handler(RequestValidationError)
    async def request_validation(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return json_response(error_body("ValidationError", f"{where}: {first.get('msg', 'invalid')}"), 422)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, err: BodyTooLarge) -> Response:
        return json_response(err.body(), 413, {"Connection": "close"})  # the rest is never read

    @app.exception_handler(BodyTimeout)
    async def too_slow(request: Request, err: BodyTimeout) -> Response:
        return json_response(err.body(), 408, {"Connection": "close"})

    # the client is gone: nobody reads this answer; 499 (nginx's "client closed request") is what the
    # metrics count it as, so a client leaving is told apart from an answer that was sent
    @app.exception_handler(ClientGone)
    async def gone(request: Request, err: ClientGone) -> Response:
        return json_response(error_body("ClientGone", "the client went away"), CLIENT_GONE)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, err: ClientDisconnect) -> Response:
        return json_response(error_body("ClientGone", "the client went away"), CLIENT_GONE)

    @app.exception_handler(Cancelled)
    async def cancelled(request: Request, err: Cancelled) -> Response:
        return json_response(error_body("ClientGone", "the client went away"), CLIENT_GONE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        kinds = {404: "NotFound", 405: "MethodNotAllowed"}
        message = (
            f"no route {request.method} {request.url.path}" if err.status_code == 404 else str(err.detail)
        )
        return json_response(error_body(kinds.get(err.status_code, "HTTPError"), message), err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        return json_response(error_body("InternalError", f"unexpected {type(err).__name__}: {err}"), 500)


_MODELS = (JudgeRequest, BatchRequest, PolicyRequest)


def _openapi(app: FastAPI, *, keyed: bool) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        if keyed:  # /docs then has an "Authorize" button that sends the key
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The server's API key."}
            }
            schema["security"] = [{"bearer": []}]
            for path in OPEN_PATHS:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = []
        app.openapi_schema = schema
        return schema

    return build


def _route_of(app: FastAPI) -> Callable[[Any], str]:
    def route_of(scope: Any) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"

    return route_of


def create_app(judge: Judge, config: ServeOptions, *, draining: Callable[[], bool] | None = None) -> FastAPI:
    """The app around ``judge`` (loaded by the caller, who closes it after the app stopped). ``draining``
    tells whether the server is shutting down (``/healthz`` then answers 503)."""
    state = ServeState(judge, config, draining)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.limiter = anyio.CapacityLimiter(config.max_decodes)
        state.worker.start()
        try:
            yield
        finally:
            state.closing = True
            patience = 0.5 if state.aborting else config.drain_timeout_s
            state.drained = await anyio.to_thread.run_sync(state.worker.drain, patience)

    app = FastAPI(
        title="edgejudge serve",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.serve = state
    _handlers(app)
    add_routes(app, state)
    metrics = Metrics(state.worker.stats, _route_of(app))
    state.metrics = metrics
    app.add_middleware(
        _Wrap,
        wrap=lambda inner: Gate(
            inner,
            max_body_bytes=config.max_body_bytes,
            api_key=config.api_key,
            body_timeout_s=config.body_timeout_s,
        ),
    )
    app.add_middleware(_Wrap, wrap=metrics.middleware)
    app.openapi = _openapi(app, keyed=bool(config.api_key))  # type: ignore[method-assign]
    return app


class _Wrap:
    """A pure-ASGI middleware given as a function of the inner app (FastAPI's ``add_middleware`` form)."""

    def __init__(self, app: Any, wrap: Callable[[Any], Any]) -> None:
        self._inner = wrap(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._inner(scope, receive, send)
