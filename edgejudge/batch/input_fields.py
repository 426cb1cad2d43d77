"""The fields of one batch input row: ``BatchRow`` and how a decoded JSON object becomes one.

Native fields (``id``, ``image``, ``instruction``, ``response``, ``reference``, ``rubric``, ``policy``) and
Perception-Collection/Bench fields (``orig_instruction``, ``orig_response`` / ``original_response``,
``orig_reference_answer``, ``orig_criteria``, ``orig_score1_description`` …) and the reference evaluation's
question files (``question_id``, ``image``, ``text``: the judge prompt already rendered, read back into
the fields with ``prompt.parse_rendered_prompt`` when the row has no instruction or response of its own;
a ``text`` that is not such a prompt is the row's problem); THE id rule (``id_of``); the
pass-through fields copied into output rows (``PASS_THROUGH``: gold scores, the ``student`` and the
``system`` of grading and leaderboard views, plus the fields a run asks to ``keep``). A row judged against
a policy (its own ``policy`` field, or a policy run) needs no instruction of its own (the policy may give
one) and no rubric (each rule has its own). ``batch.rows`` reads the file and owns keys and scheduling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import _fs
from ..errors import InputError, RubricError

if TYPE_CHECKING:
    from ..prompt import PromptFields
    from ..rubric import Rubric

__all__ = ["BatchRow", "PASS_THROUGH", "READ_FIELDS", "FIX_HINT", "id_of", "parse_line", "malformed"]

#: Input fields copied unchanged into the output row, when present (gold scores for ``edgejudge metrics``;
#: ``student`` and ``system`` for grade sheets and leaderboards).
PASS_THROUGH = ("orig_score", "student", "system")
FIX_HINT = "fix the row in the input file (the batch skips rows already done when rerun)"


@dataclass(frozen=True)
class BatchRow:
    """One input row, resolved. ``problem`` (with ``hint``) is set when the row cannot be judged.
    ``policy`` is the row's own ``policy`` field (a built-in name or a policy file), None without one, ""
    when the field holds no usable value (the row's ``problem`` says so). ``int_id``: the id was a JSON
    integer in the input (``id`` is its text), for writers that give it back as it was."""

    id: str
    line: int
    image: str | None = None
    instruction: str | None = None
    response: str | None = None
    reference: str | None = None
    rubric: Rubric | None = None
    problem: str | None = None
    hint: str | None = None
    malformed: bool = False
    source_sha256: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    policy: str | None = None
    int_id: bool = False


#: Each field of a row and the keys it is read from, first found wins (native, Perception-Collection/Bench).
_FIELD_NAMES = {
    "image": ("image",),
    "instruction": ("orig_instruction", "instruction"),
    "response": ("response", "orig_response", "original_response"),
    "reference": ("reference", "orig_reference_answer", "reference_answer"),
}
#: Every input field a batch reads itself (``keep`` may not name one): the id, the fields above, the
#: rubric (a name or table, or a Perception row's own: ``Rubric.from_mapping``'s keys) and the policy.
READ_FIELDS = frozenset(
    (
        "id",
        "question_id",
        "rubric",
        "policy",
        "text",
        "criteria",
        "orig_criteria",
        *(name for names in _FIELD_NAMES.values() for name in names),
        *(f"{p}{k}{s}" for k in range(1, 6) for p, s in (("score", ""), ("score", "_description"))),
        *(f"orig_score{k}_description" for k in range(1, 6)),
    )
)


def malformed(number: int, sha: str, problem: str) -> BatchRow:
    """The row of a line that is not one JSON object (``problem`` says why)."""
    return BatchRow(
        id=f"line-{number}",
        line=number,
        problem=f"line {number}: {problem}",
        hint="each line of the input must be one JSON object",
        malformed=True,
        source_sha256=sha,
    )


def _finite(value: Any) -> bool:
    """False when a JSON value holds NaN or an infinity (not JSON; never written to the output)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def id_of(data: dict[str, Any], number: int, field: str = "id") -> str | None:
    """The id of the JSON object on line ``number``: its ``field`` as text (for ``id``: ``question_id`` when
    there is no ``id`` key), ``line-N`` when it has none (missing, null or ""), None when it is neither a
    string nor an integer (a row problem). THE id rule: batch input rows, and ``edgejudge.join`` pairing a
    batch output with its input."""
    raw = data.get(field, data.get("question_id")) if field == "id" else data.get(field)
    if raw is None or raw == "":
        return f"line-{number}"
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        return str(raw)
    return None


def parse_line(
    number: int,
    data: Any,
    sha: str,
    default: Rubric | None,
    cache: dict[str, Rubric],
    warnings: list[str],
    *,
    policy_run: bool = False,
    keep: Sequence[str] = (),
) -> BatchRow:
    """The row of the JSON value on line ``number`` (``sha`` the line's hash); ``policy_run``: every row is
    judged against a policy; ``keep``: more fields to pass through."""
    fallback_id = f"line-{number}"
    if not isinstance(data, dict):
        return malformed(number, sha, f"expected a JSON object, got {type(data).__name__}")
    row_id = id_of(data, number)
    if row_id is None:
        return BatchRow(
            id=fallback_id,
            line=number,
            problem=f"line {number}: id must be a string or an integer",
            hint=FIX_HINT,
            source_sha256=sha,
        )
    extra = []
    for name in dict.fromkeys((*PASS_THROUGH, *keep)):
        if name not in data:
            continue
        if _finite(data[name]):
            extra.append((name, data[name]))
        else:
            warnings.append(f"line {number}: field {name!r} holds NaN or an infinity (not JSON); left out")
    fields = {name: _first(data, *keys) for name, keys in _FIELD_NAMES.items()}
    prompt = _question_prompt(data, fields)
    if isinstance(prompt, str):
        return BatchRow(id=row_id, line=number, image=_text_or_none(fields["image"]), extra=tuple(extra),
                        problem=f"line {number}: {prompt}", hint=_PROMPT_HINT, source_sha256=sha)  # fmt: skip
    if prompt is not None:
        fields.update(instruction=prompt.instruction, response=prompt.response, reference=prompt.reference)
    bad = [name for name, value in fields.items() if value is not None and not isinstance(value, str)]
    values = {k: v if isinstance(v, str) else None for k, v in fields.items()}
    reference = values["reference"] if values["reference"] and values["reference"].strip() else None
    own_policy = data.get("policy")
    raw_id = data.get("id", data.get("question_id"))
    row = BatchRow(
        id=row_id,
        line=number,
        int_id=type(raw_id) is int,
        image=values["image"],
        instruction=values["instruction"],
        response=values["response"],
        reference=reference,
        extra=tuple(extra),
        policy=_policy_value(own_policy),
    )
    judged_by_policy = policy_run or row.policy is not None
    problem = None
    if row.policy == "":
        problem = f"line {number}: field 'policy' must be a policy name or a policy file path"
    elif bad:
        problem = f"line {number}: field {bad[0]!r} must be a string"
    else:
        needed = ("image", "response") if judged_by_policy else ("image", "instruction", "response")
        missing = [name for name in needed if not (values[name] or "").strip()]
        if missing:
            problem = f"line {number}: missing field {' or '.join(map(repr, _FIELD_NAMES[missing[0]]))}"
    if problem is None and row.image is not None:
        try:
            _fs.user_path(row.image, what="image path")
        except InputError as err:
            return _with_problem(row, f"line {number}: {err}", err.hint or FIX_HINT)
    if problem is not None:
        return _with_problem(row, problem, FIX_HINT)
    if judged_by_policy:  # each rule brings its own rubric
        return row
    if prompt is not None:  # the rubric rendered in the prompt is the one judged against
        from ..rubric import Rubric

        return replace(row, rubric=Rubric(name="inline", criteria=prompt.criteria,
                                          descriptions=prompt.descriptions))  # fmt: skip
    try:
        rubric = _row_rubric(data, default, cache)
    except RubricError as err:
        return _with_problem(row, f"line {number}: {err}", err.hint or FIX_HINT)
    if rubric is None:
        return _with_problem(
            row,
            f"line {number}: no rubric (no 'rubric' or 'orig_criteria' field and no default rubric)",
            "add a 'rubric' field to the row or give a default rubric for rows without one",
        )
    return replace(row, rubric=rubric)


_PROMPT_HINT = (
    "give 'text' as the judge prompt rendered by the Prometheus-Vision template, or give the fields "
    "instruction, response and rubric instead"
)


def _question_prompt(data: dict[str, Any], fields: dict[str, Any]) -> PromptFields | str | None:
    """A question-file row's rendered prompt read back (``PromptFields``), what is wrong with its ``text``
    (a problem), or None when the row is not one (no ``text``, or an instruction or response of its own)."""
    from ..prompt import parse_rendered_prompt

    text = data.get("text")
    if text is None or fields["instruction"] is not None or fields["response"] is not None:
        return None
    if not isinstance(text, str):
        return "field 'text' must be a string (the rendered judge prompt)"
    parsed = parse_rendered_prompt(text)
    if parsed is None:
        return (
            "field 'text' is not a judge prompt as the Prometheus-Vision template renders it (a section "
            "heading missing or changed, or a field not normalised)"
        )
    return parsed


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _policy_value(value: Any) -> str | None:
    """A row's ``policy`` field: the text (None when absent, null or blank), "" for any other JSON value."""
    if value is None or isinstance(value, str):
        return value.strip() or None if isinstance(value, str) else None
    return ""


def _with_problem(row: BatchRow, problem: str, hint: str) -> BatchRow:
    return replace(row, problem=problem, hint=hint)


def _first(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def _row_rubric(data: dict[str, Any], default: Rubric | None, cache: dict[str, Rubric]) -> Rubric | None:
    from ..rubric import Rubric, load_rubric

    value = data.get("rubric")
    if isinstance(value, str) and value.strip():
        if value not in cache:
            try:
                cache[value] = load_rubric(value)
            except OSError as exc:  # rubric.load_rubric lets e.g. ENAMETOOLONG out of Path.is_file
                raise RubricError(
                    f"cannot use rubric {value!r}: {exc.strerror or exc}", hint="pass a rubric name or file"
                ) from None
        return cache[value]
    if isinstance(value, dict):
        name = value.get("name")
        return Rubric.from_mapping(value, name=name if isinstance(name, str) and name else "inline")
    if value is not None:
        raise RubricError(
            f"field 'rubric' must be a library name or an object, got {type(value).__name__}",
            hint='use "rubric": "NAME" or {"criteria": ..., "score1": ..., ..., "score5": ...}',
        )
    if data.get("orig_criteria") is not None:
        return Rubric.from_mapping(data, name="inline")
    return default
