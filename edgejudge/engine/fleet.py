"""``Fleet``: N inference servers, each serving L *lanes* at once, shared by the threads of one engine.

A lane is one unit of a server's concurrency: for llama-server a slot id (sent as ``id_slot``, so a slot's
prompt cache keeps the image it last saw), for vLLM just a request in flight. ``Fleet.run(key, work)`` runs
``work(server, lane)`` on a free lane and returns its result:

- **affinity**: work with the same ``key`` (engines use the fitted pixels' sha256) goes to the server that
  last ran that key, and to the same lane when it is free (another free lane of that server otherwise); when
  every lane of that server is busy it waits for one there, so a prompt cache keeps hitting. A new key goes
  to the live server with the lowest load (in-flight work per lane, then fewer finished generations, then
  its place in the list), on its least recently used free lane; when no lane is free anywhere it waits.
  ``key`` None means no affinity;
- **failover**: when ``work`` raises ``ServerUnavailableError`` the server is marked dead, its keys are
  forgotten and the work is run again on another live server, so nothing is lost; callers write results
  only after ``run`` returns, so nothing is duplicated. When no server is left: ``EngineError`` naming each
  server and why it failed. Any other exception is counted in ``failed`` and propagates unchanged (the
  request's own fault, not the server's);
- **readmission**: with a ``probe`` (``probe(server)`` → whether it is fine again, e.g. its health check),
  a dead server is probed on a background thread at most every ``reprobe_s`` seconds, when work is being
  started (so nothing waits for a probe); a server that passes is live again;
- **bookkeeping**: a ``ServerStats`` per server (``stats``); ``work`` reports what it did with ``record``
  (generations, prompt and reused tokens), ``run`` counts in-flight work, failures and busy seconds.

Thread-safe: any number of threads may call ``run`` at once (one lock and one condition). Nothing here
knows what a server is; ``urls`` only name them, one member per server: ``unique_urls`` is the list of
distinct servers (``_http.normalize_url`` spellings) engines build their clients from, and a ``Fleet``
refuses a URL given twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ..errors import EngineError, ServerUnavailableError
from ._http import normalize_url
from .base import ServerStats

__all__ = ["Fleet", "AFFINITY_KEYS", "REPROBE_S", "unique_urls"]

T = TypeVar("T")

#: How many keys the fleet remembers (least recently used forgotten first).
AFFINITY_KEYS = 8192
#: The shortest time between two probes of one dead server.
REPROBE_S = 20.0


def unique_urls(urls: Iterable[str]) -> list[str]:
    """The distinct servers among ``urls``: each normalised (``normalize_url``), repeats dropped, in order."""
    return list(dict.fromkeys(normalize_url(url) for url in urls))


@dataclass
class _Server:
    stats: ServerStats
    busy: set[int] = field(default_factory=set)
    last_used: dict[int, int] = field(default_factory=dict)  # lane → tick of its last start
    reason: str = ""
    next_probe: float = 0.0  # monotonic time of the next probe while dead
    probing: bool = False


class Fleet:
    """Servers named by ``urls``, server i serving ``lanes[i]`` lanes (0, 1, …, lanes[i]-1); ``probe`` and
    ``reprobe_s`` as the module docstring says (no probe: a dead server stays dead)."""

    def __init__(
        self,
        urls: Sequence[str],
        lanes: Sequence[int],
        *,
        probe: Callable[[int], bool] | None = None,
        reprobe_s: float = REPROBE_S,
    ) -> None:
        if not urls:
            raise EngineError("no server given", hint="give at least one server URL")
        if len(urls) != len(lanes) or any(n < 1 for n in lanes):
            raise EngineError(
                "each server needs at least one lane", hint="give every server a positive concurrency"
            )
        seen = unique_urls(urls)
        if len(seen) != len(urls):
            twice = next(u for u in seen if [normalize_url(v) for v in urls].count(u) > 1)
            raise EngineError(f"server {twice} is given twice", hint="give each server once")
        self._probe = probe
        self._reprobe_s = reprobe_s
        self._servers = [
            _Server(ServerStats(url, lanes=n), last_used=dict.fromkeys(range(n), 0))
            for url, n in zip(urls, lanes, strict=True)
        ]
        self._affinity: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._tick = 0

    # -- state -----------------------------------------------------------------------------------------
    @property
    def stats(self) -> tuple[ServerStats, ...]:
        """A snapshot of every server's bookkeeping, in the order given."""
        with self._lock:
            return tuple(s.stats for s in self._servers)

    @property
    def concurrency(self) -> int:
        """Lanes over the live servers (0 once all are dead)."""
        with self._lock:
            return sum(s.stats.lanes for s in self._servers if s.stats.alive)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(s.stats.url for s in self._servers)

    def live(self) -> list[int]:
        """The indices of the live servers, in the order given."""
        with self._lock:
            return [i for i, s in enumerate(self._servers) if s.stats.alive]

    def all_down(self) -> EngineError:
        """The error that says every server is down (and why each one is)."""
        with self._lock:
            return self._all_down()

    def record(
        self,
        server: int,
        *,
        done: int = 0,
        prompt_tokens: int = 0,
        reused_tokens: int = 0,
        generated_tokens: int = 0,
    ) -> None:
        """Add what a piece of work did on ``server`` to its stats (called by ``work`` as it goes)."""
        with self._lock:
            s = self._servers[server]
            st = s.stats
            s.stats = replace(
                st,
                done=st.done + done,
                prompt_tokens=st.prompt_tokens + prompt_tokens,
                reused_tokens=st.reused_tokens + reused_tokens,
                generated_tokens=st.generated_tokens + generated_tokens,
            )

    def mark_dead(self, server: int, reason: str) -> None:
        """Take ``server`` out of the fleet (its lanes are no longer used; ``reason`` goes in messages)."""
        with self._lock:
            self._kill(server, reason)

    def call(self, work: Callable[[int], T]) -> T:
        """``work(server)`` on the first live server without taking a lane (a short request such as
        tokenizing); a server raising ``ServerUnavailableError`` is marked dead and the next one tried."""
        while True:
            with self._lock:
                self._start_probes()
                live = [i for i, s in enumerate(self._servers) if s.stats.alive]
                if not live:
                    raise self._all_down()
            try:
                return work(live[0])
            except ServerUnavailableError as err:
                self.mark_dead(live[0], str(err))

    # -- running ---------------------------------------------------------------------------------------
    def run(self, key: Hashable | None, work: Callable[[int, int], T]) -> T:
        """Run ``work(server, lane)`` on a lane chosen as the module docstring says; move it to another
        server when one dies under it; EngineError when none is left."""
        while True:
            server, lane = self._acquire(key)
            started = time.perf_counter()
            try:
                result = work(server, lane)
            except ServerUnavailableError as err:
                self._release(server, lane, started, failed=True, dead=str(err))
                continue
            except BaseException:
                self._release(server, lane, started, failed=True)
                raise
            self._release(server, lane, started)
            return result

    def _acquire(self, key: Hashable | None) -> tuple[int, int]:
        with self._freed:
            while True:
                self._start_probes()
                live = [i for i, s in enumerate(self._servers) if s.stats.alive]
                if not live:
                    raise self._all_down()
                choice = self._choose(key, live)
                if choice is not None:
                    server, lane = choice
                    s = self._servers[server]
                    s.busy.add(lane)
                    self._tick += 1
                    s.last_used[lane] = self._tick
                    s.stats = replace(s.stats, in_flight=len(s.busy))
                    if key is not None:
                        self._remember(key, server, lane)
                    return server, lane
                self._freed.wait()

    def _choose(self, key: Hashable | None, live: list[int]) -> tuple[int, int] | None:
        """A (server, lane) to start on now, or None to wait. Called with the lock held."""
        bound = self._affinity.get(key) if key is not None else None
        if bound is not None and self._servers[bound[0]].stats.alive:
            server, lane = bound
            s = self._servers[server]
            if lane not in s.busy:
                return server, lane
            free = self._free_lanes(server)
            return (server, free[0]) if free else None
        candidates = [i for i in live if self._free_lanes(i)]
        if not candidates:
            return None

        def load(i: int) -> tuple[float, int, int]:
            st = self._servers[i].stats
            return (len(self._servers[i].busy) / st.lanes, st.done, i)

        server = min(candidates, key=load)
        return server, self._free_lanes(server)[0]

    def _free_lanes(self, server: int) -> list[int]:
        """Free lanes of ``server``, least recently used first."""
        s = self._servers[server]
        return sorted((lane for lane in s.last_used if lane not in s.busy), key=lambda n: s.last_used[n])

    def _remember(self, key: Hashable, server: int, lane: int) -> None:
        self._affinity[key] = (server, lane)
        self._affinity.move_to_end(key)
        while len(self._affinity) > AFFINITY_KEYS:
            self._affinity.popitem(last=False)

    def _release(
        self, server: int, lane: int, started: float, *, failed: bool = False, dead: str | None = None
    ) -> None:
        with self._freed:
            s = self._servers[server]
            s.busy.discard(lane)
            st = s.stats
            s.stats = replace(
                st,
                in_flight=len(s.busy),
                failed=st.failed + int(failed),
                busy_s=st.busy_s + (time.perf_counter() - started),
            )
            if dead is not None:
                self._kill(server, dead)
            self._freed.notify_all()

    def _start_probes(self) -> None:
        """Start a probe of each dead server that is due (lock held; the probe runs without it)."""
        if self._probe is None:
            return
        now = time.monotonic()
        for i, s in enumerate(self._servers):
            if not s.stats.alive and not s.probing and now >= s.next_probe:
                s.probing = True
                threading.Thread(target=self._run_probe, args=(i,), name="fleet-probe", daemon=True).start()

    def _run_probe(self, server: int) -> None:
        assert self._probe is not None
        try:
            back = self._probe(server)
        except Exception:  # noqa: BLE001 - a probe that fails in any way: still dead
            back = False
        with self._freed:
            s = self._servers[server]
            s.probing = False
            s.next_probe = time.monotonic() + self._reprobe_s
            if back and not s.stats.alive:
                s.stats = replace(s.stats, alive=True)
                s.reason = ""
                self._freed.notify_all()

    def _kill(self, server: int, reason: str) -> None:
        s = self._servers[server]
        if s.stats.alive:
            s.stats = replace(s.stats, alive=False)
            s.reason = reason
            s.next_probe = time.monotonic() + self._reprobe_s
        for key in [k for k, (i, _) in self._affinity.items() if i == server]:
            del self._affinity[key]
        self._freed.notify_all()

    def _all_down(self) -> EngineError:
        n = len(self._servers)
        why = "; ".join(s.reason or s.stats.url for s in self._servers)
        if n == 1:
            return EngineError(
                f"the server is down: {why}",
                hint="restart the server (or give another) and run again; a batch resumes where it stopped",
            )
        return EngineError(
            f"all {n} servers are down: {why}",
            hint="restart the servers (or give others) and run again; a batch resumes where it stopped",
        )
