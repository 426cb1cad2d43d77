"""Batch result rows: ``ResultRow``, the one typed record of a line of a batch output, built and read here.

Owns the output row format (the README's batch section documents it): ``ResultRow`` and ``RowSample``
(frozen; ``to_dict`` gives exactly the JSON object ``run_batch`` writes, keys in their order, and
``from_dict`` of that object gives the record back), the row shape check (``ROW_KEYS``, ``is_batch_row``:
what ``batch.log`` takes for a row of ours) and the builders the batch loop uses (``base_row``, then
``ok_row`` or ``error_row``).

``from_dict`` is also THE tolerant reader of typed output rows (``batch.read_result_rows``, the report;
``join`` matches raw rows by id and needs no record): rows written by older versions (no ``warnings``) and
rows from anywhere (hand edits, hostile files) become a record, never an error. A text field holding another
JSON type keeps its text (``str`` of the value, so a report can still show it), except the path fields
``image`` and ``image_path``, which are ``None`` then (a number or a list names no file to open); a number
field of the wrong type, NaN or an infinity is ``None``; ``status`` is
"ok" only when it is exactly "ok"; a missing ``id``/``key`` is ""; score probabilities keep only their
finite numbers; keys this version does not know are kept, in order, in ``extra`` (after the input's
pass-through fields such as ``orig_score``) and written back by ``to_dict``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._jsonl import dumps_line, loads_line
from ..errors import InputError
from .rows import BatchRow, resolve_image

if TYPE_CHECKING:
    from ..verdict import Verdict

__all__ = [
    "ResultRow",
    "RowSample",
    "ROW_KEYS",
    "OUTPUT_KEYS",
    "KINDS",
    "is_batch_row",
    "is_log_record",
    "record_key",
    "base_row",
    "ok_row",
    "error_row",
]

#: The keys every output row has had since the first batch format, in the order they are written; a line of
#: an output file is an edgejudge batch row when it is a JSON object with all of them (``is_batch_row``).
_ORDER = (
    "id line status score expected_score score_probs agreement feedback error hint key image image_path "
    "image_sha256 image_size instruction response reference rubric criteria model image_fit settings "
    "parse_method raw_output samples timings"
).split()
ROW_KEYS = frozenset(_ORDER)
#: Keys written after the pass-through fields: ``reference_given`` on ok rows, ``elapsed_s`` on every row.
_TAIL = ("reference_given", "elapsed_s")
#: Keys of a rule row (a policy batch: one row per input row and rule), written after ``_ORDER`` when
#: ``rule_id`` is set; ``batch.records`` documents them.
_POLICY = (
    "policy",
    "rule_id",
    "rule_title",
    "severity",
    "pass_at",
    "passed",
    "p_pass",
    "rule_state",
    "judged_at",
)
_KNOWN = ROW_KEYS | {"warnings", *_TAIL, *_POLICY}
#: Every key a result row (plain or rule row) is written with, besides its pass-through fields.
OUTPUT_KEYS = frozenset(_KNOWN)


@dataclass(frozen=True)
class RowSample:
    """One generation of a row's verdict, as the row records it (the full text is the row's own)."""

    score: int | None
    expected_score: float | None
    seed: int | None
    forced_tail: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "expected_score": self.expected_score,
            "seed": self.seed,
            "forced_tail": self.forced_tail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RowSample:
        forced = data.get("forced_tail")
        return cls(
            score=_int(data.get("score")),
            expected_score=_float(data.get("expected_score")),
            seed=_int(data.get("seed")),
            forced_tail=forced if isinstance(forced, bool) else False,
        )


@dataclass(frozen=True)
class ResultRow:
    """One line of a batch output: the verdict of one input row (``status`` "ok") or why there is none
    ("error", with ``error`` and ``hint``).

    ``key`` is the resume key (``rows.row_key``: 64 hex digits); ``image`` the path as the row wrote it,
    ``image_path`` where it was looked for, ``image_sha256`` the sha256 of the image FILE's bytes (the
    fitted pixels' hash is ``PromptParts.pixels_sha256``, not recorded), ``image_size`` the side the image
    was fitted to. ``score_probs`` maps "1".."5" to probabilities; ``settings`` is the settings object every
    row of a run shares (part of the key); ``samples`` one entry per generation. ``extra`` holds the input's
    pass-through fields (``orig_score``) and, in a row read from a file, keys this version does not know,
    in their order. ``reference_given`` is set on ok rows only; ``elapsed_s`` on every row written by this
    version (``None``: the key is not written). ``line`` and ``image_size`` are ``None`` only in a row read
    from a file that lacked them.
    """

    id: str
    line: int | None
    status: Literal["ok", "error"]
    key: str
    image_size: int | None
    settings: dict[str, Any]
    score: int | None = None
    expected_score: float | None = None
    score_probs: dict[str, float] | None = None
    agreement: float | None = None
    feedback: str | None = None
    error: str | None = None
    hint: str | None = None
    image: str | None = None
    image_path: str | None = None
    image_sha256: str | None = None
    instruction: str | None = None
    response: str | None = None
    reference: str | None = None
    rubric: str | None = None
    criteria: str | None = None
    model: str | None = None
    image_fit: str | None = None
    parse_method: str | None = None
    raw_output: str | None = None
    samples: tuple[RowSample, ...] = ()
    timings: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    extra: tuple[tuple[str, Any], ...] = field(default=())
    reference_given: bool | None = None
    elapsed_s: float | None = None
    policy: dict[str, str] | None = None
    rule_id: str | None = None
    rule_title: str | None = None
    severity: str | None = None
    pass_at: int | None = None
    passed: bool | None = None
    p_pass: float | None = None
    rule_state: str | None = None
    judged_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The row as the JSON object ``run_batch`` writes (same keys, same order, same values)."""
        data: dict[str, Any] = {}
        for name in _ORDER:
            value = getattr(self, name)
            if name == "score_probs":
                value = None if value is None else dict(value)
            elif name == "settings":
                value = dict(value)
            elif name == "samples":
                value = [s.to_dict() for s in value]
            elif name == "timings":
                value = None if value is None else dict(value)
            data[name] = value
        if self.rule_id is not None:
            for name in _POLICY:
                value = getattr(self, name)
                data[name] = dict(value) if name == "policy" and value is not None else value
        data["warnings"] = list(self.warnings)
        for name, value in self.extra:
            data.setdefault(name, value)
        for name in _TAIL:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def to_json(self) -> str:
        """``to_dict`` as the JSON text of its output line (``_jsonl.dumps_line``, without the newline)."""
        return dumps_line(self.to_dict()).decode("utf-8").removesuffix("\n")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRow:
        """The record of an output row; never raises on a mapping's contents (see the module docstring)."""
        get = data.get
        probs = get("score_probs")
        samples = get("samples")
        warnings = get("warnings")
        settings, timings = get("settings"), get("timings")
        given, elapsed, key = get("reference_given"), get("elapsed_s"), get("key")
        return cls(
            id=_text(get("id")) or "",
            line=_int(get("line")),
            status="ok" if get("status") == "ok" else "error",
            key=key if isinstance(key, str) else "",
            image_size=_int(get("image_size")),
            settings=dict(settings) if isinstance(settings, Mapping) else {},
            score=_int(get("score")),
            expected_score=_float(get("expected_score")),
            score_probs=_probs(probs) if isinstance(probs, Mapping) else None,
            agreement=_float(get("agreement")),
            feedback=_text(get("feedback")),
            error=_text(get("error")),
            hint=_text(get("hint")),
            image=_path(get("image")),
            image_path=_path(get("image_path")),
            image_sha256=_text(get("image_sha256")),
            instruction=_text(get("instruction")),
            response=_text(get("response")),
            reference=_text(get("reference")),
            rubric=_text(get("rubric")),
            criteria=_text(get("criteria")),
            model=_text(get("model")),
            image_fit=_text(get("image_fit")),
            parse_method=_text(get("parse_method")),
            raw_output=_text(get("raw_output")),
            samples=tuple(RowSample.from_dict(s) for s in _list(samples) if isinstance(s, Mapping)),
            timings=dict(timings) if isinstance(timings, Mapping) else None,
            warnings=tuple(_text(w) or "" for w in _list(warnings)),
            extra=tuple((k, v) for k, v in data.items() if k not in _KNOWN),
            reference_given=given if isinstance(given, bool) else None,
            elapsed_s=_float(elapsed),
            **_policy_fields(data),
        )

    @classmethod
    def from_json(cls, text: str) -> ResultRow:
        """The record of one output line; ``InputError`` when the text is not a JSON object."""
        decoded = loads_line(text)
        if decoded.problem is not None or not isinstance(decoded.value, dict):
            raise InputError(f"not a batch result row: {decoded.problem or 'not a JSON object'}")
        return cls.from_dict(decoded.value)


def _policy_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The rule-row fields of ``data`` (all None for a plain row: no text ``rule_id``)."""
    rule_id = data.get("rule_id")
    if not isinstance(rule_id, str) or not rule_id:
        return {}
    policy, passed = data.get("policy"), data.get("passed")
    return {
        "policy": {k: v for k, v in policy.items() if isinstance(v, str)}
        if isinstance(policy, Mapping)
        else None,
        "rule_id": rule_id,
        "rule_title": _text(data.get("rule_title")),
        "severity": _text(data.get("severity")),
        "pass_at": _int(data.get("pass_at")),
        "passed": passed if isinstance(passed, bool) else None,
        "p_pass": _float(data.get("p_pass")),
        "rule_state": _text(data.get("rule_state")),
        "judged_at": _text(data.get("judged_at")),
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an integer beyond float range
        return None


def _text(value: Any) -> str | None:
    """A text field's value: a string as is, another JSON value as its text (never raising)."""
    if value is None or isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - ValueError (int over 4300 digits), RecursionError, ...
        return f"<{type(value).__name__} value>"


def _path(value: Any) -> str | None:
    """A path field's value: a string as is; anything else names no file (``None``)."""
    return value if isinstance(value, str) else None


def _probs(probs: Mapping[Any, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in probs.items():
        number = _float(value)
        if number is not None:
            out[str(key)] = number
    return out


KINDS = ("decision", "run", "override")


def record_key(value: Mapping[str, Any]) -> str:
    """The identity of a result row in a log (the last line for a key wins): ``json.dumps([id, rule_id])``
    for a rule row, the bare ``id`` for a plain row, except an id starting with ``[`` (``json.dumps([id])``):
    every key starting with ``[`` is then a JSON list, of two texts for a rule row and one for a plain row,
    so no plain id can ever be a rule row's key."""
    rule = value.get("rule_id")
    row_id = value.get("id")
    base = row_id if isinstance(row_id, str) else ""
    if isinstance(rule, str) and rule:
        return json.dumps([base, rule])
    return json.dumps([base]) if base.startswith("[") else base


def is_log_record(value: Any) -> bool:
    """True for a decision, run or override record (see the module docstring): a JSON object with ``id``
    text, ``line`` an integer, ``status`` "ok" and ``kind`` one of ``KINDS``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and type(value.get("line")) is int
        and value.get("status") == "ok"
        and value.get("kind") in KINDS
    )


def is_batch_row(value: Any) -> bool:
    """True for a JSON object shaped like a row ``base_row`` writes: every key of ``ROW_KEYS``, ``id`` a
    string, ``line`` an integer, ``status`` "ok" or "error", ``key`` 64 hex digits, ``settings`` an object."""
    if not isinstance(value, dict) or not ROW_KEYS <= value.keys():
        return False
    key = value["key"]
    return (
        isinstance(value["id"], str)
        and isinstance(value["line"], int)
        and not isinstance(value["line"], bool)
        and value["status"] in ("ok", "error")
        and isinstance(key, str)
        and len(key) == 64
        and all(c in "0123456789abcdef" for c in key)
        and isinstance(value["settings"], dict)
    )


def base_row(
    row: BatchRow,
    key: str,
    root: Path,
    settings: Mapping[str, Any],
    image_size: int,
    *,
    image_sha256: str | None = None,
) -> ResultRow:
    """The fields every result of ``row`` has (an error row until ``ok_row`` fills in a verdict)."""
    rubric = row.rubric
    return ResultRow(
        id=row.id,
        line=row.line,
        status="error",
        key=key,
        image=row.image,
        image_path=_image_path(row.image, root),
        image_sha256=image_sha256,
        image_size=image_size,
        instruction=row.instruction,
        response=row.response,
        reference=row.reference,
        rubric=rubric.name if rubric is not None else None,
        criteria=rubric.criteria if rubric is not None else None,
        model=settings["model"],
        image_fit=settings["image_fit"],
        settings=dict(settings),
        warnings=row.warnings,
        extra=row.extra,
    )


def _image_path(image: str | None, root: Path) -> str | None:
    if not image:
        return None
    try:
        return str(resolve_image(image, root))
    except InputError:
        return None


def error_row(base: ResultRow, message: str, hint: str | None, began: float) -> ResultRow:
    return replace(base, status="error", error=message, hint=hint, elapsed_s=_since(began))


def ok_row(base: ResultRow, verdict: Verdict, began: float) -> ResultRow:
    data = verdict.to_dict()
    return replace(
        base,
        status="ok",
        score=verdict.score,
        expected_score=verdict.expected_score,
        score_probs=data["score_probs"],
        agreement=verdict.agreement,
        feedback=verdict.feedback,
        rubric=verdict.rubric or base.rubric,
        model=verdict.model or base.model,
        image_fit=verdict.image_fit or base.image_fit,
        settings=dict(verdict.settings) or base.settings,  # the verdict's own decoding group size
        reference_given=verdict.reference,
        parse_method=verdict.parse_method,
        raw_output=verdict.raw_output,
        samples=tuple(RowSample(s.score, s.expected_score, s.seed, s.forced_tail) for s in verdict.samples),
        timings=data["timings"],
        warnings=(*base.warnings, *verdict.warnings),
        elapsed_s=_since(began),
    )


def _since(began: float) -> float:
    return round(time.perf_counter() - began, 4)
