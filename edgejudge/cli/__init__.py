"""The ``edgejudge`` command line: the Typer app, its commands, and the ``main()`` entry point.

Each command lives in its own module exposing ``register(app)``; the guided wizard is ``cli.tui`` (with
``cli._tui_prompts``), started by ``edgejudge`` alone in a terminal or ``edgejudge tui`` (``cli.wizard``).
Errors become one-line messages and exit codes in ``_common.guard`` (applied to every command by
``EdgeJudgeTyper``), in CLI words (``_hints``: setting names become flags); ``main`` adds the outermost net
(Ctrl-C while parsing, a closed stdout). This package is the only importer of Typer and Rich, and holds no
library logic: commands parse options, call the library, print, and map errors.

Imports inside the package point one way: ``__init__`` → command modules → ``_common`` → ``_console``,
``_options``, ``_hints`` (and ``tui`` → ``_tui_prompts``); nothing imports ``__init__`` back.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Annotated

import typer

from .. import __version__
from ._common import EXIT_INTERRUPTED, EXIT_USAGE, examples, make_app, stderr_console

__all__ = ["app", "main"]

COMMAND_MODULES = (
    "judge",
    "convert",
    "batch",
    "report",
    "parse_cmd",
    "metrics",
    "review",
    "rubrics",
    "policies",
    "models",
    "doctor",
    "demo",
    "collect",
    "server",
    "serve",
    "merge",
    "wizard",
)

HELP = """\
A quantized local judge for vision-language outputs: Prometheus-Vision on llama.cpp.

Give it an image, an instruction, a response and a rubric; it writes feedback and a score 1-5, with the \
probability of each score. Everything runs offline on your machine.

Start with [bold]edgejudge demo[/bold] (a tiny random-weight judge, no download), then install the real \
judge with [bold]edgejudge models pull prometheus-vision-7b[/bold]. Run [bold]edgejudge[/bold] alone in a \
terminal for the guided wizard.

Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted. Data goes to stdout, messages to stderr. \
Set EDGEJUDGE_DEBUG=1 to see tracebacks.
"""

app = make_app(
    "edgejudge",
    HELP,
    epilog=examples(
        "edgejudge demo",
        "edgejudge models pull prometheus-vision-7b",
        'edgejudge judge cat.jpg --instruction "What is this?" --response "A cat." --rubric vqa-helpfulness',
        "edgejudge batch bench.jsonl --output out.jsonl",
        "edgejudge metrics out.jsonl bench.jsonl --gold-field orig_score",
        "edgejudge report out.jsonl --output report.html",
    ),
    no_args_is_help=False,
    invoke_without_command=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgejudge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if not sys.stdin.isatty():
        console = stderr_console()
        console.print(
            "edgejudge: no command given, and the guided wizard needs a terminal (stdin is not one)."
        )
        console.print(
            'To judge from a script use:  edgejudge judge IMAGE --instruction "..." --response "..."  '
            "(see edgejudge --help)"
        )
        raise typer.Exit(EXIT_USAGE)
    from .tui import run_wizard

    run_wizard()


for _name in COMMAND_MODULES:
    import_module(f"{__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``edgejudge = edgejudge.cli:main``)."""
    try:
        app(args=argv, prog_name="edgejudge")
    except KeyboardInterrupt:
        stderr_console().print("\ninterrupted", style="yellow")
        sys.exit(EXIT_INTERRUPTED)
