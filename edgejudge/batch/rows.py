"""Batch input rows: reading the JSONL input, field mapping, content-hash keys and scheduling.

Owns the input side of ``edgejudge.batch``: the fields of one row (native and Perception-Collection/Bench
ones, the pass-through fields, ``BatchRow``) are ``batch.input_fields``, re-exported here. A row that cannot
be judged (bad JSON, missing field, unknown rubric) is still a ``BatchRow``, with ``problem`` saying why,
so the batch writes an error row for it and goes on. The output rows are ``batch.result`` (``ResultRow``).

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
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _fs, _jsonl
from ..errors import InputError
from ..settings import key_settings
from .input_fields import PASS_THROUGH, BatchRow, id_of, malformed, parse_line

if TYPE_CHECKING:
    from ..rubric import Rubric

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_LINE_BYTES",
    "BatchRow",
    "PASS_THROUGH",
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

#: The input JSONL must be a regular file of at most this size (it is streamed; rows are held in memory).
MAX_INPUT_BYTES = 4 * 2**30
#: A longer input line is a malformed row (``_jsonl.MAX_LINE_CHARS``, counted in bytes), never held whole.
MAX_LINE_BYTES = _jsonl.MAX_LINE_CHARS
_BLANK = b" \t\n\r\x0b\x0c"


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
    (``settings.key_settings``: not the engine, so a run may resume on another engine of the same model)
    and the pass-through fields (so a corrected gold score reaches the output row)."""
    settings = key_settings(settings)
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
    path: Path,
    *,
    default_rubric: Rubric | str | None = None,
    limit: int | None = None,
    policy_run: bool = False,
    keep: Sequence[str] = (),
) -> list[BatchRow]:
    """Read the input JSONL into rows (blank lines ignored; ``limit`` keeps the first N rows;
    ``policy_run``: every row is judged against a policy; ``keep``: more fields passed through).

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
        row = _row_of(raw, default, cache, policy_run, keep)
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
                policy=row.policy,
            )
        seen.setdefault(row.id, number)
        rows.append(row)
    return rows


def _sha(data: bytes | str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def _row_of(
    raw: RawLine, default: Rubric | None, cache: dict[str, Rubric], policy_run: bool, keep: Sequence[str]
) -> BatchRow | None:
    """The row for one input line (``None`` for a blank line)."""
    number = raw.number
    if raw.data is None:
        problem = f"line too long ({raw.size} bytes, limit {MAX_LINE_BYTES})"
        return malformed(number, raw.digest or "", problem)
    decoded = list(_jsonl.split_lines(raw.data))
    if not decoded:
        return None
    _, text, replaced = decoded[0]
    sha = _sha(raw.data)
    warnings = [f"line {number}: text that is not valid UTF-8 was replaced with U+FFFD"] if replaced else []
    result = _jsonl.loads_line(text)
    if result.problem is not None:
        return replace(malformed(number, sha, result.problem), warnings=tuple(warnings))
    if result.scrubbed:
        warnings.append(
            f"line {number}: {result.scrubbed} lone surrogate(s) (not valid Unicode) replaced with U+FFFD"
        )
    row = parse_line(number, result.value, sha, default, cache, warnings, policy_run=policy_run, keep=keep)
    return replace(row, warnings=(*row.warnings, *warnings)) if warnings else row
