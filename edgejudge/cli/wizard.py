"""``edgejudge tui``: the guided wizard (also what ``edgejudge`` alone starts in a terminal).

Owns the command's options; the flow lives in ``edgejudge.tui``.
"""

from __future__ import annotations

import typer

from ._common import GenerationOptions, examples, with_generation_options

__all__ = ["register"]

HELP = """\
The guided wizard: pick a model, an image (previewed as the judge sees it), the instruction, the response, \
an optional reference and a rubric; watch the feedback stream and get the score with the probability of \
each score. Then judge another response to the same image (fast: the image is not re-read), change the \
rubric, save the verdict as JSON, or quit. Ctrl-C cancels the current step. Needs a terminal; scripts use \
[bold]edgejudge judge[/bold].
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "tui",
        help=HELP,
        epilog=examples("edgejudge tui", "edgejudge tui --model prometheus-vision-7b --temperature 0"),
    )
    @with_generation_options
    def tui(*, options: GenerationOptions) -> None:
        from .tui import run_wizard

        run_wizard(options=options)
