"""A promptfoo Python assertion that grades each output with edgejudge (through ``edgejudge serve``).

promptfoo calls ``get_assert(output, context)`` for each test: the output is the response judged; the
test's ``vars`` give the image (``image``: a path, relative to this folder), the instruction
(``question``) and the reference answer (``reference``, optional); a test without an image or a question
fails with a reason saying which var to add. The assertion's ``config`` may set
``server`` (default: ``EDGEJUDGE_SERVE_URL``, else http://127.0.0.1:8765), ``rubric`` (default: the
server's), ``pass_at`` (the lowest passing score, default 4) and generation settings under ``settings``
(e.g. ``{temperature: 0}``). The API key is ``EDGEJUDGE_SERVE_API_KEY`` when the server has one.

The result: ``pass`` when the judge's score is at least ``pass_at``; ``score`` the judge's score mapped to
0..1 ((score - 1) / 4); ``reason`` the score and the judge's feedback; ``namedScores`` the judge's score
(1..5) and expected score, which promptfoo reports as named metrics. A judgment that fails (a bad image,
a server that cannot be reached) fails the test with the error as the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgejudge import Client, EdgeJudgeError

HERE = Path(__file__).resolve().parent


def get_assert(output: str, context: dict[str, Any]) -> dict[str, Any]:
    variables = context.get("vars") or {}
    config = context.get("config") or {}
    server = config.get("server") or os.environ.get("EDGEJUDGE_SERVE_URL") or "http://127.0.0.1:8765"
    pass_at = int(config.get("pass_at", 4))
    for name, what in (
        ("image", "the image file, relative to examples/promptfoo/"),
        ("question", "the instruction"),
    ):
        if not str(variables.get(name) or "").strip():
            return {
                "pass": False,
                "score": 0.0,
                "reason": f"edgejudge could not judge it: the test's vars have no '{name}' ({what}); "
                f"add {name}: to the test's vars (or to defaultTest.vars)",
            }
    try:
        with Client(server) as client:
            verdict = client.judge(
                HERE / str(variables["image"]),
                instruction=str(variables["question"]),
                response=str(output),
                reference=variables.get("reference"),
                rubric=config.get("rubric"),
                **(config.get("settings") or {}),
            )
    except EdgeJudgeError as err:
        hint = f" ({err.hint})" if err.hint else ""
        return {"pass": False, "score": 0.0, "reason": f"edgejudge could not judge it: {err}{hint}"}
    if verdict.score is None:
        return {"pass": False, "score": 0.0, "reason": f"the judge's text has no score: {verdict.raw_output}"}
    named = {"judge_score": float(verdict.score)}
    if verdict.expected_score is not None:
        named["judge_expected_score"] = verdict.expected_score
    return {
        "pass": verdict.score >= pass_at,
        "score": (verdict.score - 1) / 4,
        "reason": f"edgejudge score {verdict.score}/5 (pass at {pass_at}): {verdict.feedback}",
        "namedScores": named,
    }
