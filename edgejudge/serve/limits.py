"""The gate in front of the app (pure ASGI): the API key and the request body limit, and the error body.

``Gate`` answers before the app sees a request: 401 without the right ``Authorization: Bearer <key>``
(compared with ``secrets.compare_digest``; every path but ``/healthz`` when the server has a key), 413 for a
``Content-Length`` over the limit (one that is not a number never gets here: uvicorn's h11 answers it 400
itself); a body streamed without a length is counted as it arrives and ``BodyTooLarge`` is raised past the
limit (the app answers it with a 413); a body not complete ``body_timeout_s`` after the request came
raises ``BodyTimeout`` (408: a client dripping its body byte by byte holds no connection longer).
``error_body`` is THE error shape of every non-2xx answer: ``{"error": {"type", "message", "hint"}}``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

__all__ = ["Gate", "BodyTooLarge", "BodyTimeout", "error_body", "OPEN_PATHS", "CLOSE"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The header of an answer after which the connection closes (a body left unread).
CLOSE = (b"connection", b"close")
#: The paths that never need the API key.
OPEN_PATHS = ("/healthz",)


def error_body(kind: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """THE body of an error answer."""
    return {"error": {"type": kind, "message": " ".join(message.split()), "hint": hint}}


class BodyTooLarge(Exception):  # noqa: N818 - named after the HTTP status it becomes
    """A request body went past the server's limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the server's limit of {limit:,} bytes")
        self.limit = limit

    def body(self) -> dict[str, Any]:
        return error_body(
            "PayloadTooLarge",
            str(self),
            "send a smaller image, or raise the server's body limit (max_body_mb)",
        )


class BodyTimeout(Exception):  # noqa: N818 - named after the HTTP status it becomes
    """A request body was not complete within the server's body timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout:g} s")
        self.timeout = timeout

    def body(self) -> dict[str, Any]:
        return error_body("RequestTimeout", str(self), "send the body at once, or over a faster connection")


async def _answer(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Gate:
    """See the module docstring."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None, body_timeout_s: float = 60.0
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self._key = api_key.encode("utf-8") if api_key else None

    def _refusal(self, scope: Scope) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]] | None:
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        if self._key is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            challenge = [(b"www-authenticate", b'Bearer realm="edgejudge"')]
            if scheme.lower() != b"bearer" or not token.strip():
                body = error_body(
                    "Unauthorized", "no API key given", "send the header Authorization: Bearer <key>"
                )
                return 401, body, challenge
            if not secrets.compare_digest(token.strip(), self._key):
                body = error_body(
                    "Unauthorized", "wrong API key", "send the server's key as Authorization: Bearer <key>"
                )
                return 401, body, challenge
        length = headers.get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body_bytes:
            return 413, BodyTooLarge(self.max_body_bytes).body(), []
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        received = 0
        started = False
        complete = False
        deadline = anyio.current_time() + self.body_timeout_s

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what comes now is the disconnect, whenever it comes
                return await receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
                message = await receive()
            if scope.cancelled_caught:
                raise BodyTimeout(self.body_timeout_s)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except (BodyTooLarge, BodyTimeout) as err:
            if started:
                raise
            # the rest of the body is never read: the connection closes after the answer
            await _answer(send, 413 if isinstance(err, BodyTooLarge) else 408, err.body(), [CLOSE])
