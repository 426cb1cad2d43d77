"""``JudgeWorker``: one loaded ``Judge`` shared by many clients through a bounded queue.

Requests become ``Job``s (their images already decoded and fitted by the caller, so a bad image never
reaches the queue). ``submit`` puts a job in the queue or refuses it at once: ``QueueFullError`` (with
``retry_after`` seconds) when ``max_queue`` jobs wait, ``ShuttingDownError`` once ``drain`` began. Worker
threads (``Engine.concurrency`` of them: one for an in-process engine, the lanes of a remote one) take the
oldest job.

**Coalescing.** A plain job (neither streaming nor a policy) with an ``image_key`` gathers the plain jobs
with the same ``group_key()`` (image key, generation settings, samples) that wait in the queue or arrive
until ``gather_s`` after the head job was submitted (a job that already waited that long does not wait
again), as many as fit in the engine's ``max_parallel`` sequences (a job of T tasks and S samples takes
T×S), and judges them in one ``Judge.evaluate_tasks`` call: one parallel-sequence group over one shared
prefix. Jobs join in arrival order; a job of another key is overtaken by at most the one group being
gathered when it is the oldest (FIFO within one gather window); with several threads, a job that a group
being gathered has room for waits for that group rather than starting its own. A streaming job
(``on_text``), a policy job and a job without an ``image_key`` run alone.

**Results.** A job's ``future`` is always resolved: a plain or streaming job's result is a list with one
``Verdict`` or ``EdgeJudgeError`` per task (a bad task never costs the others); a policy job's is one
``PolicyVerdict`` (its errors are the future's exception); a failure of the whole group (an engine error)
is the exception of every job in it, after each job of a failed coalesced group was run once more alone.

**Cancellation** (``cancel(job)``, or ``job.cancelled`` set, or ``job.future.cancel()``): a queued job is
dropped (its future cancelled) and frees its queue place at once; a streaming job is stopped at its next
piece of text (the engine stays consistent; its future gets ``Cancelled``); so is a plain job of one
task decoding alone (it runs through the same single-sequence path, its text discarded); a job decoding
inside a group finishes with the group and its result is thrown away (its future gets ``Cancelled``; the
group's other jobs keep theirs). ``drain`` refuses new jobs, lets the queued and running ones finish and
joins the threads. ``stats()`` is a snapshot for ``/metrics``. Library code: no HTTP here.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EdgeJudgeError, EngineError, InputError

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..inputs import Task
    from ..judge import Judge
    from ..verdict import Verdict

__all__ = [
    "Job",
    "JobResult",
    "JudgeWorker",
    "QueueFullError",
    "ShuttingDownError",
    "WorkerStats",
    "Cancelled",
]

#: What a job's future holds: a ``Verdict`` or ``EdgeJudgeError`` per task (a policy: a ``PolicyVerdict``).
JobResult = Any


class QueueFullError(EdgeJudgeError):
    """The queue holds ``max_queue`` jobs; ``retry_after`` is an estimate of when there is room (whole
    seconds, at least 1)."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ShuttingDownError(EdgeJudgeError):
    """The worker is draining: no new jobs."""


class Cancelled(Exception):  # noqa: N818 - raised inside on_text to stop a streaming generation
    """Raised from a streaming job's text callback when its client went away (caught by the worker), and
    the exception of a cancelled job's future once its work had started."""


@dataclass
class Job:
    """One request's work. ``tasks`` share one fitted image (``image_key`` = its pixels' sha256; empty: the
    job is never coalesced); ``policy`` set: a policy job (``tasks`` has one task, judged against every
    rule); ``on_text`` set: a streaming job (one task; called from a worker thread with each piece)."""

    tasks: Sequence[Task]
    params: GenerationParams
    samples: int = 1
    image_key: str = ""
    policy: Any = None  # a policy.Policy
    review_band: tuple[float, float] | None = None
    on_text: Callable[[str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future[JobResult] = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)  # set again by submit

    @property
    def plain(self) -> bool:
        """May be coalesced with other plain jobs (neither streaming nor a policy)."""
        return self.policy is None and self.on_text is None

    def group_key(self) -> tuple[Any, ...]:
        return (self.image_key, self.params, self.samples)

    @property
    def sequences(self) -> int:
        """Parallel sequences the job decodes: one per task and sample."""
        return len(self.tasks) * max(1, self.samples)


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot: jobs waiting and running; jobs answered (``jobs_done``), failed (the future holds an
    error other than ``Cancelled``), cancelled and refused (queue full or draining); groups judged and the
    jobs that shared a group with another (``coalesced_jobs``); the prompt tokens of the verdicts and how
    many were reused from the KV cache; ``threads`` alive; ``draining``."""

    queue_depth: int = 0
    in_flight: int = 0
    jobs_done: int = 0
    groups: int = 0
    coalesced_jobs: int = 0
    cancelled: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    failed: int = 0
    threads: int = 0
    draining: bool = False


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
        #: the groups being gathered (several threads: remote engines): id → (group key, room left)
        self._gathering: dict[int, tuple[tuple[Any, ...], int]] = {}
        self._counts = dict.fromkeys(
            ("jobs_done", "failed", "groups", "coalesced_jobs", "cancelled", "refused"), 0
        )
        self._tokens = [0, 0]
        # running means of a group's wall time and of its jobs, for Retry-After
        self._group_s = 1.0
        self._group_jobs = 1.0

    # -- clients ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads (once)."""
        with self._cond:
            if self._threads:
                return
            width = max(1, int(self.judge.engine.concurrency))
            for k in range(width):
                thread = threading.Thread(target=self._loop, name=f"edgejudge-serve-{k}", daemon=True)
                self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    @property
    def draining(self) -> bool:
        return self._closing

    def submit(self, job: Job) -> Future[JobResult]:
        """Queue ``job``; its future. Raises ``QueueFullError``/``ShuttingDownError`` at once, or
        ``InputError`` for a streaming or policy job that is not exactly one task."""
        if (job.on_text is not None or job.policy is not None) and len(job.tasks) != 1:
            raise InputError("a streaming or policy job holds exactly one task", hint="submit one per task")
        if job.on_text is not None and job.policy is not None:
            raise InputError("a policy job cannot stream", hint="drop on_text or the policy")
        with self._cond:
            if self._closing:
                self._counts["refused"] += 1
                raise ShuttingDownError("the judge is shutting down", hint="retry on another server")
            self._purge()
            if len(self._queue) >= self.max_queue:
                self._counts["refused"] += 1
                raise QueueFullError(
                    f"the queue is full ({self.max_queue} requests waiting)",
                    retry_after=self._retry_after(),
                    hint="retry after the time Retry-After gives",
                )
            job.enqueued_at = time.monotonic()
            self._queue.append(job)
            self._cond.notify_all()  # an idle thread, or a gathering one waiting for this key
        return job.future

    def cancel(self, job: Job) -> None:
        """The client went away: drop ``job`` if it waits, stop it at its next piece if it streams, throw
        its result away if it decodes in a group."""
        job.cancelled.set()
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                self._cancel_queued(job)

    def drain(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish every queued and running one, join the threads; True when they all
        ended within ``timeout`` (then every job is answered). Jobs still queued after ``timeout`` get
        ``ShuttingDownError``."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        for job in left:
            self._resolve(job, error=ShuttingDownError("the judge shut down before this request ran"))
        return not any(thread.is_alive() for thread in self._threads)

    def stats(self) -> WorkerStats:
        with self._cond:
            self._purge()  # a job whose client went away neither waits nor counts as waiting
            return WorkerStats(
                queue_depth=len(self._queue),
                in_flight=self._in_flight,
                prompt_tokens=self._tokens[0],
                reused_tokens=self._tokens[1],
                threads=sum(thread.is_alive() for thread in self._threads),
                draining=self._closing,
                **self._counts,
            )

    # -- the queue (callers hold self._cond) -----------------------------------------------------------
    def _retry_after(self) -> float:
        """Seconds until the jobs ahead (queued and running) are done: their number over the threads,
        times the running mean of one job's share of a group's wall time; whole seconds, at least 1."""
        ahead = len(self._queue) + self._in_flight
        per_job = self._group_s / max(1.0, self._group_jobs)
        return float(max(1, math.ceil(ahead * per_job / max(1, len(self._threads)))))

    def _purge(self) -> None:
        """Drop the queued jobs whose client went away."""
        gone = [job for job in self._queue if job.cancelled.is_set() or job.future.cancelled()]
        for job in gone:
            self._queue.remove(job)
            self._cancel_queued(job)

    def _cancel_queued(self, job: Job) -> None:
        job.future.cancel()
        self._counts["cancelled"] += 1

    def _room(self, head: Job) -> int:
        """Sequences left in a group that ``head`` starts (0 or less: it runs alone)."""
        return int(self.judge.engine.max_parallel) - head.sequences

    def _gather(self, group: list[Job], room: int) -> int:
        """Move the queued jobs that may join ``group`` into it, oldest first; the room left."""
        key = group[0].group_key()
        for job in list(self._queue):
            if room <= 0:
                break
            if job.cancelled.is_set() or job.future.cancelled():
                continue
            if job.plain and job.group_key() == key and job.sequences <= room:
                self._queue.remove(job)
                group.append(job)
                self._in_flight += 1
                room -= job.sequences
        return room

    def _claimed(self, job: Job) -> bool:
        """Whether a group being gathered (by another thread) has room for ``job``: it waits for that."""
        if not (self.coalesce and job.plain and job.image_key):
            return False
        key = job.group_key()
        return any(k == key and job.sequences <= room for k, room in self._gathering.values())

    def _take(self) -> list[Job] | None:
        """The next group of jobs to run (None: drained and done)."""
        with self._cond:
            while True:
                self._purge()
                head = next((job for job in self._queue if not self._claimed(job)), None)
                if head is not None:
                    break
                if self._closing and not self._queue:
                    return None
                self._cond.wait()
            self._queue.remove(head)
            self._in_flight += 1
            group = [head]
            if not (self.coalesce and head.plain and head.image_key):
                return group
            room = self._room(head)
            deadline = head.enqueued_at + self.gather_s
            try:
                while room > 0:
                    room = self._gather(group, room)
                    self._gathering[id(group)] = (head.group_key(), room)
                    remaining = deadline - time.monotonic()
                    if room <= 0 or remaining <= 0 or self._closing:
                        break
                    self._cond.wait(remaining)  # the gather window: same-image requests arriving together
            finally:
                if self._gathering.pop(id(group), None) is not None:
                    self._cond.notify_all()  # what this group left is anyone's again
            return group

    # -- the worker threads ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while (group := self._take()) is not None:
            started = time.monotonic()
            live: list[Job] = []
            try:
                live = self._start(group)
                if live:
                    self._run(live)
            except BaseException as err:  # noqa: BLE001 - a fault in the worker itself: the thread lives on
                for job in group:
                    self._resolve(job, error=err)
            finally:
                for job in group:  # never an unresolved future
                    if not job.future.done():
                        self._resolve(job, error=EngineError("the judge stopped before answering"))
                with self._cond:
                    self._in_flight -= len(group)
                    if live:
                        self._counts["groups"] += 1
                        self._counts["coalesced_jobs"] += len(live) if len(live) > 1 else 0
                        self._group_s = 0.8 * self._group_s + 0.2 * (time.monotonic() - started)
                        self._group_jobs = 0.8 * self._group_jobs + 0.2 * len(live)

    def _start(self, group: list[Job]) -> list[Job]:
        """The jobs of ``group`` still wanted, their futures marked running; the others cancelled."""
        live = []
        for job in group:
            if job.cancelled.is_set():
                job.future.cancel()
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                with self._cond:
                    self._counts["cancelled"] += 1
        return live

    def _run(self, group: list[Job]) -> None:
        try:
            results = self._judge(group)
        except Cancelled:  # a streaming job's client went away (a stream always runs alone)
            self._resolve(group[0], error=Cancelled("the client went away"))
            return
        except BaseException as err:  # noqa: BLE001 - the group failed as a whole
            if len(group) == 1:
                self._resolve(group[0], error=err)
                return
            for job in group:  # a coalesced group: each job once more alone, so one cannot cost the others
                self._run([job])
            return
        for job, result in zip(group, results, strict=True):
            self._count(result)
            if job.cancelled.is_set():
                self._resolve(job, error=Cancelled("the client went away; the result was thrown away"))
            else:
                self._resolve(job, result=result)

    def _judge(self, group: list[Job]) -> list[JobResult]:
        """One result per job of ``group`` (a policy or streaming job is alone in its group)."""
        head = group[0]
        if head.policy is not None:
            task = head.tasks[0]
            band = {"review_band": head.review_band} if head.review_band else {}
            verdict = self.judge.evaluate_policy(
                task.image, policy=head.policy, response=task.response, instruction=task.instruction,
                reference=task.reference, samples=head.samples, params=head.params,
                image_name=task.image_name, **band,
            )  # fmt: skip
            return [verdict]
        if head.on_text is not None:
            return [[self._stream(head, head.on_text)]]
        if len(group) == 1 and len(head.tasks) == 1 and head.samples == 1:  # alone: stoppable mid-decode
            if isinstance(alone := self._stream(head, _discard), EngineError):
                raise alone  # as from evaluate_tasks: a failing engine fails the job
            return [[alone]]
        tasks = [t for job in group for t in job.tasks]
        flat = self.judge.evaluate_tasks(tasks, samples=head.samples, params=head.params)
        if len(flat) != len(tasks):  # never hand a job another job's verdicts
            raise EngineError(f"the judge returned {len(flat)} results for {len(tasks)} tasks")
        results, at = [], 0
        for job in group:
            results.append(flat[at : at + len(job.tasks)])
            at += len(job.tasks)
        return results

    def _stream(self, job: Job, on_text: Callable[[str], None]) -> Verdict | EdgeJudgeError:
        task = job.tasks[0]

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

    def _resolve(self, job: Job, *, result: JobResult = None, error: BaseException | None = None) -> None:
        """Settle ``job``'s future once (a later call is a no-op) and count how it ended."""
        try:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
        except InvalidStateError:  # already settled (or cancelled while it waited)
            return
        kind = "jobs_done" if error is None else "cancelled" if isinstance(error, Cancelled) else "failed"
        with self._cond:
            self._counts[kind] += 1

    def _count(self, result: JobResult) -> None:
        from ..verdict import PolicyVerdict, Verdict

        items: list[Any] = result if isinstance(result, list) else [result]
        verdicts: list[Verdict] = []
        for item in items:
            if isinstance(item, Verdict):
                verdicts.append(item)
            elif isinstance(item, PolicyVerdict):
                verdicts += [r.verdict for r in item.rules if r.verdict is not None]
        prompt = sum(s.timings.prompt_tokens for v in verdicts for s in v.samples)
        reused = sum(s.timings.reused_tokens for v in verdicts for s in v.samples)
        with self._cond:
            self._tokens[0] += prompt
            self._tokens[1] += reused


def _discard(_text: str) -> None:  # the on_text of a plain job decoding alone: its pieces go nowhere
    pass
