"""The groups of a batch run judged one after another, or several at a time on an engine that serves
several calls at once (``Engine.concurrency`` > 1: a remote engine's servers).

``Flow.judged(judge_one)`` yields ``(group, results)`` as each group is done: in order with one lane; in
the order they finish with more (at most ``width`` groups in flight, each submitted only while
``should_stop`` says go on). The caller writes each group's results as they come, so nothing judged is
lost. When one group raises (e.g. every server is down) no more groups are started, the groups in flight
finish and are yielded, then the error is raised. ``stopped`` tells whether ``should_stop`` ended it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

__all__ = ["Flow"]

G = TypeVar("G")
R = TypeVar("R")


class Flow(Generic[G, R]):
    """See the module docstring."""

    def __init__(self, todo: Sequence[G], width: int, should_stop: Callable[[], bool] | None) -> None:
        self.todo = todo
        self.width = max(1, width)
        self.should_stop = should_stop
        self.stopped = False

    def _stop(self) -> bool:
        if not self.stopped and self.should_stop is not None and self.should_stop():
            self.stopped = True
        return self.stopped

    def judged(self, judge_one: Callable[[G], R]) -> Iterator[tuple[G, R]]:
        if self.width == 1:
            for group in self.todo:
                if self._stop():
                    return
                yield group, judge_one(group)
            return
        pending = iter(self.todo)
        failure: BaseException | None = None
        running: dict[Future[R], G] = {}
        pool = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="edgejudge-batch")
        try:
            while True:
                while failure is None and len(running) < self.width and not self._stop():
                    nxt = next(pending, None)
                    if nxt is None:
                        break
                    running[pool.submit(judge_one, nxt)] = nxt
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # noqa: BLE001 - the others finish and are written first
                        failure = failure or err
                        continue
                    yield done, result
            if failure is not None:
                raise failure
        finally:
            # normally nothing is running here; after Ctrl-C (or a consumer that stopped early) the groups
            # in flight are abandoned: their results are never written, so a rerun judges them
            pool.shutdown(wait=not running, cancel_futures=True)
