"""``edgejudge tui``: the guided wizard (also what ``edgejudge`` alone starts in a terminal).

Owns the command's options; the flow lives in ``edgejudge.tui``.
"""

from __future__ import annotations

import typer

from ._common import (
    GenerationOptions,
    ImageFitOpt,
    MaxTokensOpt,
    MmprojOpt,
    ModelOpt,
    NCtxOpt,
    NGpuLayersOpt,
    NoGrammarOpt,
    SamplesOpt,
    SeedOpt,
    TemperatureOpt,
    ThreadsOpt,
    examples,
)

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
    def tui(
        model: ModelOpt = None,
        mmproj: MmprojOpt = None,
        samples: SamplesOpt = 1,
        temperature: TemperatureOpt = 1.0,
        seed: SeedOpt = None,
        max_tokens: MaxTokensOpt = 1024,
        image_fit: ImageFitOpt = "crop",
        n_gpu_layers: NGpuLayersOpt = -1,
        threads: ThreadsOpt = None,
        n_ctx: NCtxOpt = 4096,
        no_grammar: NoGrammarOpt = False,
    ) -> None:
        from ..tui import run_wizard

        options = GenerationOptions(
            model=model,
            mmproj=mmproj,
            samples=samples,
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            image_fit=image_fit,
            n_gpu_layers=n_gpu_layers,
            threads=threads,
            n_ctx=n_ctx,
            grammar=not no_grammar,
        )
        run_wizard(options=options)
