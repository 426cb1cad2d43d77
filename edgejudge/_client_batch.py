"""What ``edgejudge.Client`` does around the wire so its answers equal the in-process ``Judge``'s.

- texts: ``clean`` cleans a text as ``Judge`` does (``inputs.clean_text``: lone surrogates, which no JSON
  body can carry as UTF-8, replaced by U+FFFD) and keeps the note; ``with_notes`` puts such notes on the
  server's verdict where ``Judge`` puts them (after the engine's warnings, before the notes on prompt-layout
  text and the long-prompt warning), so the verdict equals the in-process one;
- splitting: ``plan`` cuts responses x rubrics into requests within the server's limits (``MAX_RESPONSES``
  responses and ``MAX_RUBRICS`` rubrics per request, and at most ``max_sequences`` decoded sequences,
  responses x rubrics x samples), in the order the results are joined back (for each response, each rubric);
- tasks: ``runs`` groups ``Judge.evaluate_tasks``'s tasks into runs of consecutive tasks that one batch
  request can judge (the same image, instruction, reference and rubric).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import TypeVar

from .inputs import clean_text
from .verdict import Verdict

__all__ = [
    "MAX_RESPONSES",
    "MAX_RUBRICS",
    "DEFAULT_MAX_SEQUENCES",
    "clean",
    "with_notes",
    "plan",
    "runs",
]

#: The most responses one ``/v1/judge/batch`` request may carry (the HTTP contract).
MAX_RESPONSES = 64
#: The most rubrics one ``/v1/judge/batch`` request may carry (the HTTP contract).
MAX_RUBRICS = 16
#: The most sequences (responses x rubrics x samples) assumed for one request when the server does not
#: say (``GET /v1/model``'s ``max_sequences``): ``edgejudge serve``'s default ``--max-sequences``.
DEFAULT_MAX_SEQUENCES = 256

# How the verdict notes that come after the cleaning notes begin (``inputs.marker_notes``, ``Judge``).
_LATER_NOTES = ("text of the judge's own prompt layout", "tokens, more than the ")

K = TypeVar("K", bound=Hashable)


def clean(label: str, value: str | None, notes: list[str]) -> str | None:
    """``value`` cleaned as ``Judge`` cleans it (None and non-text as given: the server refuses those)."""
    if not isinstance(value, str):
        return value
    return clean_text(label, value, notes)


def with_notes(verdict: Verdict, notes: Sequence[str]) -> Verdict:
    """``verdict`` with the client's cleaning ``notes`` among its warnings where ``Judge`` puts them."""
    if not notes:
        return verdict
    warnings = list(verdict.warnings)
    at = next(
        (i for i, w in enumerate(warnings) if any(marker in w for marker in _LATER_NOTES)), len(warnings)
    )
    return replace(verdict, warnings=(*warnings[:at], *notes, *warnings[at:]))


def plan(n_responses: int, n_rubrics: int, samples: int, max_sequences: int) -> list[tuple[range, range]]:
    """The requests (responses, rubrics; as index ranges) that judge ``n_responses`` x ``n_rubrics`` within
    the limits, the rubric ranges innermost (results join back response by response). A request always
    holds at least one item, even when ``samples`` alone is over ``max_sequences`` (the server says so)."""
    per_item = max(1, samples)
    rubrics_each = max(1, min(MAX_RUBRICS, n_rubrics, max_sequences // per_item))
    responses_each = max(1, min(MAX_RESPONSES, n_responses, max_sequences // (per_item * rubrics_each)))
    return [
        (range(r, min(r + responses_each, n_responses)), range(k, min(k + rubrics_each, n_rubrics)))
        for r in range(0, n_responses, responses_each)
        for k in range(0, n_rubrics, rubrics_each)
    ]


def runs(keys: Sequence[K | None]) -> list[list[int]]:
    """The positions of ``keys`` in runs of consecutive equal keys (a None key, a task that failed before
    sending, is in no run)."""
    out: list[list[int]] = []
    last: K | None = None
    for position, key in enumerate(keys):
        if key is None:
            last = None
            continue
        if out and key == last:
            out[-1].append(position)
        else:
            out.append([position])
        last = key
    return out
