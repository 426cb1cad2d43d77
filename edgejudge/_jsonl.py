"""JSON lines that never stop a reader: one hostile line is one reported problem, and the next line goes on.

Owns how every JSONL reader (batch input, batch output on resume, report, metrics, parse) decodes a line
and how every JSONL writer encodes one:

- ``loads_line(text)`` → ``(value, problem)``: ``problem`` is a short reason when the line is not valid
  JSON or cannot be held (nesting too deep: ``RecursionError``; an integer literal over Python's digit
  limit; a line over ``MAX_LINE_CHARS``). Lone surrogates (``"\\ud800"``, common in scraped text) are
  replaced with U+FFFD in every string, keys included, so nothing downstream fails to encode; the
  returned ``scrubbed`` count says how many were replaced.
- ``split_lines(data)``: bytes → ``(number, text, replaced)`` per non-blank line, split on ``\\n`` only
  (``str.splitlines`` would break inside JSON strings at U+2028/U+0085), decoded as UTF-8 with invalid
  bytes replaced (``replaced`` is True then, so the caller can warn).
- ``dumps_line(obj)`` → one line of UTF-8 bytes ending in ``\\n``; never raises on a string.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

__all__ = ["MAX_LINE_CHARS", "MAX_DEPTH", "LineResult", "loads_line", "split_lines", "dumps_line", "scrub"]

#: A longer line is refused unread (a batch row holds a few KB of text; 16 MiB is far above any real row).
MAX_LINE_CHARS = 16 * 2**20
#: Containers nested deeper than this are refused (real rows nest 3 levels; Python's limit is ~1000).
MAX_DEPTH = 64


class LineResult(NamedTuple):
    """One decoded line: ``value`` (None when ``problem`` is set), ``problem``, ``scrubbed`` surrogates."""

    value: Any
    problem: str | None
    scrubbed: int = 0


def _depth_ok(text: str) -> bool:
    """Cheap pre-check: the bracket depth outside strings never exceeds ``MAX_DEPTH``."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return True
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_line(text: str) -> LineResult:
    """Decode one JSON line; never raises. See the module docstring."""
    if len(text) > MAX_LINE_CHARS:
        return LineResult(None, f"line too long ({len(text)} characters, limit {MAX_LINE_CHARS})")
    if not _depth_ok(text):
        return LineResult(None, f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return LineResult(None, f"malformed JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return LineResult(None, f"JSON nested deeper than {MAX_DEPTH} levels")
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return LineResult(None, "malformed JSON (an integer literal with more digits than Python allows)")
    value, scrubbed = scrub(value)
    return LineResult(value, None, scrubbed)


def _clean(text: str) -> tuple[str, int]:
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        out = []
        count = 0
        for ch in text:
            if "\ud800" <= ch <= "\udfff":
                out.append("\ufffd")
                count += 1
            else:
                out.append(ch)
        return "".join(out), count


def scrub(value: Any) -> tuple[Any, int]:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD; iterative, so any
    depth json.loads accepted is fine. Returns the new value and the number of replacements."""
    total = 0
    if isinstance(value, str):
        return _clean(value)
    if not isinstance(value, (dict, list)):
        return value, 0
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, slot, node = stack.pop()
        if isinstance(node, dict):
            fresh: dict[str, Any] = {}
            for key, item in node.items():
                key2, n = _clean(key)
                total += n
                if isinstance(item, str):
                    item, n = _clean(item)
                    total += n
                fresh[key2] = item
            parent[slot] = fresh
            for key, item in fresh.items():
                if isinstance(item, (dict, list)):
                    stack.append((fresh, key, item))
        elif isinstance(node, list):
            fresh_list = list(node)
            parent[slot] = fresh_list
            for i, item in enumerate(fresh_list):
                if isinstance(item, str):
                    fresh_list[i], n = _clean(item)
                    total += n
                elif isinstance(item, (dict, list)):
                    stack.append((fresh_list, i, item))
    return root[0], total


def split_lines(data: bytes) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text, invalid UTF-8 replaced)`` for each non-blank line of ``data``."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield number, raw.decode("utf-8"), False
        except UnicodeDecodeError:
            yield number, raw.decode("utf-8", errors="replace"), True


def dumps_line(obj: Any) -> bytes:
    """``obj`` as one JSON line (UTF-8, ``\\n``-terminated). Strings with lone surrogates are escaped
    (``\\ud800``), never a UnicodeEncodeError."""
    try:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, ensure_ascii=True) + "\n").encode("ascii")
