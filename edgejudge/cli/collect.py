"""``edgejudge collect FOLDER --output IN.jsonl``: a folder of images and their captions as a batch input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import examples, shown, stderr_console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command(
        "collect",
        epilog=examples(
            "edgejudge collect listings/ --output listings.jsonl",
            "edgejudge batch listings.jsonl --policy marketplace-listing --output out.jsonl",
            "edgejudge collect answers/ -o answers.jsonl --instruction 'What does the graph show?'",
        ),
    )
    def collect(
        folder: Annotated[
            Path, typer.Argument(metavar="FOLDER", help="The folder of images (searched recursively).")
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="The batch input file to write.")],
        instruction: Annotated[
            str | None,
            typer.Option("--instruction", help="The instruction of every row (a policy may give its own)."),
        ] = None,
        reference: Annotated[
            str | None, typer.Option("--reference", help="A reference answer for every row.")
        ] = None,
        no_caption: Annotated[
            str | None,
            typer.Option("--no-caption", help="The response of an image without a caption file."),
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
    ) -> None:
        """Write a batch input file with one row per image of FOLDER (JPEG, PNG, WebP, GIF, BMP, TIFF).

        Each image's caption is the text file beside it with the same name (photo.jpg → photo.txt); it
        becomes the row's response, the text judged with the image. Row ids are the images' paths inside
        FOLDER, image paths are written relative to OUTPUT's folder. Hidden files are skipped. Then run
        `edgejudge batch OUTPUT --policy NAME --output OUT.jsonl`.
        """
        from ..collect import NO_CAPTION, collect_folder

        result = collect_folder(
            folder,
            output,
            instruction=instruction,
            reference=reference,
            no_caption=no_caption if no_caption is not None else NO_CAPTION,
            overwrite=force,
        )
        console = stderr_console()
        console.print(
            shown(f"wrote {result.output}: {result.rows} image(s), {result.captioned} with a caption file"),
            soft_wrap=True,
        )
        if result.unreadable:
            console.print(
                f"warning: {result.unreadable} caption file(s) could not be read (not UTF-8 text, too large, "
                "or not a regular file); their rows will be error rows in the batch",
                style="yellow",
                highlight=False,
                markup=False,
            )
