"""``JudgeWorker``: one loaded ``Judge`` shared by many clients through a bounded queue.

Requests become ``Job``s (their images already decoded and fitted by the caller, so a bad image never
reaches the queue). ``submit`` puts a job in the queue or refuses it at once: ``QueueFullError`` (with
``retry_after`` seconds) when ``max_queue`` jobs wait, ``ShuttingDownError`` once ``drain`` began. Worker
threads (``Engine.concurrency`` of them: one for an in-process engine, the live lanes of a remote one)
take the oldest job; a plain job then waits up to ``gather_s`` for more plain jobs on the same fitted
image with the same generation settings and judges them together in one ``Judge.evaluate_tasks`` call
(one parallel-sequence group, up to the engine's ``max_parallel`` sequences): **coalescing**. A streaming
job (``on_text``) and a policy job run alone.

Cancellation: a job whose ``cancelled`` event is set before it starts is dropped (its future cancelled); a
streaming job is stopped at its next piece of text; a job already decoding inside a group finishes with
the group and its result is thrown away (the group's other members keep theirs). ``drain`` refuses new
jobs, lets the queued and running ones finish and stops the threads. ``stats()`` is a snapshot for
``/metrics``. Library code: no HTTP here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EdgeJudgeError

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..inputs import Task
    from ..judge import Judge
    from ..verdict import PolicyVerdict, Verdict

__all__ = [
    "Job",
    "JobResult",
    "JudgeWorker",
    "QueueFullError",
    "ShuttingDownError",
    "WorkerStats",
    "Cancelled",
]

#: What a job's future holds: one ``Verdict`` or ``EdgeJudgeError`` per task (a policy job: one
#: ``PolicyVerdict``).
JobResult = Any


class QueueFullError(EdgeJudgeError):
    """The queue holds ``max_queue`` jobs; ``retry_after`` is an estimate of when there is room (seconds)."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ShuttingDownError(EdgeJudgeError):
    """The worker is draining: no new jobs."""


class Cancelled(Exception):  # noqa: N818 - raised inside on_text to stop a streaming generation
    """Raised from a streaming job's text callback when its client went away (never escapes the worker)."""


@dataclass
class Job:
    """One request's work. ``tasks`` share one fitted image (``image_key`` = its pixels' sha256);
    ``policy`` set: a policy job (``tasks`` has one task, judged against every rule); ``on_text`` set: a
    streaming job (one task, one sample)."""

    tasks: Sequence[Task]
    params: GenerationParams
    samples: int = 1
    image_key: str = ""
    policy: Any = None  # a policy.Policy
    review_band: tuple[float, float] | None = None
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future[JobResult] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def plain(self) -> bool:
        """May be coalesced with other plain jobs (neither streaming nor a policy)."""
        return self.policy is None and self.on_text is None

    def group_key(self) -> tuple[Any, ...]:
        return (self.image_key, self.params, self.samples)


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot: jobs waiting and running, groups judged and how many jobs they held, jobs cancelled or
    refused, and the prompt tokens of the verdicts with how many were reused from the KV cache."""

    queue_depth: int = 0
    in_flight: int = 0
    jobs_done: int = 0
    groups: int = 0
    coalesced_jobs: int = 0  # jobs that ran in a group with at least one other job
    cancelled: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0


class JudgeWorker:
    """See the module docstring. Start with ``start()``; stop with ``drain()``."""

    def __init__(
        self, judge: Judge, *, max_queue: int = 64, gather_s: float = 0.01, coalesce: bool = True
    ) -> None:
        self.judge = judge
        self.max_queue = max(1, max_queue)
        self.gather_s = max(0.0, gather_s)
        self.coalesce = coalesce
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._in_flight = 0
        self._counts = {k: 0 for k in ("jobs_done", "groups", "coalesced_jobs", "cancelled", "refused")}
        self._tokens = [0, 0]
        self._mean_s = 1.0  # running mean of a group's wall time, for Retry-After

    # -- clients ---------------------------------------------------------------------------------------
    def start(self) -> None:
        width = max(1, int(self.judge.engine.concurrency))
        for k in range(width):
            thread = threading.Thread(target=self._loop, name=f"edgejudge-serve-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Job) -> Future[JobResult]:
        with self._cond:
            if self._closing:
                self._counts["refused"] += 1
                raise ShuttingDownError("the judge is shutting down", hint="retry on another server")
            if len(self._queue) >= self.max_queue:
                self._counts["refused"] += 1
                waits = (len(self._queue) + self._in_flight) / max(1, len(self._threads))
                raise QueueFullError(
                    f"the queue is full ({self.max_queue} requests waiting)",
                    retry_after=max(1.0, waits * self._mean_s),
                    hint="retry after the time Retry-After gives",
                )
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def drain(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish every queued and running one, stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stats(self) -> WorkerStats:
        with self._cond:
            return WorkerStats(
                queue_depth=len(self._queue),
                in_flight=self._in_flight,
                prompt_tokens=self._tokens[0],
                reused_tokens=self._tokens[1],
                **self._counts,
            )

    # -- the worker threads ----------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next group of jobs to run (None: drained and done)."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            head = self._queue.popleft()
            self._in_flight += 1
        if not (self.coalesce and head.plain):
            return [head]
        if self.gather_s:
            time.sleep(self.gather_s)  # the gather window: same-image requests arriving together
        room = max(1, self.judge.engine.max_parallel // max(1, head.samples)) - len(head.tasks)
        group = [head]
        with self._cond:
            for job in list(self._queue):
                if room <= 0:
                    break
                if job.plain and job.group_key() == head.group_key() and len(job.tasks) <= room:
                    self._queue.remove(job)
                    group.append(job)
                    room -= len(job.tasks)
            self._in_flight += len(group) - 1
        return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            started = time.monotonic()
            live = [job for job in group if not self._drop_cancelled(job)]
            try:
                if live:
                    self._run(live)
            finally:
                with self._cond:
                    self._in_flight -= len(group)
                    self._counts["groups"] += 1 if live else 0
                    self._counts["coalesced_jobs"] += len(live) if len(live) > 1 else 0
                    self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - started)

    def _drop_cancelled(self, job: Job) -> bool:
        if job.cancelled.is_set() and job.future.cancel():
            with self._cond:
                self._counts["cancelled"] += 1
            return True
        return not job.future.set_running_or_notify_cancel()

    def _run(self, group: list[Job]) -> None:
        head = group[0]
        try:
            if head.policy is not None:
                task = head.tasks[0]
                band = {"review_band": head.review_band} if head.review_band else {}
                results: list[JobResult] = [
                    self.judge.evaluate_policy(
                        task.image, policy=head.policy, response=task.response, instruction=task.instruction,
                        reference=task.reference, samples=head.samples, params=head.params,
                        image_name=task.image_name, **band,
                    )
                ]  # fmt: skip
            elif head.on_text is not None:
                results = [[self._stream(head)]]
            else:
                flat = self.judge.evaluate_tasks(
                    [t for job in group for t in job.tasks], samples=head.samples, params=head.params
                )
                results, at = [], 0
                for job in group:
                    results.append(flat[at : at + len(job.tasks)])
                    at += len(job.tasks)
        except Cancelled:
            with self._cond:
                self._counts["cancelled"] += 1
            head.future.set_exception(Cancelled("the client went away"))
            return
        except BaseException as err:  # noqa: BLE001 - every job of the group gets the failure
            for job in group:
                job.future.set_exception(err)
            return
        for job, result in zip(group, results, strict=True):
            self._count(result)
            job.future.set_result(result)

    def _stream(self, job: Job) -> Verdict | EdgeJudgeError:
        task = job.tasks[0]
        on_text = job.on_text
        assert on_text is not None

        def forward(text: str) -> None:
            if job.cancelled.is_set():
                raise Cancelled
            on_text(text)

        try:
            return self.judge.evaluate(
                task.image, instruction=task.instruction, response=task.response, rubric=task.rubric,
                reference=task.reference, samples=job.samples, params=job.params, on_text=forward,
                image_name=task.image_name,
            )  # fmt: skip
        except EdgeJudgeError as err:
            return err

    def _count(self, result: JobResult) -> None:
        from ..verdict import Verdict

        verdicts: list[Verdict | PolicyVerdict] = result if isinstance(result, list) else [result]
        prompt = reused = 0
        for item in verdicts:
            inner = [item] if isinstance(item, Verdict) else [r.verdict for r in getattr(item, "rules", ())]
            for v in inner:
                if isinstance(v, Verdict):
                    for s in v.samples:
                        prompt += s.timings.prompt_tokens
                        reused += s.timings.reused_tokens
        with self._cond:
            self._counts["jobs_done"] += 1
            self._tokens[0] += prompt
            self._tokens[1] += reused
