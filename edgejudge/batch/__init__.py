"""Batch judging: JSONL rows in, one result row per input row (or per row and rule of a policy) out,
resumable.

``run`` is the loop (groups rows by image, judges them, appends rows); ``judging`` one group of jobs;
``policy_run`` the rows judged against a policy (one job per rule, decision and run records); ``rows`` the
input rows, keys and scheduling (``input_fields`` the fields of one row, ``keep`` the fields a run may
copy); ``result`` the output rows (``ResultRow``, the typed record of an output line, with its tolerant
reader); ``records`` the policy records of a log; ``log`` the batch log on disk (what counts as one,
repair, reading results); ``lock`` the one-writer-per-output lock. This package re-exports the public
names of ``run``, ``ResultRow``, ``RowSample`` and ``read_result_rows``.
"""

from __future__ import annotations

from .log import read_result_rows
from .result import ResultRow, RowSample
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
    "ResultRow",
    "RowSample",
    "EventFn",
    "OutputLock",
    "MAX_OUTPUT_BYTES",
    "run_batch",
    "read_results",
    "read_result_rows",
    "repair_output",
    "check_output",
    "is_batch_row",
    "settings_of",
]
