"""Fuzz target "parse": ``parse_output`` on any text, and the ``parse --jsonl`` reader on any lines.

Properties: ``parse_output`` never raises, returns a consistent ``ParseResult`` and stays fast on text made
of the parser's own markers repeated (the shapes that made it quadratic: ``" </s>" * N``); the ``parse
--jsonl`` command turns every non-blank input line into exactly one output record, whatever the line holds
(random bytes, deep nesting, huge integers, lone surrogates, non-UTF-8), and never fails outside the
documented errors. The profile (tests/conftest.py) sets the number of examples and the deadline.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _support import only_documented
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.parse import METHODS, parse_output

runner = CliRunner()

# every fragment the parser's patterns look for, and their neighbours
FRAGMENTS = (
    "[RESULT]", "[ result ]", "[结果]", "【结果】", "［结果］", "Feedback:", "反馈：",
    "Score", "score of", "Score:", "Rating:", "Result:", "(Score ", "[Score ", "overall", "final score is",
    "So the overall score is", "I give it a", "would be", "out of", "/", "5", "4", "0", "7", "10", "4.5",
    "4,5", "-", "–", "~", "to", "and", "four", "ten", "(", ")", "[", "]", "（", "）", "**", "*", "_", "`",
    "#", ">", ".", ",", ":", "=", " ", "  ", "\n", "\t", "\u3000", "</s>", " </s>", "<|endoftext|>",
    "<|im_end|>", "<|eot_id|>", "<eos>", "99999999999999999999", "1/5/2023", "a ", "an ",
    "gets a score of", "###Feedback:", "ASSISTANT:",
)  # fmt: skip

pieces = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(max_size=8),
    st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 3000)).map(lambda t: t[0] * t[1]),
)
marker_texts = st.lists(pieces, max_size=40).map("".join)


def _check(text: str) -> None:
    started = time.perf_counter()
    result = only_documented(parse_output, text)  # never raises; bounded memory
    elapsed = time.perf_counter() - started
    assert result.raw == text
    assert result.method in METHODS
    assert result.score in (None, 1, 2, 3, 4, 5)
    assert (result.score is None) == (result.method == "none") == (result.reason is not None)
    assert isinstance(result.feedback, str) and len(result.feedback) <= len(text)
    assert elapsed < 2.0, f"{elapsed:.2f}s for {len(text)} characters"


@given(st.text())
def test_parse_output_on_any_text(text: str) -> None:
    _check(text)


@given(marker_texts)
def test_parse_output_on_the_parsers_own_markers(text: str) -> None:
    _check(text)


@given(st.sampled_from(FRAGMENTS), st.integers(10_000, 200_000), st.sampled_from(["", "Fine. [RESULT] 4"]))
def test_parse_output_on_long_repeats(fragment: str, size: int, prefix: str) -> None:
    _check(prefix + fragment * (size // len(fragment)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
rows = st.fixed_dictionaries(
    {"text": st.one_of(st.text(), marker_texts, json_values)},
    optional={"id": json_values, "question_id": json_values, "answer_id": json_values},
)
lines = st.one_of(
    rows.map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3).map(lambda n: b'{"text": ' + b"9" * (4300 + n * 500) + b"}"),
    st.just(b'{"text": "\\ud800 [RESULT] 3", "id": "\\udfff"}'),
    st.just(b'{"text": "caf\xe9 [RESULT] 2"}'),
)


@given(st.lists(lines, max_size=8), st.sampled_from(["text", "id", "\udcff"]))
def test_parse_jsonl_reader_on_any_lines(content: list[bytes], field: str) -> None:
    data = b"\n".join(content)
    expected = sum(1 for raw in data.split(b"\n") if raw.strip())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_bytes(data)
        result = only_documented(runner.invoke, app, ["parse", "--jsonl", str(path), "--field", field])
    assert result.exit_code in (0, 1), result.output
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.split("\n") if line]  # not splitlines: U+0085
    assert len(records) == expected
    assert all(isinstance(r, dict) and isinstance(r["line"], int) for r in records)
    assert (result.exit_code == 1) == any("error" in r for r in records)
