"""``edgejudge demo``: judge a generated picture with a tiny random-weight judge built by the real converter.

The flow lives in ``edgejudge.demo``; this module draws progress, the streamed feedback, the verdict panel
and the plain warning that the weights are random.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.text import Text

from ..settings import setting
from ._common import (
    FeedbackStream,
    JsonOpt,
    StageProgress,
    emit_json,
    examples,
    stderr_console,
    verdict_panel,
)
from ._options import option_for

__all__ = ["register", "RANDOM_WEIGHTS_NOTE", "INSTALL_HINT", "how_to_run"]

INSTALL_HINT = "edgejudge models pull prometheus-vision-7b"
RANDOM_WEIGHTS_NOTE = (
    "This demo judge has RANDOM weights: the feedback above is gibberish and the score means nothing. "
    "Everything around it is real: the checkpoint was converted and quantized by edgejudge's converter and "
    "run on llama.cpp + mtmd with the exact Prometheus-Vision prompt, the output grammar and the score "
    "distribution."
)


def how_to_run() -> tuple[str, str | None]:
    """``(command, activate)``: how the user types ``edgejudge`` next. ``edgejudge`` when it is on PATH;
    else the full path of the script beside this interpreter (a virtual environment that is not active)
    and the ``source …/activate`` line that puts it on PATH."""
    if shutil.which("edgejudge"):
        return "edgejudge", None
    bindir = Path(sys.executable).parent
    script = bindir / "edgejudge"
    if not script.is_file():
        return f"{sys.executable} -c 'from edgejudge.cli import main; main()'", None
    activate = bindir / "activate"
    return _relative(script), (f"source {_relative(activate)}" if activate.is_file() else None)


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when below it (``.venv/bin/edgejudge``), else absolute."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _next_steps() -> Text:
    command, activate = how_to_run()
    install = INSTALL_HINT.replace("edgejudge", command, 1)
    text = Text.assemble("\n\nInstall the real judge: ", (install, "bold cyan"))
    if activate is not None:
        text.append(f"\n(edgejudge is not on your PATH: run `{activate}` first, then `{INSTALL_HINT}` works)")
    text.append("\n(about 14 GB to download; about 4.7 GB installed at Q4_K_M)")
    return text


def _setting_option(name: str, note: str = "") -> Any:
    """The ``typer.Option`` of setting ``name`` exactly as the shared options build it (flag, bounds,
    check, help from ``edgejudge.settings``), ``note`` added to its help; the demo gives its own default."""
    _, annotation, _ = option_for(name)
    option = copy.copy(annotation.__metadata__[0])
    option.help = f"{option.help} {note}".strip()
    return option


#: The demo's own defaults (a short, reproducible run); bounds and help are the settings record's.
_SEED, _MAX_TOKENS = 0, 48
_SEED_OPTION = _setting_option("seed", "The demo also draws its picture from it.")
_MAX_TOKENS_OPTION = _setting_option("max_tokens")


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        epilog=examples("edgejudge demo", "edgejudge demo --json", "edgejudge demo --rebuild --seed 3"),
    )
    def demo(
        rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the demo judge again.")] = False,
        seed: Annotated[int, _SEED_OPTION] = _SEED,
        max_tokens: Annotated[int, _MAX_TOKENS_OPTION] = _MAX_TOKENS,
        verbose: Annotated[bool, typer.Option("--verbose", help=setting("verbose").help)] = False,
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
                seed=seed,
                max_tokens=max_tokens,
                on_text=stream.on_text if stream.enabled else None,
                verbose=verbose,
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
                    "next_command": INSTALL_HINT.replace("edgejudge", how_to_run()[0], 1),
                    "activate": how_to_run()[1],
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
                Text.assemble(RANDOM_WEIGHTS_NOTE, _next_steps()),
                title="Random weights",
                border_style="yellow",
            )
        )
