"""Batch evaluation plumbing on the FakeEngine: input fields, error rows, resume keys, repair, scheduling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgejudge.batch import BatchEvent, read_results, repair_output, run_batch
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import InputError, RubricError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.verdict import Verdict

RUBRIC = {"criteria": "Is the answer right?", **{f"score{k}": f"level {k}" for k in range(1, 6)}}
PERCEPTION = {
    "orig_criteria": "Does the caption match the picture?",
    **{f"orig_score{k}_description": f"perception level {k}" for k in range(1, 6)},
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def data(work_dir: Path) -> Path:
    synthetic_image(96, seed=1).save(work_dir / "a.png")
    synthetic_image(80, seed=2).convert("L").save(work_dir / "b.png")
    (work_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return work_dir


def native(i: int, image: str = "a.png", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "image": image,
        "instruction": "What is shown?",
        "response": f"answer {i}",
        **extra,
    }


def fake_judge(**kwargs: Any) -> tuple[Judge, FakeEngine]:
    engine = FakeEngine(**kwargs)
    return Judge(engine), engine


def judged_alone(data: Path, row: dict[str, Any], params: GenerationParams, **engine: Any) -> Verdict:
    """The verdict a fresh fake engine gives the native ``row`` on its own (vqa-helpfulness)."""
    return Judge(FakeEngine(**engine)).evaluate(
        data / row["image"],
        instruction=row["instruction"],
        response=row["response"],
        rubric="vqa-helpfulness",
        params=params,
    )


def test_native_and_perception_fields(data: Path) -> None:
    inp = write_jsonl(
        data / "in.jsonl",
        [
            native(1, reference="A house.", rubric="vqa-helpfulness"),
            native(2, rubric=RUBRIC),
            {
                "image": "b.png",
                "instruction": "<rendered training prompt: must not be used>",
                "orig_instruction": "Describe the picture.",
                "orig_response": "A small house with a tree.",
                "orig_reference_answer": "A red-roofed house, a tree and the sun.",
                "orig_score": 4,
                **PERCEPTION,
            },
            {
                "image": "a.png",
                "orig_instruction": "Caption it.",
                "original_response": "A sunny day.",
                **PERCEPTION,
            },
        ],
    )
    judge, engine = fake_judge()
    summary = run_batch(judge, inp, data / "out.jsonl", params=GenerationParams(temperature=0))
    assert (summary.total, summary.judged, summary.ok, summary.errors) == (4, 4, 4, 0)
    rows = read_results(data / "out.jsonl")
    assert set(rows) == {"r1", "r2", "line-3", "line-4"}
    r1 = rows["r1"]
    assert r1["status"] == "ok" and r1["error"] is None and r1["score"] in range(1, 6)
    assert (
        r1["rubric"] == "vqa-helpfulness" and r1["reference"] == "A house." and r1["reference_given"] is True
    )
    assert abs(sum(r1["score_probs"].values()) - 1) < 1e-9 and set(r1["score_probs"]) == {
        "1",
        "2",
        "3",
        "4",
        "5",
    }
    assert r1["expected_score"] == pytest.approx(sum(int(k) * p for k, p in r1["score_probs"].items()))
    assert r1["model"] == "fake" and r1["settings"]["temperature"] == 0 and r1["image_fit"] == "crop"
    assert r1["raw_output"].rstrip().endswith(f"[RESULT] {r1['score']}") and r1["feedback"]
    assert len(r1["key"]) == 64 and r1["image_size"] == 336 and r1["line"] == 1
    assert rows["r2"]["rubric"] == "inline" and rows["r2"]["criteria"] == "Is the answer right?"
    p3 = rows["line-3"]
    assert p3["instruction"] == "Describe the picture." and p3["response"] == "A small house with a tree."
    assert p3["criteria"] == PERCEPTION["orig_criteria"] and p3["orig_score"] == 4
    assert rows["line-4"]["response"] == "A sunny day." and rows["line-4"]["reference_given"] is False
    prompts = [parts.after_image for parts, _ in engine.history]
    perception_prompt = next(p for p in prompts if "Describe the picture." in p)
    assert "must not be used" not in perception_prompt
    assert "perception level 5" in perception_prompt and "A red-roofed house" in perception_prompt


def test_ids_from_line_numbers_and_malformed_json(data: Path) -> None:
    inp = data / "in.jsonl"
    inp.write_text(
        json.dumps(native(1))
        + "\n\n"
        + '{"id": "r2", "image": broken\n'
        + "[1, 2]\n"
        + json.dumps({k: v for k, v in native(5).items() if k != "id"})
        + "\n",
        encoding="utf-8",
    )
    events: list[BatchEvent] = []
    judge, _ = fake_judge()
    summary = run_batch(
        judge, inp, data / "out.jsonl", default_rubric="vqa-helpfulness", on_event=events.append
    )
    rows = read_results(data / "out.jsonl")
    assert sorted(rows, key=lambda i: rows[i]["line"]) == ["r1", "line-3", "line-4", "line-5"]
    assert rows["line-3"]["status"] == "error" and rows["line-3"]["error"].startswith(
        "line 3: malformed JSON"
    )
    assert "JSON object" in rows["line-4"]["error"] and rows["line-4"]["line"] == 4
    assert rows["line-5"]["status"] == "ok"  # the batch went on after the broken lines
    errors = [e for e in events if e.kind == "error"]
    assert [e.line for e in errors] == [3, 4] and "line 3" in (errors[0].message or "")
    assert [e.kind for e in events][0] == "started" and events[-1].kind == "finished"
    assert events[-1].summary == summary and summary.malformed == 2 and summary.errors == 2


def test_bad_rows_become_error_rows(data: Path) -> None:
    inp = write_jsonl(
        data / "in.jsonl",
        [
            native(1, image="missing.png"),
            native(2, image="corrupt.png"),
            {"id": "r3", "image": "a.png", "instruction": "Q?"},
            native(4, rubric="no-such-rubric"),
            native(5, response="word " * 3000),
            native(6, rubric={"criteria": "only a criterion"}),
            native(7, image=7),
            native(8),
        ],
    )
    judge, _ = fake_judge(n_ctx=2600)
    summary = run_batch(judge, inp, data / "out.jsonl", default_rubric="vqa-helpfulness")
    rows = read_results(data / "out.jsonl")
    assert summary.errors == 7 and summary.ok == 1 and rows["r8"]["status"] == "ok"
    assert "missing.png" in rows["r1"]["error"] and "not found" in rows["r1"]["error"] and rows["r1"]["hint"]
    assert "corrupt.png" in rows["r2"]["error"]
    assert rows["r3"]["error"] == "line 3: missing field 'response' or 'orig_response' or 'original_response'"
    assert "no-such-rubric" in rows["r4"]["error"]
    assert "context" in rows["r5"]["error"] and "response" in rows["r5"]["error"]
    assert "score1" in rows["r6"]["error"]
    assert "'image' must be a string" in rows["r7"]["error"]
    for row in rows.values():
        if row["status"] == "error":
            assert row["score"] is None and row["score_probs"] is None and "\n" not in row["error"]


def test_rows_without_rubric_and_unknown_default(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [native(1)])
    judge, _ = fake_judge()
    run_batch(judge, inp, data / "out.jsonl")
    row = read_results(data / "out.jsonl")["r1"]
    # the hint is in library words (issue #9 rule 6): it names the default rubric, not the --rubric flag
    assert row["status"] == "error" and "no rubric" in row["error"] and "default rubric" in row["hint"]
    with pytest.raises(RubricError):
        run_batch(judge, inp, data / "out2.jsonl", default_rubric="no-such-rubric")
    with pytest.raises(InputError, match="not found"):
        run_batch(judge, data / "nope.jsonl", data / "out3.jsonl")
    with pytest.raises(InputError, match="input file"):
        run_batch(judge, inp, inp)


def test_resume_skips_done_rows_and_rejudges_changed_inputs(data: Path) -> None:
    rows = [native(1), native(2), native(3, image="b.png"), native(4, image="corrupt.png")]
    inp = write_jsonl(data / "in.jsonl", rows)
    out = data / "out.jsonl"
    judge, engine = fake_judge()
    first = run_batch(
        judge, inp, out, default_rubric="vqa-helpfulness", params=GenerationParams(temperature=0)
    )
    assert first.judged == 4 and len(engine.history) == 3
    before = out.read_bytes()

    again = run_batch(
        judge, inp, out, default_rubric="vqa-helpfulness", params=GenerationParams(temperature=0)
    )
    assert (again.skipped, again.judged) == (4, 0) and len(engine.history) == 3 and out.read_bytes() == before

    rows[1] = native(2, response="a different answer")
    write_jsonl(inp, rows)
    synthetic_image(90, seed=7).save(data / "b.png")  # same name, new bytes
    changed = run_batch(
        judge, inp, out, default_rubric="vqa-helpfulness", params=GenerationParams(temperature=0)
    )
    assert (changed.skipped, changed.judged) == (2, 2) and len(engine.history) == 5
    ids = [row["id"] for row in lines_of(out)]
    assert ids.count("r2") == 2 and ids.count("r3") == 2 and ids.count("r1") == 1
    assert read_results(out)["r2"]["response"] == "a different answer"  # the last row wins

    settings = run_batch(
        judge, inp, out, default_rubric="vqa-helpfulness", params=GenerationParams(temperature=0.5)
    )
    assert settings.judged == 4  # new settings: every row is judged again


def test_retry_errors(data: Path) -> None:
    inp = write_jsonl(
        data / "in.jsonl", [native(1), native(2, image="corrupt.png"), native(3, image="gone.png")]
    )
    out = data / "out.jsonl"
    judge, _ = fake_judge()
    assert run_batch(judge, inp, out, default_rubric="vqa-helpfulness").errors == 2
    assert run_batch(judge, inp, out, default_rubric="vqa-helpfulness").judged == 0
    retried = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", retry_errors=True)
    assert (retried.judged, retried.errors, retried.skipped) == (2, 2, 1)
    synthetic_image(64, seed=3).save(data / "gone.png")  # the missing image appears: its key changes
    fixed = run_batch(judge, inp, out, default_rubric="vqa-helpfulness")
    assert (fixed.judged, fixed.ok) == (1, 1) and read_results(out)["r3"]["status"] == "ok"


def test_truncated_last_line_is_repaired(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [native(i) for i in range(1, 5)])
    out = data / "out.jsonl"
    judge, _ = fake_judge()
    run_batch(judge, inp, out, default_rubric="vqa-helpfulness", limit=3)
    complete = out.read_bytes()
    last_start = complete.rstrip(b"\n").rfind(b"\n") + 1
    out.write_bytes(complete[: last_start + 40])  # a crash in the middle of writing row r3
    events: list[BatchEvent] = []
    summary = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", on_event=events.append)
    assert summary.repaired == 40 and events[0].kind == "repaired" and "40 bytes" in (events[0].message or "")
    assert (summary.skipped, summary.judged) == (2, 2)
    ids = [row["id"] for row in lines_of(out)]  # every line parses: the partial one is gone
    assert sorted(ids) == ["r1", "r2", "r3", "r4"]


def test_repair_output_edge_cases(work_dir: Path) -> None:
    path = work_dir / "x.jsonl"
    assert repair_output(path) == 0
    path.write_bytes(b"")
    assert repair_output(path) == 0
    path.write_bytes(b'{"id": "a"}\n')
    assert repair_output(path) == 0 and path.read_bytes() == b'{"id": "a"}\n'
    path.write_bytes(b'{"id": "partial')
    assert repair_output(path) == 15 and path.read_bytes() == b""


def test_read_results_last_wins_and_ignores_garbage(work_dir: Path) -> None:
    path = work_dir / "out.jsonl"
    path.write_text(
        '{"id": "a", "score": 1}\nnot json\n[1]\n{"no_id": 1}\n{"id": "a", "score": 5}\n{"id": "b"'
    )
    assert read_results(path) == {"a": {"id": "a", "score": 5}}
    assert read_results(work_dir / "missing.jsonl") == {}


def test_rows_sharing_an_image_run_together(data: Path) -> None:
    rows = [
        native(1, image="a.png"),
        native(2, image="b.png"),
        native(3, image="a.png", instruction="Another question?"),
        native(4, image="b.png"),
        native(5, image="a.png"),
    ]
    inp = write_jsonl(data / "in.jsonl", rows)
    judge, engine = fake_judge()
    params = GenerationParams(temperature=0)
    run_batch(judge, inp, data / "out.jsonl", default_rubric="vqa-helpfulness", params=params)
    order = [row["id"] for row in lines_of(data / "out.jsonl")]
    assert order == ["r1", "r5", "r3", "r2", "r4"]  # image a (same instruction first), then image b
    shas = [parts.pixels_sha256 for parts, _ in engine.history]
    assert shas[0] == shas[1] == shas[2] != shas[3] == shas[4]
    results = read_results(data / "out.jsonl")
    for row in rows:  # the order does not change any verdict
        alone = judged_alone(data, row, params)
        assert results[row["id"]]["score"] == alone.score


def test_limit_and_should_stop(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [native(i) for i in range(1, 7)])
    out = data / "out.jsonl"
    judge, _ = fake_judge()
    limited = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", limit=2)
    assert (limited.total, limited.judged) == (2, 2) and list(read_results(out)) == ["r1", "r2"]
    calls = iter([False, False, True])
    stopped = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", should_stop=lambda: next(calls))
    assert stopped.stopped and (stopped.skipped, stopped.judged, stopped.remaining) == (2, 2, 2)
    rest = run_batch(judge, inp, out, default_rubric="vqa-helpfulness")
    assert (rest.skipped, rest.judged, rest.stopped) == (4, 2, False)
    ids = [row["id"] for row in lines_of(out)]
    assert sorted(ids) == [f"r{i}" for i in range(1, 7)]  # no duplicate, none lost


def test_duplicate_ids_and_samples(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [native(1), native(1, response="again"), native(2)])
    judge, engine = fake_judge()
    summary = run_batch(judge, inp, data / "out.jsonl", default_rubric="vqa-helpfulness", samples=3)
    rows = read_results(data / "out.jsonl")
    assert rows["r1"]["response"] == "answer 1" and "duplicate id 'r1'" in rows["r1@line-2"]["error"]
    assert summary.ok == 2 and len(engine.history) == 6
    assert len(rows["r2"]["samples"]) == 3 and rows["r2"]["settings"]["samples"] == 3
    assert 0 < rows["r2"]["agreement"] <= 1


def test_resume_key_covers_repeat_penalty_and_gold_scores(data: Path) -> None:
    inp = write_jsonl(data / "in.jsonl", [native(1, orig_score=2), native(2, orig_score=5)])
    out = data / "out.jsonl"
    judge, _ = fake_judge()
    params = GenerationParams(temperature=0)
    assert run_batch(judge, inp, out, default_rubric="vqa-helpfulness", params=params).judged == 2
    assert run_batch(judge, inp, out, default_rubric="vqa-helpfulness", params=params).judged == 0
    penalised = GenerationParams(temperature=0, repeat_penalty=1.3)
    again = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", params=penalised)
    assert again.judged == 2 and read_results(out)["r1"]["settings"]["repeat_penalty"] == 1.3

    write_jsonl(inp, [native(1, orig_score=3), native(2, orig_score=5)])  # a corrected gold score
    fixed = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", params=penalised)
    assert (fixed.skipped, fixed.judged) == (1, 1) and read_results(out)["r1"]["orig_score"] == 3


def test_line_separators_inside_json_strings_stay_in_their_row(data: Path) -> None:
    rows = [native(1, response="first\u2028second\u2029third\x85end"), native(2)]
    inp = data / "in.jsonl"
    inp.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n", encoding="utf-8")
    summary = run_batch(fake_judge()[0], inp, data / "out.jsonl", default_rubric="vqa-helpfulness")
    assert (summary.total, summary.ok, summary.errors) == (2, 2, 0)
    results = read_results(data / "out.jsonl")
    assert results["r1"]["response"] == "first\u2028second\u2029third\x85end" and results["r2"]["line"] == 2


class ParallelFake(FakeEngine):
    """A fake that says it decodes up to three sequences together and records each call's size."""

    max_parallel = 3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[int] = []

    def generate_many(self, requests):  # type: ignore[no-untyped-def]
        self.calls.append(len(requests))
        return super().generate_many(requests)


def test_rows_on_one_image_are_judged_in_groups(data: Path) -> None:
    rows = [
        native(1, image="a.png"),
        native(2, image="a.png", response="word " * 900),  # too long for the context: only this row fails
        native(3, image="a.png"),
        native(4, image="a.png"),
        native(5, image="missing.png"),
        native(6, image="b.png"),
        native(7, image="a.png"),
    ]
    inp = write_jsonl(data / "in.jsonl", rows)
    engine = ParallelFake(n_ctx=1200)
    params = GenerationParams(temperature=0, max_tokens=64)
    summary = run_batch(
        Judge(engine), inp, data / "out.jsonl", default_rubric="vqa-helpfulness", params=params
    )
    assert (summary.ok, summary.errors) == (5, 2)
    # a.png: rows 1-3 together (row 2 overflows before anything runs, so 1 and 3 go again), then 4 and 7;
    # b.png's single row goes through plain generate
    assert engine.calls == [3, 2, 2]
    results = read_results(data / "out.jsonl")
    assert results["r2"]["status"] == "error" and "response" in results["r2"]["error"]
    assert results["r5"]["status"] == "error" and "missing.png" in results["r5"]["error"]
    for row in rows:
        if results[row["id"]]["status"] != "ok":
            continue
        alone = judged_alone(data, row, params, n_ctx=1200)
        assert results[row["id"]]["score"] == alone.score
        assert results[row["id"]]["raw_output"] == alone.raw_output


@pytest.mark.parametrize("samples", [0, 65, True])
def test_samples_are_checked_by_the_settings_record(data: Path, samples: Any) -> None:
    """Review B3: the batch's samples bound and words are the setting's own (1..64, its hint), checked
    before anything is read or written."""
    from edgejudge import settings

    with pytest.raises(InputError) as expected:
        settings.check("samples", samples)
    inp = write_jsonl(data / "in.jsonl", [native(1)])
    with pytest.raises(InputError) as err:
        run_batch(fake_judge()[0], inp, data / "out.jsonl", default_rubric="vqa-helpfulness", samples=samples)
    assert str(err.value) == str(expected.value) and err.value.hint == expected.value.hint
    assert not (data / "out.jsonl").exists()
