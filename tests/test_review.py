"""``edgejudge.review``: the review queue of a policy log, override records, the locked append, and the
incomplete items left out (hand-written policy logs in the documented format: tests/helpers/review_logs)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgejudge.batch.lock import OutputLock
from edgejudge.batch.records import policy_items, read_log
from edgejudge.errors import InputError
from edgejudge.review import (
    append_override,
    default_severity,
    find_items,
    make_override,
    review_queue,
)
from tests.helpers.review_logs import decision_record, policy_log


def finals(path: Path) -> dict[str, str]:
    log = read_log(path)
    return {item.id: item.final for item in policy_items(log.rows.values(), log.decisions, log.overrides)}


def test_queue_holds_the_items_that_need_review(work_dir: Path) -> None:
    queue = review_queue(policy_log(work_dir))
    assert [item.id for item in queue.items] == ["unsure-1", "unsure-2"]
    assert (queue.total, queue.needs_review, queue.already) == (4, 2, 0)
    every = review_queue(work_dir / "out.jsonl", include_all=True)
    assert [item.id for item in every.items] == ["clean", "unsure-1", "bad", "unsure-2"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [("unsure-1", "major"), ("unsure-2", "critical"), ("bad", "critical"), ("clean", "critical")],
    ids=["the uncertain rule's", "the worst uncertain", "the failed rule's", "else the worst rule's"],
)
def test_default_severity(work_dir: Path, item: str, expected: str) -> None:
    items = {i.id: i for i in review_queue(policy_log(work_dir), include_all=True).items}
    assert default_severity(items[item]) == expected


def test_an_override_is_appended_whole_and_changes_the_final_decision(work_dir: Path) -> None:
    path = policy_log(work_dir)
    before = path.read_bytes()
    item = review_queue(path).items[0]
    at = datetime(2026, 12, 2, 3, 4, 5, tzinfo=timezone.utc)
    record = make_override(item, "violation", reviewer=" ana ", note=" claim is false ", at=at)
    assert (record.id, record.line, record.key, record.previous) == ("unsure-1", 2, item.key, "needs_review")
    assert (record.severity, record.reviewer, record.note, record.at) == (
        "major",
        "ana",
        "claim is false",
        "2026-12-02T03:04:05+00:00",
    )
    append_override(path, record)
    after = path.read_bytes()
    assert after.startswith(before) and after.endswith(b"\n")
    added = after[len(before) :].decode()
    assert added.count("\n") == 1 and added.startswith('{"id": "unsure-1", "line": 2, "status": "ok"')
    assert json.loads(added) == record.to_dict()
    assert finals(path) == {"clean": "compliant", "unsure-1": "violation", "bad": "violation",
                            "unsure-2": "needs_review"}  # fmt: skip
    again = review_queue(path)
    assert [i.id for i in again.items] == ["unsure-2"] and again.already == 1
    assert [i.id for i in review_queue(path, include_all=True).items][1] == "unsure-1"  # --all shows it


def test_an_override_of_older_results_does_not_hide_a_rejudged_item(work_dir: Path) -> None:
    path = policy_log(work_dir)
    item = review_queue(path).items[0]
    append_override(path, make_override(item, "compliant", reviewer="ana"))
    rejudged = json.loads(path.read_text().splitlines()[4])  # unsure-1's first rule, judged again
    assert (rejudged["id"], rejudged["rule_id"]) == ("unsure-1", "prohibited-items")
    rejudged["key"] = "e" * 64
    others = [json.loads(line) for line in path.read_text().splitlines()[5:7]]  # its other two rules
    assert [(r["id"], r.get("rule_id")) for r in others] == [
        ("unsure-1", "misleading-claims"),
        ("unsure-1", "personal-data"),
    ]
    with path.open("a") as handle:  # the re-judge finished: its decision record is written too
        handle.write(json.dumps(rejudged) + "\n" + json.dumps(decision_record([rejudged, *others])) + "\n")
    assert "unsure-1" in [i.id for i in review_queue(path).items]


@pytest.mark.parametrize(
    ("decision", "kwargs", "words"),
    [
        ("maybe", {}, "unknown decision"),
        ("compliant", {"severity": "major"}, "violation only"),
        ("violation", {"severity": "huge"}, "unknown severity"),
        ("compliant", {"reviewer": "  "}, "reviewer needs a name"),
        ("compliant", {"reviewer": "a\nb"}, "reviewer needs a name"),
        ("compliant", {"note": "x" * 5000}, "note is 5000 characters"),
    ],
)
def test_make_override_refuses(work_dir: Path, decision: str, kwargs: dict, words: str) -> None:
    item = review_queue(policy_log(work_dir)).items[0]
    with pytest.raises(InputError, match=words):
        make_override(item, decision, **{"reviewer": "ana", **kwargs})


def test_append_refuses_while_a_batch_holds_the_file(work_dir: Path) -> None:
    path = policy_log(work_dir)
    record = make_override(review_queue(path).items[0], "compliant", reviewer="ana")
    before = path.read_bytes()
    with OutputLock(path):  # what a running batch holds
        with pytest.raises(InputError, match="already being written by another edgejudge"):
            append_override(path, record)
    assert path.read_bytes() == before
    with OutputLock(path) as lock:  # the caller's own lock: written under it
        append_override(path, record, lock=lock)
    assert path.read_bytes() != before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b'{"name": "not a log"}\n', "not an edgejudge batch log"),
        (b"a,b,c\n1,2,3\n", "not an edgejudge batch log"),
    ],
    ids=["empty", "a JSON file", "a CSV"],
)
def test_append_refuses_what_is_not_a_batch_log(work_dir: Path, content: bytes, words: str) -> None:
    item = review_queue(policy_log(work_dir)).items[0]
    record = make_override(item, "compliant", reviewer="ana")
    other = work_dir / "other.jsonl"
    other.write_bytes(content)
    with pytest.raises(InputError, match=words):
        append_override(other, record)
    assert other.read_bytes() == content
    with pytest.raises(InputError, match="missing"):
        append_override(work_dir / "absent.jsonl", record)
    assert not (work_dir / "absent.jsonl").exists()


def test_append_repairs_a_row_cut_short_first(work_dir: Path) -> None:
    path = policy_log(work_dir)
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"id": "unsure-9", "line": 9, "status": "ok", "sco')  # a batch killed mid-write
    record = make_override(review_queue(path).items[0], "compliant", reviewer="ana")
    append_override(path, record)
    lines = path.read_bytes()[len(whole) :].splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["kind"] == "override"


@pytest.mark.parametrize(
    ("path", "words"),
    [("plain", "judged without a policy"), ("absent", "no such results file"), ("empty", "no result rows")],
)
def test_queue_of_what_is_not_a_policy_log(work_dir: Path, path: str, words: str) -> None:
    (work_dir / "plain").write_text(
        json.dumps({"id": "r1", "line": 1, "status": "ok", "score": 3, "key": "a" * 64, "settings": {}})
        + "\n"
    )
    (work_dir / "empty").write_text("")
    with pytest.raises(InputError, match=words):
        review_queue(work_dir / path)


def test_find_items(work_dir: Path) -> None:
    queue = review_queue(policy_log(work_dir))
    assert list(find_items(queue, ["unsure-2"])) == ["unsure-2"]
    with pytest.raises(InputError, match="no item 'clean' to review"):
        find_items(queue, ["clean"])  # compliant: not in the queue of items that need review


def _cut(path: Path, item: str) -> None:
    """Drop ``item``'s decision record and its last rule row: a batch killed before the item was done."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [k for k, r in enumerate(lines) if r["id"] == item]
    kept = [r for k, r in enumerate(lines) if k not in mine[-2:]]  # the last rule row, then the decision
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def test_an_incomplete_item_is_never_reviewed(work_dir: Path) -> None:
    path = policy_log(work_dir)
    _cut(path, "unsure-2")
    queue = review_queue(path)
    assert [i.id for i in queue.items] == ["unsure-1"] and queue.incomplete == ("unsure-2",)
    assert (queue.total, queue.needs_review) == (4, 1)
    every = review_queue(path, include_all=True)
    assert [i.id for i in every.items] == ["clean", "unsure-1", "bad"] and every.incomplete == ("unsure-2",)
    with pytest.raises(InputError, match="'unsure-2' is incomplete") as err:
        find_items(every, ["unsure-2"])
    assert err.value.hint is not None and "run the batch again" in err.value.hint
