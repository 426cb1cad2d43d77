"""Score rubrics: the ``Rubric`` record, the built-in library, and loading/saving rubric files.

A rubric is what Prometheus-Vision grades against: one criterion (a question) plus a description of what a
response scoring 1, 2, 3, 4 and 5 looks like. The built-in library lives as TOML data files in
``edgejudge/rubrics/*.toml`` (package data, read with ``importlib.resources``).

Accepted keys (TOML or JSON object, or a batch row's inline ``rubric`` object):

- criterion: ``criteria`` (or Perception-Collection's ``orig_criteria``);
- descriptions: ``score1`` .. ``score5`` (or ``score1_description`` .., or ``orig_score1_description`` ..);
- optional: ``name``, ``title``, ``summary``. Other keys are ignored (Perception rows carry many).

Fields are stripped of surrounding whitespace; their content is never altered. Pure: no printing.

Loading never lets anything but ``RubricError`` out, whatever the file holds: the path is checked with
``_fs`` (``~`` expanded, a NUL byte or unknown ``~user`` refused; only a regular file of at most
``MAX_RUBRIC_BYTES``, so a FIFO or ``/dev/zero`` is refused, never waited on), the bytes must be UTF-8,
JSON goes through ``_jsonl.loads_line`` (nesting depth, integer digit limits, lone surrogates replaced) and
TOML nested too deep or holding a number Python cannot hold is refused; every message names the file.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._fs import atomic_write, read_utf8, user_path
from .errors import RubricError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Rubric",
    "SCORES",
    "EXPECTED_KEYS_HINT",
    "builtin_rubrics",
    "load_rubric",
    "save_rubric",
    "rubric_to_toml",
    "parse_rubric_text",
    "rubric_from_mapping",
    "toml_string",
]

SCORES = (1, 2, 3, 4, 5)
EXPECTED_KEYS_HINT = (
    "a rubric needs the keys: criteria, score1, score2, score3, score4, score5 "
    '(optional: name, title, summary); e.g. criteria = "Is the answer correct?" and '
    'score1 = "..." .. score5 = "..."'
)

#: The largest rubric file read (a rubric is a few KB of text).
MAX_RUBRIC_BYTES = 1 * 2**20

# For each field, the accepted spellings in order of preference.
_CRITERIA_KEYS = ("criteria", "orig_criteria")


def _score_keys(k: int) -> tuple[str, ...]:
    return (f"score{k}", f"score{k}_description", f"orig_score{k}_description")


@dataclass(frozen=True)
class Rubric:
    """A score rubric.

    ``name``: short identifier (``vqa-helpfulness``); ``criteria``: the criterion rendered on the
    ``###Score Rubrics:`` line; ``descriptions``: what scores 1..5 mean, in order; ``title``: a human
    title; ``summary``: one line on when to use it.
    """

    name: str
    criteria: str
    descriptions: tuple[str, str, str, str, str]
    title: str = ""
    summary: str = ""

    def __post_init__(self) -> None:
        if len(self.descriptions) != 5:
            raise RubricError(
                f"rubric '{self.name}' needs 5 score descriptions, got {len(self.descriptions)}",
                hint=EXPECTED_KEYS_HINT,
            )

    def description(self, score: int) -> str:
        """The description of ``score`` (1..5)."""
        return self.descriptions[score - 1]

    def to_dict(self) -> dict[str, str]:
        """``{"name", "title", "summary", "criteria", "score1".."score5"}`` (round-trips via from_mapping)."""
        data = {"name": self.name, "title": self.title, "summary": self.summary, "criteria": self.criteria}
        for k, text in zip(SCORES, self.descriptions, strict=True):
            data[f"score{k}"] = text
        return data

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, name: str = "custom") -> Rubric:
        """Build a rubric from a mapping (see the module docstring for the accepted keys).

        ``name`` is used when the mapping has no ``name`` key. Raises ``RubricError`` naming the first
        missing or empty field.
        """
        return rubric_from_mapping(data, name=name, source=None)


def _pick(data: Mapping[str, Any], keys: tuple[str, ...], source: str | None) -> str:
    where = f" in {source}" if source else ""
    for key in keys:
        if key not in data or data[key] is None:
            continue
        value = data[key]
        if not isinstance(value, str):
            raise RubricError(
                f"rubric field '{key}'{where} must be text, got {type(value).__name__}",
                hint=EXPECTED_KEYS_HINT,
            )
        if not value.strip():
            raise RubricError(f"rubric field '{key}'{where} is empty", hint=EXPECTED_KEYS_HINT)
        return value.strip()
    raise RubricError(f"rubric is missing the field '{keys[0]}'{where}", hint=EXPECTED_KEYS_HINT)


def _optional_text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else default


def rubric_from_mapping(data: Mapping[str, Any], *, name: str, source: str | None) -> Rubric:
    """``Rubric.from_mapping`` with ``source`` (a file, a rule) named in every message."""
    if not isinstance(data, Mapping):
        where = f" in {source}" if source else ""
        raise RubricError(
            f"a rubric must be a table/object{where}, got {type(data).__name__}", hint=EXPECTED_KEYS_HINT
        )
    criteria = _pick(data, _CRITERIA_KEYS, source)
    d1, d2, d3, d4, d5 = (_pick(data, _score_keys(k), source) for k in SCORES)
    return Rubric(
        name=_optional_text(data, "name", name),
        criteria=criteria,
        descriptions=(d1, d2, d3, d4, d5),
        title=_optional_text(data, "title"),
        summary=_optional_text(data, "summary"),
    )


def parse_rubric_text(text: str, suffix: str, source: str, *, unwrap: bool = True) -> Mapping[str, Any]:
    """The mapping a rubric (or policy) file's text holds (``suffix`` ``.json`` or TOML); ``RubricError``
    naming ``source`` for text that is not valid. ``unwrap``: a ``[rubric]`` wrapper table is opened."""
    from ._jsonl import loads_line, scrub

    data: Any
    if suffix == ".json":
        decoded = loads_line(text)
        if decoded.problem is not None:
            raise RubricError(f"{source} is not valid JSON: {decoded.problem}", hint=EXPECTED_KEYS_HINT)
        data = decoded.value
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RubricError(f"{source} is not valid TOML: {exc}", hint=EXPECTED_KEYS_HINT) from None
        except RecursionError:
            raise RubricError(
                f"{source} is not valid TOML: nested too deep", hint=EXPECTED_KEYS_HINT
            ) from None
        except (ValueError, OverflowError, MemoryError) as exc:  # e.g. an integer over Python's digit limit
            raise RubricError(
                f"{source} is not valid TOML: a value Python cannot hold ({exc})", hint=EXPECTED_KEYS_HINT
            ) from None
        data = scrub(data)[0]
    if unwrap and isinstance(data, Mapping) and "rubric" in data and isinstance(data["rubric"], Mapping):
        data = data["rubric"]  # allow a [rubric] table / {"rubric": {...}} wrapper
    return data  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _builtin_cache() -> tuple[Rubric, ...]:
    folder = resources.files("edgejudge") / "rubrics"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        stem = entry.name[: -len(".toml")]
        data = parse_rubric_text(entry.read_text(encoding="utf-8"), ".toml", f"built-in rubric {entry.name}")
        found.append(rubric_from_mapping(data, name=stem, source=f"built-in rubric {entry.name}"))
    return tuple(found)


def builtin_rubrics() -> dict[str, Rubric]:
    """The built-in library, ``{name: Rubric}``, sorted by name."""
    return {r.name: r for r in _builtin_cache()}


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith((".toml", ".json")) or text.startswith(".")


def _stat_kind(path: Path) -> str | None:
    """The kind of ``path``: file, dir, other, None (missing) or "error:<reason>"; never raises."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return "error:" + (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A built-in rubric by name, or a rubric file (``.toml`` or ``.json``).

    Raises ``RubricError`` (and nothing else): unknown name (listing the available ones), a missing,
    unreadable, oversized or non-regular file, bytes that are not UTF-8, invalid or too deeply nested
    TOML/JSON, numbers Python cannot hold, or a missing/empty/non-text field (named, with the file).
    """
    if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
        library = builtin_rubrics()
        key = _normalise_name(name_or_path)
        if key in library:
            return library[key]
        if not _stat_kind(Path(name_or_path)) == "file":
            raise RubricError(
                f"unknown rubric '{name_or_path}'; available: {', '.join(library)}",
                hint="pass a built-in name (edgejudge rubrics list) or the path of a .toml/.json rubric file",
            )
    path = user_path(name_or_path, what="rubric file", error=RubricError)
    kind = _stat_kind(path)
    if kind is None:
        raise RubricError(
            f"rubric file not found: {path}",
            hint="check the path, or use a built-in name (edgejudge rubrics list)",
        )
    if kind.startswith("error:"):
        raise RubricError(f"cannot open rubric file {path}: {kind[6:]}", hint="check the path")
    if kind == "dir":
        raise RubricError(f"rubric path is a directory: {path}", hint="pass a .toml or .json rubric file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise RubricError(
            f"rubric file must end in .toml or .json: {path}", hint="rename it, or convert it to TOML/JSON"
        )
    hint = "save the rubric as UTF-8"
    text = read_utf8(path, what="rubric file", max_bytes=MAX_RUBRIC_BYTES, error=RubricError, hint=hint)[0]
    data = parse_rubric_text(text, suffix, str(path))
    return rubric_from_mapping(data, name=path.stem, source=str(path))


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(value: str) -> str:
    """A TOML basic string: quote, backslash and every control character escaped."""
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def rubric_to_toml(rubric: Rubric) -> str:
    """The TOML text ``save_rubric`` writes (``tomllib.loads`` of it gives back ``rubric.to_dict()``)."""
    return "".join(f"{key} = {toml_string(value)}\n" for key, value in rubric.to_dict().items())


def save_rubric(rubric: Rubric, path: str | Path) -> None:
    """Write ``rubric`` to ``path`` atomically (tmp file + rename): TOML, or JSON if it ends ``.json``."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".json":
        text = json.dumps(rubric.to_dict(), ensure_ascii=False, indent=2) + "\n"
    else:
        text = rubric_to_toml(rubric)
    if not path.parent.is_dir():
        raise RubricError(
            f"folder does not exist: {path.parent}", hint="create it first or pick another path"
        )
    atomic_write(path, text.encode("utf-8"), mode=0o600)  # private to the user, as before
