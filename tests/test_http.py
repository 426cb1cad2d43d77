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

from edgejudge.engine._http import HttpClient, RetryPolicy, ServerFailedError, ServerRequestError
from edgejudge.errors import EngineError, ServerUnavailableError

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
    return HttpClient(url, retry=RetryPolicy(attempts=3, base_s=0.02, max_s=0.05), **kw)


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
    with _client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerUnavailableError) as info:
        client.get_json("/health")
    assert "connection refused" in str(info.value) and "after 3 tries" in str(info.value)
    assert not HttpClient(f"http://127.0.0.1:{port}").healthy()


def test_read_timeout_and_dropped_connections(server: tuple[str, _Script]) -> None:
    url, script = server
    script.replies = ["slow", "drop", _json(200, {"fine": 1})]
    with _client(url, timeout_s=0.3) as client:
        with pytest.raises(ServerUnavailableError, match="no answer within the timeout"):
            client.get_json("/slow", retry=False)
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
    with _client(url) as client, pytest.raises(EngineError, match="did not answer JSON"):
        client.get_json("/")
