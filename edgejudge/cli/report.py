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
[bold]#filter=error[/bold] in the URL). Images are embedded, so the file can be mailed or archived as \
is. Only images under the image root (--image-root, default: the results file's folder; symlinks \
resolved) are embedded, so a results file cannot make the report carry pictures from elsewhere on this \
machine; --embed-outside-root embeds the others too.
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help=HELP,
        epilog=examples(
            "edgejudge report out.jsonl --output report.html",
            'edgejudge report out.jsonl -o report.html --image-root images/ --title "Week 3 answers"',
            "edgejudge report ~/runs/out.jsonl -o ~/report.html --embed-outside-root",
        ),
    )
    def report(
        results: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="Output of edgejudge batch.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
        image_root: Annotated[
            Path | None,
            typer.Option(
                "--image-root",
                help="Folder the images are in: relative image paths start here, and only images under it "
                "are embedded (default: the results file's folder).",
            ),
        ] = None,
        embed_outside_root: Annotated[
            bool,
            typer.Option(
                "--embed-outside-root",
                help="Also embed images outside the image root (any path the results file names).",
            ),
        ] = False,
        title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
        json_out: JsonOpt = False,
    ) -> None:
        from .._fs import user_path
        from ..report import write_report

        results = user_path(results, what="results path")
        output = user_path(output, what="--output")
        image_root = user_path(image_root, what="--image-root") if image_root is not None else None
        with status("writing the report…"):
            summary = write_report(
                results, output, image_root=image_root, title=title, embed_outside_root=embed_outside_root
            )
        console = stderr_console()
        console.print(
            f"wrote {escape(summary.output)}: {summary.rows} rows ({summary.ok} judged, "
            f"{summary.errors} errors), {summary.bytes / 1024:.0f} KiB"
        )
        outside = summary.images_outside_root
        if summary.images_missing > outside:
            console.print(
                f"[yellow]{summary.images_missing - outside} rows have no thumbnail[/yellow] (no image, "
                "image not found or unreadable); pass --image-root DIR if the images moved"
            )
        if outside:
            console.print(
                f"[yellow]{outside} images outside the image root were not embedded[/yellow]; pass "
                "--image-root DIR (the folder they are in) or --embed-outside-root to embed them"
            )
        if summary.skipped:
            console.print(f"[yellow]{summary.skipped} results rows skipped[/yellow] (not JSON objects)")
        if json_out:
            emit_json(summary.to_dict())
