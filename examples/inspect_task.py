"""An Inspect AI task over a few images, scored by edgejudge's Prometheus-Vision scorer.

Run it offline from the repository root (the task file as a relative path):

    inspect eval examples/inspect_task.py --model mockllm/model --log-format json \
        -T model=prometheus-vision-7b                 # in-process: a registered name or a text .gguf path
    inspect eval examples/inspect_task.py --model mockllm/model -T server=http://127.0.0.1:8765

The solver answers with canned responses (each sample's ``metadata["answer"]``), so no model and no
network is needed: ``--model mockllm/model`` only satisfies Inspect (its ``generate()`` is never called).
Each sample's input is a user message holding an image (a file path, or a data URL for the last one) and
a question; the target is the reference answer; ``gold_score`` in the metadata is what a person scored
the answer, which the scorer's ``agreement`` and ``pearson`` metrics compare the judge with.
Task options (``-T``): ``model``, ``server``, ``rubric``, ``temperature``, ``max_tokens``.
"""

from __future__ import annotations

import base64
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageUser, ContentImage, ContentText, ModelOutput
from inspect_ai.solver import Generate, TaskState, solver

from edgejudge.integrations.inspect import prometheus_vision

IMAGES = Path(__file__).resolve().parent / "images"

#: (image file, question, canned answer, reference answer, gold score)
ITEMS = [
    (
        "house-1.png",
        "What is the colour of the roof of the house?",
        "The roof is red.",
        "The house has a red roof.",
        5,
    ),
    (
        "house-2.png",
        "Describe the picture in one sentence.",
        "A small house with a red roof stands on green hills beside a tree, under a sunny blue sky.",
        "A house with a red roof, a tree and the sun over green hills.",
        5,
    ),
    (
        "house-3.png",
        "How many trees are in the picture?",
        "There are five palm trees on a beach.",
        "There is one tree.",
        1,
    ),
]


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def samples() -> list[Sample]:
    out = []
    for k, (image, question, answer, reference, gold) in enumerate(ITEMS):
        path = IMAGES / image
        source = _data_url(path) if k == len(ITEMS) - 1 else str(path)  # both forms Inspect uses
        message = ChatMessageUser(content=[ContentImage(image=source), ContentText(text=question)])
        out.append(
            Sample(
                id=image.removesuffix(".png"),
                input=[message],
                target=reference,
                metadata={"answer": answer, "gold_score": gold},
            )
        )
    return out


@solver
def canned_answers():  # type: ignore[no-untyped-def]
    """Answer each sample with its ``metadata["answer"]`` (the system under test, played offline)."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        state.output = ModelOutput.from_content(model="canned", content=state.metadata["answer"])
        return state

    return solve


@task
def describe_images(
    model: str | None = None,
    server: str | None = None,
    rubric: str = "vqa-helpfulness",
    temperature: float = 0.0,
    max_tokens: int = 256,
) -> Task:
    """The images judged in-process (``model``) or by ``edgejudge serve`` (``server``)."""
    return Task(
        dataset=samples(),
        solver=canned_answers(),
        scorer=prometheus_vision(
            rubric=rubric, model=model, server=server, temperature=temperature, max_tokens=max_tokens
        ),
    )
