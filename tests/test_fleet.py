"""``Fleet`` (edgejudge.engine.fleet): lane choice, affinity, failover and bookkeeping, with plain Python work
functions run from real threads (the fleet knows nothing of servers; failover against real llama-servers
is tests/test_batch_servers.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgejudge.engine.fleet import Fleet, unique_urls
from edgejudge.errors import EngineError, ServerUnavailableError

URLS = ("http://a", "http://b")


def _where(server: int, lane: int) -> tuple[int, int]:
    return server, lane


def test_affinity_keeps_a_key_on_its_lane_and_spreads_new_keys() -> None:
    fleet = Fleet(URLS, [2, 2])
    first = fleet.run("img1", _where)
    fleet.record(first[0], done=1)
    second = fleet.run("img2", _where)
    assert second[0] != first[0]  # the other server had less done
    assert fleet.run("img1", _where) == first
    assert fleet.run("img2", _where) == second
    third = fleet.run("img3", _where)  # both servers idle, server of img1 has done 1: the other one
    assert third[0] == second[0] and third[1] != second[1]  # its least recently used lane
    assert fleet.run(None, _where)[0] in (0, 1)
    assert fleet.concurrency == 4


def test_lanes_bound_concurrency_and_stats_add_up() -> None:
    fleet = Fleet(URLS, [1, 2])
    lock = threading.Lock()
    busy: dict[tuple[int, int], int] = {}
    peak: dict[int, int] = {0: 0, 1: 0}

    def work(server: int, lane: int) -> int:
        with lock:
            assert (server, lane) not in busy  # a lane runs one piece of work at a time
            busy[(server, lane)] = 1
            peak[server] = max(peak[server], sum(1 for s, _ in busy if s == server))
        time.sleep(0.02)
        fleet.record(server, done=1, prompt_tokens=10, reused_tokens=4, generated_tokens=3)
        with lock:
            del busy[(server, lane)]
        return server

    with ThreadPoolExecutor(6) as pool:
        servers = list(pool.map(lambda k: fleet.run(f"key{k}", work), range(30)))
    assert peak[0] <= 1 and peak[1] <= 2 and set(servers) == {0, 1}
    stats = fleet.stats
    assert sum(s.done for s in stats) == 30 and sum(s.prompt_tokens for s in stats) == 300
    assert all(s.in_flight == 0 and s.failed == 0 and s.alive and s.busy_s > 0 for s in stats)
    assert [s.lanes for s in stats] == [1, 2] and [s.url for s in stats] == list(URLS)


def test_a_dead_server_is_dropped_and_its_work_rerun_elsewhere() -> None:
    fleet = Fleet(URLS, [1, 1])
    assert fleet.run("img", _where) == (0, 0)
    calls: list[int] = []

    def work(server: int, lane: int) -> str:
        calls.append(server)
        if server == 0:
            raise ServerUnavailableError("http://a: connection refused", url="http://a")
        return "ok"

    assert fleet.run("img", work) == "ok"
    assert calls == [0, 1]
    a, b = fleet.stats
    assert not a.alive and a.failed == 1 and b.alive and b.failed == 0
    assert fleet.concurrency == 1
    assert fleet.run("img", _where) == (1, 0)  # the key moved with the work


def test_all_servers_down_is_an_engine_error_naming_them() -> None:
    fleet = Fleet(URLS, [1, 1])

    def down(server: int, lane: int) -> None:
        raise ServerUnavailableError(f"{URLS[server]}: refused", url=URLS[server])

    with pytest.raises(EngineError, match="all 2 servers are down") as info:
        fleet.run("k", down)
    assert "http://a: refused" in str(info.value) and "http://b: refused" in str(info.value)
    assert fleet.concurrency == 0


def test_other_errors_propagate_and_keep_the_server() -> None:
    fleet = Fleet(URLS[:1], [1])

    def bad(server: int, lane: int) -> None:
        raise ValueError("the request's own fault")

    with pytest.raises(ValueError, match="own fault"):
        fleet.run("k", bad)
    (a,) = fleet.stats
    assert a.alive and a.failed == 1 and a.in_flight == 0


def test_waiters_on_a_server_that_dies_move_to_another() -> None:
    fleet = Fleet(URLS, [1, 1])
    assert fleet.run("img", _where) == (0, 0)
    holding = threading.Event()
    release = threading.Event()

    def hold(server: int, lane: int) -> int:
        holding.set()
        release.wait(5)
        raise ServerUnavailableError("http://a: gone", url="http://a")

    def quick(server: int, lane: int) -> int:
        return server

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(fleet.run, "img", lambda s, n: hold(s, n) if s == 0 else quick(s, n))
        holding.wait(5)
        waiter = pool.submit(fleet.run, "img", quick)  # the key's server is full: it waits there
        time.sleep(0.05)
        assert not waiter.done()
        release.set()
        assert first.result(5) == 1 and waiter.result(5) == 1


def test_bad_construction() -> None:
    with pytest.raises(EngineError, match="no server"):
        Fleet([], [])
    with pytest.raises(EngineError, match="at least one lane"):
        Fleet(URLS, [1, 0])


def test_one_server_per_spelling() -> None:
    assert unique_urls(["http://h:1", " HTTP://H:1/", "http://h:2"]) == ["http://h:1", "http://h:2"]
    with pytest.raises(EngineError, match="server http://h:1 is given twice"):
        Fleet(["http://h:1", "http://H:1/"], [1, 1])


def test_one_server_down_is_said_in_the_singular() -> None:
    fleet = Fleet(URLS[:1], [1])

    def down(server: int, lane: int) -> None:
        raise ServerUnavailableError("http://a: refused", url="http://a")

    with pytest.raises(EngineError) as info:
        fleet.run("k", down)
    assert str(info.value).startswith("the server is down: http://a: refused")
    assert "all 1" not in str(info.value) and info.value.hint and "restart the server " in info.value.hint


def test_a_dead_server_is_probed_in_the_background_and_readmitted() -> None:
    """The probe runs at most every ``reprobe_s``, on its own thread (work goes on meanwhile on the live
    server), and a server that passes it gets work again."""
    back = threading.Event()
    probes: list[float] = []
    probe_started = threading.Event()

    def probe(server: int) -> bool:
        probes.append(time.monotonic())
        probe_started.set()
        time.sleep(0.2)  # a slow probe: nobody waits for it
        return back.is_set()

    fleet = Fleet(URLS, [1, 1], probe=probe, reprobe_s=0.3)
    fleet.mark_dead(0, "http://a: refused")
    dead_at = time.monotonic()
    assert fleet.live() == [1]
    deadline = time.monotonic() + 5
    while not probe_started.is_set() and time.monotonic() < deadline:
        began = time.monotonic()
        assert fleet.run(None, _where)[0] == 1
        assert time.monotonic() - began < 0.1  # starting work never waits for a probe
        time.sleep(0.05)
    assert probe_started.is_set() and probes[0] - dead_at >= 0.3 and fleet.live() == [1]
    time.sleep(0.6)
    fleet.run(None, _where)  # starts the second probe (the first said no)
    back.set()
    while fleet.live() != [0, 1] and time.monotonic() < deadline:
        fleet.run(None, _where)
        time.sleep(0.05)
    assert fleet.live() == [0, 1] and fleet.stats[0].alive
    assert all(b - a >= 0.3 for a, b in zip(probes, probes[1:], strict=False))
    assert fleet.run("new-key", _where)[0] == 0  # the readmitted server (less done) gets new work


def test_call_runs_without_a_lane_and_skips_dead_servers() -> None:
    fleet = Fleet(URLS, [1, 1])
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(fleet.run, "img", lambda s, n: release.wait(5))
        time.sleep(0.05)

        def tokenize(server: int) -> int:
            if server == 0:
                raise ServerUnavailableError("http://a: gone", url="http://a")
            return server

        assert fleet.call(tokenize) == 1  # both lanes may be busy: call takes none
        release.set()
        holder.result(5)
    assert fleet.live() == [1]
    fleet.mark_dead(1, "http://b: gone")
    with pytest.raises(EngineError, match="all 2 servers are down"):
        fleet.call(tokenize)
