"""``edgejudge serve`` against what a review found: a real server on the tiny real judge, real HTTP (httpx
and raw sockets). Malformed multipart, answers that outgrow their request, the work one request may ask
for, the texts that cannot fit (refused before the queue), /metrics labels, a client leaving while it
sends, slow bodies, the connection limit, the drain timeout and a second signal, inline policies that
would name files, the key in the OpenAPI document, and the flags' bounds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._support import cli
from tests.helpers.serve import ServeHandle, image_b64, png_bytes, running_serve

PNG = png_bytes()
BASE = {"image": image_b64(PNG), "image_name": "red.png", "instruction": "What colour is it?"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's working directory, holding a valid rubric file without an extension."""
    path = tmp_path_factory.mktemp("serve-cwd")
    (path / "secret").write_text(
        'criteria = "c"\n' + "".join(f'score{k}_description = "d{k}"\n' for k in range(1, 6)), "utf-8"
    )
    return path


@pytest.fixture(scope="module")
def server(tiny_gguf: tuple[Path, Path], workdir: Path) -> Iterator[ServeHandle]:
    args = ("--temperature", "0", "--max-tokens", "8", "--max-sequences", "8", "--n-ctx", "1536")
    with running_serve(*tiny_gguf, *args, "--body-timeout", "1.5", cwd=workdir) as handle:
        yield handle


@pytest.fixture()
def http(server: ServeHandle) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _multipart(fields: list[tuple[str, str]], boundary: str = "XyZ") -> tuple[bytes, str]:
    body = b""
    for name, value in fields:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="red.png"\r\n\r\n'.encode()
    )
    body += PNG + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post_form(http: httpx.Client, path: str, fields: list[tuple[str, str]], **kw: str) -> httpx.Response:
    body, kind = _multipart(fields, **kw)
    return http.post(path, content=body, headers={"content-type": kind})


def _metric(http: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def _healthy(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}


def test_a_boundary_over_256_bytes_is_a_400(http: httpx.Client, server: ServeHandle) -> None:
    fields = [("instruction", "What?"), ("response", "Red.")]
    answer = _post_form(http, "/v1/judge", fields, boundary="B" * 300)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "InputError"
    assert "multipart body is malformed" in answer.json()["error"]["message"]
    _healthy(http)
    assert "Traceback" not in server.stderr


def test_multipart_inline_rubric_and_rubrics_array_equal_the_json_route(http: httpx.Client) -> None:
    rubric = {"criteria": "Is the colour right?", **{f"score{k}": f"level {k}" for k in range(1, 6)}}
    form = _post_form(
        http,
        "/v1/judge",
        [("instruction", BASE["instruction"]), ("response", "Red."), ("rubric", json.dumps(rubric))],
    )
    plain = http.post("/v1/judge", json={**BASE, "response": "Red.", "rubric": rubric})
    assert form.status_code == plain.status_code == 200, (form.text, plain.text)
    assert form.json()["rubric"] == "inline"
    assert (form.json()["score"], form.json()["feedback"]) == (
        plain.json()["score"],
        plain.json()["feedback"],
    )
    names = ["vqa-helpfulness", "visual-grounding"]
    fields = [("instruction", BASE["instruction"]), ("responses", "Red."), ("rubrics", json.dumps(names))]
    form = _post_form(http, "/v1/judge/batch", fields)
    plain = http.post("/v1/judge/batch", json={**BASE, "responses": ["Red."], "rubrics": names})
    assert form.status_code == plain.status_code == 200, (form.text, plain.text)
    got = [(r["rubric"], r["verdict"]["score"], r["verdict"]["feedback"]) for r in form.json()["results"]]
    want = [(r["rubric"], r["verdict"]["score"], r["verdict"]["feedback"]) for r in plain.json()["results"]]
    assert got == want and [g[0] for g in got] == names


def test_names_are_bounded_so_the_answer_stays_small(http: httpx.Client) -> None:
    long_name = http.post("/v1/judge", json={**BASE, "response": "Red.", "image_name": "n" * 300})
    assert long_name.status_code == 422, long_name.text
    assert long_name.json()["error"]["message"] == "image_name is 300 characters long, more than 255"
    body = {**BASE, "responses": ["Red."] * 8, "rubrics": ["z" * 255], "image_name": "i" * 255}
    sent = len(json.dumps(body))
    answer = http.post("/v1/judge/batch", json=body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 8 and all(r["error"]["type"] == "RubricError" for r in results)
    assert all(len(r["rubric"]) <= 65 for r in results)
    assert "'" + "z" * 64 + "…'" in results[0]["error"]["message"]
    # each slot is bounded (a short prefix of the name), so an answer is at most max_sequences such slots
    assert len(answer.content) < 8 * 600 and sent > 255 + 255


def test_the_sequences_of_a_request_are_bounded(http: httpx.Client) -> None:
    body = {
        **BASE,
        "responses": ["Red.", "Blue.", "Green."],
        "rubrics": ["vqa-helpfulness", "visual-grounding"],
    }
    answer = http.post("/v1/judge/batch", json={**body, "samples": 2})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "InputError"
    assert error["message"] == (
        "the request asks for 12 sequences (3 responses × 2 rubrics × 2 samples), more than the server's "
        "limit of 8 (max_sequences)"
    )
    assert "--max-sequences" in error["hint"]
    policy = http.post(
        "/v1/judge/policy", json={**BASE, "response": "Red.", "policy": "marketplace-listing", "samples": 8}
    )
    assert policy.status_code == 400 and "max_sequences" in policy.json()["error"]["message"]
    assert http.post("/v1/judge/batch", json={**body, "samples": 1}).status_code == 200


def test_texts_that_cannot_fit_are_refused_before_the_queue(http: httpx.Client) -> None:
    done = _metric(http, "edgejudge_jobs_done_total")
    began = time.monotonic()
    huge = http.post("/v1/judge", json={**BASE, "response": "word " * (1 << 20)})  # 5 MiB of text
    assert huge.status_code == 400, huge.text
    assert huge.json()["error"] == {
        "type": "ContextOverflowError",
        "message": "the prompt does not fit the context window (1536 tokens): the response is 5,242,880 "
        "characters long, more than the 98,304 a prompt of this context can hold",
        "hint": "shorten the response",
    }
    shared = http.post(
        "/v1/judge/batch", json={**BASE, "instruction": "word " * 20_000, "responses": ["Red."] * 8}
    )
    assert shared.status_code == 400, shared.text
    assert "the instruction is 100,000 characters long" in shared.json()["error"]["message"]
    assert time.monotonic() - began < 10
    assert _metric(http, "edgejudge_jobs_done_total") == done  # nothing reached the judge
    mixed = http.post("/v1/judge/batch", json={**BASE, "responses": ["Red.", "word " * 20_000, "Blue."]})
    assert mixed.status_code == 200, mixed.text
    results = mixed.json()["results"]
    assert [r["error"]["type"] if r["error"] else None for r in results] == [
        None,
        "ContextOverflowError",
        None,
    ]
    assert results[0]["verdict"]["score"] in range(1, 6) and results[2]["verdict"] is not None


def test_metrics_methods_come_from_a_fixed_set(http: httpx.Client, server: ServeHandle) -> None:
    for k in range(5):
        http.request(f"X{k}FOO", "/v1/judge")
    text = http.get("/metrics").text
    assert "X0FOO" not in text and 'method="other"' in text


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _head(length: int) -> bytes:
    head = "POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {length}\r\n\r\n".encode()


def test_a_client_leaving_while_sending_is_not_a_500(http: httpx.Client, server: ServeHandle) -> None:
    sock = _raw(server.url)
    sock.sendall(_head(100_000) + b'{"image": "')
    time.sleep(0.3)
    sock.close()
    time.sleep(0.5)
    text = http.get("/metrics").text
    assert 'status="499"' in text and 'status="500"' not in text
    assert "Traceback" not in server.stderr
    _healthy(http)


def test_a_stalled_body_gets_408(http: httpx.Client, server: ServeHandle) -> None:
    sock = _raw(server.url)
    head = (
        "POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"image": "')
    began = time.monotonic()
    answer = sock.recv(65536).decode()
    while not answer.endswith("}"):  # the body may come after the head
        more = sock.recv(65536).decode()
        if not more:
            break
        answer += more
    sock.close()
    assert 1.0 < time.monotonic() - began < 10
    assert answer.startswith("HTTP/1.1 408"), answer
    body = json.loads(answer.split("\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "RequestTimeout"
    _healthy(http)


def test_an_inline_policy_never_reads_a_file(http: httpx.Client, workdir: Path) -> None:
    rule = {"id": "r1", "title": "t", "severity": "major", "rubric": "secret", "instruction": "Is it red?"}
    policy = {"name": "p", "version": "1", "description": "d", "rules": [rule]}
    answer = http.post("/v1/judge/policy", json={**BASE, "response": "Red.", "policy": policy})
    assert answer.status_code == 400, answer.text
    assert "unknown rubric 'secret'" in answer.json()["error"]["message"]


def test_a_keyed_server_documents_bearer_auth(tiny_gguf: tuple[Path, Path]) -> None:
    with running_serve(*tiny_gguf, "--max-connections", "3", api_key="k3y") as keyed:
        doc = httpx.get(f"{keyed.url}/openapi.json", headers=keyed.headers).json()
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "description": "The server's API key."
        }  # fmt: skip
        assert doc["security"] == [{"bearer": []}] and doc["paths"]["/healthz"]["get"]["security"] == []
        idle = [_raw(keyed.url) for _ in range(3)]  # the connection limit: the next request gets 503
        try:
            time.sleep(0.3)
            over = httpx.get(f"{keyed.url}/healthz", timeout=10)
            assert over.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{keyed.url}/healthz", timeout=10).status_code == 200


def _post_later(url: str, path: str, body: dict[str, Any], answers: list[Any]) -> threading.Thread:
    """POST ``body`` in a thread; its (status, error type or None, seconds after the shutdown began) is
    appended to ``answers`` (the shutdown time is ``answers[0]``, set by the test)."""

    def one() -> None:
        try:
            answer = httpx.post(f"{url}{path}", json=body, timeout=120)
            kind = answer.json()["error"]["type"] if answer.status_code != 200 else None
            answers.append((answer.status_code, kind, time.monotonic() - answers[0]))
        except httpx.HTTPError as err:
            answers.append(("exc", repr(err), time.monotonic() - answers[0]))

    thread = threading.Thread(target=one)
    thread.start()
    return thread


@pytest.mark.parametrize("second", [False, True], ids=["drain-timeout", "second-signal"])
def test_shutdown_answers_the_waiting_requests_503(tiny_gguf: tuple[Path, Path], second: bool) -> None:
    """One long policy request (6 rules x 16 samples: about 4 s on 2 cores) is being judged when three
    small requests queue behind it and the server is told to stop: every request not answered by the drain
    timeout (at once on a second signal) is answered 503 then, the waiting ones and the long one (its
    result is thrown away; a machine fast enough to finish it first answers it 200), never after the long
    one's work, and the server exits 0 once the worker is done with it."""
    args = ("--drain-timeout", "1.5", "--no-coalesce", "--gather-ms", "0")
    long = {**BASE, "response": "Red.", "policy": "marketplace-listing", "samples": 16, "max_tokens": 256}
    small = {**BASE, "response": "Red.", "max_tokens": 48}
    answers: list[Any] = [time.monotonic()]
    with running_serve(*tiny_gguf, *args) as handle:
        threads = [_post_later(handle.url, "/v1/judge/policy", long, answers)]
        time.sleep(0.3)  # the policy is being judged
        threads += [_post_later(handle.url, "/v1/judge", small, answers) for _ in range(3)]
        time.sleep(0.3)  # the three wait behind it
        answers[0] = time.monotonic()
        handle.proc.send_signal(signal.SIGTERM)
        if second:
            time.sleep(0.3)
            handle.proc.send_signal(signal.SIGINT)
        for thread in threads:
            thread.join(60)
        code = handle.proc.wait(60)
        stderr = handle.stderr
    got = answers[1:]
    assert len(got) == 4 and all(status in (200, 503) for status, _, _ in got), got
    refused = [(kind, after) for status, kind, after in got if status == 503]
    assert len(refused) >= 3 and all(kind == "ShuttingDownError" for kind, _ in refused), got
    assert all(after < (1.3 if second else 3.0) for _, after in refused), got  # not after the long one
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]


def test_flags_are_bounded(tmp_path: Path, tiny_gguf: tuple[Path, Path]) -> None:
    empty = subprocess.run(
        cli("serve", "--model", str(tiny_gguf[0]), "--host", ""), capture_output=True, text=True, timeout=120
    )
    assert empty.returncode == 2
    assert (
        "error: the host to listen on is empty" in empty.stderr and "give --host an address" in empty.stderr
    )
    big = subprocess.run(
        cli("serve", "--model", str(tiny_gguf[0]), "--max-body-mb", "5000"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert big.returncode == 2 and "--max-body-mb" in big.stderr
    helped = subprocess.run(
        cli("serve", "--help"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert (
        "MiB" in helped.stdout and "--max-sequences" in helped.stdout and "--drain-timeout" in helped.stdout
    )
