#!/usr/bin/env python3
"""Benchmark: real-size judges (7B / 13B shapes) at each quantization: files, memory, speed, conversion.

For each shape (``--shapes``, default 7b) the random-weight BF16 checkpoint in the original LLaVA-1.5
layout lives in ``ROOT/ckpt`` (ROOT = ``--root``, default ``/tmp/edgejudge-{shape}``), written by
``scripts/make_tiny_llava.py --shape`` when missing and the disk has room. For each quantization
(``--quants``, default Q4_K_M Q8_0) the pair ``ROOT/gguf/{shape}-{QUANT}.gguf`` + ``mmproj-{shape}-F16.gguf``
is converted by ``edgejudge convert`` when missing (``--reconvert``: again, into a fresh folder), and
measured in child processes (peak RSS by ``wait4`` of that child alone, tests/_support.run_measured):

- conversion: wall time and peak RSS from the BF16 shards, against a plain copy of the shards in the same
  run (``--no-copy-baseline`` skips it; it needs the checkpoint's size free on the disk for a moment);
- ``edgejudge judge`` of one response (``--parallel 1``, temperature 0, ``--max-tokens``): peak RSS, wall
  time, prompt and generation tokens/s from the verdict's timings, and "load + start" = wall time minus the
  image, prompt and generation stages (interpreter start, imports, model load, context creation, self-test);
- generation tokens/s against the memory-bandwidth bound measured in the same run, just before: one
  thread's read bandwidth (NumPy int64 sum over 1 GiB, best of 5) / the bytes of weights read per token
  (every tensor of the text GGUF but the embedding table);
- ``edgejudge batch`` of four responses to that image (``--parallel 4``) against four separate processes.

Rows are printed (Markdown) as soon as they are measured. Heavy: a 7B Q4_K_M round takes ~6-10 minutes on
2 cores; run on an otherwise idle machine (see /work/shared/docs/benchmarks.md, threads).

    python scripts/bench_shapes.py --threads 2                       # 7b, Q4_K_M and Q8_0
    python scripts/bench_shapes.py --shapes 7b 13b --quants F16 Q8_0 Q5_K_M Q4_K_M --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "tests"))
from _support import Measured, cli, run_measured  # noqa: E402

from edgejudge.fixtures.shapes import checkpoint_bytes, shape_spec  # noqa: E402

INSTRUCTION = "Describe the image in detail: the shapes, their colours and where they are."
REFERENCE = "A red square in the upper left, a blue circle in the middle and a green band along the bottom."
RESPONSES = (
    "The picture shows a red square in the upper left, a blue circle and a green stripe along the bottom.",
    "It is a photo of a cat sleeping on a sofa next to a window.",
    "There are three shapes: a square, a circle and a band of colour; the square is red and the circle is "
    "blue, and the background is a light gradient with some noise.",
    "A blue square and a red circle on a white background.",
)
#: The rubric of both the single verdict and the batch (the built-in default of ``edgejudge judge``).
RUBRIC = "vqa-helpfulness"
#: Approximate bytes per weight of each text quantization (for the disk check before converting).
BYTES_PER_WEIGHT = {"F16": 2.0, "Q8_0": 1.07, "Q5_K_M": 0.72, "Q4_K_M": 0.61}
GIB = 2**30


def machine_info(threads: int) -> str:
    cpu = platform.processor() or "?"
    mem = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    import llama_cpp

    load = os.getloadavg()[0]
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, RAM {mem}, load average {load:.2f} at the start; "
        f"llama-cpp-python {llama_cpp.__version__} (CPU); --threads {threads}; {_commit()}"
    )


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT_DIR), "status", "--porcelain", "--untracked-files=no", "edgejudge"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "edgejudge at an unknown commit"
    return f"edgejudge {head}{' + local changes' if dirty else ''}"


def read_bandwidth(nbytes: int = GIB, repeats: int = 5) -> float:
    """Bytes/s one thread reads (NumPy int64 sum over ``nbytes``, best of ``repeats``)."""
    data = np.ones(nbytes // 8, dtype=np.int64)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - t0)
    del data
    return nbytes / best


def weights_bytes_per_token(text_model: Path) -> int:
    """Bytes of weights read to generate one token: every tensor except the embedding table (one row)."""
    import gguf

    reader = gguf.GGUFReader(str(text_model), "r")
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def write_image(path: Path) -> None:
    """A 336x336 PNG (the tower's size, so nothing is resampled): shapes on a noisy gradient."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:336, 0:336]
    img = np.stack([200 + 30 * x / 336, 210 + 20 * y / 336, 220 - 20 * x / 336], -1)
    img += rng.normal(0, 6, img.shape)
    img[30:130, 30:130] = (220, 30, 30)
    img[((x - 190) ** 2 + (y - 170) ** 2) < 55**2] = (30, 60, 220)
    img[280:320, :] = (40, 170, 60)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def _measure(argv: list[str], timeout: float, what: str) -> Measured:
    run = run_measured(argv, timeout=timeout)
    if run.returncode != 0:
        tail = (run.stderr.strip().splitlines() or ["(no output)"])[-3:]
        raise RuntimeError(f"{what} failed ({run.returncode}): " + " / ".join(tail))
    return run


def ensure_checkpoint(shape: str, root: Path, quants: list[str], timeout: float) -> Path | None:
    ckpt = root / "ckpt"
    if (ckpt / "config.json").is_file():
        return ckpt
    spec = shape_spec(shape)
    params = checkpoint_bytes(spec) / 2
    need = checkpoint_bytes(spec) + sum(params * BYTES_PER_WEIGHT[q] for q in quants) + 1e9
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < need:
        print(
            f"\n{shape}: skipped: its BF16 checkpoint and {', '.join(quants)} need ~{_gb(need)}, "
            f"{root} has {_gb(free)} free\n",
            flush=True,
        )
        return None
    script = str(ROOT_DIR / "scripts" / "make_tiny_llava.py")
    run = _measure([sys.executable, script, str(ckpt), "--shape", shape], timeout, "make_tiny_llava")
    print(
        f"\n{shape}: wrote the BF16 checkpoint ({_gb(_dir_bytes(ckpt))}) in {run.elapsed_s:.0f} s at "
        f"{run.peak_rss_mb:.0f} MB peak RSS\n",
        flush=True,
    )
    return ckpt


def copy_baseline(ckpt: Path, timeout: float) -> float | None:
    """Seconds a plain copy of the shards takes (shutil.copyfile each, on the same disk), or None."""
    shards = sorted(ckpt.glob("*.bin")) + sorted(ckpt.glob("*.safetensors"))
    if shutil.disk_usage(ckpt).free < sum(p.stat().st_size for p in shards) + 2e9:
        return None
    with tempfile.TemporaryDirectory(dir=ckpt.parent, prefix="copy-") as tmp:
        code = "import shutil, sys\nfor s in sys.argv[2:]: shutil.copyfile(s, sys.argv[1] + s[s.rfind('/'):])"
        run = _measure([sys.executable, "-c", code, tmp, *map(str, shards)], timeout, "the copy")
    return run.elapsed_s


def convert(
    shape: str, ckpt: Path, gguf_dir: Path, quant: str, reconvert: bool, timeout: float
) -> Measured | None:
    text = gguf_dir / f"{shape}-{quant}.gguf"
    if text.is_file() and not reconvert:
        return None
    gguf_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=gguf_dir.parent, prefix="convert-") as tmp:
        out = Path(tmp) / "out"
        argv = cli("convert", str(ckpt), "--outdir", str(out), "--name", shape, "--quant", quant, "--json")
        run = _measure(argv, timeout, f"convert {quant}")
        for made in out.iterdir():
            if made.name.startswith("mmproj-") and (gguf_dir / made.name).is_file():
                continue
            os.replace(made, gguf_dir / made.name)
    return run


def judge_once(
    text: Path, mmproj: Path, image: Path, args: argparse.Namespace
) -> tuple[Measured, dict[str, Any]]:
    argv = cli(
        "judge", str(image), "--model", str(text), "--mmproj", str(mmproj), "-i", INSTRUCTION,
        "--response", RESPONSES[0], "--reference", REFERENCE, "--rubric", RUBRIC,
        "--threads", str(args.threads), "--temperature", "0", "--max-tokens", str(args.max_tokens),
        "--parallel", "1", "--json", *args.judge_arg,
    )  # fmt: skip
    run = _measure(argv, args.timeout, "edgejudge judge")
    return run, json.loads(run.stdout)


def batch_four(text: Path, mmproj: Path, image: Path, work: Path, args: argparse.Namespace) -> Measured:
    rows = work / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "image": image.name,
                    "instruction": INSTRUCTION,
                    "response": r,
                    "reference": REFERENCE,
                }
            )
            + "\n"
            for i, r in enumerate(RESPONSES)
        )  # fmt: skip
    )
    out = work / "out.jsonl"
    out.unlink(missing_ok=True)
    argv = cli(
        "batch", str(rows), "--output", str(out), "--model", str(text), "--mmproj", str(mmproj),
        "--threads", str(args.threads), "--temperature", "0", "--max-tokens", str(args.max_tokens),
        "--parallel", "4", "--rubric", RUBRIC, *args.judge_arg,
    )  # fmt: skip
    run = _measure(argv, args.timeout, "edgejudge batch")
    rows_out = [json.loads(line) for line in out.read_text().splitlines()]
    bad = [r.get("error") for r in rows_out if r.get("status") != "ok"]
    if len(rows_out) != len(RESPONSES) or bad:
        raise RuntimeError(f"the batch judged {len(rows_out) - len(bad)} of {len(RESPONSES)} rows: {bad[:1]}")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["7b"], choices=("7b", "13b", "realistic"))
    parser.add_argument("--quants", nargs="+", default=["Q4_K_M", "Q8_0"], choices=tuple(BYTES_PER_WEIGHT))
    parser.add_argument(
        "--root", default="/tmp/edgejudge-{shape}", help="per-shape folder ({shape} filled in)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reconvert", action="store_true", help="convert again even when the GGUF exists")
    parser.add_argument("--no-convert", action="store_true", help="never convert; skip missing GGUFs")
    parser.add_argument("--no-copy-baseline", action="store_true")
    parser.add_argument("--no-batch", action="store_true", help="skip the four-responses batch")
    parser.add_argument("--judge-arg", action="append", default=[], help="extra option for judge and batch")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    print(f"Machine: {machine_info(args.threads)}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        work = Path(tmp)
        image = work / "shapes.png"
        write_image(image)
        for shape in args.shapes:
            root = Path(args.root.format(shape=shape))
            ckpt = (
                ensure_checkpoint(shape, root, args.quants, args.timeout)
                if not args.no_convert
                else root / "ckpt"
            )
            gguf_dir = root / "gguf"
            if ckpt is not None and (ckpt / "config.json").is_file() and not args.no_convert:
                size = _dir_bytes(ckpt)
                copy_s = None if args.no_copy_baseline else copy_baseline(ckpt, args.timeout)
                print(f"### Conversion from the BF16 shards ({shape}, {_gb(size)})\n", flush=True)
                _row(
                    "shape", "quant", "text GGUF", "time", "peak RSS", "RSS / checkpoint", "time / plain copy"
                )
                _row(*["---"] * 7)
                if copy_s is not None:
                    _row(shape, "plain copy of the shards", "", f"{copy_s:.1f} s", "", "", "1.0x")
                for quant in args.quants:
                    try:
                        run = convert(shape, ckpt, gguf_dir, quant, args.reconvert, args.timeout)
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        _row(shape, quant, "failed", str(err)[:150], "", "", "")
                        continue
                    if run is None:
                        _row(shape, quant, "(already converted: --reconvert to measure)", "", "", "", "")
                        continue
                    text = gguf_dir / f"{shape}-{quant}.gguf"
                    ratio = f"{run.elapsed_s / copy_s:.1f}x" if copy_s else "n/a"
                    rss = run.peak_rss_mb
                    _row(shape, quant, _gb(text.stat().st_size), f"{run.elapsed_s:.1f} s",
                         f"{rss:.0f} MB", f"{rss * 2**20 / size:.3f}", ratio)  # fmt: skip
                print(flush=True)
            print(
                f"### Judging ({shape}, --threads {args.threads}, temperature 0, "
                f"--max-tokens {args.max_tokens})\n"
            )
            _row(
                "shape", "quant", "text + mmproj", "peak RSS", "load + start", "prompt tok/s",
                "gen tok/s", "bound (1 thread)", "of bound", "one verdict", "4 responses, one batch",
                "4 separate judges", "batch peak RSS",
            )  # fmt: skip
            _row(*["---"] * 13)
            for quant in args.quants:
                text, mmproj = gguf_dir / f"{shape}-{quant}.gguf", gguf_dir / f"mmproj-{shape}-F16.gguf"
                if not (text.is_file() and mmproj.is_file()):
                    _row(shape, quant, "not converted", *[""] * 10)
                    continue
                files = text.stat().st_size + mmproj.stat().st_size
                bandwidth = read_bandwidth()
                bound = bandwidth / weights_bytes_per_token(text)
                try:
                    run, verdict = judge_once(text, mmproj, image, args)
                    t = verdict["timings"]
                    stages = t["image_encode_s"] + t["prompt_eval_s"] + t["generation_s"]
                    prompt_tps = (t["prompt_tokens"] - t["reused_tokens"]) / max(t["prompt_eval_s"], 1e-9)
                    gen_tps = t["generated_tokens"] / max(t["generation_s"], 1e-9)
                    cells = [
                        f"{run.peak_rss_mb / 1024:.2f} GiB", f"{run.elapsed_s - stages:.1f} s",
                        f"{prompt_tps:.1f} ({t['prompt_tokens']} tok)",
                        f"{gen_tps:.2f} ({t['generated_tokens']} tok)",
                        f"{bound:.2f} ({bandwidth / 1e9:.0f} GB/s)",
                        f"{100 * gen_tps / bound:.0f} %", f"{run.elapsed_s:.1f} s",
                    ]  # fmt: skip
                except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as err:
                    _row(shape, quant, _gb(files), "judge failed: " + str(err)[:200], *[""] * 9)
                    continue
                batch_cells = ["skipped", "", ""]
                if not args.no_batch:
                    try:
                        b = batch_four(text, mmproj, image, work, args)
                        batch_cells = [
                            f"{b.elapsed_s:.1f} s",
                            f"~{4 * run.elapsed_s:.0f} s (4 x one verdict)",
                            f"{b.peak_rss_mb / 1024:.2f} GiB",
                        ]
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        batch_cells = ["failed: " + str(err)[:150], "", ""]
                _row(shape, quant, _gb(files), *cells, *batch_cells)
            print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
