"""``edgejudge rubrics list|show``: browse the built-in rubric library (or inspect a rubric file)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._common import JsonOpt, emit_json, examples, make_app, stderr_console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    rubrics = make_app(
        "rubrics",
        "Browse the built-in score rubrics (a criterion plus what each score 1-5 means).",
        epilog=examples(
            "edgejudge rubrics list",
            "edgejudge rubrics show content-moderation",
            "edgejudge rubrics show my-policy.toml --json",
            "edgejudge rubrics show ocr-accuracy --toml > my-ocr.toml",
        ),
    )
    app.add_typer(rubrics, name="rubrics")

    @rubrics.command("list", epilog=examples("edgejudge rubrics list", "edgejudge rubrics list --json"))
    def list_(as_json: JsonOpt = False) -> None:
        """List the built-in rubrics with a one-line summary each."""
        from ..rubric import builtin_rubrics

        library = builtin_rubrics()
        if as_json:
            emit_json([r.to_dict() for r in library.values()])
            return
        table = Table(title="Built-in rubrics", title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("title")
        table.add_column("use it for")
        for r in library.values():
            table.add_row(r.name, r.title, r.summary)
        console = stderr_console()
        console.print(table)
        console.print("Show one with: edgejudge rubrics show NAME   ·   use one with: --rubric NAME")

    @rubrics.command(
        "show",
        epilog=examples(
            "edgejudge rubrics show vqa-helpfulness", "edgejudge rubrics show policy.toml --json"
        ),
    )
    def show(
        name: Annotated[
            str, typer.Argument(metavar="NAME|FILE", help="Built-in rubric name or a .toml/.json file.")
        ],
        as_json: JsonOpt = False,
        as_toml: Annotated[
            bool, typer.Option("--toml", help="Print it as TOML on stdout (a starting point).")
        ] = False,
    ) -> None:
        """Show a rubric: its criterion and the description of each score."""
        from ..rubric import load_rubric, rubric_to_toml

        rubric = load_rubric(name)
        if as_json:
            emit_json(rubric.to_dict())
            return
        if as_toml:
            typer.echo(rubric_to_toml(rubric), nl=False)
            return
        console = stderr_console()
        console.print(Text(f"{rubric.name}" + (f" — {rubric.title}" if rubric.title else ""), style="bold"))
        if rubric.summary:
            console.print(Text(rubric.summary, style="dim"))
        console.print(Text.assemble(("criteria: ", "bold"), rubric.criteria))
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold cyan")
        table.add_column()
        for k, text in enumerate(rubric.descriptions, start=1):
            table.add_row(f"Score {k}", Text(text))
        console.print(table)
