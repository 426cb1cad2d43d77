"""Batch rows: reading the JSONL input, field mapping, content-hash keys, scheduling, and output rows.

Owns the input side of ``edgejudge.batch``: native fields (``id``, ``image``, ``instruction``, ``response``,
``reference``, ``rubric``) and Perception-Collection/Bench fields (``orig_instruction``, ``orig_response`` /
``original_response``, ``orig_reference_answer``, ``orig_criteria``, ``orig_score1_description`` …).
A row that cannot be judged (bad JSON, missing field, unknown rubric) is still a ``BatchRow``, with
``problem`` saying why, so the batch writes an error row for it and goes on. ``base_row``/``ok_row``/
``error_row`` build the output records (the format is documented in the README's batch section).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, RubricError

if TYPE_CHECKING:
    from .rubric import Rubric
    from .verdict import Verdict

__all__ = [
    "BatchRow",
    "read_input_rows",
    "resolve_image",
    "image_digest",
    "row_key",
    "schedule",
    "base_row",
    "ok_row",
    "error_row",
]

#: Input fields copied unchanged into the output row (gold scores, for ``edgejudge metrics``).
PASS_THROUGH = ("orig_score",)
_FIX_HINT = "fix the row in the input file (the batch skips rows already done when rerun)"


@dataclass(frozen=True)
class BatchRow:
    """One input row, resolved. ``problem`` (with ``hint``) is set when the row cannot be judged."""

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


def resolve_image(image: str, root: Path) -> Path:
    """An image path as written in a row, resolved against the image root when relative."""
    path = Path(image).expanduser()
    return path if path.is_absolute() else root / path


def image_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file's bytes, or ``missing``/``unreadable`` (a fixed file changes the key)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return "sha256:" + digest.hexdigest()


def row_key(row: BatchRow, image: str | None, settings: dict[str, Any]) -> str:
    """The resume key: sha256 over the id, the image bytes' hash, the text fields, the rubric, the settings
    and the pass-through fields (so a corrected gold score reaches the output row)."""
    rubric = row.rubric
    payload = {
        "id": row.id,
        "image": [row.image, image],
        "instruction": row.instruction,
        "response": row.response,
        "reference": row.reference,
        "rubric": None if rubric is None else [rubric.criteria, list(rubric.descriptions)],
        "problem": row.problem,
        "source": row.source_sha256,
        "settings": settings,
        "extra": [list(pair) for pair in row.extra],
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def schedule(
    todo: list[tuple[BatchRow, str, str | None]], root: Path
) -> list[tuple[BatchRow, str, str | None]]:
    """Reorder rows so that rows sharing an image (then an instruction) run one after another.

    A stable sort on the first appearance of the row's image, then of its (image, instruction) pair: the
    engine reuses the image's KV prefix. Rows are keyed by id, so the order does not change the output's
    meaning; rows without a usable image keep their place relative to each other.
    """
    first_image: dict[str, int] = {}
    first_pair: dict[tuple[str, str], int] = {}
    order: list[tuple[int, int]] = []
    for index, (row, *_rest) in enumerate(todo):
        image = str(resolve_image(row.image, root)) if row.image and row.problem is None else f"#{index}"
        pair = (image, row.instruction or "")
        first_image.setdefault(image, index)
        first_pair.setdefault(pair, index)
        order.append((first_image[image], first_pair[pair]))
    ranked = sorted(range(len(todo)), key=lambda i: order[i])
    return [todo[i] for i in ranked]


def read_input_rows(
    path: Path, *, default_rubric: Rubric | str | None = None, limit: int | None = None
) -> list[BatchRow]:
    """Read the input JSONL into rows (blank lines ignored; ``limit`` keeps the first N rows).

    Raises ``InputError`` when the file cannot be read and ``RubricError`` when ``default_rubric`` is an
    unknown name; everything wrong with a single row becomes that row's ``problem``.
    """
    from .rubric import Rubric, load_rubric

    default = load_rubric(default_rubric) if isinstance(default_rubric, str) else default_rubric
    if default is not None and not isinstance(default, Rubric):
        raise InputError(f"default rubric must be a Rubric or a name, got {type(default).__name__}")
    if limit is not None and limit < 0:
        raise InputError(f"limit must not be negative, got {limit}", hint="pass --limit 1 or more")
    try:
        # split on "\n" only: str.splitlines also breaks at U+2028/U+2029/U+0085, which JSON strings may
        # hold unescaped (json.dumps(..., ensure_ascii=False) writes them raw)
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}", hint="check the path of the JSONL file") from None
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror}") from None
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    cache: dict[str, Rubric] = {}
    for number, text in _numbered(lines):
        if limit is not None and len(rows) >= limit:
            break
        row = _parse_line(number, text, default, cache)
        if row.id in seen:
            row = BatchRow(
                id=f"{row.id}@line-{number}",
                line=number,
                problem=f"line {number}: duplicate id {row.id!r} (first on line {seen[row.id]})",
                hint="give every row a unique id",
                source_sha256=_sha(text),
            )
        seen.setdefault(row.id, number)
        rows.append(row)
    return rows


def _numbered(lines: Iterable[str]) -> Iterable[tuple[int, str]]:
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Each field of a row and the keys it is read from, first found wins (native, Perception-Collection/Bench).
_FIELD_NAMES = {
    "image": ("image",),
    "instruction": ("orig_instruction", "instruction"),
    "response": ("response", "orig_response", "original_response"),
    "reference": ("reference", "orig_reference_answer", "reference_answer"),
}


def _malformed(number: int, text: str, problem: str) -> BatchRow:
    return BatchRow(
        id=f"line-{number}",
        line=number,
        problem=f"line {number}: {problem}",
        hint="each line of the input must be one JSON object",
        malformed=True,
        source_sha256=_sha(text),
    )


def _parse_line(number: int, text: str, default: Rubric | None, cache: dict[str, Rubric]) -> BatchRow:
    fallback_id = f"line-{number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _malformed(number, text, f"malformed JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return _malformed(number, text, f"expected a JSON object, got {type(data).__name__}")
    raw_id = data.get("id", data.get("question_id"))
    if raw_id is None or raw_id == "":
        row_id = fallback_id
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        row_id = str(raw_id)
    else:
        return BatchRow(
            id=fallback_id,
            line=number,
            problem=f"line {number}: id must be a string or an integer",
            hint=_FIX_HINT,
            source_sha256=_sha(text),
        )
    extra = tuple((name, data[name]) for name in PASS_THROUGH if name in data)
    fields = {name: _first(data, *keys) for name, keys in _FIELD_NAMES.items()}
    bad = [name for name, value in fields.items() if value is not None and not isinstance(value, str)]
    values = {k: v if isinstance(v, str) else None for k, v in fields.items()}
    reference = values["reference"] if values["reference"] and values["reference"].strip() else None
    row = BatchRow(
        id=row_id,
        line=number,
        image=values["image"],
        instruction=values["instruction"],
        response=values["response"],
        reference=reference,
        extra=extra,
    )
    problem = None
    if bad:
        problem = f"line {number}: field {bad[0]!r} must be a string"
    else:
        missing = [name for name in ("image", "instruction", "response") if not (values[name] or "").strip()]
        if missing:
            problem = f"line {number}: missing field {' or '.join(map(repr, _FIELD_NAMES[missing[0]]))}"
    if problem is not None:
        return _with_problem(row, problem, _FIX_HINT)
    try:
        rubric = _row_rubric(data, default, cache)
    except RubricError as err:
        return _with_problem(row, f"line {number}: {err}", err.hint or _FIX_HINT)
    if rubric is None:
        return _with_problem(
            row,
            f"line {number}: no rubric (no 'rubric' or 'orig_criteria' field and no default rubric)",
            "add a 'rubric' field to the row or pass --rubric NAME for rows without one",
        )
    return replace(row, rubric=rubric)


def _with_problem(row: BatchRow, problem: str, hint: str) -> BatchRow:
    return replace(row, problem=problem, hint=hint)


def _first(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def _row_rubric(data: dict[str, Any], default: Rubric | None, cache: dict[str, Rubric]) -> Rubric | None:
    from .rubric import Rubric, load_rubric

    value = data.get("rubric")
    if isinstance(value, str) and value.strip():
        if value not in cache:
            cache[value] = load_rubric(value)
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


def base_row(
    row: BatchRow, key: str, root: Path, settings: dict[str, Any], image_size: int
) -> dict[str, Any]:
    rubric = row.rubric
    base: dict[str, Any] = {
        "id": row.id,
        "line": row.line,
        "status": "error",
        "score": None,
        "expected_score": None,
        "score_probs": None,
        "agreement": None,
        "feedback": None,
        "error": None,
        "hint": None,
        "key": key,
        "image": row.image,
        "image_path": str(resolve_image(row.image, root)) if row.image else None,
        "image_sha256": None,
        "image_size": image_size,
        "instruction": row.instruction,
        "response": row.response,
        "reference": row.reference,
        "rubric": rubric.name if rubric is not None else None,
        "criteria": rubric.criteria if rubric is not None else None,
        "model": settings["model"],
        "image_fit": settings["image_fit"],
        "settings": dict(settings),
        "parse_method": None,
        "raw_output": None,
        "samples": [],
        "timings": None,
    }
    base.update(row.extra)
    return base


def error_row(base: dict[str, Any], message: str, hint: str | None, began: float) -> dict[str, Any]:
    return {**base, "status": "error", "error": message, "hint": hint, "elapsed_s": _since(began)}


def ok_row(base: dict[str, Any], verdict: Verdict, began: float) -> dict[str, Any]:
    data = verdict.to_dict()
    return {
        **base,
        "status": "ok",
        "score": verdict.score,
        "expected_score": verdict.expected_score,
        "score_probs": data["score_probs"],
        "agreement": verdict.agreement,
        "feedback": verdict.feedback,
        "rubric": verdict.rubric or base["rubric"],
        "model": verdict.model or base["model"],
        "image_fit": verdict.image_fit or base["image_fit"],
        "reference_given": verdict.reference,
        "parse_method": verdict.parse_method,
        "raw_output": verdict.raw_output,
        "samples": [
            {
                "score": s.score,
                "expected_score": s.expected_score,
                "seed": s.seed,
                "forced_tail": s.forced_tail,
            }
            for s in verdict.samples
        ],
        "timings": data["timings"],
        "warnings": list(verdict.warnings),
        "elapsed_s": _since(began),
    }


def _since(began: float) -> float:
    return round(time.perf_counter() - began, 4)
