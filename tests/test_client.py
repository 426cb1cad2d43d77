"""``edgejudge.Client`` against a real ``edgejudge serve`` subprocess on the tiny real judge.

The client's verdicts equal the in-process ``Judge``'s at temperature 0 (score, feedback, raw text, score
distribution within 1e-6) for every image form and for one, several and streamed judgments; server errors
come back as the library's own classes with the server's (the CLI's) message; a full queue is retried as
``Retry-After`` says; an API key is sent from the argument or ``EDGEJUDGE_SERVE_API_KEY``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from edgejudge import (
    Client,
    ContextOverflowError,
    EdgeJudgeError,
    InputError,
    InvalidImageError,
    Judge,
    RubricError,
    Verdict,
)
from edgejudge.engine.base import GenerationParams
from edgejudge.errors import ServerUnavailableError
from edgejudge.judge import Task
from tests.helpers.llama_server import free_port
from tests.helpers.serve import running_serve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
HOUSE = EXAMPLES / "house-1.png"
OTHER = EXAMPLES / "house-3.png"
GREEDY = GenerationParams(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def server(tiny_gguf: tuple[Path, Path]) -> Iterator[str]:
    with running_serve(*tiny_gguf) as handle:
        yield handle.url


@pytest.fixture(scope="module")
def local(tiny_gguf: tuple[Path, Path]) -> Iterator[Judge]:
    with Judge.from_files(tiny_gguf[0], tiny_gguf[1]) as judge:
        yield judge


@pytest.fixture
def client(server: str) -> Iterator[Client]:
    with Client(server, timeout=120) as c:
        yield c


def assert_same(remote: Verdict, here: Verdict) -> None:
    assert remote.score == here.score
    assert remote.feedback == here.feedback
    assert remote.raw_output == here.raw_output
    assert remote.parse_method == here.parse_method
    assert remote.rubric == here.rubric and remote.model == here.model and remote.reference == here.reference
    assert remote.score_probs is not None and here.score_probs is not None
    assert remote.score_probs.keys() == here.score_probs.keys()
    for k, p in here.score_probs.items():
        assert remote.score_probs[k] == pytest.approx(p, abs=1e-6)
    assert remote.expected_score == pytest.approx(here.expected_score, abs=1e-6)
    assert remote.settings == here.settings


def test_judge_equals_the_in_process_judge(client: Client, local: Judge) -> None:
    cases = [
        (HOUSE, "What colour is the roof?", "The roof is red.", "A red roof."),
        (OTHER, "How many trees are there?", "Five palm trees.", None),
    ]
    for image, instruction, response, reference in cases:
        here = local.evaluate(
            image, instruction=instruction, response=response, rubric="vqa-helpfulness",
            reference=reference, params=GREEDY,
        )  # fmt: skip
        remote = client.judge(
            image,
            instruction=instruction,
            response=response,
            reference=reference,
            temperature=0,
            max_tokens=24,
        )
        assert_same(remote, here)
        assert remote.image == here.image == image.name
        # the same call, Judge's signature: switching is one line
        again = client.evaluate(
            image, instruction=instruction, response=response, rubric="vqa-helpfulness",
            reference=reference, params=GREEDY,
        )  # fmt: skip
        assert_same(again, here)


def test_every_image_form_gives_the_same_verdict(client: Client, local: Judge) -> None:
    from PIL import Image

    kwargs = dict(instruction="Describe it.", response="A house.", rubric="visual-grounding", params=GREEDY)
    here = local.evaluate(HOUSE, **kwargs)  # type: ignore[arg-type]
    with Image.open(HOUSE) as opened:
        pil = opened.copy()
    for form in (str(HOUSE), HOUSE.read_bytes(), pil, local.fit(HOUSE)):
        assert_same(client.evaluate(form, **kwargs), here)  # type: ignore[arg-type]


def test_a_rubric_object_or_file_goes_inline(client: Client, local: Judge, tmp_path: Path) -> None:
    path = tmp_path / "roofs.toml"
    path.write_text(
        'criteria = "Does it name the roof colour?"\n'
        + "".join(f'score{k} = "level {k}"\n' for k in range(1, 6)),
        encoding="utf-8",
    )
    here = local.evaluate(HOUSE, instruction="Roof?", response="Red.", rubric=path, params=GREEDY)
    remote = client.evaluate(HOUSE, instruction="Roof?", response="Red.", rubric=path, params=GREEDY)
    assert_same(remote, here)
    assert remote.rubric == "roofs"


def test_judge_many_equals_evaluate_many(client: Client, local: Judge) -> None:
    responses = ["The roof is red.", "It is a blue car.", "A house, a tree and the sun."]
    here = local.evaluate_many(
        HOUSE, instruction="What is shown?", responses=responses, rubric="vqa-helpfulness", params=GREEDY
    )
    remote = client.evaluate_many(
        HOUSE, instruction="What is shown?", responses=responses, rubric="vqa-helpfulness", params=GREEDY
    )
    assert len(remote) == 3
    for r, h in zip(remote, here, strict=True):
        assert_same(r, h)
    # several rubrics: for each response, each rubric, in order
    both = client.judge_many(
        HOUSE, instruction="What is shown?", responses=responses[:2],
        rubrics=["vqa-helpfulness", "visual-grounding"], temperature=0, max_tokens=24,
    )  # fmt: skip
    assert [v.rubric for v in both] == ["vqa-helpfulness", "visual-grounding"] * 2
    # the same four tasks decoded together in process (a batch of 4 sequences: the same numerics)
    tasks = [
        Task(HOUSE, "What is shown?", r, rubric, None, None)
        for r in responses[:2]
        for rubric in ("vqa-helpfulness", "visual-grounding")
    ]
    for r, h in zip(both, local.evaluate_tasks(tasks, params=GREEDY), strict=True):
        assert isinstance(h, Verdict)
        assert_same(r, h)


def test_streamed_feedback_arrives_in_pieces_and_ends_in_the_same_verdict(
    client: Client, local: Judge
) -> None:
    pieces: list[str] = []
    samples: list[tuple[int, int]] = []
    remote = client.evaluate(
        HOUSE, instruction="Roof?", response="Red.", rubric="vqa-helpfulness", params=GREEDY,
        on_text=pieces.append, on_sample=lambda done, total: samples.append((done, total)),
    )  # fmt: skip
    here = local.evaluate(
        HOUSE, instruction="Roof?", response="Red.", rubric="vqa-helpfulness", params=GREEDY
    )
    assert_same(remote, here)
    assert len(pieces) > 1 and "".join(pieces) == here.raw_output
    assert samples == [(1, 1)]


def test_policy_verdict_equals_the_in_process_one(client: Client, local: Judge) -> None:
    policy = "marketplace-listing"
    here = local.evaluate_policy(HOUSE, policy=policy, response="A house for sale, 80 EUR.", params=GREEDY)
    remote = client.evaluate_policy(HOUSE, policy=policy, response="A house for sale, 80 EUR.", params=GREEDY)
    assert remote.decision == here.decision
    assert remote.policy == here.policy
    assert [r.rule_id for r in remote.rules] == [r.rule_id for r in here.rules]
    for r, h in zip(remote.rules, here.rules, strict=True):
        assert r.state == h.state and r.p_pass == pytest.approx(h.p_pass, abs=1e-6)
        assert r.verdict is not None and h.verdict is not None
        assert_same(r.verdict, h.verdict)


def _local_error(local: Judge, image: object, **kwargs: object) -> EdgeJudgeError:
    with pytest.raises(EdgeJudgeError) as caught:
        local.evaluate(image, **{"rubric": "vqa-helpfulness", "params": GREEDY, **kwargs})  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"rubric": "no-such-rubric"}, RubricError),
        ({"image": b"this is not an image"}, InvalidImageError),
        ({"response": "   "}, InputError),
        ({"response": "many words " * 3000}, ContextOverflowError),
    ],
)
def test_server_errors_are_the_library_classes_with_the_servers_message(
    client: Client, local: Judge, change: dict[str, object], kind: type[EdgeJudgeError]
) -> None:
    call: dict[str, object] = {"image": HOUSE, "instruction": "Roof?", "response": "Red.", **change}
    image = call.pop("image")
    with pytest.raises(kind) as caught:
        client.judge(image, **call, temperature=0, max_tokens=24)  # type: ignore[arg-type]
    remote = caught.value
    assert type(remote) is kind
    assert remote.message and "\n" not in str(remote) and remote.hint
    # the same error when the feedback was to be streamed
    with pytest.raises(kind) as streamed:
        client.judge(image, **call, temperature=0, max_tokens=24, on_text=lambda _: None)  # type: ignore[arg-type]
    assert str(streamed.value) == str(remote)
    here = _local_error(local, image, **call)
    assert type(here) is kind
    if kind is not InvalidImageError:  # the same words as in process (an image's label is the server's)
        assert str(remote) == str(here)
    # the server is still fine
    assert client.health() == {"status": "ok"}


def test_judge_many_raises_the_first_error_judge_each_keeps_them(client: Client) -> None:
    with pytest.raises(InputError, match=r"^response 2: the response is empty"):
        client.judge_many(HOUSE, instruction="Roof?", responses=["Red.", " "], temperature=0, max_tokens=24)
    results = client.judge_each(
        HOUSE, instruction="Roof?", responses=["Red.", " "], temperature=0, max_tokens=24
    )
    assert isinstance(results[0], Verdict) and results[0].score is not None
    assert isinstance(results[1], InputError) and "empty" in str(results[1])


def test_settings_are_checked_before_sending(client: Client) -> None:
    with pytest.raises(InputError, match="unknown setting 'temprature'"):
        client.judge(HOUSE, instruction="q", response="r", temprature=0)
    with pytest.raises(InputError, match="temperature"):
        client.judge(HOUSE, instruction="q", response="r", temperature=-1)
    with pytest.raises(InputError, match="samples"):
        client.judge(HOUSE, instruction="q", response="r", samples=0)
    with pytest.raises(InvalidImageError, match="not int"):
        client.judge(3, instruction="q", response="r")  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="nothing-here.png"):
        client.judge(HOUSE.parent / "nothing-here.png", instruction="q", response="r")
    with pytest.raises(InvalidImageError, match="directory"):
        client.judge(HOUSE.parent, instruction="q", response="r")


def test_the_service_routes(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    info = client.model()
    assert info["engine"] == "llama.cpp" and info["name"]
    names = [r["name"] for r in client.rubrics()]
    assert "vqa-helpfulness" in names
    assert "marketplace-listing" in [p["name"] for p in client.policies()]


def test_a_server_that_is_not_there_is_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(url) as c, pytest.raises(ServerUnavailableError) as caught:
        c.judge(HOUSE, instruction="q", response="r")
    assert time.monotonic() - started < 15
    assert url in str(caught.value) and "edgejudge serve" in (caught.value.hint or "")
    with pytest.raises(InputError, match="not an http"):
        Client("ftp://example")


def test_api_key_from_the_argument_or_the_environment(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEJUDGE_SERVE_API_KEY", raising=False)
    with running_serve(*tiny_gguf, api_key="s3cret-key") as handle:
        with Client(handle.url) as anonymous:
            assert anonymous.health() == {"status": "ok"}  # /healthz needs no key
            with pytest.raises(InputError) as caught:
                anonymous.judge(HOUSE, instruction="q", response="r", max_tokens=8)
            assert "API key" in (caught.value.hint or "") or "key" in str(caught.value).lower()
        with Client(handle.url, api_key="wrong") as wrong, pytest.raises(InputError):
            wrong.model()
        with Client(handle.url, api_key="s3cret-key") as keyed:
            assert keyed.judge(HOUSE, instruction="q", response="r", max_tokens=8).score is not None
        monkeypatch.setenv("EDGEJUDGE_SERVE_API_KEY", "s3cret-key")
        with Client(handle.url) as from_env:
            assert from_env.model()["engine"] == "llama.cpp"


def test_a_full_queue_is_retried_as_retry_after_says(tiny_gguf: tuple[Path, Path]) -> None:
    with running_serve(*tiny_gguf, "--max-queue", "1", "--no-coalesce") as handle:

        def burst(retries: int) -> list[object]:
            out: list[object] = [None] * 5
            with Client(handle.url, retries=retries) as c:

                def one(k: int) -> None:
                    try:
                        out[k] = c.judge(
                            OTHER, instruction="q", response=f"answer {k}", max_tokens=96, seed=k
                        )
                    except EdgeJudgeError as err:
                        out[k] = err

                threads = [threading.Thread(target=one, args=(k,)) for k in range(5)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
            return out

        refused = [r for r in burst(0) if isinstance(r, EdgeJudgeError)]
        assert refused, "five requests at once should overflow a queue of one"
        assert all(isinstance(r, ServerUnavailableError) for r in refused)
        retried = burst(8)
        assert all(isinstance(r, Verdict) for r in retried), retried


# -- texts the wire cannot carry, any number of items, tasks (review 12: items 11 and 12) --------------------
def test_lone_surrogates_are_cleaned_as_the_judge_cleans_them(client: Client, local: Judge) -> None:
    call = {
        "instruction": "Roof \ud800?", "response": "bad \udc80 bytes", "rubric": "vqa-helpfulness",
        "reference": "red \udfff", "params": GREEDY,
    }  # fmt: skip
    here = local.evaluate(HOUSE, **call)  # type: ignore[arg-type]
    assert sum("replaced with U+FFFD" in w for w in here.warnings) == 3
    remote = client.evaluate(HOUSE, **call)  # type: ignore[arg-type]
    assert_same(remote, here)
    assert remote.warnings == here.warnings
    streamed = client.evaluate(HOUSE, **call, on_text=lambda _: None)  # type: ignore[arg-type]
    assert_same(streamed, here)
    assert streamed.warnings == here.warnings
    # an inline rubric with a lone surrogate, and the notes beside a prompt-layout note, in Judge's order
    from edgejudge.rubric import load_rubric

    rubric = replace(load_rubric("vqa-helpfulness"), criteria="Is it right \udc81?")
    here_many = local.evaluate_many(
        HOUSE, instruction="Roof?", responses=["USER: red \udc80", "fine"], rubric=rubric, params=GREEDY
    )
    remote_many = client.evaluate_many(
        HOUSE, instruction="Roof?", responses=["USER: red \udc80", "fine"], rubric=rubric, params=GREEDY
    )
    for r, h in zip(remote_many, here_many, strict=True):
        assert_same(r, h)
        assert r.warnings == h.warnings
    assert len(here_many[0].warnings) == 3 and len(here_many[1].warnings) == 1


def test_any_number_of_responses_and_rubrics_in_order(client: Client, local: Judge) -> None:
    assert client.evaluate_many(HOUSE, instruction="q", responses=[], rubric="vqa-helpfulness") == []
    assert client.judge_each(HOUSE, instruction="q", responses=[]) == []
    with pytest.raises(InvalidImageError):  # the inputs are still checked, as Judge checks them
        client.evaluate_many(
            HOUSE.parent / "nothing.png", instruction="q", responses=[], rubric="vqa-helpfulness"
        )
    # 65 responses (over the 64 of one request): the verdicts of the in-process judge, in order; the
    # cleaning note marks the last response's verdict only
    fast = GenerationParams(temperature=0.0, max_tokens=4)
    responses = [f"answer {i}" for i in range(64)] + ["the last \udc80"]
    here = local.evaluate_many(
        HOUSE, instruction="Roof?", responses=responses, rubric="vqa-helpfulness", params=fast
    )
    remote = client.evaluate_many(
        HOUSE, instruction="Roof?", responses=responses, rubric="vqa-helpfulness", params=fast
    )
    assert len(remote) == 65
    assert [bool(v.warnings) for v in remote] == [False] * 64 + [True]
    for r, h in zip(remote, here, strict=True):
        assert r.score == h.score and r.warnings == h.warnings and r.rubric == h.rubric
    # 17 rubrics (over the 16 of one request) x 2 responses: for each response, each rubric
    from edgejudge.rubric import load_rubric

    base = load_rubric("vqa-helpfulness")
    rubrics = [replace(base, name=f"r{k}") for k in range(17)]
    both = client.judge_each(
        HOUSE, instruction="Roof?", responses=["red", "blue \udc80"], rubrics=rubrics, temperature=0,
        max_tokens=4,
    )  # fmt: skip
    assert [v.rubric for v in both if isinstance(v, Verdict)] == [f"r{k}" for k in range(17)] * 2
    assert [bool(v.warnings) for v in both if isinstance(v, Verdict)] == [False] * 17 + [True] * 17


def test_the_split_of_a_batch_keeps_within_the_limits() -> None:
    from edgejudge._client_batch import plan

    def sizes(*args: int) -> list[tuple[int, int]]:
        return [(len(r), len(k)) for r, k in plan(*args)]

    assert sizes(3, 1, 1, 256) == [(3, 1)]
    assert sizes(65, 1, 1, 256) == [(64, 1), (1, 1)]
    assert sizes(2, 17, 1, 256) == [(2, 16), (2, 1)]
    assert sizes(64, 16, 1, 256) == [(16, 16)] * 4  # 256 sequences each
    assert sizes(10, 1, 64, 100) == [(1, 1)] * 10  # 64 samples: one response per request
    assert sizes(2, 1, 64, 32) == [(1, 1)] * 2  # over the limit alone: still sent (the server says so)
    for n, k, s, limit in [(100, 20, 3, 256), (7, 5, 2, 9), (1, 1, 1, 1)]:
        parts = plan(n, k, s, limit)
        items = [(i, j) for r, ks in parts for i in r for j in ks]
        assert sorted(items) == [(i, j) for i in range(n) for j in range(k)]  # each item once
        assert all(
            len(r) <= 64 and len(ks) <= 16 and len(r) * len(ks) * s <= max(limit, s) for r, ks in parts
        )


def test_evaluate_tasks_answers_each_task_as_the_judge_does(client: Client, local: Judge) -> None:
    tasks = [
        Task(HOUSE, "Roof?", "Red.", "vqa-helpfulness"),
        Task(HOUSE, "Roof?", "Blue \udc80.", "vqa-helpfulness"),
        Task(OTHER, "Trees?", "Five.", "vqa-helpfulness", "Five trees."),
        Task(OTHER, "Trees?", "   ", "vqa-helpfulness"),  # an empty response: its own InputError
        Task(b"not an image", "Trees?", "Five.", "vqa-helpfulness"),  # a bad image: its own error
        Task(HOUSE, "Roof?", "Red.", "no-such-rubric"),  # an unknown rubric: its own error
        Task(HOUSE, "Roof?", "Red.", "visual-grounding"),
    ]
    here = local.evaluate_tasks(tasks, params=GREEDY)
    remote = client.evaluate_tasks(tasks, params=GREEDY)
    assert [type(r) for r in remote] == [type(h) for h in here]
    assert [type(r) for r in remote] == [
        Verdict,
        Verdict,
        Verdict,
        InputError,
        InvalidImageError,
        RubricError,
        Verdict,
    ]
    for r, h in zip(remote, here, strict=True):
        if isinstance(h, Verdict):
            assert isinstance(r, Verdict)
            assert r.score == h.score and r.rubric == h.rubric and r.warnings == h.warnings
            assert r.reference == h.reference
        else:
            assert str(r).split(":")[0] == str(h).split(":")[0]
    assert client.evaluate_tasks([]) == []


def test_a_batch_is_split_by_the_servers_max_sequences(tiny_gguf: tuple[Path, Path]) -> None:
    """The server's ``--max-sequences`` (``GET /v1/model``): 9 responses x 2 rubrics x 2 samples = 36
    sequences go in requests of at most 8, each accepted, the answers in order."""
    with running_serve(*tiny_gguf, "--max-sequences", "8") as handle, Client(handle.url, timeout=120) as c:
        assert c.model()["max_sequences"] == 8
        responses = [f"answer {i}" for i in range(8)] + ["the last \udc80"]
        out = c.judge_many(
            HOUSE, instruction="Roof?", responses=responses, rubrics=["vqa-helpfulness", "visual-grounding"],
            samples=2, temperature=0, max_tokens=4,
        )  # fmt: skip
        assert [v.rubric for v in out] == ["vqa-helpfulness", "visual-grounding"] * 9
        assert [bool(v.warnings) for v in out] == [False] * 16 + [True] * 2
        assert all(len(v.samples) == 2 for v in out)
        # the requests the server saw: 36 sequences in requests of at most 8 (2 responses x 2 rubrics x 2)
        metrics = httpx.get(f"{handle.url}/metrics").text
        batch = [line for line in metrics.splitlines() if line.startswith("edgejudge_http_requests_total{")
                 and 'route="/v1/judge/batch"' in line and 'status="200"' in line]  # fmt: skip
        assert batch and float(batch[0].rsplit(" ", 1)[1]) == 5  # ceil(9 / 2) requests
