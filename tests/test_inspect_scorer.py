"""The Inspect AI scorer ``prometheus_vision`` in REAL Inspect evals (``inspect_ai.eval`` with the offline
``mockllm/model``; a solver sets each sample's output itself, so nothing asks the network) on the tiny real
judge, in-process and through a real ``edgejudge serve``: the JSON eval log holds each sample's score (the
judge's, equal to a direct ``Judge.evaluate``), explanation (the feedback) and metadata; samples without an
image or whose judgment fails are scored ``NOANSWER`` with the reason, and the metrics skip them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, ContentImage, ContentText, ModelOutput
from inspect_ai.scorer import NOANSWER, SampleScore, Score
from inspect_ai.solver import Generate, TaskState, solver

from edgejudge import InputError, InvalidImageError, Judge
from edgejudge.engine.base import GenerationParams
from edgejudge.integrations.inspect import agreement, image_source, mean_score, pearson, prometheus_vision
from tests.helpers.llama_server import free_port
from tests.helpers.serve import running_serve

IMAGES = Path(__file__).resolve().parent.parent / "examples" / "images"
GREEDY = GenerationParams(temperature=0.0, max_tokens=24)
SETTINGS = {"temperature": 0.0, "max_tokens": 24}


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _user(*parts: Any) -> ChatMessageUser:
    return ChatMessageUser(content=list(parts))


#: (sample id, input messages, canned output, target, metadata)
SAMPLES: list[tuple[str, list[Any], str, str, dict[str, Any]]] = [
    (
        "path",
        [
            ChatMessageSystem(content="You describe images."),
            _user(
                ContentImage(image=str(IMAGES / "house-1.png")), ContentText(text="What colour is the roof?")
            ),
        ],
        "The roof is red.",
        "A red roof.",
        {"gold_score": 5},
    ),
    (
        "data-url",
        [_user(ContentText(text="How many trees?"), ContentImage(image=_data_url(IMAGES / "house-3.png")))],
        "Five palm trees.",
        "1",  # a target that is only a score: the gold score, no reference
        {},
    ),
    (
        "two-images",
        [_user(ContentImage(image=str(IMAGES / "house-2.png")), ContentImage(image=str(IMAGES / "blank.png")),
               ContentText(text="Describe the first picture."))],
        "A house on a hill.",
        "A house with a red roof beside a tree.",
        {"gold_score": 4},
    ),
    ("no-image", [_user(ContentText(text="Say hello."))], "Hello.", "Hello.", {"gold_score": 5}),
    ("blank-answer", [_user(ContentImage(image=str(IMAGES / "house-1.png")), ContentText(text="Roof?"))],
     "   ", "Red.", {}),
]  # fmt: skip


@solver
def canned():  # type: ignore[no-untyped-def]
    async def solve(state: TaskState, generate: Generate) -> TaskState:
        state.output = ModelOutput.from_content(model="canned", content=state.metadata["answer"])
        return state

    return solve


def _task(**scorer_args: Any) -> Task:
    dataset = [
        Sample(id=sid, input=messages, target=target, metadata={"answer": answer, **meta})
        for sid, messages, answer, target, meta in SAMPLES
    ]
    return Task(dataset=dataset, solver=canned(), scorer=prometheus_vision(**scorer_args, **SETTINGS))


def _run(task: Task, log_dir: Path) -> dict[str, Any]:
    logs = eval(task, model="mockllm/model", log_format="json", log_dir=str(log_dir), display="none")
    assert len(logs) == 1 and logs[0].status == "success", logs[0].error
    files = sorted(log_dir.glob("*.json"))
    assert len(files) == 1
    return dict(json.loads(files[0].read_text(encoding="utf-8")))


def _scores(log: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s["scores"]["prometheus_vision"] for s in log["samples"]}


@pytest.fixture(scope="module")
def local(tiny_gguf: tuple[Path, Path]) -> Iterator[Judge]:
    with Judge.from_files(tiny_gguf[0], tiny_gguf[1]) as judge:
        yield judge


def _expected(local: Judge) -> dict[str, Any]:
    """What a direct ``Judge.evaluate`` says about the judged samples."""
    return {
        "path": local.evaluate(
            IMAGES / "house-1.png", instruction="What colour is the roof?", response="The roof is red.",
            rubric="vqa-helpfulness", reference="A red roof.", params=GREEDY,
        ),
        "data-url": local.evaluate(
            (IMAGES / "house-3.png").read_bytes(), instruction="How many trees?", response="Five palm trees.",
            rubric="vqa-helpfulness", params=GREEDY,
        ),
        "two-images": local.evaluate(
            IMAGES / "house-2.png", instruction="Describe the first picture.", response="A house on a hill.",
            rubric="vqa-helpfulness", reference="A house with a red roof beside a tree.", params=GREEDY,
        ),
    }  # fmt: skip


def _check_log(log: dict[str, Any], local: Judge) -> None:
    scores = _scores(log)
    expected = _expected(local)
    for sid, verdict in expected.items():
        score = scores[sid]
        assert score["value"] == verdict.score
        assert score["explanation"] == verdict.feedback
        assert score["answer"] == next(a for s, _, a, _, _ in SAMPLES if s == sid)
        meta = score["metadata"]
        assert meta["expected_score"] == pytest.approx(verdict.expected_score, abs=1e-6)
        assert verdict.score_probs is not None
        for k, p in verdict.score_probs.items():
            assert meta["score_probs"][str(k)] == pytest.approx(p, abs=1e-6)
        assert meta["settings"]["temperature"] == 0.0 and meta["settings"]["max_tokens"] == 24
        assert meta["rubric"] == "vqa-helpfulness"
    assert scores["path"]["metadata"]["gold_score"] == 5
    assert scores["data-url"]["metadata"]["gold_score"] == 1  # the target "1"
    assert any("2 images" in w and "first" in w for w in scores["two-images"]["metadata"]["warnings"])
    # not judged: NOANSWER with a reason and an explanation, never a crash
    assert math.isnan(scores["no-image"]["value"]) and scores["no-image"]["reason"] == "no_image"
    assert "no image" in scores["no-image"]["explanation"]
    assert math.isnan(scores["blank-answer"]["value"]) and scores["blank-answer"]["reason"] == "grader_failed"
    assert "response is empty" in scores["blank-answer"]["explanation"]
    # the metrics: over the three judged samples only
    assert log["results"]["scores"][0]["unscored_samples"] == 2
    metrics = log["results"]["scores"][0]["metrics"]
    judged = [expected[s].score for s in ("path", "data-url", "two-images")]
    assert metrics["mean_score"]["value"] == pytest.approx(sum(judged) / 3)  # type: ignore[arg-type]
    golds = [5, 1, 4]
    agree = sum(j == g for j, g in zip(judged, golds, strict=True)) / 3
    assert metrics["agreement"]["value"] == pytest.approx(agree)
    assert "pearson" in metrics


def test_an_inspect_eval_scored_in_process(
    tiny_gguf: tuple[Path, Path], local: Judge, tmp_path: Path
) -> None:
    log = _run(_task(model=str(tiny_gguf[0]), mmproj=str(tiny_gguf[1])), tmp_path / "logs")
    _check_log(log, local)


def test_an_inspect_eval_scored_through_serve(
    tiny_gguf: tuple[Path, Path], local: Judge, tmp_path: Path
) -> None:
    with running_serve(*tiny_gguf, api_key="inspect-key") as handle:
        log = _run(_task(server=handle.url, api_key="inspect-key"), tmp_path / "logs")
    _check_log(log, local)
    # Inspect writes a scorer's arguments into the log: all but the key
    (scorer_entry,) = log["eval"]["scorers"]
    assert scorer_entry["name"] == "prometheus_vision" and scorer_entry["options"]["server"] == handle.url
    assert "inspect-key" not in json.dumps(log)


def test_a_judge_that_cannot_be_reached_scores_every_sample_not_judged(tmp_path: Path) -> None:
    log = _run(_task(server=f"http://127.0.0.1:{free_port()}"), tmp_path / "logs")
    scores = _scores(log)
    for sid in ("path", "data-url", "two-images", "blank-answer"):
        assert math.isnan(scores[sid]["value"]) and scores[sid]["reason"] == "grader_failed"
        assert "cannot reach edgejudge serve" in scores[sid]["explanation"]
    assert math.isnan(log["results"]["scores"][0]["metrics"]["mean_score"]["value"])


def test_the_scorer_refuses_bad_arguments_when_made() -> None:
    with pytest.raises(InputError, match="model or server"):
        prometheus_vision(model="x.gguf", server="http://127.0.0.1:1")
    with pytest.raises(InputError, match="unknown setting 'temprature'"):
        prometheus_vision(temprature=0)
    with pytest.raises(InputError, match="temperature"):
        prometheus_vision(temperature=-1.0)
    with pytest.raises(InputError, match="does not apply to a server"):
        prometheus_vision(server="http://127.0.0.1:1", n_ctx=2048)


def test_image_sources() -> None:
    """Inspect hands the scorer data URLs (it turns a sample's file paths and web images into data URLs
    before the solver runs); a path or a web address that reaches the scorer anyway is taken or refused."""
    png = (IMAGES / "blank.png").read_bytes()
    assert image_source(_data_url(IMAGES / "blank.png")) == png
    assert image_source(" file:///tmp/x.png ") == "/tmp/x.png"
    with pytest.raises(InvalidImageError, match="not fetched"):
        image_source("https://example.invalid/cat.png")
    with pytest.raises(InvalidImageError, match="base64"):
        image_source("data:image/png;base64,@@@")


def _sample_score(value: Any, gold: int | None) -> SampleScore:
    return SampleScore(score=Score(value=value, metadata={"gold_score": gold}), sample_id="s")


def test_the_metrics_skip_samples_not_judged_and_define_agreement() -> None:
    scores = [
        _sample_score(5, 5),
        _sample_score(3, 4),
        _sample_score(1, 1),
        _sample_score(4, None),  # no gold: counted in the mean only
        _sample_score(math.nan, 5),  # not judged (unscored): skipped everywhere
        _sample_score(NOANSWER, 5),  # another scorer's "no answer": not a judge score, skipped too
    ]
    assert mean_score()(scores) == pytest.approx((5 + 3 + 1 + 4) / 4)
    assert agreement()(scores) == pytest.approx(2 / 3)
    xs, ys = [5.0, 3.0, 1.0], [5.0, 4.0, 1.0]
    mx, my = sum(xs) / 3, sum(ys) / 3
    r = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(
        sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)
    )
    assert pearson()(scores) == pytest.approx(r)
    assert math.isnan(mean_score()([_sample_score(NOANSWER, None)]))
    assert math.isnan(pearson()([_sample_score(3, 3), _sample_score(3, 4)]))  # a constant side


def test_an_output_with_lone_surrogates_is_judged_through_serve_as_in_process(
    tiny_gguf: tuple[Path, Path], local: Judge, tmp_path: Path
) -> None:
    """Review 12 item 11: a model output no UTF-8 body can carry is cleaned as ``Judge`` cleans it, not a
    crashed sample; the score and warning are the in-process judge's."""
    answer = "The roof is red \udc80."
    dataset = [
        Sample(
            id="surrogate",
            input=[_user(ContentImage(image=str(IMAGES / "house-1.png")), ContentText(text="Roof?"))],
            target="Red.",
            metadata={"answer": answer},
        )
    ]
    with running_serve(*tiny_gguf) as handle:
        task = Task(dataset=dataset, solver=canned(), scorer=prometheus_vision(server=handle.url, **SETTINGS))
        log = _run(task, tmp_path / "logs")
    score = _scores(log)["surrogate"]
    here = local.evaluate(
        IMAGES / "house-1.png", instruction="Roof?", response=answer, rubric="vqa-helpfulness",
        reference="Red.", params=GREEDY,
    )  # fmt: skip
    assert score["value"] == here.score and score["explanation"] == here.feedback
    assert score["metadata"]["warnings"] == list(here.warnings)
    assert any("replaced with U+FFFD" in w for w in score["metadata"]["warnings"])
