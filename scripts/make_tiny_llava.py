#!/usr/bin/env python
"""Write a random-weight LLaVA-1.5 checkpoint in the real layout (thin entry to edgejudge.fixtures.tiny).

Usage: make_tiny_llava.py DIR [--format bin|safetensors] [--layout original|llava-hf] [--dtype bf16|f16]
       [--shards N] [--tower-weights inside|external|both] [--clip-config vision|clip] [--seed N]
       [--shape tiny|realistic|7b|13b] [--realistic]

--shape 7b / 13b: the LLaMA-2-7B / 13B text shapes (hidden 4096/5120, 32/40 layers and heads, MLP
11008/13824, 32000-token SentencePiece vocabulary, 4096 positions) with the CLIP ViT-L/14-336 tower and the
2-layer MLP projector, in the original Prometheus-Vision layout by default: 14.1 / 26.7 GB of BF16, written
tensor by tensor in a few hundred MB of memory. --realistic is --shape realistic (~1.1B, 3.1 GB).

Progress goes to stderr; the directory path is printed to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from edgejudge.errors import EdgeJudgeError, InputError
from edgejudge.fixtures.shapes import SHAPES, checkpoint_bytes, shape_spec
from edgejudge.fixtures.tiny import make_tiny_llava


def _check_room(directory: str, need: int) -> None:
    """InputError when the directory's file system has less free space than the weights need (+2 %)."""
    probe = os.path.abspath(os.path.expanduser(directory))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < need * 1.02:
        raise InputError(
            f"the checkpoint needs {need / 1e9:.1f} GB and {probe} has {free / 1e9:.1f} GB free",
            hint="free some disk space or choose a directory on a larger disk",
        )


def _end_line(last: list[float]) -> str:
    """A newline ending the ``\r`` progress line, if one was drawn."""
    return "\n" if last[0] else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--format", dest="fmt", choices=("bin", "safetensors"), default="bin")
    parser.add_argument("--layout", choices=("original", "llava-hf"), default="original")
    parser.add_argument("--dtype", choices=("bf16", "f16"), default="bf16")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--tower-weights", choices=("inside", "external", "both"), default="inside")
    parser.add_argument("--clip-config", choices=("vision", "clip"), default="vision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--realistic", action="store_true", help="CLIP-L/336 tower + ~1.1B LLaMA (about 3.1 GB in bf16)"
    )
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default=None,
        help="model dimensions: tiny (default), realistic (~1.1B), 7b or 13b (LLaMA-2 text shapes)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.realistic and args.shape not in (None, "realistic"):
        parser.error("--realistic is --shape realistic: give one of them")
    spec = shape_spec(args.shape or ("realistic" if args.realistic else "tiny"), seed=args.seed)
    started = time.perf_counter()
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            pct = 100.0 * done / total if total else 100.0
            print(
                f"\r{pct:5.1f}% {done / 1e6:9.1f}/{total / 1e6:.1f} MB  {stage[:60]:<60}",
                end="",
                file=sys.stderr,
            )

    try:
        _check_room(args.directory, checkpoint_bytes(spec, args.layout, args.tower_weights))
        path = make_tiny_llava(
            args.directory, spec, fmt=args.fmt, layout=args.layout, dtype=args.dtype, shards=args.shards,
            tower_weights=args.tower_weights, clip_config=args.clip_config, progress=progress,
        )  # fmt: skip
    except EdgeJudgeError as err:
        print(f"{_end_line(last)}error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_end_line(last)}interrupted", file=sys.stderr)
        return 130
    print(f"\nwrote {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
