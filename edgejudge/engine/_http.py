"""One small HTTP client per inference server (llama-server, vLLM, any JSON-over-HTTP API), over ``httpx``.

``HttpClient(url)`` sends JSON ``GET``/``POST`` requests and streams server-sent events (``stream_events``:
one ``data:`` JSON object per event, ``[DONE]`` ends an OpenAI-style stream). Nothing here knows what a
server serves; the engines build the bodies.

Failure policy, in one place:

- connection errors (refused, reset, a connect timeout) are *outages*: the request is retried with an
  exponential backoff with jitter until ``RetryPolicy.outage_s`` has passed (at least ``attempts`` tries),
  so a server that restarts within that window is not lost. Then ``ServerUnavailableError`` naming the URL
  and what happened (a fleet moves the work to another server);
- HTTP 5xx and 429 are retried up to ``RetryPolicy.attempts`` times in all with the same backoff (a 429's
  or 503's ``Retry-After`` is honoured, capped at ``RetryPolicy.max_wait_s``), then the subclass
  ``ServerFailedError`` with the status;
- a ``POST`` that got no answer within the timeout is *not* sent again (the server may still be working on
  it; a generation sent again would run twice): ``RequestTimeoutError`` at once. A ``GET`` is retried;
- any other 4xx is the request's own fault: ``ServerRequestError`` at once, carrying the server's own error
  message (``{"error": {"message": ...}}``, ``{"message": ...}`` or ``{"detail": ...}``); an answer that is
  not JSON (or a stream event that is not a JSON object) is ``ServerResponseError``;
- a stream that breaks after its first event is not retried here (what was streamed cannot be taken back):
  ``ServerUnavailableError``, and the caller decides.

``row_error`` tells which of these failures are the one request's (a row's error; the server stays in) and
which the server's (failover). ``normalize_url`` is the one spelling of a server URL (``HttpClient.url``).

``timeout_s`` bounds every wait on the server: connecting (at most ``CONNECT_TIMEOUT_S``), each read of the
answer (for a non-streamed generation: the whole generation) and each write. An ``api_key`` is sent as
``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._closing import Closing
from ..errors import EngineError, PromptRefusedError, ServerUnavailableError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HttpClient",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerFailedError",
    "ServerRequestError",
    "ServerResponseError",
    "ServerUnavailableError",
    "normalize_url",
    "retry_after",
    "row_error",
    "server_message",
]

#: The longest wait for a TCP connection, whatever the request timeout.
CONNECT_TIMEOUT_S = 10.0


class ServerFailedError(ServerUnavailableError):
    """A server kept answering HTTP ``status`` (5xx or 429) to one request after the retries: it may be
    down, overloaded, or failing on that very request (a caller can ask ``healthy()`` to tell)."""

    def __init__(self, message: str, *, url: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, url=url, hint=hint)
        self.status = status


class RequestTimeoutError(ServerUnavailableError):
    """A ``POST`` got no answer within ``timeout_s`` (not retried: the server may still be working on it).
    The server may be down or the request may just take longer (``row_error`` asks the server)."""

    def __init__(self, message: str, *, url: str, timeout_s: float, hint: str | None = None) -> None:
        super().__init__(message, url=url, hint=hint)
        self.timeout_s = timeout_s


class ServerResponseError(EngineError):
    """A server answered one request with something that is not what was asked for (a body that is not
    JSON, an event that is not an object, an answer of the wrong shape); ``url`` names it."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


class ServerRequestError(EngineError):
    """A server refused a request (an HTTP 4xx other than 429); ``server_message`` is its own words."""

    def __init__(
        self, message: str, *, url: str, status: int, server_message: str, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.url = url
        self.status = status
        self.server_message = server_message


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: an answered 5xx/429 ``attempts`` tries in all; a connection
    error until ``outage_s`` seconds have passed since the first try (and at least ``attempts`` tries).
    Before try k+1 a wait drawn uniformly from [d/2, d] with d = min(``base_s`` · 2^k, ``max_s``), or the
    server's ``Retry-After`` when it asks for longer (at most ``max_wait_s``)."""

    attempts: int = 4
    base_s: float = 0.25
    max_s: float = 4.0
    max_wait_s: float = 30.0
    outage_s: float = 10.0  # connection errors: retried until this long after the first try

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        d = min(self.base_s * 2**attempt, self.max_s)
        wait = rng.uniform(d / 2, d)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_wait_s))
        return wait


def retry_after(response: httpx.Response) -> float | None:
    """The wait a response's ``Retry-After`` asks for, in seconds (seconds or an HTTP date; None: none)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def server_message(response: httpx.Response) -> str:
    """The server's own error message in a response body (JSON error shapes, else the start of the text)."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return json.dumps(data)[:300]


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def normalize_url(url: str) -> str:
    """The one spelling of a server URL: surrounding whitespace and trailing ``/`` removed, scheme and
    host lower-cased (``HTTP://Host:8080/`` → ``http://host:8080``); EngineError when it is not http(s)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise EngineError(f"server URL {url!r} is not an http(s) URL", hint="give it as http://HOST:PORT")
    host = parts.netloc.rpartition("@")
    netloc = host[0] + host[1] + host[2].lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), parts.query, "")).rstrip("/")


def row_error(client: HttpClient, err: EngineError, index: int | None) -> PromptRefusedError | None:
    """The error of the one request ``index`` for a failure ``err`` of ``client``'s server, or None when the
    server itself failed (a fleet then moves the work) or the error is not about one request:

    - a refusal (``ServerRequestError``) or a malformed answer (``ServerResponseError``): the request's;
    - a 5xx/429 after the retries (``ServerFailedError``) or a timeout (``RequestTimeoutError``): the
      request's when the server's health check answers right now, else the server's."""
    if isinstance(err, ServerRequestError | ServerResponseError):
        return PromptRefusedError(str(err), hint=err.hint, index=index)
    if not isinstance(err, RequestTimeoutError | ServerFailedError) or not client.healthy():
        return None
    if isinstance(err, RequestTimeoutError):
        return PromptRefusedError(
            f"{client.url} took longer than the request timeout ({err.timeout_s:g} s) on this request "
            "(the server is healthy)",
            hint="raise the request timeout, or lower max_tokens",
            index=index,
        )
    return PromptRefusedError(f"{client.url} failed on this request: {err}", hint=err.hint, index=index)


class HttpClient(Closing):
    """JSON over HTTP to one server at ``url`` (scheme, host, port, optional path prefix). Thread-safe:
    several threads may send requests at once (one connection pool of ``max_connections``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 600.0,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
    ) -> None:
        if timeout_s <= 0:
            raise EngineError(f"timeout of {timeout_s} s", hint="give a positive request timeout")
        self.url = normalize_url(url)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,  # a server on 127.0.0.1 must not go through a proxy from the environment
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._closed = False

    # -- requests --------------------------------------------------------------------------------------
    def get_json(self, path: str, *, retry: bool = True) -> Any:
        """``GET path`` → the decoded JSON answer."""
        return self._json(self._send("GET", path, None, retry=retry), path)

    def post_json(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> Any:
        """``POST path`` with a JSON body → the decoded JSON answer."""
        return self._json(self._send("POST", path, body, retry=retry), path)

    def healthy(self, path: str = "/health") -> bool:
        """Whether ``GET path`` answers 2xx right now (one try, no retries, never raises)."""
        try:
            response = self._client.get(path, timeout=min(CONNECT_TIMEOUT_S, 5.0))
        except httpx.HTTPError:
            return False
        return response.is_success

    def stream_events(self, path: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """``POST path`` and yield each server-sent event's ``data:`` JSON object as it arrives, until the
        stream ends or sends ``[DONE]``. Failures before the first event are retried like any request;
        an event holding ``{"error": ...}`` raises ``ServerRequestError``; a stream that breaks later
        raises ``ServerUnavailableError``; no event within the timeout ``RequestTimeoutError``."""
        self._check_open()
        tries = _Tries(self.retry, retry=True)
        while True:
            started = False
            try:
                with self._client.stream("POST", path, json=dict(body)) as response:
                    if not response.is_success:
                        response.read()
                        if _transient(response.status_code) and tries.again(retry_after(response), self):
                            continue
                        raise self._status_error("POST", path, response, tries.count)
                    for data in _sse_data(response.iter_lines()):
                        if data == "[DONE]":
                            return
                        event = self._decode_event(path, data)
                        started = True
                        yield event
                    return
            except httpx.HTTPError as err:
                if started and not isinstance(err, httpx.TimeoutException):
                    raise ServerUnavailableError(
                        f"{self.url}: the stream of POST {path} broke ({_describe(err)})",
                        url=self.url,
                        hint="check the server; a fleet retries the request on another server",
                    ) from None
                self._failed("POST", path, err, tries)

    # -- plumbing --------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: Mapping[str, Any] | None, *, retry: bool) -> httpx.Response:
        self._check_open()
        tries = _Tries(self.retry, retry=retry)
        while True:
            try:
                response = self._client.request(method, path, json=None if body is None else dict(body))
            except httpx.HTTPError as err:
                self._failed(method, path, err, tries)
                continue
            if response.is_success:
                return response
            if _transient(response.status_code) and tries.again(retry_after(response), self):
                continue
            raise self._status_error(method, path, response, tries.count)

    def _failed(self, method: str, path: str, err: httpx.HTTPError, tries: _Tries) -> None:
        """After a request failed without an answer: return to try again (after the backoff), or raise."""
        if isinstance(err, httpx.ConnectTimeout) or not isinstance(err, httpx.TimeoutException):
            if tries.again(None, self, outage=True):  # refused, reset, unreachable: maybe restarting
                return
            raise self._unavailable(method, path, err, tries) from None
        if method == "POST":  # the server may be working on it: never sent twice
            raise RequestTimeoutError(
                f"{self.url}: {method} {path} got no answer within {self.timeout_s:g} s",
                url=self.url,
                timeout_s=self.timeout_s,
                hint="raise the request timeout if the server is just slow",
            ) from None
        if tries.again(None, self):
            return
        raise self._unavailable(method, path, err, tries) from None

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        with self._rng_lock:
            wait = self.retry.delay(attempt, retry_after, self._rng)
        time.sleep(wait)

    def _status_error(self, method: str, path: str, response: httpx.Response, tries: int) -> EngineError:
        status = response.status_code
        said = server_message(response)
        if _transient(status):
            return ServerFailedError(
                f"{self.url}: {method} {path} answered HTTP {status} "
                f"after {tries} tr{'y' if tries == 1 else 'ies'}: {said}",
                url=self.url,
                status=status,
                hint="check the server's log; a fleet moves the work to another server",
            )
        return ServerRequestError(
            f"{self.url}: {method} {path} was refused (HTTP {status}): {said}",
            url=self.url,
            status=status,
            server_message=said,
            hint="the server refused this request as it was sent; see its message",
        )

    def _unavailable(
        self, method: str, path: str, err: httpx.HTTPError, tries: _Tries
    ) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"{self.url}: {method} {path} failed after {tries.count} tr{'y' if tries.count == 1 else 'ies'} "
            f"over {tries.elapsed():.0f} s: {_describe(err)}",
            url=self.url,
            hint="check that the server is running and reachable at that address",
        )

    def _json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerResponseError(
                f"{self.url}: {path} did not answer JSON",
                url=self.url,
                hint="check that the URL is the server's",
            ) from None

    def _decode_event(self, path: str, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise ServerResponseError(
                f"{self.url}: the stream of {path} sent an event that is not JSON",
                url=self.url,
                hint="check that the URL is the server's",
            ) from None
        if not isinstance(event, dict):
            raise ServerResponseError(
                f"{self.url}: the stream of {path} sent a non-object event",
                url=self.url,
                hint="check that the URL is the server's",
            )
        error = event.get("error")
        if error is not None:
            said = error.get("message", json.dumps(error)) if isinstance(error, dict) else str(error)
            raise ServerRequestError(
                f"{self.url}: POST {path} failed while streaming: {said}",
                url=self.url,
                status=int(error.get("code", 500)) if isinstance(error, dict) else 500,
                server_message=str(said),
                hint="the server stopped this request; see its message",
            )
        return event

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"the client of {self.url} is closed", hint="create a new engine")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


class _Tries:
    """The tries of one request under ``policy``: ``again`` waits the backoff and says whether to try once
    more (an answered failure: up to ``attempts`` tries; an outage: also until ``outage_s`` has passed)."""

    def __init__(self, policy: RetryPolicy, *, retry: bool) -> None:
        self.policy = policy
        self.retry = retry
        self.count = 1
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def again(self, retry_after: float | None, client: HttpClient, *, outage: bool = False) -> bool:
        if not self.retry:
            return False
        if self.count >= self.policy.attempts and not (outage and self.elapsed() < self.policy.outage_s):
            return False
        client._pause(self.count - 1, retry_after)
        self.count += 1
        return True


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines; other fields ignored)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _describe(err: httpx.HTTPError) -> str:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectError: "connection refused or unreachable",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer within the timeout",
        httpx.WriteTimeout: "sending the request timed out",
        httpx.PoolTimeout: "no free connection within the timeout",
        httpx.RemoteProtocolError: "the server closed the connection",
        httpx.ReadError: "the connection broke while reading",
        httpx.WriteError: "the connection broke while sending",
    }
    kind = kinds.get(type(err))
    return kind or f"{type(err).__name__}: {' '.join(str(err).split()) or 'no detail'}"
