"""Judge plumbing over the scripted FakeEngine: sampling policy, aggregation, overflow naming, records."""

from __future__ import annotations

import io

import pytest

from edgejudge.engine.base import Engine, GenerationParams
from edgejudge.engine.fake import FakeEngine, peaked_distribution
from edgejudge.errors import ContextOverflowError, EngineError, InputError, InvalidImageError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge, Task, aggregate_samples, expected_score
from edgejudge.rubric import load_rubric
from edgejudge.verdict import Sample, Verdict


@pytest.fixture(scope="module")
def png() -> bytes:
    buf = io.BytesIO()
    synthetic_image(96, seed=3).save(buf, "PNG")
    return buf.getvalue()


def _judge(**kw: object) -> tuple[Judge, FakeEngine]:
    engine = FakeEngine(image_size=56, image_tokens=16, **kw)  # type: ignore[arg-type]
    return Judge(engine), engine


def test_fake_is_an_engine_and_records_history(png: bytes) -> None:
    judge, engine = _judge()
    assert isinstance(engine, Engine)
    verdict = judge.evaluate(png, instruction="What is shown?", response="A cat.", rubric="vqa-helpfulness")
    parts, params = engine.history[0]
    assert parts.image_width == parts.image_height == 56
    assert len(parts.image_rgb) == 56 * 56 * 3
    assert parts.before_image.endswith(" USER: ") and parts.after_image.endswith(" ASSISTANT:")
    assert "A cat." in parts.after_image
    assert params.seed is not None
    assert verdict.score is not None and 1 <= verdict.score <= 5
    assert verdict.raw_output.endswith(f"[RESULT] {verdict.score}")
    assert sum(verdict.score_probs.values()) == pytest.approx(1.0)  # type: ignore[union-attr]
    assert max(verdict.score_probs, key=verdict.score_probs.get) == verdict.score  # type: ignore[union-attr,arg-type]
    assert verdict.reference is False and verdict.rubric == "vqa-helpfulness" and verdict.model == "fake"


def test_fake_default_output_is_deterministic(png: bytes) -> None:
    greedy = GenerationParams(temperature=0)
    kw = {
        "instruction": "i",
        "response": "r",
        "rubric": "vqa-helpfulness",
        "reference": "ref",
        "params": greedy,
    }
    a = _judge()[0].evaluate(png, **kw)  # type: ignore[arg-type]
    b = _judge()[0].evaluate(png, **kw)  # type: ignore[arg-type]
    assert a.raw_output == b.raw_output and a.score_probs == b.score_probs
    assert a.reference is True


def test_enqueued_outputs_streamed_word_by_word(png: bytes) -> None:
    judge, engine = _judge()
    engine.enqueue("Good answer.\nSo the overall score is 4.\n[RESULT] 4")
    pieces: list[str] = []
    verdict = judge.evaluate(png, instruction="i", response="r", rubric="ocr-accuracy", on_text=pieces.append)
    assert "".join(pieces) == verdict.raw_output
    assert len(pieces) > 5
    assert verdict.score == 4 and verdict.parse_method
    assert verdict.expected_score == pytest.approx(expected_score(peaked_distribution(4)))


def test_samples_majority_agreement_and_seeds(png: bytes) -> None:
    judge, engine = _judge()
    for score in (3, 4, 3):
        engine.enqueue(
            f"Feedback text.\n[RESULT] {score}", {k: 1.0 if k == score else 0.0 for k in range(1, 6)}
        )
    verdict = judge.evaluate(
        png,
        instruction="i",
        response="r",
        rubric="vqa-helpfulness",
        samples=3,
        params=GenerationParams(seed=7),
    )
    assert [s.seed for s in verdict.samples] == [7, 8, 9]
    assert [p.seed for _, p in engine.history] == [7, 8, 9]
    assert verdict.score == 3 and verdict.agreement == pytest.approx(2 / 3)
    assert verdict.expected_score == pytest.approx(10 / 3)
    assert verdict.score_probs == pytest.approx({1: 0, 2: 0, 3: 2 / 3, 4: 1 / 3, 5: 0})


def test_majority_tie_goes_to_mean_expected_score() -> None:
    def sample(score: int, expected: float) -> Sample:
        return Sample(score=score, feedback="", raw_output="", parse_method="result", expected_score=expected)

    agg = aggregate_samples([sample(2, 2.9), sample(4, 3.6), sample(2, 2.8), sample(4, 3.9)])
    assert agg["score"] == 4  # 2 and 4 tie; the mean expected score 3.3 is closer to 4
    agg = aggregate_samples([sample(2, 2.1), sample(4, 3.0)])
    assert agg["score"] == 2


def test_unparseable_output_keeps_raw_text(png: bytes) -> None:
    judge, engine = _judge()
    engine.enqueue("no verdict here at all")
    verdict = judge.evaluate(
        png,
        instruction="i",
        response="r",
        rubric="vqa-helpfulness",
        params=GenerationParams(constrained=False),
    )
    assert verdict.score is None and verdict.score_probs is None and verdict.expected_score is None
    assert verdict.raw_output == "no verdict here at all"
    assert verdict.samples[0].parse_error


def test_forced_tail_when_max_tokens_runs_out(png: bytes) -> None:
    judge, engine = _judge()
    engine.enqueue("word " * 50 + "[RESULT] 2")
    verdict = judge.evaluate(
        png, instruction="i", response="r", rubric="vqa-helpfulness", params=GenerationParams(max_tokens=8)
    )
    assert verdict.samples[0].forced_tail is True
    assert verdict.score == 2 and verdict.raw_output.endswith("[RESULT] 2")


def test_context_overflow_names_longest_field(png: bytes) -> None:
    judge, _ = _judge(n_ctx=900)
    with pytest.raises(ContextOverflowError) as info:
        judge.evaluate(
            png,
            instruction="short",
            response="short",
            reference="a very long reference answer " * 200,
            rubric="vqa-helpfulness",
            params=GenerationParams(max_tokens=100),
        )
    assert info.value.field == "reference" and info.value.over_by > 0
    assert "reference" in str(info.value) and info.value.hint and "reference" in info.value.hint


def test_long_prompt_warns_about_training_length(png: bytes) -> None:
    judge, _ = _judge(n_ctx=8192)
    verdict = judge.evaluate(png, instruction="i", response="word " * 2500, rubric="vqa-helpfulness")
    assert any("2048" in w for w in verdict.warnings)


def test_bad_inputs(png: bytes) -> None:
    judge, _ = _judge()
    with pytest.raises(InvalidImageError):
        judge.evaluate(b"not an image", instruction="i", response="r", rubric="vqa-helpfulness")
    with pytest.raises(InputError):
        judge.evaluate(png, instruction="i", response="r", rubric="vqa-helpfulness", samples=0)
    with pytest.raises(InputError):
        Judge(FakeEngine(), image_fit="stretch")


def test_rubric_object_and_prompt_text(png: bytes) -> None:
    judge, engine = _judge()
    rubric = load_rubric("ocr-accuracy")
    text = judge.prompt_text(instruction="Read it.", response="STOP", rubric=rubric)
    assert text.count("<image>") == 1 and text.endswith("###Feedback: ASSISTANT:")
    judge.evaluate(png, instruction="Read it.", response="STOP", rubric=rubric)
    parts, _ = engine.history[0]
    assert parts.before_image + "<image>" + parts.after_image == text


def test_fit_pad_and_prefitted(png: bytes) -> None:
    judge = Judge(FakeEngine(image_size=56), image_fit="pad")
    fitted = judge.fit(png, name="x.png")
    assert (fitted.width, fitted.height, fitted.mode, fitted.name) == (56, 56, "pad", "x.png")
    assert judge.fit(fitted) is fitted
    renamed = judge.fit(fitted, name="y.png")
    assert renamed.name == "y.png" and renamed.pixels_sha256 == fitted.pixels_sha256


def test_verdict_json_round_trip(png: bytes) -> None:
    judge, _ = _judge()
    verdict = judge.evaluate(png, instruction="i", response="r", rubric="vqa-helpfulness", samples=2)
    again = Verdict.from_json(verdict.to_json())
    assert again == verdict
    assert set(verdict.to_dict()["score_probs"]) == {"1", "2", "3", "4", "5"}


def test_context_manager_closes_engine() -> None:
    engine = FakeEngine()
    with Judge(engine):
        pass
    assert engine.closed


@pytest.mark.parametrize("probs", [{1: -0.5, 3: 1.0}, {2: float("nan"), 3: 1.0}, {4: float("inf")}, {3: 0.0}])
def test_fake_rejects_bad_score_weights(probs: dict[int, float]) -> None:
    with pytest.raises(InputError, match="non-negative weights"):
        FakeEngine().enqueue("x [RESULT] 3", probs)


def test_closed_fake_engine_raises_engine_error(png: bytes) -> None:
    engine = FakeEngine()
    judge = Judge(engine)
    judge.close()
    with pytest.raises(EngineError, match="the engine is closed"):
        judge.evaluate(png, instruction="i", response="r", rubric="vqa-helpfulness")


def test_evaluate_many_keeps_order_and_shares_settings(png: bytes) -> None:
    judge, engine = _judge()
    responses = ["A red square.", "A cat.", "Shapes and colours."]
    verdicts = judge.evaluate_many(
        png,
        instruction="Describe it.",
        responses=responses,
        rubric="vqa-helpfulness",
        params=GenerationParams(seed=3),
    )
    assert len(verdicts) == 3 and len(engine.history) == 3
    for response, verdict, (parts, params) in zip(responses, verdicts, engine.history, strict=True):
        assert response in parts.after_image and params.seed == 3
        alone = Judge(FakeEngine(image_size=56, image_tokens=16)).evaluate(
            png,
            instruction="Describe it.",
            response=response,
            rubric="vqa-helpfulness",
            params=GenerationParams(seed=3),
        )
        assert verdict.score == alone.score and verdict.raw_output == alone.raw_output
    with pytest.raises(InputError, match="list of texts"):
        judge.evaluate_many(png, instruction="i", responses="one text", rubric="vqa-helpfulness")


def test_evaluate_tasks_keeps_going_past_bad_tasks(png: bytes) -> None:
    judge, engine = _judge(n_ctx=600)
    tasks = [
        Task(png, "Describe it.", "A red square.", "vqa-helpfulness"),
        Task(b"not an image", "Describe it.", "A cat.", "vqa-helpfulness"),
        Task(png, "Describe it.", "word " * 700, "vqa-helpfulness"),  # too long for 600 tokens
        Task(png, "Describe it.", "Shapes.", "no-such-rubric"),
        Task(png, "Describe it.", "Shapes.", "caption-quality"),
    ]
    results = judge.evaluate_tasks(tasks, samples=2, params=GenerationParams(seed=1, max_tokens=32))
    assert [type(r).__name__ for r in results] == [
        "Verdict",
        "InvalidImageError",
        "ContextOverflowError",
        "RubricError",
        "Verdict",
    ]
    overflow = results[2]
    assert isinstance(overflow, ContextOverflowError) and overflow.field == "response"
    assert all(len(r.samples) == 2 for r in results if isinstance(r, Verdict))
    assert len(engine.history) == 4  # two tasks x two samples; nothing generated for the bad ones


def test_evaluate_many_names_the_response_that_failed(png: bytes) -> None:
    judge, _ = _judge(n_ctx=600)
    with pytest.raises(ContextOverflowError, match="^response 2: ") as info:
        judge.evaluate_many(
            png,
            instruction="i",
            responses=["ok", "word " * 700],
            rubric="vqa-helpfulness",
            params=GenerationParams(max_tokens=32),
        )
    assert info.value.field == "response"
