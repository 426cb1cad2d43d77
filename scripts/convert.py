#!/usr/bin/env python3
"""Convert a LLaVA-1.5 / Prometheus-Vision checkpoint to a GGUF pair (exactly `edgejudge convert`).

    python scripts/convert.py SRC --outdir DIR [--name NAME] [--quant Q4_K_M] [--mmproj-quant f16] [--json]

SRC is a local checkpoint directory or a hub repo id. Progress goes to stderr; with --json one JSON object
(absolute paths of the text model and the mmproj, and the other ConvertResult fields) goes to stdout.
Errors: one line plus a hint on stderr, exit 1. The arguments, output and exit codes are the CLI command's:
this file only forwards to it.
"""

from __future__ import annotations

import sys

from edgejudge.cli import main as cli_main


def main(argv: list[str] | None = None) -> None:
    cli_main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
