"""Batch judging: JSONL rows in, one result row per input row out, resumable.

``run`` is the loop (groups rows by image, judges them, appends rows); ``rows`` the input rows, keys and the
output row format; ``log`` the batch log on disk (what counts as one, repair, reading results); ``lock``
the one-writer-per-output lock. This package re-exports the public names of ``run``.
"""

from __future__ import annotations

from .run import (
    MAX_OUTPUT_BYTES,
    BatchEvent,
    BatchRow,
    BatchSummary,
    EventFn,
    OutputLock,
    check_output,
    is_batch_row,
    read_results,
    repair_output,
    run_batch,
    settings_of,
)

__all__ = [
    "BatchEvent",
    "BatchSummary",
    "BatchRow",
    "EventFn",
    "OutputLock",
    "MAX_OUTPUT_BYTES",
    "run_batch",
    "read_results",
    "repair_output",
    "check_output",
    "is_batch_row",
    "settings_of",
]
