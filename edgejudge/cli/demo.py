"""``edgejudge demo``: judge a generated picture with a tiny random-weight judge built by the real converter.

The flow lives in ``edgejudge.demo``; this module draws progress, the streamed feedback, the verdict panel
and the plain warning that the weights are random.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.panel import Panel
from rich.text import Text

from ._common import (
    FeedbackStream,
    JsonOpt,
    StageProgress,
    emit_json,
    examples,
    stderr_console,
    verdict_panel,
)

__all__ = ["register", "RANDOM_WEIGHTS_NOTE", "INSTALL_HINT"]

INSTALL_HINT = "edgejudge models pull prometheus-vision-7b"
RANDOM_WEIGHTS_NOTE = (
    "This demo judge has RANDOM weights: the feedback above is gibberish and the score means nothing. "
    "Everything around it is real: the checkpoint was converted and quantized by edgejudge's converter and "
    "run on llama.cpp + mtmd with the exact Prometheus-Vision prompt, the output grammar and the score "
    "distribution."
)


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        epilog=examples("edgejudge demo", "edgejudge demo --json", "edgejudge demo --rebuild --seed 3"),
    )
    def demo(
        rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the demo judge again.")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Seed for the picture and the sampling.")] = 0,
        max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Generation budget.")] = 48,
        as_json: JsonOpt = False,
    ) -> None:
        """Try the whole pipeline offline in seconds: a tiny random-weight judge judges a generated picture.

        The first run builds the tiny judge with the real converter and caches it (EDGEJUDGE_CACHE). Then
        install the real judge with [bold]edgejudge models pull prometheus-vision-7b[/bold].
        """
        from ..demo import DEMO_INPUTS, ensure_demo_model, run_demo

        console = stderr_console()
        with StageProgress(console) as progress:  # one live display at a time: build first, then judge
            model = ensure_demo_model(rebuild=rebuild, progress=progress)
        with FeedbackStream(console, title="Feedback (random weights)") as stream:
            result = run_demo(
                seed=seed, max_tokens=max_tokens, on_text=stream.on_text if stream.enabled else None
            )
        if as_json:
            emit_json(
                {
                    "verdict": result.verdict.to_dict(),
                    "score": result.verdict.score,
                    "expected_score": result.verdict.expected_score,
                    "random_weights": True,
                    "text_model": str(model.text_model),
                    "mmproj": str(model.mmproj),
                    "built": model.built,
                    "build_seconds": model.seconds,
                    "judge_seconds": result.seconds,
                    "picture": str(result.picture),
                    "inputs": DEMO_INPUTS,
                    "next": INSTALL_HINT,
                }
            )
            return
        if model.built:
            console.print(
                f"built the demo judge in {model.seconds:.1f}s (cached in {model.text_model.parent})"
            )
        console.print(
            Text.assemble(
                ("instruction: ", "bold"),
                DEMO_INPUTS["instruction"],
                "\n",
                ("response:    ", "bold"),
                DEMO_INPUTS["response"],
                "\n",
                ("picture:     ", "bold"),
                str(result.picture),
            )
        )
        console.print(verdict_panel(result.verdict, title="Demo verdict"))
        console.print(
            Panel(
                Text.assemble(
                    RANDOM_WEIGHTS_NOTE,
                    "\n\nInstall the real judge: ",
                    (INSTALL_HINT, "bold cyan"),
                    "\n(about 14 GB to download; about 4.7 GB installed at Q4_K_M)",
                ),
                title="Random weights",
                border_style="yellow",
            )
        )
