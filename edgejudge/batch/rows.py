"""Batch input rows: reading the JSONL input, field mapping, content-hash keys and scheduling.

Owns the input side of ``edgejudge.batch``: native fields (``id``, ``image``, ``instruction``, ``response``,
``reference``, ``rubric``) and Perception-Collection/Bench fields (``orig_instruction``, ``orig_response`` /
``original_response``, ``orig_reference_answer``, ``orig_criteria``, ``orig_score1_description`` …).
A row that cannot be judged (bad JSON, missing field, unknown rubric) is still a ``BatchRow``, with
``problem`` saying why, so the batch writes an error row for it and goes on. The output rows are
``batch.result`` (``ResultRow``).

Hostile input never stops the batch: every line is decoded with ``_jsonl`` (deep nesting, huge integers,
over-long lines are a malformed row; lone surrogates and invalid UTF-8 are replaced with U+FFFD and put a
warning on the row); a path with a NUL byte or an unknown ``~user`` is a row problem; images named by a
row are hashed and read only when they are regular files within ``images.MAX_FILE_BYTES`` (``_fs``; rubric
files get the same checks in ``rubric.load_rubric``), so a FIFO or ``/dev/zero`` is an error row, never a
hang. ``read_lines`` streams a JSONL file line by line in bounded memory (a line over its limit is
reported, not held).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _fs, _jsonl
from ..errors import InputError, RubricError

if TYPE_CHECKING:
    from ..rubric import Rubric

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LINE_BYTES",
    "BatchRow",
    "RawLine",
    "read_lines",
    "has_rows",
    "read_input_rows",
    "resolve_image",
    "image_digest",
    "row_key",
    "id_of",
    "schedule",
]

#: Input fields copied unchanged into the output row (gold scores, for ``edgejudge metrics``).
PASS_THROUGH = ("orig_score",)
_FIX_HINT = "fix the row in the input file (the batch skips rows already done when rerun)"
#: The input JSONL must be a regular file of at most this size (it is streamed; rows are held in memory).
MAX_INPUT_BYTES = 4 * 2**30
#: A longer input line is a malformed row (``_jsonl.MAX_LINE_CHARS``, counted in bytes), never held whole.
MAX_LINE_BYTES = _jsonl.MAX_LINE_CHARS
_BLANK = b" \t\n\r\x0b\x0c"


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
    warnings: tuple[str, ...] = ()


class RawLine(NamedTuple):
    """One line of a JSONL file: its ``number`` (1-based), its bytes (``None`` when over the line limit),
    whether it ended in ``\\n`` (``complete``), its ``size`` in bytes and, for an over-long line, the
    sha256 of its bytes (``digest``)."""

    number: int
    data: bytes | None
    complete: bool
    size: int
    digest: str | None = None


def read_lines(
    path: Path, *, label: str, what: str, max_bytes: int | None, max_line: int = MAX_LINE_BYTES
) -> Iterator[RawLine]:
    """Stream the lines of a regular file (split on ``\\n`` only), in memory bounded by ``max_line``.

    Raises ``InputError`` (before the first line) when the file is missing, not a regular file (folder,
    FIFO, device) or over ``max_bytes``, or when it cannot be read. Blank lines are yielded too; the last
    line is yielded with ``complete=False`` when the file does not end in a newline.
    """
    fd, _ = _fs.open_regular(path, label=label, what=what, max_bytes=max_bytes)
    with os.fdopen(fd, "rb", closefd=True) as fh:
        number = 0
        pending = bytearray()
        long: Any = None  # the sha256 of an over-long line, fed as it streams by
        size = 0
        seen = 0
        while True:
            try:
                chunk = fh.read(1 << 20)
            except OSError as exc:
                raise InputError(f"cannot read {what} {label}: {exc.strerror or exc}") from None
            seen += len(chunk)
            if max_bytes is not None and seen > max_bytes:
                raise InputError(
                    f"{what} is too large (over {max_bytes} bytes): {label}", hint="pass a smaller file"
                )
            if not chunk:
                break
            start = 0
            while start <= len(chunk):
                nl = chunk.find(b"\n", start)
                piece = chunk[start : nl if nl >= 0 else len(chunk)]
                size += len(piece)
                if long is None and size > max_line:
                    long = hashlib.sha256(pending)
                    pending.clear()
                if long is not None:
                    long.update(piece)
                else:
                    pending += piece
                if nl < 0:
                    break
                number += 1
                yield _raw(number, pending, long, size, complete=True)
                pending, long, size = bytearray(), None, 0
                start = nl + 1
        if size:
            yield _raw(number + 1, pending, long, size, complete=False)


def _raw(number: int, pending: bytearray, long: Any, size: int, *, complete: bool) -> RawLine:
    if long is not None:
        return RawLine(number, None, complete, size, long.hexdigest())
    return RawLine(number, bytes(pending), complete, size)


def has_rows(path: Path, *, label: str | None = None) -> bool:
    """True when the input file has a non-blank line (reads only up to the first non-blank byte).

    Raises ``InputError`` like ``read_input_rows`` when the file is not a readable regular file."""
    label = label or str(path)
    fd, _ = _fs.open_regular(path, label=label, what="input file", max_bytes=MAX_INPUT_BYTES)
    with os.fdopen(fd, "rb", closefd=True) as fh:
        while chunk := fh.read(1 << 20):
            if chunk.strip(_BLANK):
                return True
    return False


def resolve_image(image: str, root: Path) -> Path:
    """An image path as written in a row, resolved against the image root when relative.

    Raises ``InputError`` for a path with a NUL byte or an unknown ``~user`` (rows are checked when read,
    so a row without a problem always resolves)."""
    path = _fs.user_path(image, what="image path")
    return path if path.is_absolute() else root / path


def image_digest(path: Path) -> tuple[str, _fs.FileStamp | None]:
    """``("sha256:<hex>", stamp)`` of the file's bytes, or ``("missing"|"unreadable", None)`` (a fixed file
    changes the key). The stamp lets the judging step read the file without hashing it again.

    Only a regular file within ``images.MAX_FILE_BYTES`` is hashed: a folder, FIFO, device or too large a
    file is ``unreadable`` at once (never a hang); judging the row then reports why."""
    from ..images import MAX_FILE_BYTES

    try:
        digest, stamp = _fs.sha256_stamped(path, what="image", max_bytes=MAX_FILE_BYTES)
    except InputError:
        return ("unreadable" if os.path.lexists(path) else "missing"), None
    return "sha256:" + digest, stamp


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
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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

    The file must be a regular file of at most ``MAX_INPUT_BYTES``; it is streamed line by line. Raises
    ``InputError`` when the file cannot be read (missing, a folder, FIFO or device, too large) and
    ``RubricError`` when ``default_rubric`` is an unknown name; everything wrong with a single line (bad or
    hostile JSON, a bad field, a bad path) becomes that row's ``problem``, and text that had to be replaced
    (invalid UTF-8, lone surrogates) becomes a row warning.
    """
    from ..rubric import Rubric, load_rubric

    default: Rubric | None = None
    if isinstance(default_rubric, str):
        default = load_rubric(default_rubric)
    else:
        default = default_rubric
    if default is not None and not isinstance(default, Rubric):
        raise InputError(f"default rubric must be a Rubric or a name, got {type(default).__name__}")
    if limit is not None and limit < 0:
        raise InputError(f"limit must not be negative, got {limit}", hint="use a limit of 0 or more")
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    cache: dict[str, Rubric] = {}
    for raw in read_lines(path, label=str(path), what="input file", max_bytes=MAX_INPUT_BYTES):
        if limit is not None and len(rows) >= limit:
            break
        row = _row_of(raw, default, cache)
        if row is None:
            continue
        number = raw.number
        if row.id in seen:
            row = BatchRow(
                id=f"{row.id}@line-{number}",
                line=number,
                problem=f"line {number}: duplicate id {row.id!r} (first on line {seen[row.id]})",
                hint="give every row a unique id",
                source_sha256=row.source_sha256,
                warnings=row.warnings,
            )
        seen.setdefault(row.id, number)
        rows.append(row)
    return rows


def _sha(data: bytes | str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def _row_of(raw: RawLine, default: Rubric | None, cache: dict[str, Rubric]) -> BatchRow | None:
    """The row for one input line (``None`` for a blank line)."""
    number = raw.number
    if raw.data is None:
        problem = f"line too long ({raw.size} bytes, limit {MAX_LINE_BYTES})"
        return _malformed(number, raw.digest or "", problem)
    decoded = list(_jsonl.split_lines(raw.data))
    if not decoded:
        return None
    _, text, replaced = decoded[0]
    sha = _sha(raw.data)
    warnings = [f"line {number}: text that is not valid UTF-8 was replaced with U+FFFD"] if replaced else []
    result = _jsonl.loads_line(text)
    if result.problem is not None:
        return replace(_malformed(number, sha, result.problem), warnings=tuple(warnings))
    if result.scrubbed:
        warnings.append(
            f"line {number}: {result.scrubbed} lone surrogate(s) (not valid Unicode) replaced with U+FFFD"
        )
    row = _parse_line(number, result.value, sha, default, cache, warnings)
    return replace(row, warnings=(*row.warnings, *warnings)) if warnings else row


#: Each field of a row and the keys it is read from, first found wins (native, Perception-Collection/Bench).
_FIELD_NAMES = {
    "image": ("image",),
    "instruction": ("orig_instruction", "instruction"),
    "response": ("response", "orig_response", "original_response"),
    "reference": ("reference", "orig_reference_answer", "reference_answer"),
}


def _malformed(number: int, sha: str, problem: str) -> BatchRow:
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


def _parse_line(
    number: int,
    data: Any,
    sha: str,
    default: Rubric | None,
    cache: dict[str, Rubric],
    warnings: list[str],
) -> BatchRow:
    fallback_id = f"line-{number}"
    if not isinstance(data, dict):
        return _malformed(number, sha, f"expected a JSON object, got {type(data).__name__}")
    row_id = id_of(data, number)
    if row_id is None:
        return BatchRow(
            id=fallback_id,
            line=number,
            problem=f"line {number}: id must be a string or an integer",
            hint=_FIX_HINT,
            source_sha256=sha,
        )
    extra = []
    for name in PASS_THROUGH:
        if name not in data:
            continue
        if _finite(data[name]):
            extra.append((name, data[name]))
        else:
            warnings.append(f"line {number}: field {name!r} holds NaN or an infinity (not JSON); left out")
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
        extra=tuple(extra),
    )
    problem = None
    if bad:
        problem = f"line {number}: field {bad[0]!r} must be a string"
    else:
        missing = [name for name in ("image", "instruction", "response") if not (values[name] or "").strip()]
        if missing:
            problem = f"line {number}: missing field {' or '.join(map(repr, _FIELD_NAMES[missing[0]]))}"
    if problem is None and row.image is not None:
        try:
            _fs.user_path(row.image, what="image path")
        except InputError as err:
            return _with_problem(row, f"line {number}: {err}", err.hint or _FIX_HINT)
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
            "add a 'rubric' field to the row or give a default rubric for rows without one",
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
