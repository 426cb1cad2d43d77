"""The log's identities and audit fields, pure or on the fake engine: ``record_key`` (no plain id can be a
rule row's key), ``RECORD_KEYS``, ``utc_now``, a recorded band read through ``check_band``, the prompt
format's ``template_sha256``, where the run record's model hashes came from (``sha256_from``), the typed
``OutputBusyError`` of a busy output, and the JSON text of verdicts."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgejudge import prompt
from edgejudge.batch import OutputLock, run_batch
from edgejudge.batch.log import open_output
from edgejudge.batch.policy_run import run_record
from edgejudge.batch.records import (
    RECORD_KEYS,
    DecisionRecord,
    OverrideRecord,
    RunRecord,
    read_log,
    utc_now,
)
from edgejudge.batch.result import record_key
from edgejudge.decision import DEFAULT_REVIEW_BAND, Decision
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError, OutputBusyError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.verdict import PolicyVerdict, Verdict


# -- record_key ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"id": "x"}, "x"),
        ({"id": "x", "rule_id": None}, "x"),
        ({"id": "x", "rule_id": ""}, "x"),
        ({"id": "x", "rule_id": "safe"}, '["x", "safe"]'),
        ({"id": "x", "rule_id": "*"}, '["x", "*"]'),
        ({"id": "x\x1fsafe"}, "x\x1fsafe"),  # was the rule row (x, safe)'s key
        ({"id": '["x", "safe"]'}, '["[\\"x\\", \\"safe\\"]"]'),  # a plain id that spells a rule row's key
        ({"id": "["}, '["["]'),
        ({"id": 7}, ""),
        ({}, ""),
    ],
)
def test_record_key(value: dict[str, Any], expected: str) -> None:
    assert record_key(value) == expected


def test_no_plain_id_is_a_rule_rows_key(work_dir: Path) -> None:
    ids = ["x", "x\x1fsafe", '["x", "safe"]', '["x"]', "[", '[["x", "safe"]]']
    plain = {record_key({"id": i}) for i in ids}
    rules = {record_key({"id": i, "rule_id": r}) for i in ids for r in ("safe", "*", "x")}
    assert len(plain) == len(ids) and len(rules) == 3 * len(ids) and plain.isdisjoint(rules)
    # read back from a log: the plain rows and the rule row stay apart
    base = {"status": "ok", "key": "a" * 64, "settings": {}}
    rows = [{"id": i, "line": n, **base} for n, i in enumerate(ids, start=1)]
    rows.append({"id": "x", "line": 1, **base, "rule_id": "safe"})
    path = work_dir / "out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    log = read_log(path)
    assert len(log.rows) == len(ids) + 1
    assert log.rows[record_key({"id": "x", "rule_id": "safe"})].rule_id == "safe"
    assert all(log.rows[record_key({"id": i})].rule_id is None for i in ids)


# -- records -------------------------------------------------------------------------------------------
def test_record_keys_name_every_key_the_records_write() -> None:
    decision = DecisionRecord("x", 1, "k", {"name": "p"}, Decision("compliant"), ("r",))
    run = RunRecord("t", "v", {}, {}, (), "s", {}, {})
    override = OverrideRecord("x", 1, "k", "violation", "needs_review", "ann", "t", severity="major")
    for record in (decision, run, override):
        assert set(record.to_dict()) - {"id", "line", "status"} <= RECORD_KEYS


@pytest.mark.parametrize(
    ("band", "expected"),
    [
        ([0.1, 0.9], (0.1, 0.9)),
        ([0, 1], (0.0, 1.0)),
        ([0.5, 0.5], (0.5, 0.5)),
        ([0.9, 0.1], DEFAULT_REVIEW_BAND),
        ([-0.1, 0.5], DEFAULT_REVIEW_BAND),
        ([0.1, 1.5], DEFAULT_REVIEW_BAND),
        ([True, 1], DEFAULT_REVIEW_BAND),
        (["0.1", "0.9"], DEFAULT_REVIEW_BAND),
        ([0.1], DEFAULT_REVIEW_BAND),
        ([0.1, 0.5, 0.9], DEFAULT_REVIEW_BAND),
        ([10**400, 1], DEFAULT_REVIEW_BAND),
        ("0.1,0.9", DEFAULT_REVIEW_BAND),
        (None, DEFAULT_REVIEW_BAND),
    ],
)
def test_a_recorded_band_is_read_through_check_band(band: Any, expected: tuple[float, float]) -> None:
    record = DecisionRecord.from_dict({"id": "x", "line": 1, "decision": "compliant", "review_band": band})
    assert record.review_band == expected
    assert RunRecord.from_dict({"review_band": band}).review_band == expected


@pytest.mark.parametrize(
    ("decision", "expected"),
    [("compliant", "compliant"), ("needs_review", "needs_review"), ("error", "error"), ("bogus", "error")],
)
def test_a_recorded_decision_is_one_of_the_decisions(decision: str, expected: str) -> None:
    assert DecisionRecord.from_dict({"decision": decision}).decision.decision == expected


def test_utc_now_is_iso_utc_to_the_second() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=2)))
    assert utc_now(at) == "2026-01-02T01:04:05+00:00"
    now = datetime.fromisoformat(utc_now())
    assert now.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - now) < timedelta(minutes=1)


# -- the prompt format's hash --------------------------------------------------------------------------
def test_template_sha256_covers_the_whole_prompt_format(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [
        prompt.SYSTEM_PROMPT,
        prompt.JUDGE_TEMPLATE,
        prompt.NO_REFERENCE_TEXT,
        prompt.full_conversation(prompt.JUDGE_TEMPLATE),
    ]
    first = prompt.template_sha256()
    assert first == hashlib.sha256(json.dumps(texts).encode("utf-8")).hexdigest()
    assert first != hashlib.sha256(prompt.JUDGE_TEMPLATE.encode("utf-8")).hexdigest()
    seen = {first}
    for name in ("SYSTEM_PROMPT", "JUDGE_TEMPLATE", "NO_REFERENCE_TEXT"):
        with monkeypatch.context() as patch:
            patch.setattr(prompt, name, getattr(prompt, name) + " ")
            seen.add(prompt.template_sha256())
    with monkeypatch.context() as patch:  # the vicuna wrapper around the prompt
        patch.setattr(prompt, "conversation_parts", lambda text: ("USER: ", "\n" + text + " ASSISTANT: "))
        seen.add(prompt.template_sha256())
    assert len(seen) == 5 and prompt.template_sha256() == first


# -- the run record: the template hash and where each model hash came from -------------------------------
class WithFiles(FakeEngine):
    """A fake naming a text model and projector file (their bytes are never read as a model)."""

    def __init__(self, files: tuple[Path, Path]) -> None:
        super().__init__()
        self.files = files

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        return self.files


def test_the_run_record_says_where_each_sha256_came_from(work_dir: Path) -> None:
    from edgejudge.registry import InstalledModel, register

    text, mmproj = work_dir / "m.gguf", work_dir / "p.gguf"
    text.write_bytes(b"text model")
    mmproj.write_bytes(b"projector")
    inp = work_dir / "in.jsonl"
    inp.write_text("{}\n", encoding="utf-8")
    args = (inp, (), {"model": "fake"}, DEFAULT_REVIEW_BAND, "t")
    run = run_record(WithFiles((text, mmproj)), *args)
    assert run.model["sha256"] == hashlib.sha256(b"text model").hexdigest()
    assert (run.model["sha256_from"], run.mmproj["sha256_from"]) == ("file", "file")
    assert run.template_sha256 == prompt.template_sha256()
    register(
        InstalledModel(
            name="m", quant="F16", text_model=str(text), mmproj=str(mmproj), text_sha256="a" * 64,
            mmproj_sha256="b" * 64, text_bytes=text.stat().st_size, mmproj_bytes=mmproj.stat().st_size + 1,
        )
    )  # fmt: skip
    run = run_record(WithFiles((text, mmproj)), *args)
    assert run.model == {"name": "fake", "file": "m.gguf", "sha256": "a" * 64, "sha256_from": "registry"}
    assert run.mmproj == {
        "file": "p.gguf",
        "sha256": hashlib.sha256(b"projector").hexdigest(),  # the size no longer matches: hashed
        "sha256_from": "file",
    }
    none = run_record(FakeEngine(), *args)
    assert none.model["sha256"] is None and none.model["sha256_from"] is None
    assert RunRecord.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_a_policy_batch_records_the_template_sha256(work_dir: Path) -> None:
    synthetic_image(40, seed=3).save(work_dir / "a.png")
    inp = work_dir / "in.jsonl"
    inp.write_text(json.dumps({"id": "x", "image": "a.png", "response": "A bike."}) + "\n", encoding="utf-8")
    run_batch(Judge(FakeEngine()), inp, work_dir / "out.jsonl", policy="marketplace-listing")
    assert read_log(work_dir / "out.jsonl").runs[0].template_sha256 == prompt.template_sha256()


# -- a busy output -------------------------------------------------------------------------------------
def test_a_busy_output_raises_output_busy_error(work_dir: Path) -> None:
    out = work_dir / "out.jsonl"
    with OutputLock(out):
        with pytest.raises(
            OutputBusyError, match=f"already being written by another edgejudge \\(pid {os.getpid()}\\)"
        ):
            OutputLock(out).acquire()
    fd = open_output(out, create=True)
    try:
        with pytest.raises(OutputBusyError, match="under another name of the file") as caught:
            open_output(out, create=False)
        assert isinstance(caught.value, InputError) and caught.value.about == ("output",)
    finally:
        os.close(fd)
    with OutputLock(out):  # free again
        pass


# -- verdicts as JSON text -----------------------------------------------------------------------------
def test_verdicts_share_one_json_text_rule() -> None:
    verdict = Verdict(
        score=4, feedback="ok", raw_output="ok [RESULT] 4", parse_method="result_tag", expected_score=4.0,
        score_probs={4: 1.0}, samples=(), agreement=None, reference=False, rubric="r", model="m",
        image="bad\udcff.png", image_fit="pad",
    )  # fmt: skip
    text = verdict.to_json()
    assert "\\udcff" in text and text.isascii() and Verdict.from_json(text) == verdict
    clean = Verdict.from_dict({**verdict.to_dict(), "image": "é.png"})
    assert "é.png" in clean.to_json() and '"score": 4' in clean.to_json()
    policy = PolicyVerdict({"name": "p\udcff"}, (), Decision("compliant"))
    assert policy.to_json().isascii() and json.loads(policy.to_json())["policy"]["name"] == "p\udcff"
    assert "é" in PolicyVerdict({"name": "é"}, (), Decision("compliant")).to_json(indent=2)
