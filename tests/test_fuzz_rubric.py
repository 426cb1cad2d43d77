"""Fuzz target "rubric": rubric files and inline rubric mappings of any shape.

Properties: ``load_rubric`` on a random TOML or JSON document (the rubric's own keys holding random nested
values of random types, deep nesting, huge numbers, lone surrogates), on random bytes, and on a valid
rubric with bytes flipped, either returns a ``Rubric`` whose fields are non-empty text or raises
``RubricError`` (nothing else: no RecursionError, ValueError, TypeError, UnicodeDecodeError). The same for
``Rubric.from_mapping`` (a batch row's inline rubric). The profile (tests/conftest.py) sets the number of
examples and the deadline.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from _support import only_documented
from hypothesis import given
from hypothesis import strategies as st

from edgejudge.errors import RubricError
from edgejudge.rubric import Rubric, load_rubric, rubric_to_toml

KEYS = (
    "criteria", "orig_criteria", "name", "title", "summary", "rubric",
    *(f"score{k}" for k in range(1, 6)), *(f"score{k}_description" for k in range(1, 6)),
    *(f"orig_score{k}_description" for k in range(1, 6)),
)  # fmt: skip


class Digits(int):
    """An integer literal of ``int(self)`` nines (over Python's 4300-digit limit when written out).

    Kept small inside hypothesis (which itself cannot print such numbers); spelled out in the file."""

    def literal(self) -> str:
        return "9" * int(self)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(4290, 6000).map(Digits),
    st.floats(),
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
documents = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=12)


def _toml_value(value: Any) -> str:
    """A TOML spelling of ``value`` (None has none in TOML: written as an empty string)."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Digits):
        return value.literal()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (a lone surrogate's \\ud800 is invalid TOML)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml(document: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {_toml_value(value)}\n" for key, value in document.items())


def _placeholders(value: Any, found: dict[str, str]) -> Any:
    if isinstance(value, Digits):
        key = f"@@digits{len(found)}@@"
        found[key] = value.literal()
        return key
    if isinstance(value, list):
        return [_placeholders(v, found) for v in value]
    if isinstance(value, dict):
        return {k: _placeholders(v, found) for k, v in value.items()}
    return value


def _json(document: dict[str, Any]) -> str:
    found: dict[str, str] = {}
    text = json.dumps(_placeholders(document, found))
    for key, digits in found.items():  # json cannot write such an int: put the digits in by hand
        text = text.replace(json.dumps(key), digits)
    return text


def _real(value: Any) -> Any:
    """``value`` with each ``Digits`` made the huge integer it stands for (built without a string)."""
    if isinstance(value, Digits):
        return 10 ** int(value) - 1
    if isinstance(value, list):
        return [_real(v) for v in value]
    if isinstance(value, dict):
        return {k: _real(v) for k, v in value.items()}
    return value


def _load(data: bytes, suffix: str) -> Rubric | RubricError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"rubric{suffix}"
        path.write_bytes(data)
        result = only_documented(load_rubric, path)
    assert isinstance(result, (Rubric, RubricError)), type(result)
    if isinstance(result, Rubric):
        assert result.criteria.strip() and all(d.strip() for d in result.descriptions)
        result.criteria.encode("utf-8")  # never a lone surrogate left for the tokenizer
    else:
        assert "rubric" in str(result)
    return result


def _complete(document: dict[str, Any], fill: bool) -> dict[str, Any]:
    if fill:  # a valid rubric around the random values, so the loader reaches deeper checks
        base: dict[str, Any] = {
            "criteria": "Is it right?",
            **{f"score{k}": f"level {k}" for k in range(1, 6)},
        }
        return {**base, **document}
    return document


@given(documents, st.booleans())
def test_random_toml_documents(document: dict[str, Any], fill: bool) -> None:
    _load(_toml(_complete(document, fill)).encode("utf-8", "surrogatepass"), ".toml")


@given(documents, st.booleans())
def test_random_json_documents(document: dict[str, Any], fill: bool) -> None:
    _load(_json(_complete(document, fill)).encode("utf-8"), ".json")


@given(st.binary(max_size=400), st.sampled_from([".toml", ".json"]))
def test_random_bytes_as_a_rubric_file(data: bytes, suffix: str) -> None:
    _load(data, suffix)


VALID = Rubric("valid", "Is the answer right?", ("No.", "Barely.", "Partly.", "Mostly.", "Fully."))


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6), st.booleans()
)
def test_valid_rubric_with_bytes_flipped(flips: list[tuple[int, int]], as_json: bool) -> None:
    data = bytearray(json.dumps(VALID.to_dict()).encode() if as_json else rubric_to_toml(VALID).encode())
    for position, byte in flips:
        data[position % len(data)] = byte
    _load(bytes(data), ".json" if as_json else ".toml")


@given(st.integers(1, 20_000), st.sampled_from(["[", "{", '{"a": ', "a = [", "a = {b = "]))
def test_deep_nesting(depth: int, opener: str) -> None:
    text = opener * depth
    _load(text.encode(), ".json" if opener[0] in "[{" and "=" not in opener else ".toml")


@given(documents)
def test_inline_rubric_mappings(document: dict[str, Any]) -> None:
    result = only_documented(Rubric.from_mapping, _real(document))
    assert isinstance(result, (Rubric, RubricError))
