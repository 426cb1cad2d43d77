"""``edgejudge convert SRC --outdir DIR``: a LLaVA-1.5 checkpoint → GGUF text model + mmproj, or with
``--to llava-hf`` the hub's llava-hf folder that vLLM serves.

Thin over ``edgejudge.install.convert_checkpoint`` (the converter for the installed runtime: torch-free,
streaming, atomic) and, with ``--register``, ``edgejudge.install.register_pair``; ``--to llava-hf`` over
``edgejudge.convert.llava_hf.export_llava_hf`` (same readers and checks). This module only draws the
progress (bytes and tensors) on stderr and prints the result.
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
    usage_error,
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
            "edgejudge convert ./prometheus-vision-7b-v1.0 --outdir models/ --to llava-hf",
        ),
    )
    def convert(
        src: Annotated[
            str, typer.Argument(metavar="SRC", help="Checkpoint directory, or a hub repo id (owner/name).")
        ],
        outdir: Annotated[
            Path,
            typer.Option(
                "--outdir",
                "-o",
                help="Directory for the two .gguf files (llava-hf: for the <name>-llava-hf folder).",
            ),
        ],
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
        to: Annotated[
            str,
            typer.Option(
                "--to",
                help="gguf: text model + mmproj (llama.cpp); llava-hf: a folder for vLLM/transformers.",
            ),
        ] = "gguf",
        force: Annotated[
            bool, typer.Option("--force", help="llava-hf: replace a model folder already there.")
        ] = False,
        verbose: VerboseOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Convert a LLaVA-1.5 checkpoint (e.g. Prometheus-Vision) into a GGUF text model and an mmproj.

        No torch needed: shards are streamed tensor by tensor (memory stays near one tensor), pickles are
        read with an allow-list, and nothing is left behind on failure. Files are named
        <name>-<QUANT>.gguf and mmproj-<name>-<QUANT>.gguf. The CLS-order self-test decides how the
        position table is written for the installed llama.cpp. With --to llava-hf the weights keep their
        dtype and go into OUTDIR/<name>-llava-hf (sharded safetensors, configs, tokenizer with <image> and
        <pad>, a chat template rendering the raw prompt), the folder `vllm serve` takes.
        """
        target = to.strip().lower()
        if target not in ("gguf", "llava-hf"):
            usage_error(f"unknown target {to!r}: use gguf or llava-hf", "--to")
        if target == "llava-hf":
            given = [
                flag
                for flag, on in (
                    ("--quant", quant != DEFAULT_QUANT),
                    ("--mmproj-quant", mmproj_quant != DEFAULT_MMPROJ_QUANT),
                    ("--register", register_it),
                )
                if on
            ]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                usage_error(f"{', '.join(given)} {verb} only to --to gguf (llava-hf keeps the dtype)")
            _llava_hf(src, outdir, name, force, as_json)
            return
        if force:
            usage_error(
                "--force only applies to --to llava-hf (GGUF files are replaced atomically)", "--force"
            )
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


def _llava_hf(src: str, outdir: Path, name: str | None, force: bool, as_json: bool) -> None:
    from ..convert.llava_hf import export_llava_hf

    with StageProgress() as progress:
        result = export_llava_hf(src, outdir, name=name, overwrite=force, progress=progress)
    console = stderr_console()
    console.print(
        f"[green]exported[/green] {result.n_tensors} tensors ({human_bytes(result.source_bytes)}, "
        f"{result.dtype}) in {len(result.shards)} shard(s) in {result.seconds:.1f}s",
        highlight=False,
    )
    console.print(f"  llava-hf folder: {result.folder}", highlight=False, markup=False)
    if as_json:
        emit_json(result.to_dict())
    else:
        console.print(
            f"serve with: vllm serve {result.folder} --chat-template-content-format string",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
