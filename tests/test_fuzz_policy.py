"""Fuzz target "policy": policy files of any shape, and policy logs anyone could have edited.

Properties:
- ``parse_policy`` on a random JSON or TOML document (the policy's and the rules' own keys holding random
  nested values of random types, lone surrogates, huge numbers) and ``load_policy`` on random bytes either
  return a ``Policy`` whose rules have distinct ids and a rubric, or raise ``PolicyError`` (nothing else).
- A batch log made of random lines shaped like rule rows, decision, run and override records (random
  types in every field) read with ``records.read_log`` and grouped with ``records.policy_items`` never
  raises, and every item's ``final`` is a known decision.
The profile (tests/conftest.py) sets the number of examples and the deadline.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from _support import only_documented
from hypothesis import given
from hypothesis import strategies as st

from edgejudge.batch.records import policy_items, read_log
from edgejudge.batch.result import ROW_KEYS
from edgejudge.decision import DECISIONS, INCOMPLETE
from edgejudge.errors import PolicyError
from edgejudge.policy import Policy, load_policy, parse_policy

TOP = ("name", "version", "description", "instruction", "rules")
RULE = ("id", "title", "rubric", "pass_at", "severity", "instruction", "description")
RUBRIC = ("criteria", "score1", "score2", "score3", "score4", "score5", "title", "name")
ROW = (
    "id", "line", "status", "key", "rule_id", "policy", "score", "score_probs", "p_pass", "passed",
    "severity", "judged_at", "kind", "decision", "rules", "review_band", "note", "reviewer", "at",
)  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["critical", "minor", "info", "major", "content-moderation", "r1", "ok", "decision"]),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(RUBRIC), inner, max_size=7),
    max_leaves=12,
)
rules = st.dictionaries(st.sampled_from(RULE) | st.text(max_size=4), values, max_size=8)
documents = st.fixed_dictionaries(
    {},
    optional={
        "name": values,
        "version": values,
        "description": values,
        "instruction": values,
        "rules": st.lists(rules, max_size=4) | values,
    },
)


def _check(policy: Any) -> None:
    if isinstance(policy, Policy):
        ids = [r.id for r in policy.rules]
        assert ids and len(ids) == len(set(ids))
        assert all(r.rubric.criteria and len(r.rubric.descriptions) == 5 for r in policy.rules)


@given(documents)
def test_parse_policy_json_never_raises_undocumented(doc: dict[str, Any]) -> None:
    text = json.dumps(doc, ensure_ascii=True, default=str)
    result = only_documented(parse_policy, text, suffix=".json", source="fuzz.json", sha256="0" * 64)
    assert isinstance(result, (Policy, PolicyError))
    _check(result)


@given(st.binary(max_size=400), st.sampled_from([".toml", ".json"]))
def test_load_policy_bytes_never_raise_undocumented(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"p{suffix}"
        path.write_bytes(data)
        result = only_documented(load_policy, str(path))
    assert isinstance(result, (Policy, PolicyError))
    _check(result)


def _line(kind: str, row_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A line of the given kind (a rule row with every batch-row key, or a policy record), then changed."""
    base: dict[str, Any] = {"id": row_id, "line": 1, "status": "ok"}
    if kind == "rule":
        base.update(dict.fromkeys(ROW_KEYS))
        base.update(id=row_id, line=1, status="ok", key="a" * 64, settings={}, rule_id="r1")
    else:
        base["kind"] = kind
    base.update(changes)
    return base


records = st.builds(
    _line,
    st.sampled_from(["rule", "rule", "decision", "override", "run"]),
    st.sampled_from(["a", "b", '["a", "r1"]']),
    st.dictionaries(st.sampled_from(ROW), values, max_size=6),
)


@given(st.lists(records, max_size=8))
def test_policy_log_of_any_lines_reads(lines: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.jsonl"
        path.write_text("".join(json.dumps(line, default=str) + "\n" for line in lines), encoding="utf-8")
        log = read_log(path)
    items = policy_items(log.rows.values(), log.decisions, log.overrides)
    for item in items:
        assert item.final in (*DECISIONS, INCOMPLETE)
        assert item.rules
