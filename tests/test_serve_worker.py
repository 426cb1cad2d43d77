"""``edgejudge.serve.worker.JudgeWorker``: the queue between the clients of ``edgejudge serve`` and one Judge.

Most tests run the REAL tiny judge (llama.cpp, ``parallel=4``): coalesced groups equal to the same jobs
judged alone, the group size bounded by ``max_parallel`` sequences counting samples, only equal keys
coalesced, a cancelled stream stopped at its next piece with the engine left consistent (the next verdict
equals a cold one at temperature 0), drain, the token counters. Where a test needs to hold the engine at a
precise moment (a full queue, a job cancelled while it waits or while its group decodes, FIFO order, a group
that fails, several worker threads, a drain that times out) it uses ``FakeEngine`` with a gate, and says so.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from edgejudge.engine.base import Generation, GenerationParams, PromptParts, TokenCallback
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import EngineError, InputError
from edgejudge.images import FittedImage, synthetic_image
from edgejudge.inputs import Task
from edgejudge.judge import Judge
from edgejudge.serve.worker import Cancelled, Job, JudgeWorker, QueueFullError, ShuttingDownError
from edgejudge.verdict import Verdict

GREEDY = GenerationParams(temperature=0.0, max_tokens=12)
INSTRUCTION = "Describe the picture."


@pytest.fixture(scope="module")
def judge(tiny_gguf: tuple[Path, Path]) -> Iterator[Judge]:
    with Judge.from_files(*tiny_gguf, parallel=4, n_threads=1) as j:
        yield j


def _image(judge: Judge, seed: int) -> FittedImage:
    return judge.fit(synthetic_image(judge.engine.image_size, seed=seed), name=f"img-{seed}")


def _job(
    image: FittedImage,
    response: str,
    *,
    params: GenerationParams = GREEDY,
    samples: int = 1,
    key: bool = True,
) -> Job:
    task = Task(image, INSTRUCTION, response, "vqa-helpfulness", None, image.name)
    return Job([task], params, samples=samples, image_key=image.pixels_sha256 if key else "")


def _alone(judge: Judge, job: Job) -> Verdict:
    task = job.tasks[0]
    judge.engine.clear_cache()
    return judge.evaluate(
        task.image, instruction=task.instruction, response=task.response, rubric=task.rubric,
        samples=job.samples, params=job.params, image_name=task.image_name,
    )  # fmt: skip


def _same(got: Verdict, want: Verdict) -> None:
    assert [s.raw_output for s in got.samples] == [s.raw_output for s in want.samples]
    assert got.score == want.score
    for g, w in zip(got.samples, want.samples, strict=True):
        assert g.score_probs is not None and w.score_probs is not None
        for k in range(1, 6):
            assert g.score_probs[k] == pytest.approx(w.score_probs[k], abs=2e-3)


def _verdict(job: Job, timeout: float = 120) -> Verdict:
    (result,) = job.future.result(timeout)
    assert isinstance(result, Verdict), result
    return result


# -- the real tiny judge -----------------------------------------------------------------------------------
def test_same_image_jobs_are_coalesced_and_equal_to_alone(judge: Judge) -> None:
    image = _image(judge, 1)
    jobs = [_job(image, f"A house with a red roof, take {k}.") for k in range(4)]
    worker = JudgeWorker(judge, gather_s=0.0)
    judge.engine.clear_cache()
    for job in jobs:  # queued before the thread starts: one group
        worker.submit(job)
    worker.start()
    verdicts = [_verdict(job) for job in jobs]
    assert worker.drain(timeout=30)
    stats = worker.stats()
    assert (stats.groups, stats.coalesced_jobs, stats.jobs_done) == (1, 4, 4)
    assert [v.samples[0].timings.parallel for v in verdicts] == [4, 4, 4, 4]
    assert all(v.samples[0].timings.reused_tokens > judge.engine.image_tokens for v in verdicts[1:])
    assert stats.prompt_tokens == sum(v.samples[0].timings.prompt_tokens for v in verdicts)
    assert stats.reused_tokens == sum(v.samples[0].timings.reused_tokens for v in verdicts) > 0
    for job, verdict in zip(jobs, verdicts, strict=True):  # each answer is its own request's
        _same(verdict, _alone(judge, job))


def test_group_size_counts_samples_and_only_equal_keys_join(judge: Judge) -> None:
    image, other = _image(judge, 2), _image(judge, 3)
    warm = GenerationParams(temperature=0.8, max_tokens=6, seed=7)
    two = [_job(image, f"Hills and a tree, take {k}.", params=warm, samples=2) for k in range(3)]
    single = _job(image, "Hills.", params=warm)  # other samples: other key
    elsewhere = _job(other, "Hills and a tree, take 0.", params=warm, samples=2)  # other image
    unkeyed = _job(image, "No key.", params=warm, samples=2, key=False)  # never coalesced
    worker = JudgeWorker(judge, gather_s=0.0)
    for job in (*two, single, elsewhere, unkeyed):
        worker.submit(job)
    worker.start()
    results = {id(job): _verdict(job) for job in (*two, single, elsewhere, unkeyed)}
    assert worker.drain(timeout=30)
    stats = worker.stats()
    # [two0, two1] (4 sequences), [two2, ...nothing else fits its key], [single], [elsewhere], [unkeyed]
    assert (stats.groups, stats.coalesced_jobs) == (5, 2)
    assert [s.timings.parallel for s in results[id(two[0])].samples] == [4, 4]
    assert [s.timings.parallel for s in results[id(two[2])].samples] == [2, 2]
    for job in (two[2], elsewhere):
        _same(results[id(job)], _alone(judge, job))


def test_cancelled_stream_stops_at_next_piece_and_engine_stays_consistent(judge: Judge) -> None:
    image = _image(judge, 4)
    params = GenerationParams(temperature=0.0, max_tokens=24)
    worker = JudgeWorker(judge)
    worker.start()
    plain = _job(image, "A sunny day over green hills.", params=params)
    judge.engine.clear_cache()
    worker.submit(plain)
    cold = _verdict(plain)

    pieces: list[str] = []
    stream = _job(image, "A sunny day over green hills.", params=params)

    def client_leaves(text: str) -> None:  # the first piece is sent, then the client goes away
        pieces.append(text)
        worker.cancel(stream)

    stream.on_text = client_leaves
    worker.submit(stream)
    with pytest.raises(Cancelled):
        stream.future.result(60)
    assert len(pieces) == 1  # the piece after the cancel never went out

    again = _job(image, "A sunny day over green hills.", params=params)
    worker.submit(again)
    _same(_verdict(again), cold)  # KV cache and samplers left consistent

    shown: list[str] = []
    full = _job(image, "A sunny day over green hills.", params=params)
    full.on_text = shown.append
    worker.submit(full)
    streamed = _verdict(full)
    _same(streamed, cold)
    assert "".join(shown) == streamed.samples[0].raw_output.lstrip()

    stream = _job(image, "A sunny day over green hills.", params=params)  # cancelled again, then a group
    stream.on_text = client_leaves
    worker.submit(stream)
    with pytest.raises(Cancelled):
        stream.future.result(60)
    pair = [_job(image, f"Green hills, take {k}.", params=params) for k in range(2)]
    for job in pair:
        worker.submit(job)
    together = [_verdict(job) for job in pair]
    assert worker.drain(timeout=30)
    stats = worker.stats()
    assert (stats.cancelled, stats.jobs_done, stats.failed) == (2, 5, 0)
    for job, verdict in zip(pair, together, strict=True):
        _same(verdict, _alone(judge, job))


def test_drain_finishes_queued_and_running_then_refuses(judge: Judge) -> None:
    jobs = [_job(_image(judge, 10 + k), "A red roof.") for k in range(3)]
    worker = JudgeWorker(judge)
    worker.start()
    for job in jobs:
        worker.submit(job)
    assert worker.drain(timeout=120)
    assert all(isinstance(_verdict(job, timeout=0), Verdict) for job in jobs)
    with pytest.raises(ShuttingDownError):
        worker.submit(_job(_image(judge, 1), "Late."))
    stats = worker.stats()
    assert (stats.threads, stats.draining, stats.jobs_done, stats.refused) == (0, True, 3, 1)
    assert stats.queue_depth == 0


def test_a_bad_task_is_its_own_error_and_the_group_goes_on(judge: Judge) -> None:
    image = _image(judge, 5)
    good = _job(image, "A tree.")
    bad = Job([Task(image, INSTRUCTION, "   ", "vqa-helpfulness")], GREEDY, image_key=image.pixels_sha256)
    worker = JudgeWorker(judge, gather_s=0.0)
    worker.submit(good)
    worker.submit(bad)
    worker.start()
    assert isinstance(_verdict(good), Verdict)
    (error,) = bad.future.result(60)
    assert isinstance(error, InputError) and "response is empty" in error.message
    assert worker.drain(timeout=30)


def test_policy_job_runs_alone_and_counts_its_tokens(judge: Judge) -> None:
    image = _image(judge, 6)
    task = Task(image, "Is this listing photo fine?", "A house for sale.", "vqa-helpfulness", None, "house")
    job = Job([task], GenerationParams(temperature=0.0, max_tokens=8), image_key=image.pixels_sha256,
              policy="marketplace-listing")  # fmt: skip
    worker = JudgeWorker(judge)
    worker.start()
    worker.submit(job)
    result = job.future.result(300)
    assert worker.drain(timeout=30)
    assert result.rules and all(r.verdict is not None for r in result.rules)
    stats = worker.stats()
    assert stats.groups == 1 and stats.coalesced_jobs == 0
    assert stats.prompt_tokens == sum(r.verdict.samples[0].timings.prompt_tokens for r in result.rules)


def test_submit_refuses_a_streaming_or_policy_job_of_several_tasks(judge: Judge) -> None:
    image = _image(judge, 1)
    job = _job(image, "x")
    job.tasks = [*job.tasks, *job.tasks]
    job.on_text = print
    with pytest.raises(InputError, match="exactly one task"):
        JudgeWorker(judge).submit(job)


# -- FakeEngine with a gate: precise timing ---------------------------------------------------------------
_RESPONSE = re.compile(r"resp-(\d+)")


class GatedEngine(FakeEngine):
    """A ``FakeEngine`` whose calls wait for ``gate`` (set: free) and record which responses each call
    judged (``calls``, in order); a call holding a response in ``poison`` raises RuntimeError."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[list[int]] = []
        self.entered = threading.Semaphore(0)
        self.poison: set[int] = set()
        self.running = 0
        self.most_running = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()

    def _enter(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> None:
        ids = [int(m.group(1)) for p, _ in requests if (m := _RESPONSE.search(p.after_image))]
        with self._lock:
            self.calls.append(ids)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.entered.release()
        try:
            assert self.gate.wait(20), "the test never opened the gate"
            time.sleep(self.delay_s)
            if self.poison & set(ids):
                raise RuntimeError("poisoned request")
        finally:
            with self._lock:
                self.running -= 1

    def generate(
        self, parts: PromptParts, params: GenerationParams, on_text: TokenCallback | None = None
    ) -> Generation:
        self._enter([(parts, params)])
        return FakeEngine.generate(self, parts, params, on_text)

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        self._enter(requests)
        return [FakeEngine.generate(self, p, q) for p, q in requests]


def _fake(**kwargs: object) -> tuple[Judge, GatedEngine]:
    engine = GatedEngine(**kwargs)
    return Judge(engine), engine


def _fake_job(judge: Judge, n: int, *, seed: int = 0) -> Job:
    image = judge.fit(synthetic_image(judge.engine.image_size, seed=seed), name=f"img-{seed}")
    return _job(image, f"resp-{n}")


def _entered(engine: GatedEngine, count: int = 1) -> None:
    for _ in range(count):
        assert engine.entered.acquire(timeout=20)


def test_queue_full_is_refused_with_retry_after() -> None:
    """FakeEngine with a gate: one job held in the engine, one queued, the third refused."""
    judge, engine = _fake(max_parallel=4)
    engine.gate.clear()
    worker = JudgeWorker(judge, max_queue=1)
    worker.start()
    held, queued = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=2)
    worker.submit(held)
    _entered(engine)
    worker.submit(queued)
    with pytest.raises(QueueFullError) as refused:
        worker.submit(_fake_job(judge, 2, seed=3))
    assert refused.value.retry_after >= 1 and float(refused.value.retry_after).is_integer()
    assert worker.stats().refused == 1 and worker.stats().queue_depth == 1
    engine.gate.set()
    assert worker.drain(timeout=20)
    assert all(isinstance(_verdict(job, 0), Verdict) for job in (held, queued))


def test_retry_after_grows_with_the_work_ahead() -> None:
    """FakeEngine with a gate and ~0.2 s calls: the estimate is the work ahead times the measured time."""

    def refused(worker: JudgeWorker, judge: Judge, engine: GatedEngine) -> float:
        engine.gate.clear()
        worker.submit(_fake_job(judge, 100, seed=100))
        _entered(engine)
        for k in range(4):
            worker.submit(_fake_job(judge, 101 + k, seed=101 + k))
        with pytest.raises(QueueFullError) as error:
            worker.submit(_fake_job(judge, 200, seed=200))
        engine.gate.set()
        return error.value.retry_after

    judge, engine = _fake()
    fresh = JudgeWorker(judge, max_queue=4, gather_s=0.0)
    fresh.start()
    assert refused(fresh, judge, engine) == 5  # 4 queued + 1 running, × the 1 s prior, one thread
    assert fresh.drain(timeout=30)

    engine.delay_s = 0.2
    measured = JudgeWorker(judge, max_queue=4, gather_s=0.0)
    measured.start()
    for k in range(8):
        job = _fake_job(judge, k, seed=k)
        measured.submit(job)
        _verdict(job, 20)
    assert 2 <= refused(measured, judge, engine) <= 3  # 5 × ~0.33 s (the mean moved from 1 s toward 0.2 s)
    assert measured.drain(timeout=30)


def test_cancelled_queued_job_is_dropped_and_frees_its_place() -> None:
    """FakeEngine with a gate: a job held in the engine while the queued one is cancelled two ways."""
    judge, engine = _fake()
    engine.gate.clear()
    worker = JudgeWorker(judge, max_queue=1)
    worker.start()
    held, left = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=2)
    worker.submit(held)
    _entered(engine)
    worker.submit(left)
    worker.cancel(left)
    assert left.future.cancelled() and worker.stats().queue_depth == 0
    gone = _fake_job(judge, 2, seed=3)
    worker.submit(gone)  # the place is free again
    assert gone.future.cancel()  # an asyncio wrapper cancels the future itself
    assert worker.stats().queue_depth == 0 and worker.stats().cancelled == 2  # no longer waiting
    late = _fake_job(judge, 3, seed=4)
    worker.submit(late)  # the cancelled future is purged: room again
    engine.gate.set()
    assert worker.drain(timeout=20)
    assert isinstance(_verdict(late, 0), Verdict) and isinstance(_verdict(held, 0), Verdict)
    assert [c for c in engine.calls] == [[0], [3]]  # the cancelled jobs never reached the engine
    assert worker.stats().cancelled == 2
    with pytest.raises(CancelledError):
        gone.future.result(0)


def test_lone_job_cancelled_while_decoding_stops_at_its_next_piece() -> None:
    """FakeEngine with a gate: one plain job held in the engine (decoding alone) when its client goes away;
    it stops at its next piece of text and the job after it gets its verdict."""
    judge, engine = _fake()
    engine.gate.clear()
    worker = JudgeWorker(judge, gather_s=0.0)
    worker.start()
    lone, after = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=1)
    worker.submit(lone)
    _entered(engine)
    worker.submit(after)
    worker.cancel(lone)
    engine.gate.set()
    with pytest.raises(Cancelled):
        lone.future.result(20)
    assert isinstance(_verdict(after, 20), Verdict)
    assert worker.drain(timeout=20)
    stats = worker.stats()
    assert engine.calls == [[0], [1]]
    assert (stats.cancelled, stats.jobs_done, stats.failed) == (1, 1, 0)


def test_job_cancelled_inside_a_running_group_finishes_and_is_discarded() -> None:
    """FakeEngine with a gate: two coalesced jobs held in the engine; one client goes away."""
    judge, engine = _fake(max_parallel=4)
    engine.gate.clear()
    worker = JudgeWorker(judge, gather_s=0.0)
    a, b = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=1)
    worker.submit(a)
    worker.submit(b)
    worker.start()
    _entered(engine)
    worker.cancel(a)
    engine.gate.set()
    with pytest.raises(Cancelled):
        a.future.result(20)
    assert isinstance(_verdict(b, 20), Verdict)
    assert worker.drain(timeout=20)
    stats = worker.stats()
    assert engine.calls == [[0, 1]]
    assert (stats.groups, stats.coalesced_jobs, stats.cancelled, stats.jobs_done) == (1, 2, 1, 1)
    assert stats.prompt_tokens > 0  # the work was done: its tokens count


def test_fifo_a_job_is_overtaken_by_at_most_one_group() -> None:
    """FakeEngine with a gate: the queue filled while the engine is held, then the order of the calls."""
    judge, engine = _fake(max_parallel=2)
    engine.gate.clear()
    worker = JudgeWorker(judge, gather_s=0.0)
    worker.start()
    worker.submit(_fake_job(judge, 0, seed=9))
    _entered(engine)
    jobs = [_fake_job(judge, 1, seed=1), _fake_job(judge, 2, seed=2), _fake_job(judge, 3, seed=1),
            _fake_job(judge, 4, seed=1), _fake_job(judge, 5, seed=2)]  # fmt: skip
    for job in jobs:
        worker.submit(job)
    engine.gate.set()
    assert worker.drain(timeout=20)
    # X1 takes X3 (the room of 2); Y2 is next (older than X4), and takes Y5; then X4
    assert engine.calls == [[0], [1, 3], [2, 5], [4]]


def test_gather_window_counts_from_submission() -> None:
    """FakeEngine (timing): a job waits up to gather_s after its submission for same-image company."""
    judge, engine = _fake(max_parallel=4)
    worker = JudgeWorker(judge, gather_s=1.5)
    worker.start()
    first, second = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=1)
    t0 = time.monotonic()
    worker.submit(first)
    time.sleep(0.1)
    worker.submit(second)
    _verdict(first, 20)
    waited = time.monotonic() - t0
    assert engine.calls == [[0, 1]] and 1.4 <= waited < 10
    engine.calls.clear()
    alone = _fake_job(judge, 2, seed=5)
    engine.gate.clear()
    worker.submit(_fake_job(judge, 3, seed=6))  # holds the engine: the next job waits longer than gather_s
    _entered(engine)
    worker.submit(alone)
    time.sleep(1.7)
    engine.gate.set()
    t1 = time.monotonic()
    _verdict(alone, 20)
    assert time.monotonic() - t1 < 1.0  # it had waited its window already: no second window
    assert worker.drain(timeout=20)


def test_a_failing_group_never_kills_the_thread_and_the_others_get_answers() -> None:
    """FakeEngine raising RuntimeError on one job: its coalesced group is retried job by job."""
    judge, engine = _fake(max_parallel=4)
    engine.poison = {1}
    worker = JudgeWorker(judge, gather_s=0.0)
    jobs = [_fake_job(judge, k, seed=1) for k in range(3)]
    for job in jobs:
        worker.submit(job)
    worker.start()
    assert isinstance(_verdict(jobs[0], 20), Verdict) and isinstance(_verdict(jobs[2], 20), Verdict)
    with pytest.raises(RuntimeError, match="poisoned"):
        jobs[1].future.result(20)
    after = _fake_job(judge, 7, seed=2)
    worker.submit(after)
    assert isinstance(_verdict(after, 20), Verdict)  # the thread lives on
    assert engine.calls == [[0, 1, 2], [0], [1], [2], [7]]
    assert worker.drain(timeout=20)
    stats = worker.stats()
    assert (stats.failed, stats.jobs_done, stats.threads) == (1, 3, 0)


def test_remote_engine_concurrency_runs_that_many_threads() -> None:
    """FakeEngine with concurrency 3 and a gate: three groups decode at once."""
    judge, engine = _fake(concurrency=3)
    engine.gate.clear()
    worker = JudgeWorker(judge)
    worker.start()
    jobs = [_fake_job(judge, k, seed=k) for k in range(4)]
    for job in jobs:
        worker.submit(job)
    _entered(engine, 3)
    assert worker.stats().threads == 3 and worker.stats().in_flight == 3 and engine.running == 3
    engine.gate.set()
    assert all(isinstance(_verdict(job, 20), Verdict) for job in jobs)
    assert worker.drain(timeout=20)
    assert engine.most_running == 3


def test_other_threads_leave_a_gathering_group_its_jobs() -> None:
    """FakeEngine with concurrency 2 (timing): while one thread gathers image X, a later X job joins that
    group instead of starting its own on the idle thread, which takes another job at once."""
    judge, engine = _fake(concurrency=2, max_parallel=4)
    worker = JudgeWorker(judge, gather_s=1.0)
    worker.start()
    first, later, other = (
        _fake_job(judge, 0, seed=1),
        _fake_job(judge, 1, seed=1),
        _fake_job(judge, 2, seed=2),
    )
    worker.submit(first)
    time.sleep(0.1)
    worker.submit(later)
    other.image_key = ""  # runs alone at once: the idle thread is free for it
    t0 = time.monotonic()
    worker.submit(other)
    assert isinstance(_verdict(other, 20), Verdict) and time.monotonic() - t0 < 0.9  # not held by X's window
    assert isinstance(_verdict(first, 20), Verdict) and isinstance(_verdict(later, 20), Verdict)
    assert worker.drain(timeout=20)
    assert sorted(engine.calls) == [[0, 1], [2]]
    assert worker.stats().coalesced_jobs == 2


def test_drain_timeout_answers_what_never_ran() -> None:
    """FakeEngine with a gate: drain times out while a job is held; the queued one gets ShuttingDownError,
    the held one still finishes once the engine is free."""
    judge, engine = _fake()
    engine.gate.clear()
    worker = JudgeWorker(judge)
    worker.start()
    held, queued = _fake_job(judge, 0, seed=1), _fake_job(judge, 1, seed=2)
    worker.submit(held)
    _entered(engine)
    worker.submit(queued)
    assert worker.drain(timeout=0.2) is False
    with pytest.raises(ShuttingDownError):
        queued.future.result(0)
    engine.gate.set()
    assert isinstance(_verdict(held, 20), Verdict)
    assert worker.drain(timeout=20)


def test_engine_error_reaches_the_future() -> None:
    """FakeEngine closed under the worker: an EngineError for the job, the worker keeps going."""
    judge, engine = _fake()
    worker = JudgeWorker(judge)
    worker.start()
    engine.close()
    job = _fake_job(judge, 0)
    worker.submit(job)
    with pytest.raises(EngineError, match="closed"):
        job.future.result(20)
    assert worker.drain(timeout=20)
    assert worker.stats().failed == 1
