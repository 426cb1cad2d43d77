"""``/metrics`` of ``edgejudge serve``: Prometheus text format from a registry of the app's own.

``Metrics`` owns one ``CollectorRegistry`` (never the process-global one, so two apps never share
counters): requests by route template and status, a latency histogram by route template, and, read from
``JudgeWorker.stats()`` at each scrape, the queue depth, the jobs in flight, the groups judged, the jobs
that were coalesced with others, the jobs cancelled, refused and failed, and the share of prompt tokens
reused from the KV cache. ``Metrics.middleware`` is the pure-ASGI wrapper that counts every answer (401
and 413 included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .limits import ASGIApp, Message, Receive, Scope, Send
    from .worker import WorkerStats

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The method label's values (any other method is counted as "other": a label never comes from the wire).
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _WorkerCollector(Collector):
    def __init__(self, stats: Callable[[], WorkerStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        gauges = (
            ("edgejudge_queue_depth", "Jobs waiting in the queue.", s.queue_depth),
            ("edgejudge_in_flight", "Jobs being judged.", s.in_flight),
            ("edgejudge_prefix_reuse_ratio", "Share of prompt tokens reused from the KV cache.",
             s.reused_tokens / s.prompt_tokens if s.prompt_tokens else 0.0),
        )  # fmt: skip
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        counters = (
            ("edgejudge_jobs_done", "Jobs judged.", s.jobs_done),
            ("edgejudge_groups", "Parallel-sequence groups judged.", s.groups),
            (
                "edgejudge_coalesced_jobs",
                "Jobs judged in a group with at least one other job.",
                s.coalesced_jobs,
            ),
            ("edgejudge_cancelled_jobs", "Jobs cancelled because their client went away.", s.cancelled),
            ("edgejudge_refused_jobs", "Jobs refused (queue full or shutting down).", s.refused),
            ("edgejudge_failed_jobs", "Jobs that ended in an error (not a client going away).", s.failed),
            ("edgejudge_prompt_tokens", "Prompt tokens of the verdicts.", s.prompt_tokens),
            ("edgejudge_reused_tokens", "Prompt tokens reused from the KV cache.", s.reused_tokens),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    """See the module docstring. ``route_of(scope)`` names a request's route template (or "unmatched")."""

    def __init__(self, stats: Callable[[], WorkerStats], route_of: Callable[[Scope], str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._route_of = route_of
        self.requests = Counter(
            "edgejudge_http_requests",
            "HTTP requests answered, by route template and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgejudge_http_request_seconds",
            "Time to answer an HTTP request (a stream: to its last event), by route template.",
            ("route", "method"),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_WorkerCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            method = str(scope.get("method", ""))
            route, method = self._route_of(scope), method if method in _METHODS else "other"
            status: dict[str, Any] = {"code": 500}
            began = time.perf_counter()

            async def watched(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, watched)
            finally:
                self.requests.labels(route, method, str(status["code"])).inc()
                self.latency.labels(route, method).observe(time.perf_counter() - began)

        return counted
