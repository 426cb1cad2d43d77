"""What the routes of ``edgejudge serve`` share: ``ServeState`` (the judge, the options, the worker, the
limiter of the threads that parse bodies and decode images, the metrics, the ``/v1/model`` record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import EdgeJudgeError
from .options import ServeOptions
from .worker import JudgeWorker

if TYPE_CHECKING:
    from ..judge import Judge
    from .metrics import Metrics

__all__ = ["ServeState", "model_record"]


class ServeState:
    """What the routes share: the judge, the options, the worker, the decode limiter, the model record."""

    def __init__(self, judge: Judge, config: ServeOptions, draining: Callable[[], bool] | None) -> None:
        self.judge = judge
        self.config = config
        self.worker = JudgeWorker(
            judge, max_queue=config.max_queue, gather_s=config.gather_ms / 1000, coalesce=config.coalesce
        )
        self.closing = False
        #: set on the drain timeout or a second signal: every waiting request is answered 503 now
        self.aborting = False
        #: whether the worker's threads all ended when the app stopped
        self.drained = False
        self._draining = draining
        self.limiter: anyio.CapacityLimiter | None = None
        self.metrics: Metrics | None = None
        #: ``GET /v1/model``, with the most sequences one request may decode (clients split batches by it)
        self.model = {**model_record(judge), "max_sequences": config.max_sequences}
        #: the judge's context (tokens): texts far over it are refused before they queue
        self.n_ctx = int(judge.engine.n_ctx)

    def abort(self) -> None:
        """Shutting down and out of patience: the requests still waiting answer 503 (``routes``)."""
        self.aborting = True

    def draining(self) -> bool:
        return self.closing or self.worker.draining or (self._draining is not None and self._draining())

    async def in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` in a worker thread of the loop's pool, at most ``max_decodes`` at once."""
        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(self.config.max_decodes)
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)


def model_record(judge: Judge) -> dict[str, Any]:
    """``GET /v1/model``: the engine's identity and shape, the quantization (from the GGUF) and the sha256
    the registry recorded for the text model (None when it is not registered)."""
    from ..registry import gguf_quant, load_registry

    engine = judge.engine
    text, mmproj = engine.model_files
    quant = sha256 = None
    if text is not None:
        try:
            quant = gguf_quant(text)
        except EdgeJudgeError:
            quant = None
        try:
            entry = next((m for m in load_registry().models if m.text_model == str(text.resolve())), None)
        except (EdgeJudgeError, OSError):
            entry = None
        sha256 = entry.text_sha256 or None if entry is not None else None
    return {
        "name": engine.model_name,
        "engine": engine.kind,
        "quant": quant,
        "sha256": sha256,
        "context": engine.n_ctx,
        "image_size": engine.image_size,
        "image_tokens": engine.image_tokens,
        "max_parallel": engine.max_parallel,
        "files": {
            "model": None if text is None else str(text),
            "mmproj": None if mmproj is None else str(mmproj),
        },
    }
