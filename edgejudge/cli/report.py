"""``edgejudge report OUT.jsonl --output report.html``: the self-contained HTML report of a batch.

Owns the command's options and messages; the page itself is built by ``edgejudge.report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import JsonOpt, emit_json, examples, status, stderr_console

__all__ = ["register"]

HELP = """\
Write ONE self-contained HTML page for a batch's results: a summary, the score distribution, and a card \
per row with the image as the judge saw it, the score, the probability of each score, the expected score \
and the feedback. Filter by score with the buttons (or open the page with [bold]#filter=1,2[/bold] or \
[bold]#filter=error[/bold] in the URL). Images are embedded, so the file can be mailed or archived as is.
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help=HELP,
        epilog=examples(
            "edgejudge report out.jsonl --output report.html",
            'edgejudge report out.jsonl -o report.html --image-root images/ --title "Week 3 answers"',
        ),
    )
    def report(
        results: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="Output of edgejudge batch.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
        image_root: Annotated[
            Path | None,
            typer.Option(
                "--image-root", help="Folder for relative image paths (default: as recorded by batch)."
            ),
        ] = None,
        title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        from ..report import write_report

        with status("writing the report…"):
            summary = write_report(results, output, image_root=image_root, title=title)
        console = stderr_console()
        console.print(
            f"wrote {escape(summary.output)}: {summary.rows} rows ({summary.ok} judged, "
            f"{summary.errors} errors), {summary.bytes / 1024:.0f} KiB"
        )
        if summary.images_missing:
            console.print(
                f"[yellow]{summary.images_missing} rows have no thumbnail[/yellow] (image not found); "
                "pass --image-root DIR if the images moved"
            )
        if json_out:
            emit_json(summary.to_dict())
