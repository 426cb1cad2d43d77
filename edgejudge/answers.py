"""The reference pipeline's answer file, written from a batch log (``batch --answers-format reference``).

The original Prometheus-Vision evaluation (LLaVA's ``model_vqa.py``) reads a question file (``question_id``,
``image``, ``text``: the rendered judge prompt; ``batch.input_fields`` reads those rows) and writes one
JSON line per question: ``question_id, prompt, text, answer_id, model_id, metadata``, in that order.
``write_reference_answers`` writes that file for a batch, so scripts built around the original keep working:

- ``question_id``: the row's id, a JSON integer when the input gave one;
- ``prompt``: the judge prompt the model saw (``prompt.render_judge_prompt`` of the row's fields: for a
  question-file row, its ``text`` byte for byte);
- ``text``: the model's output (the verdict's raw text, ending ``[RESULT] N``);
- ``answer_id``: a UUID5 of the row's result key and resume key, so a rerun of the same row and settings
  gives the same id (the original draws a random one);
- ``model_id``: the model's name; ``metadata``: ``score``, ``expected_score``, ``score_probs``, ``settings``.

It is rewritten whole from the log and the input (one line per ``ok`` result, in input order), atomically,
so a resumed run gives the complete file. Error rows, rows not judged yet and rows whose result in the log
was judged from other inputs (its resume key is not the input's now: a run stopped before it got there)
are left out and counted. Rows judged against a policy
have no answer in this format (they are left out too).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import _fs, _jsonl
from .errors import InputError

if TYPE_CHECKING:
    from .rubric import Rubric

__all__ = ["ANSWER_KEYS", "AnswersSummary", "answers_path", "check_answers_path", "write_reference_answers"]

#: The keys of an answer line, in the reference's order.
ANSWER_KEYS = ("question_id", "prompt", "text", "answer_id", "model_id", "metadata")
#: The namespace of ``answer_id`` (a UUID5 of the row's keys in it).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/prometheus-eval/prometheus-vision#answer")


@dataclass(frozen=True)
class AnswersSummary:
    """What ``write_reference_answers`` wrote: ``written`` answer lines to ``path``; left out: ``errors``
    (the row's result is an error), ``missing`` (not judged yet), ``stale`` (judged from other fields)."""

    path: str
    written: int
    errors: int
    missing: int
    stale: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answers_path(output: str | Path) -> Path:
    """The default answer file of a batch output: its stem + ``.answers.jsonl`` beside it."""
    path = _fs.user_path(output, what="output path")
    return path.with_name(path.stem + ".answers.jsonl")


def check_answers_path(answers: str | Path, *others: str | Path) -> Path:
    """``answers`` checked before a run: not a folder or another non-regular file, and not one of
    ``others`` (the batch's input and output, any name of the same file)."""
    target = _fs.user_path(answers, what="answers path")
    for other in others:
        path = _fs.user_path(other, what="path")
        if path == target or (path.exists() and target.exists() and _fs.same_file(path, target)):
            raise InputError(
                f"the answers file {target} is the batch's input or output",
                hint="write the answers to a file of their own",
                about="answers",
            )
    if target.exists() and not target.is_file():
        raise InputError(f"the answers path is not a regular file: {target}", hint="pass a file name")
    return target


def _answer_id(result_key: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, json.dumps([result_key, key])))


def _answer(row_id: str | int, prompt: str, result: dict[str, Any], result_key: str) -> dict[str, Any]:
    raw = result.get("raw_output")
    score = result.get("score")
    text = raw if isinstance(raw, str) else f"{result.get('feedback') or ''} [RESULT] {score}"
    found = result.get("settings")
    settings: dict[str, Any] = found if isinstance(found, dict) else {}
    model = result.get("model")
    return {
        "question_id": row_id,
        "prompt": prompt,
        "text": text,
        "answer_id": _answer_id(result_key, str(result.get("key"))),
        "model_id": model if isinstance(model, str) else settings.get("model"),
        "metadata": {
            "score": score,
            "expected_score": result.get("expected_score"),
            "score_probs": result.get("score_probs"),
            "settings": settings,
        },
    }


def write_reference_answers(
    input_path: str | Path,
    output_path: str | Path,
    answers: str | Path,
    *,
    image_root: str | Path | None = None,
    default_rubric: Rubric | str | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    keep: Sequence[str] = (),
    settings: dict[str, Any] | None = None,
) -> AnswersSummary:
    """Write the answer file of the batch ``input_path`` → ``output_path`` to ``answers`` (see the module
    docstring); ``image_root``, ``default_rubric``, ``limit``, ``shard`` and ``keep`` as the run was given
    them, ``settings`` the run's (``Judge.settings``; default: each result's own): a row's result counts
    only when its resume key is the one the input and these settings give now. Raises
    ``InputError`` when the input or the log cannot be read, or the answers cannot be written."""
    from .batch.judging import Digests, digest_of
    from .batch.log import read_results
    from .batch.result import record_key
    from .batch.rows import read_input_rows, row_key
    from .batch.shard import in_shard
    from .prompt import render_judge_prompt

    source = _fs.user_path(input_path, what="input path")
    root = (
        _fs.user_path(image_root, what="image root") if image_root is not None else source.parent
    ).absolute()
    rows = read_input_rows(source, default_rubric=default_rubric, limit=limit, keep=keep)
    digests: Digests = {}
    log = read_results(output_path)
    lines: list[dict[str, Any]] = []
    errors = missing = stale = 0
    for row in rows:
        if not in_shard(row.id, shard) or row.policy is not None:
            continue
        result_key = record_key({"id": row.id})
        result = log.get(result_key)
        if result is None:
            missing += 1
            continue
        if result.get("status") != "ok" or row.problem is not None or row.rubric is None:
            errors += 1
            continue
        used = settings if settings is not None else result.get("settings")
        digest = digest_of(row, root, digests)[0]
        if not isinstance(used, dict) or result.get("key") != row_key(row, digest, used):
            stale += 1
            continue
        prompt = render_judge_prompt(row.instruction or "", row.response or "", row.rubric, row.reference)
        lines.append(_answer(int(row.id) if row.int_id else row.id, prompt, result, result_key))
    target = _fs.user_path(answers, what="answers path")

    def write(handle: BinaryIO) -> None:
        for line in lines:
            handle.write(_jsonl.dumps_line(line))

    _fs.write_user_file(target, write, what="the answers file", about="answers")
    return AnswersSummary(str(target), len(lines), errors, missing, stale)
