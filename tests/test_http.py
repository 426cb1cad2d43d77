"""The remote engines' HTTP client (edgejudge.engine._http) against a real HTTP server on 127.0.0.1.

The server is Python's own ``http.server`` answering from a script (status, headers, body per request), so
every failure mode is reproducible: 5xx and 429 retried with backoff (Retry-After honoured), 4xx carried
with the server's message, refused connections, timeouts, server-sent events and a broken stream. The
backoff is made short (``RetryPolicy``) so the waits are real but brief.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from edgejudge.engine._http import (
    HttpClient,
    RequestTimeoutError,
    RetryPolicy,
    ServerFailedError,
    ServerRequestError,
    ServerResponseError,
    normalize_url,
    row_error,
)
from edgejudge.errors import EngineError, PromptRefusedError, ServerUnavailableError

#: (status, headers, body), or "sse:<events>" / "drop" / "slow"
Reply = tuple[int, dict[str, str], bytes] | str


class _Script:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []


def _handler(script: _Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append((self.command, self.path, dict(self.headers), body))
            reply = script.replies.pop(0) if script.replies else (200, {}, b"{}")
            if reply == "drop":  # a server that dies before answering
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if reply == "slow":
                time.sleep(1.0)
                reply = (200, {}, b"{}")
            if isinstance(reply, str) and reply.startswith("sse:"):
                events = reply[4:].split("|")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")  # as llama-server streams
                self.end_headers()
                for event in events:
                    if event == "BREAK":  # the server dies mid-stream
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    data = f"data: {event}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            assert not isinstance(reply, str)
            status, headers, data = reply
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, _Script]]:
    script = _Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(url: str, **kw: Any) -> HttpClient:
    return HttpClient(url, retry=RetryPolicy(attempts=3, base_s=0.02, max_s=0.05, outage_s=0.3), **kw)


def _json(status: int, data: Any, **headers: str) -> Reply:
    return (status, headers, json.dumps(data).encode())


def test_transient_failures_are_retried_with_backoff_and_retry_after(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = [_json(503, {"error": {"message": "loading"}}), _json(429, {}, **{"Retry-After": "1"})]
    script.replies.append(_json(200, {"ok": True}))
    started = time.perf_counter()
    with _client(url, api_key="sekret") as client:
        assert client.post_json("/completion", {"prompt": "x"}) == {"ok": True}
    assert time.perf_counter() - started >= 1.0  # the 429's Retry-After wins over the 0.05 s backoff
    assert len(script.seen) == 3
    assert all(h.get("Authorization") == "Bearer sekret" for _, _, h, _ in script.seen)
    assert json.loads(script.seen[0][3]) == {"prompt": "x"}


def test_persistent_5xx_becomes_server_unavailable_naming_the_url(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = [_json(500, {"error": {"message": "boom"}})] * 3
    with _client(url) as client, pytest.raises(ServerUnavailableError) as info:
        client.get_json("/props")
    assert isinstance(info.value, ServerFailedError) and info.value.status == 500 and info.value.url == url
    assert url in str(info.value) and "HTTP 500" in str(info.value) and "boom" in str(info.value)
    assert len(script.seen) == 3


def test_4xx_is_not_retried_and_carries_the_servers_message(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = [_json(400, {"error": {"code": 400, "message": "failed to parse grammar"}})]
    with _client(url) as client, pytest.raises(ServerRequestError) as info:
        client.post_json("/completion", {})
    assert info.value.status == 400 and info.value.server_message == "failed to parse grammar"
    assert "failed to parse grammar" in str(info.value) and len(script.seen) == 1


def test_refused_connection_and_timeouts_are_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    with _client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerUnavailableError) as info:
        client.get_json("/health")
    assert time.perf_counter() - started >= 0.3  # retried for the whole outage window, not 3 quick tries
    tries = int(str(info.value).split(" failed after ")[1].split()[0])
    assert "connection refused" in str(info.value) and tries > 3
    assert not HttpClient(f"http://127.0.0.1:{port}").healthy()


def test_read_timeout_and_dropped_connections(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = ["slow", "drop", _json(200, {"fine": 1})]
    with _client(url, timeout_s=0.3) as client:
        with pytest.raises(ServerUnavailableError, match="no answer within the timeout") as info:
            client.get_json("/slow", retry=False)
        assert not isinstance(info.value, RequestTimeoutError)  # a GET: retried unless told not to
        time.sleep(0.8)  # the handler finishes its slow answer
        assert client.get_json("/y") == {"fine": 1}  # the dropped connection was retried
    assert len(script.seen) == 3


def test_server_sent_events_stream_until_done(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = ['sse:{"content": "He"}|{"content": "llo"}|[DONE]|{"content": "never"}']
    with _client(url) as client:
        events = list(client.stream_events("/completion", {"stream": True}))
    assert [e["content"] for e in events] == ["He", "llo"]


def test_error_event_and_broken_stream(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = [
        'sse:{"content": "a"}|{"error": {"code": 500, "message": "slot crashed"}}',
        'sse:{"content": "a"}|BREAK',
    ]
    with _client(url) as client:
        got: list[str] = []
        with pytest.raises(ServerRequestError, match="slot crashed"):
            for event in client.stream_events("/completion", {}):
                got.append(event["content"])
        assert got == ["a"]
        with pytest.raises(ServerUnavailableError, match="stream of POST /completion broke"):
            list(client.stream_events("/completion", {}))


def test_bad_urls_and_non_json_answers(server: tuple[str, _Script]) -> None:
    with pytest.raises(EngineError, match="not an http"):
        HttpClient("127.0.0.1:8080")
    url, script = server
    script.replies = [(200, {"Content-Type": "text/html"}, b"<html>hello</html>")]
    with _client(url) as client, pytest.raises(ServerResponseError, match="did not answer JSON"):
        client.get_json("/")


def test_a_post_that_times_out_is_sent_once(server: tuple[str, _Script]) -> None:
    """A generation that takes longer than the timeout is not sent again (each retry would leave one more
    abandoned generation on the server); a streamed one neither."""
    url, script = server
    script.replies = ["slow", "slow"]
    with _client(url, timeout_s=0.3) as client:
        with pytest.raises(RequestTimeoutError, match="no answer within 0.3 s") as info:
            client.post_json("/completion", {"prompt": "x"})
        assert info.value.timeout_s == 0.3 and info.value.url == url
        with pytest.raises(RequestTimeoutError):
            list(client.stream_events("/completion", {"stream": True}))
    time.sleep(1.0)  # both slow answers are done
    assert [path for _, path, _, _ in script.seen] == ["/completion", "/completion"]


def test_a_server_restarting_within_the_outage_window_is_not_lost() -> None:
    """Connection refused for ~0.6 s (a server restarting), then the server is there: the request, retried
    with backoff for up to ``outage_s``, gets its answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = _Script()
    script.replies = [_json(200, {"back": True})]
    started: list[ThreadingHTTPServer] = []

    def start_later() -> None:
        time.sleep(0.6)
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(script))
        started.append(httpd)
        httpd.serve_forever(0.05)

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        retry = RetryPolicy(attempts=2, base_s=0.05, max_s=0.2, outage_s=5.0)
        with HttpClient(f"http://127.0.0.1:{port}", retry=retry) as client:
            assert client.post_json("/completion", {}) == {"back": True}
    finally:
        thread.join(2)
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


def test_row_error_tells_the_requests_failures_from_the_servers(server: tuple[str, _Script]) -> None:
    url, script = server
    with _client(url, timeout_s=0.3) as client:
        timeout = RequestTimeoutError("t", url=url, timeout_s=0.3)
        script.replies = [_json(200, {"status": "ok"})]  # /health answers: the server is fine
        row = row_error(client, timeout, 7)
        assert isinstance(row, PromptRefusedError) and row.index == 7
        assert "longer than the request timeout (0.3 s)" in str(row) and row.hint and "max_tokens" in row.hint
        failed = ServerFailedError("500", url=url, status=500)
        script.replies = [_json(503, {"status": "loading"})]  # /health fails: the server's problem
        assert row_error(client, failed, 1) is None
        script.replies = [_json(200, {})]
        assert isinstance(row_error(client, failed, 1), PromptRefusedError)
        for own in (
            ServerResponseError("bad", url=url),
            ServerRequestError("no", url=url, status=400, server_message="no"),
        ):
            assert isinstance(row_error(client, own, 2), PromptRefusedError)
        assert row_error(client, ServerUnavailableError("gone", url=url), 2) is None
        assert row_error(client, EngineError("projector"), 2) is None


def test_urls_have_one_spelling() -> None:
    assert normalize_url(" HTTP://LocalHost:8080/ ") == "http://localhost:8080"
    assert normalize_url("http://127.0.0.1:8080") == normalize_url("http://127.0.0.1:8080/")
    assert normalize_url("https://Example.COM/v1/") == "https://example.com/v1"
    assert HttpClient("http://H:1/").url == "http://h:1"
    for bad in ("localhost:8080", "ftp://h", "http://", "http://h:notaport"):
        with pytest.raises(EngineError, match="not an http"):
            normalize_url(bad)
