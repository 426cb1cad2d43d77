"""``edgejudge serve`` under load, as a REAL server subprocess on 127.0.0.1 with the tiny real judge.

Real clients (``httpx``, one thread each), no mocks: 16 concurrent clients × 4 requests all answered, each
answer its own request's (its image name, and at temperature 0 the same verdict as the request judged alone
afterwards; the requests share a seed, as requests must to be coalesced); same-image requests coalesced
(``/metrics`` and the verdicts' ``timings``); a full queue (``--max-queue 1``) answers 429 with
``Retry-After``; a client that goes away cancels its work (a stream stopped, a queued request dropped: the
cancelled counter, and the server keeps serving); SIGTERM while requests are in flight: they get their
answers, the process exits 0, ``/healthz`` says draining or the port is closed, and no child process
outlives it.

The tiny model decodes ~5000 tokens/s, so the tests that need work to be in progress ask for long
generations (``max_tokens`` 2048, several samples) rather than sleeping.
"""

from __future__ import annotations

import base64
import io
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgejudge.images import synthetic_image
from tests.helpers.serve import running_serve

SERVER_ARGS = ("--threads", "1", "--parallel", "4")


def _png(seed: int) -> str:
    buffer = io.BytesIO()
    synthetic_image(64, seed=seed).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _body(i: int, image: str, **settings: Any) -> dict[str, Any]:
    return {
        "image": image,
        "image_name": f"req-{i}",
        "instruction": "Describe the picture.",
        "response": f"Answer number {i}: a house with a red roof under a blue sky.",
        "seed": 7,  # requests coalesce only with equal settings, the seed included
        "temperature": 0.0,
        "max_tokens": 32,
        **settings,
    }


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def _metrics(url: str) -> dict[str, float]:
    """Each metric family's value (labels summed; a counter's ``_total`` suffix dropped)."""
    values: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name = re.sub(r"_total$", "", match.group(1))
        values[name] = values.get(name, 0.0) + float(match.group(3))
    return values


def _wait_for(
    check: Callable[[], bool], timeout: float = 60, what: str = "the condition", show: Callable[[], Any] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s: {show()}"
        time.sleep(0.05)


def _in_threads(count: int, target: Callable[[int], None]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, args=(k,), daemon=True) for k in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _children(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sixteen_clients_four_requests_each_all_answered_and_coalesced(tiny_gguf: tuple[Path, Path]) -> None:
    images = [_png(seed) for seed in range(4)]
    # client c sends requests c, c+16, c+32, c+48, all on image c % 4: four clients per image at any time
    bodies = [_body(i, images[i % 4]) for i in range(64)]
    answers: dict[int, tuple[int, dict[str, Any]]] = {}
    lock = threading.Lock()
    with running_serve(*tiny_gguf, *SERVER_ARGS) as server:
        start = threading.Barrier(16)

        def client(c: int) -> None:
            with httpx.Client(base_url=server.url, timeout=300) as http:
                start.wait()
                for k in range(4):
                    i = c + 16 * k
                    reply = http.post("/v1/judge", json=bodies[i])
                    with lock:
                        answers[i] = (reply.status_code, reply.json())

        for thread in _in_threads(16, client):
            thread.join(300)
        assert sorted(answers) == list(range(64)), "lost requests"
        assert {status for status, _ in answers.values()} == {200}, answers
        for i, (_, verdict) in answers.items():  # each answer is its own request's
            assert verdict["image"] == f"req-{i}"
            assert verdict["settings"]["seed"] == 7 and verdict["settings"]["max_tokens"] == 32
        during = _metrics(server.url)
        with httpx.Client(base_url=server.url, timeout=300) as http:  # the same requests judged alone
            alone = {i: http.post("/v1/judge", json=bodies[i]).json() for i in range(64)}
        after = _metrics(server.url)
    for i, (_, verdict) in answers.items():
        assert verdict["raw_output"] == alone[i]["raw_output"], f"request {i} differs from it judged alone"
        assert verdict["score"] == alone[i]["score"]
    grouped = [v for _, v in answers.values() if v["samples"][0]["timings"]["parallel"] > 1]
    assert len(grouped) >= 8, "same-image requests were not decoded together"
    # a coalesced group (2+ requests) evaluates its shared prefix once, charged to its first member: the
    # others reuse it, so at most one grouped verdict in two can show none (the first of a group on an
    # image whose prefix was not cached)
    cold = [v for v in grouped if v["samples"][0]["timings"]["reused_tokens"] == 0]
    assert len(cold) <= len(grouped) // 2, (len(cold), len(grouped))
    assert during["edgejudge_coalesced_jobs"] >= len(grouped)
    assert during["edgejudge_groups"] < 64
    assert after["edgejudge_coalesced_jobs"] == during["edgejudge_coalesced_jobs"]  # alone: no group
    assert after["edgejudge_groups"] == during["edgejudge_groups"] + 64
    assert 0 < during["edgejudge_prefix_reuse_ratio"] < 1


def test_full_queue_answers_429_with_retry_after(tiny_gguf: tuple[Path, Path]) -> None:
    replies: dict[int, httpx.Response] = {}
    with running_serve(*tiny_gguf, *SERVER_ARGS, "--max-queue", "1") as server:
        start = threading.Barrier(16)

        def client(c: int) -> None:
            with httpx.Client(base_url=server.url, timeout=300) as http:
                start.wait()
                replies[c] = http.post("/v1/judge", json=_body(c, _png(100 + c), max_tokens=2048))

        for thread in _in_threads(16, client):
            thread.join(300)
        refused = [r for r in replies.values() if r.status_code == 429]
        answered = [r for r in replies.values() if r.status_code == 200]
        assert len(refused) + len(answered) == 16, [r.status_code for r in replies.values()]
        assert refused and len(answered) >= 2  # one decoding and one waiting got through at least
        for reply in refused:
            assert re.fullmatch(r"[1-9][0-9]*", reply.headers["Retry-After"])
            error = reply.json()["error"]
            assert error["type"] == "QueueFullError" and "queue is full" in error["message"]
        assert _metrics(server.url)["edgejudge_refused_jobs"] == len(refused)
        later = httpx.post(server.url + "/v1/judge", json=_body(99, _png(1)), timeout=300)
        assert later.status_code == 200  # still serving


def test_a_client_that_goes_away_cancels_its_work(tiny_gguf: tuple[Path, Path]) -> None:
    with running_serve(*tiny_gguf, *SERVER_ARGS) as server:
        # a long stream holds the judge (64 greedy samples of up to 2048 tokens, one after another)
        long = _body(0, _png(1), stream=True, max_tokens=2048, samples=64)
        http = httpx.Client(base_url=server.url, timeout=300)
        stream = http.stream("POST", "/v1/judge", json=long)
        reply = stream.__enter__()
        assert reply.status_code == 200
        lines = reply.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: text"
        # a plain request queued behind it, whose client gives up
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/judge", json=_body(1, _png(2)), timeout=0.5)
        time.sleep(0.5)  # the server notices the disconnect (it polls every 0.2 s) while the stream runs
        stream.__exit__(None, None, None)  # the streaming client goes away too
        http.close()
        _wait_for(
            lambda: _metrics(server.url)["edgejudge_cancelled_jobs"] >= 2,
            what="two cancellations",
            show=lambda: (_metrics(server.url), server.stderr[-2000:]),
        )
        gone = _metrics(server.url)
        assert gone["edgejudge_cancelled_jobs"] == 2 and gone["edgejudge_jobs_done"] == 0
        after = httpx.post(server.url + "/v1/judge", json=_body(2, _png(3)), timeout=300)
        assert after.status_code == 200 and after.json()["image"] == "req-2"  # the server keeps serving
        assert _metrics(server.url)["edgejudge_jobs_done"] == 1


def test_sigterm_answers_the_requests_in_flight_then_exits_0(tiny_gguf: tuple[Path, Path]) -> None:
    replies: dict[int, httpx.Response | Exception] = {}
    health: list[int | str] = []
    with running_serve(*tiny_gguf, *SERVER_ARGS) as server:
        pid = server.proc.pid

        def client(c: int) -> None:
            try:
                replies[c] = httpx.post(
                    server.url + "/v1/judge",
                    json=_body(c, _png(200 + c), max_tokens=2048, samples=8),
                    timeout=300,
                )
            except httpx.HTTPError as err:
                replies[c] = err

        threads = _in_threads(4, client)

        def all_in() -> bool:
            m = _metrics(server.url)
            return m["edgejudge_queue_depth"] + m["edgejudge_in_flight"] + m["edgejudge_jobs_done"] >= 4

        _wait_for(all_in, what="four requests submitted")
        assert _metrics(server.url)["edgejudge_jobs_done"] < 4, "the requests finished before SIGTERM"
        children = _children(pid)
        server.proc.send_signal(signal.SIGTERM)
        while server.proc.poll() is None:
            try:
                health.append(httpx.get(server.url + "/healthz", timeout=2).status_code)
            except httpx.TransportError:
                health.append("closed")
            time.sleep(0.1)
        for thread in threads:
            thread.join(60)
        assert server.proc.wait(60) == 0
    for c in range(4):
        reply = replies[c]
        assert isinstance(reply, httpx.Response), f"request {c}: {reply!r}"
        assert reply.status_code == 200 and reply.json()["image"] == f"req-{c}"
    settled = [h for h in health if h != 200]  # the first probes may come before the signal is handled
    assert settled and set(settled) <= {503, "closed"}, health
    assert health[len(health) - len(settled) :] == settled  # never healthy again once draining
    assert not [child for child in children if _alive(child)], "a child process outlived the server"
