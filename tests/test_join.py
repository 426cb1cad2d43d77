"""``edgejudge.join``: pairing prediction rows with gold rows by id, with the batch's id rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgejudge.batch.rows import id_of, read_input_rows
from edgejudge.errors import InputError
from edgejudge.join import join_scores, keyed_rows, pair_scores, read_keyed_rows


def _jsonl(*rows: object) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def test_keys_follow_the_batch_id_rule() -> None:
    data = _jsonl(
        {"id": "a"},
        {"id": 7},
        {"question_id": "q"},
        {"id": "", "question_id": "ignored"},  # an empty id is no id: line-4, as the batch names it
        {"id": None, "question_id": "not-used"},  # an id key holding null: line-5 (batch: the same)
        {"text": "no id"},
    )
    keyed = keyed_rows(data, name="p.jsonl")
    assert list(keyed.rows) == ["a", "7", "q", "line-4", "line-5", "line-6"]
    assert keyed.problems == ()
    for n, line in enumerate(data.splitlines(), start=1):
        assert id_of(json.loads(line), n) in keyed.rows


def test_the_keys_are_the_ids_the_batch_gives_its_input_rows(work_dir: Path) -> None:
    rows = [
        {"id": "a", "image": "x.png", "instruction": "q", "response": "r", "rubric": "vqa-helpfulness"},
        {
            "question_id": 3,
            "image": "x.png",
            "instruction": "q",
            "response": "r",
            "rubric": "vqa-helpfulness",
        },
        {"image": "x.png", "instruction": "q", "response": "r", "rubric": "vqa-helpfulness"},
    ]
    path = work_dir / "in.jsonl"
    path.write_bytes(_jsonl(*rows))
    assert [r.id for r in read_input_rows(path)] == list(read_keyed_rows(path).rows)


def test_an_id_that_is_not_text_or_an_integer_is_a_problem_not_a_row() -> None:
    keyed = keyed_rows(_jsonl({"id": True}, {"id": [1]}, {"id": 1.5}, {"id": "ok"}), name="g.jsonl")
    assert list(keyed.rows) == ["ok"]
    assert keyed.problems == tuple(f"g.jsonl:{n}: id must be a string or an integer" for n in (1, 2, 3))


def test_custom_id_field_has_no_question_id_fallback() -> None:
    keyed = keyed_rows(_jsonl({"qid": "x"}, {"question_id": "y"}), name="g.jsonl", id_field="qid")
    assert list(keyed.rows) == ["x", "line-2"]


def test_predictions_last_row_wins_gold_first_row_wins() -> None:
    preds = keyed_rows(_jsonl({"id": "a", "status": "error"}, {"id": "a", "score": 4}), name="p.jsonl")
    golds = keyed_rows(
        _jsonl({"id": "a", "gold": 5}, {"id": "a", "gold": 1}), name="g.jsonl", first_wins=True
    )
    assert preds.rows["a"]["score"] == 4 and golds.rows["a"]["gold"] == 5
    assert golds.problems == ("g.jsonl:2: duplicate id 'a' ignored (its first row is used)",)


def test_hostile_lines_are_reported_and_the_next_line_goes_on() -> None:
    data = (
        b"{broken\n[1, 2]\n" + b"[" * 100 + b"\n" + b'{"id": "z", "note": "caf\xe9"}\n' + _jsonl({"id": "a"})
    )
    keyed = keyed_rows(data, name="p.jsonl")
    assert list(keyed.rows) == ["a"]
    assert [p.split(":")[1] for p in keyed.problems] == ["1", "2", "3", "4"]
    assert "not a JSON object" in keyed.problems[1] and "not valid UTF-8" in keyed.problems[3]


def test_pair_scores_counts_failed_unmatched_and_missing() -> None:
    preds = keyed_rows(
        _jsonl(
            {"id": "a", "score": 5},
            {"id": "b", "score": 2.5},
            {"id": "c", "status": "error", "score": 3},  # failed although it has a score
            {"id": "d", "score": None},  # failed: no score
            {"id": "e", "score": True},  # failed: a boolean is no score
            {"id": "only-pred", "score": 3},
            {"id": "g", "score": 3},
        ),
        name="p.jsonl",
    )
    golds = keyed_rows(
        _jsonl({"id": "a", "gold": 4}, {"id": "b", "gold": "2"}, {"id": "c", "gold": 1}, {"id": "g"}),
        name="g.jsonl",
        first_wins=True,
    )
    joined = pair_scores(preds, golds, gold_field="gold")
    assert joined.ids == ("a", "b") and joined.pred == (5.0, 2.5) and joined.gold == (4.0, 2.0)
    assert joined.counts() == {
        "pred_rows": 7,
        "gold_rows": 4,
        "unmatched_pred": 3,
        "unmatched_gold": 0,
        "failed_pred": 3,
        "missing_gold": 1,
        "malformed_lines": 0,
    }


def test_join_scores_reads_files_through_the_safe_reader(work_dir: Path) -> None:
    pred = work_dir / "p.jsonl"
    gold = work_dir / "g.jsonl"
    pred.write_bytes(_jsonl({"id": 1, "expected_score": 3.5}, b"oops"))
    gold.write_bytes(_jsonl({"id": 1, "human": 4}))
    joined = join_scores(pred, gold, pred_field="expected_score", gold_field="human")
    assert joined.ids == ("1",) and joined.pred == (3.5,) and joined.gold == (4.0,)
    assert joined.malformed_lines[0].startswith("p.jsonl:2: malformed JSON")
    folder = work_dir / "folder.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="folder"):
        join_scores(folder, gold, gold_field="human")
    with pytest.raises(InputError, match="not found"):
        join_scores(work_dir / "missing.jsonl", gold, gold_field="human")


def test_records_of_a_policy_log_are_not_rows() -> None:
    from tests.helpers.compliance_logs import run_record

    override = {"id": "a", "line": 1, "status": "ok", "kind": "override", "decision": "compliant"}
    decision = {"id": "a", "line": 1, "status": "ok", "kind": "decision", "decision": "compliant"}
    data = _jsonl(run_record(), {"id": "a", "line": 1, "score": 4}, decision, override)
    keyed = keyed_rows(data, name="p.jsonl")
    assert list(keyed.rows) == ["a"] and keyed.rows["a"]["score"] == 4  # the row, not the last record
    assert keyed.problems == () and keyed.rule_rows == 0
    joined = pair_scores(keyed, keyed_rows(_jsonl({"id": "a", "gold": 5}), name="g"), gold_field="gold")
    assert joined.ids == ("a",) and joined.failed_pred == 0
    # a row that only looks like a record (kind, but no integer line) stays a row
    lookalike = keyed_rows(_jsonl({"id": "b", "kind": "decision", "score": 3}), name="p.jsonl")
    assert list(lookalike.rows) == ["b"]


def test_predictions_of_rule_rows_are_refused_with_a_hint(work_dir: Path) -> None:
    from tests.helpers.compliance_logs import RULES, policy_log, rule_row

    rows = keyed_rows(_jsonl(*(rule_row("x", 1, r, 0.9) for r in RULES)), name="out.jsonl")
    assert rows.rule_rows == 3 and rows.name == "out.jsonl"
    with pytest.raises(InputError, match=r"out\.jsonl holds policy results \(3 rule rows") as err:
        pair_scores(rows, keyed_rows(_jsonl({"id": "x", "gold": 4}), name="g"), gold_field="gold")
    assert err.value.about == ("by",) and "compliance report" in (err.value.hint or "")

    from typer.testing import CliRunner

    from edgejudge.cli import app

    log = policy_log(work_dir)
    (work_dir / "gold.jsonl").write_bytes(_jsonl({"id": "clean", "orig_score": 5}))
    args = ["metrics", str(log), str(work_dir / "gold.jsonl"), "--gold-field", "orig_score"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert "error: out.jsonl holds policy results (15 rule rows: one per item and rule)" in said
    assert "hint: read policy results as a compliance report, or group them by a field" in said
    assert said.endswith("of their input rows (--by)")
