"""``edgejudge convert SRC --outdir DIR``: a LLaVA-1.5 checkpoint → GGUF text model + mmproj.

Thin over ``edgejudge.install.convert_checkpoint`` (the converter for the installed runtime: torch-free,
streaming, atomic) and, with ``--register``, ``edgejudge.install.register_pair``; this module only draws
the progress (bytes and tensors) on stderr and prints the result.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ..judgefile import DEFAULT_MMPROJ_QUANT, DEFAULT_QUANT, MMPROJ_QUANTS, TEXT_QUANTS
from ._common import (
    JsonOpt,
    StageProgress,
    VerboseOpt,
    emit_json,
    examples,
    human_bytes,
    native_logs,
    stderr_console,
)

__all__ = ["register"]


def _choices(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def register(app: typer.Typer) -> None:
    @app.command(
        "convert",
        epilog=examples(
            "edgejudge convert ./prometheus-vision-7b-v1.0 --outdir models/",
            "edgejudge convert prometheus-eval/prometheus-vision-13b-v1.0 --outdir models/ --quant Q5_K_M",
            "edgejudge convert ./ckpt --outdir out/ --name my-judge --quant f16 --mmproj-quant q8_0 --json",
            "edgejudge convert ./ckpt --outdir out/ --name my-judge --register",
        ),
    )
    def convert(
        src: Annotated[
            str, typer.Argument(metavar="SRC", help="Checkpoint directory, or a hub repo id (owner/name).")
        ],
        outdir: Annotated[Path, typer.Option("--outdir", "-o", help="Directory for the two .gguf files.")],
        name: Annotated[
            str | None,
            typer.Option("--name", help="Model name used in the file names (default: SRC's name)."),
        ] = None,
        quant: Annotated[
            str, typer.Option("--quant", "-q", help=f"Text model: {_choices(TEXT_QUANTS)} (any case).")
        ] = DEFAULT_QUANT,
        mmproj_quant: Annotated[
            str, typer.Option("--mmproj-quant", help=f"Projector: {_choices(MMPROJ_QUANTS)}.")
        ] = DEFAULT_MMPROJ_QUANT,
        register_it: Annotated[
            bool, typer.Option("--register", help="Also register the pair (usable as --model NAME).")
        ] = False,
        verbose: VerboseOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Convert a LLaVA-1.5 checkpoint (e.g. Prometheus-Vision) into a GGUF text model and an mmproj.

        No torch needed: shards are streamed tensor by tensor (memory stays near one tensor), pickles are
        read with an allow-list, and nothing is left behind on failure. Files are named
        <name>-<QUANT>.gguf and mmproj-<name>-<QUANT>.gguf. The CLS-order self-test decides how the
        position table is written for the installed llama.cpp.
        """
        from ..install import convert_checkpoint

        with native_logs(verbose), StageProgress() as progress:
            result = convert_checkpoint(
                src, outdir, name=name, quant=quant, mmproj_quant=mmproj_quant, progress=progress
            )
        console = stderr_console()
        console.print(
            f"[green]converted[/green] {result.n_tensors} tensors ({human_bytes(result.source_bytes)}) "
            f"in {result.seconds:.1f}s",
            highlight=False,
        )
        console.print(f"  text model: {result.text_model}", highlight=False, markup=False)
        console.print(f"  mmproj:     {result.mmproj}", highlight=False, markup=False)
        data = result.to_dict()
        if register_it:
            from ..install import register_pair

            entry = register_pair(result, source=str(src))
            console.print(f"registered as {entry.key}", highlight=False)
            data["registered"] = asdict(entry)
        if as_json:
            emit_json(data)
        else:
            console.print(
                f"judge with: edgejudge judge IMAGE --model {result.text_model} --instruction … --response …",
                highlight=False,
            )
