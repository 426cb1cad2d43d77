#!/usr/bin/env python3
"""Convert a LLaVA-1.5 / Prometheus-Vision checkpoint to a GGUF pair (same as `edgejudge convert`).

    python scripts/convert.py SRC --outdir DIR [--name NAME] [--quant Q4_K_M] [--mmproj-quant f16] [--json]

SRC is a local checkpoint directory or a hub repo id. Progress goes to stderr; with --json one JSON object
(absolute paths of the text model and the mmproj, and the other ConvertResult fields) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgejudge.convert import MMPROJ_QUANTS, TEXT_QUANTS, convert_checkpoint
from edgejudge.errors import EdgeJudgeError


def _progress_printer() -> object:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgejudge.convert import STAGE_TENSORS

    console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
    bar = Progress(
        TextColumn("{task.description:>22}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()  # only now: an early error must not leave an empty progress display behind
        if stage == STAGE_TENSORS or total <= 1:
            detail = f"{done}/{total}"
        else:
            detail = f"{done / 1e9:.2f}/{total / 1e9:.2f} GB"
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None, detail=detail)
        bar.update(tasks[stage], completed=done, total=total or None, detail=detail)

    return bar, progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("src", help="checkpoint directory or hub repo id")
    parser.add_argument("--outdir", required=True, help="directory for the two .gguf files")
    parser.add_argument("--name", default=None, help="base name of the output files (default: from SRC)")
    parser.add_argument("--quant", default="Q4_K_M", help=f"text model: {', '.join(TEXT_QUANTS)}")
    parser.add_argument("--mmproj-quant", default="F16", help=f"mmproj: {', '.join(MMPROJ_QUANTS)}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON to stdout")
    args = parser.parse_args(argv)

    bar, progress = _progress_printer()  # type: ignore[misc]
    try:
        try:
            result = convert_checkpoint(
                args.src,
                args.outdir,
                name=args.name,
                quant=args.quant,
                mmproj_quant=args.mmproj_quant,
                progress=progress,
            )
        finally:
            if bar.live.is_started:  # type: ignore[attr-defined]
                bar.stop()  # type: ignore[attr-defined]
    except EdgeJudgeError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"text model: {result.text_model}", file=sys.stderr)
        print(f"mmproj:     {result.mmproj}", file=sys.stderr)
        print(
            f"{result.n_tensors} tensors, {result.source_bytes / 1e9:.2f} GB read in {result.seconds:.1f} s "
            f"(CLS position: {result.cls_position})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
