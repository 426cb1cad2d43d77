"""The answer of a many-verdict call that raises: the verdicts in order, or the first error, its message
naming the response's position when there are several (``Judge.evaluate_many``, ``Client.judge_many``)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import EdgeJudgeError
from .verdict import Verdict

__all__ = ["verdicts_or_first_error"]


def verdicts_or_first_error(
    results: Sequence[Verdict | EdgeJudgeError], per_response: int = 1
) -> list[Verdict]:
    """``results`` (``per_response`` consecutive items per response: one per rubric) as verdicts, or the
    first error raised, its message prefixed with ``response N:`` when there are several results."""
    for position, result in enumerate(results):
        if isinstance(result, EdgeJudgeError):
            if len(results) > 1:
                result.message = f"response {position // max(1, per_response) + 1}: {result.message}"
            raise result
    return [r for r in results if isinstance(r, Verdict)]
