"""Fuzz target ``batch_rows``: batch input rows, the resume reader and output repair on hostile lines.

Lines are random text, random bytes, random JSON values (``st.recursive``), JSON objects with the batch
fields holding random values (lone surrogates, NUL bytes, ``~user`` paths, special files, NaN), integer
literals over Python's digit limit and deep nesting. Properties:

- ``read_input_rows`` returns one row per non-blank line (or a documented error);
- ``read_results`` never raises on a regular file;
- ``repair_output`` either raises ``InputError`` and leaves the file byte for byte as it was, or changes
  only a file whose every complete line is a batch row, by cutting a newline-free tail or adding a newline;
- a batch over such rows with the FakeEngine writes one row per input row, every line strict UTF-8 JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from _support import only_documented
from hypothesis import given
from hypothesis import strategies as st

from edgejudge.batch import OutputLock, read_results, repair_output, run_batch
from edgejudge.batch.result import base_row, error_row, is_batch_row
from edgejudge.batch.rows import BatchRow, read_input_rows
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import EdgeJudgeError, InputError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

_PNG = io.BytesIO()
synthetic_image(32, seed=5).save(_PNG, format="PNG")
PNG = _PNG.getvalue()

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udc80", "\ud83d"])
PATHS = st.sampled_from(
    [
        "a.png",
        "missing.png",
        "~nosuchuser-edgejudge/a.png",
        "~g/a.png",
        "~",
        "~/a.png",
        "a\x00.png",
        "/dev/zero",
        "/dev/null",
        ".",
        "",
        "   ",
        "x" * 5000,
        "a.png\ud800",
        "r.toml",
        "/dev/zero.toml",
    ]
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=10), SURROGATES, st.text(max_size=10)),
    PATHS,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
KEYS = st.one_of(st.text(max_size=8), SURROGATES, st.sampled_from(["id", "image", "rubric"]))
# small trees: hypothesis's own bookkeeping of 10,000 recursive examples is most of this target's memory
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [
        "id",
        "question_id",
        "image",
        "instruction",
        "orig_instruction",
        "response",
        "orig_response",
        "reference",
        "rubric",
        "orig_score",
        "orig_criteria",
        "orig_score1_description",
        "score1",
    ]
)
BATCH_OBJECTS = st.fixed_dictionaries(
    {"image": st.one_of(PATHS, JSON_VALUES), "instruction": TEXT, "response": TEXT},
    optional={
        "id": st.one_of(TEXT, st.integers(), JSON_VALUES),
        "rubric": st.one_of(st.just("vqa-helpfulness"), PATHS, JSON_VALUES),
        "orig_score": JSON_VALUES,
        "reference": TEXT,
    },
) | st.dictionaries(FIELDS, JSON_VALUES, max_size=6)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode("ascii")  # lone surrogates as \ud800 escapes


def _flat(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


LINES = st.one_of(
    st.text(max_size=60).map(lambda t: _flat(t.encode("utf-8", "surrogatepass"))),
    st.binary(max_size=60).map(_flat),
    JSON_VALUES.map(_dumps),
    BATCH_OBJECTS.map(_dumps),
    st.integers(4200, 6000).map(lambda n: b'{"id": "big", "orig_score": %s}' % (b"9" * n)),
    st.integers(min_value=60, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=60, max_value=3000).map(lambda n: b'{"a": ' * n + b"1" + b"}" * n),
    st.just(b""),
    st.just(b"  \r"),
)
FILES = st.tuples(st.lists(LINES, max_size=8), st.booleans()).map(
    lambda t: b"\n".join(t[0]) + (b"\n" if t[1] and t[0] else b"")
)


def _non_blank(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip())


def _batch_line(row_id: str) -> bytes:
    row = BatchRow(id=row_id, line=1, problem="x")
    settings = {"model": "fake", "image_fit": "crop"}
    base = base_row(row, "0" * 64, Path("/"), settings, 336)
    row_json = error_row(base, "problem", None, 0.0).to_dict()
    return json.dumps(row_json, ensure_ascii=False).encode("utf-8") + b"\n"


REAL_ROWS = [_batch_line(f"r{i}") for i in range(3)] + [_batch_line("caf\u00e9 \u2028")]
LOGS = st.tuples(
    st.lists(st.sampled_from(REAL_ROWS), max_size=3),
    st.lists(LINES, max_size=2).map(lambda ls: b"".join(line + b"\n" for line in ls)),
    st.one_of(
        st.tuples(st.sampled_from(REAL_ROWS), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
        LINES,
        st.just(REAL_ROWS[0].rstrip(b"\n")),
    ),
    st.booleans(),
).map(lambda t: b"".join(t[0]) + (t[1] if t[3] else b"") + t[2].rstrip(b"\n"))


def _strict(line: bytes) -> Any:
    def no_constant(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(line.decode("utf-8"), parse_constant=no_constant)


@given(FILES)
def test_read_input_rows_gives_one_row_per_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        rows = only_documented(read_input_rows, path, default_rubric="vqa-helpfulness")
        assert not isinstance(rows, EdgeJudgeError), rows
        assert len(rows) == _non_blank(data)
        assert len({row.id for row in rows}) == len(rows)
        for row in rows:
            assert row.problem is None or "\n" not in row.problem
            for text in (row.id, row.image, row.instruction, row.response, row.problem, *row.warnings):
                assert text is None or isinstance(text.encode("utf-8"), bytes)  # no lone surrogate left


@given(st.one_of(FILES, LOGS))
def test_read_results_never_raises(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.jsonl"
        path.write_bytes(data)
        rows = only_documented(read_results, path)
        for row_id, row in rows.items():
            assert row["id"] == row_id and isinstance(row_id.encode("utf-8"), bytes)


@given(st.one_of(LOGS, FILES, st.binary(max_size=200)))
def test_repair_output_changes_only_a_batch_log(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.jsonl"
        path.write_bytes(data)
        result = only_documented(repair_output, path)
        after = path.read_bytes()
        assert not OutputLock(Path(tmp) / "out.jsonl").path.exists()
        if isinstance(result, EdgeJudgeError):
            assert isinstance(result, InputError) and after == data
            return
        if after == data:
            assert result == 0
            return
        complete = data[: data.rfind(b"\n") + 1]
        if result == 0:  # a whole last row lacking its newline got it (nothing removed)
            assert after == data + b"\n" and is_batch_row(json.loads(data[len(complete) :]))
            return
        # bytes were cut: only a newline-free tail starting like a row, and only from a file whose every
        # complete line is a batch row
        assert after == complete and result == len(data) - len(complete) > 0
        assert data[len(complete) :].startswith(b"{")
        for line in complete.split(b"\n"):
            assert not line.strip() or is_batch_row(json.loads(line))


@given(FILES)
def test_batch_writes_one_strict_json_row_per_input_row(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a.png").write_bytes(PNG)
        inp, out = folder / "in.jsonl", folder / "out.jsonl"
        inp.write_bytes(data)
        summary = only_documented(
            run_batch, Judge(FakeEngine()), inp, out, image_root=folder, default_rubric="vqa-helpfulness"
        )
        assert not isinstance(summary, EdgeJudgeError), summary
        rows = _non_blank(data)
        assert summary.total == summary.judged == rows
        if not rows:
            assert not out.exists()
            return
        written = out.read_bytes()
        assert written.endswith(b"\n") and written.count(b"\n") == rows
        for line in written.split(b"\n")[:-1]:
            assert is_batch_row(_strict(line))
        assert hashlib.sha256(written).hexdigest()  # the file reads back whole
        assert len(read_results(out)) == rows
