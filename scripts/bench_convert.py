#!/usr/bin/env python3
"""Benchmark the converter: peak memory (streaming) and throughput against a plain file copy.

    python scripts/bench_convert.py [--pairs 3] [--workdir DIR] [--keep]

Generates a checkpoint with realistic shapes through the project's own fixture generator (CLIP-L/336
vision tower + a ~1B-parameter LLaMA text model, BF16 zip-pickle shards, ≥ 2 GB), then alternates
(A) ``convert_checkpoint(..., quant="F16")`` in a fresh subprocess and (B) ``shutil.copyfile`` of the same
shards, A B A B … Peak RSS of each conversion subprocess comes from ``os.wait4``; it is reported as a
fraction of the checkpoint size and as a multiple of the largest tensor in float32. Throughput is source
bytes / wall seconds; the table shows medians and the median of the pairwise ratios. Warm page cache (one
untimed warm-up of each first). Prints a Markdown table; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# VmHWM (peak resident set of the process's own address space) is read from /proc: ru_maxrss of a child
# also counts the parent's pages at fork time, which would hide the converter's own peak.
_HWM = "int(next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1]) * 1024"
_CHILD = f"""
import json, sys, time
from edgejudge.convert import convert_checkpoint
t = time.perf_counter()
r = convert_checkpoint(
    sys.argv[1], sys.argv[2], name="bench", quant="F16", mmproj_quant="F16", cls_position="last"
)
s = time.perf_counter() - t
print(json.dumps({{"seconds": s, "bytes": r.source_bytes, "tensors": r.n_tensors, "hwm": {_HWM}}}))
"""
_IMPORTS_ONLY = f"""
import json
import edgejudge.convert, edgejudge.convert.text_writer, edgejudge.convert.readers, gguf, numpy, llama_cpp
print(json.dumps({{"hwm": {_HWM}}}))
"""


def _run_child(code: str, *args: str) -> tuple[float, dict]:
    """(wall seconds, the JSON object the child printed last) of ``python -c code args``."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def _copy(shards: list[Path], dest: Path) -> float:
    dest.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for shard in shards:
        shutil.copyfile(shard, dest / shard.name)
    return time.perf_counter() - start


def _machine() -> list[str]:
    import gguf  # noqa: F401
    import llama_cpp
    import numpy

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        ram = f"{int(mem.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    from importlib.metadata import version

    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {ram}; {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, numpy {numpy.__version__}, gguf {version('gguf')}, "
        f"llama-cpp-python {llama_cpp.__version__}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="converter benchmark")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    parser.add_argument("--text-layers", type=int, default=None, help="override the text depth (size)")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from edgejudge.convert.readers import open_checkpoint
    from edgejudge.fixtures.tiny import TinySpec, make_tiny_llava

    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgejudge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = TinySpec.realistic()
    if args.text_layers is not None:
        spec = replace(spec, text_layers=args.text_layers)
    t0 = time.perf_counter()
    ckpt = work / "ckpt"
    if not (ckpt / "config.json").is_file():  # reuse a checkpoint kept with --keep/--workdir
        ckpt = make_tiny_llava(ckpt, spec, fmt="bin", dtype="bf16", shards=2)
    gen_s = time.perf_counter() - t0
    with open_checkpoint(ckpt) as c:
        infos = [c.info(n) for n in c.names()]
    shards = sorted({ckpt / i.shard for i in infos})
    ckpt_bytes = sum(s.stat().st_size for s in shards)
    largest = max(infos, key=lambda i: i.nbytes)
    largest_f32 = 4 * largest.nbytes // (2 if largest.dtype in ("BF16", "F16") else 4)
    print(
        f"checkpoint: {ckpt_bytes / 1e9:.2f} GB in {len(shards)} shards ({gen_s:.0f} s to generate); "
        f"largest tensor {largest.name} {largest.shape} = {largest_f32 / 1e6:.0f} MB in f32",
        file=sys.stderr,
    )

    rss_imports = _run_child(_IMPORTS_ONLY)[1]["hwm"]
    out, copies = work / "out", work / "copy"
    conv_s: list[float] = []
    copy_s: list[float] = []
    rss: list[int] = []
    src_bytes = 0
    for i in range(args.pairs + 1):  # pair 0 is the untimed warm-up
        shutil.rmtree(out, ignore_errors=True)
        wall, info = _run_child(_CHILD, str(ckpt), str(out))
        peak = info["hwm"]
        src_bytes = info["bytes"]
        shutil.rmtree(copies, ignore_errors=True)
        copy_wall = _copy(shards, copies)
        if i == 0:
            continue
        conv_s.append(info["seconds"])
        rss.append(peak)
        copy_s.append(copy_wall)
        print(
            f"pair {i}: convert {info['seconds']:.2f} s (process {wall:.2f} s, "
            f"peak RSS {peak / 1e6:.0f} MB), "
            f"copy {copy_wall:.2f} s",
            file=sys.stderr,
        )
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(copies, ignore_errors=True)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)

    conv_med, copy_med = statistics.median(conv_s), statistics.median(copy_s)
    ratio = statistics.median(c / b for c, b in zip(conv_s, copy_s, strict=True))
    peak = max(rss)
    print("\n".join(f"- {line}" for line in _machine()))
    print(
        f"- checkpoint: {ckpt_bytes / 1e9:.2f} GB BF16 zip-pickle, {len(infos)} tensors "
        f"(CLIP-L/336 + text {spec.text_hidden}x{spec.text_layers}), warm page cache, {args.pairs} pairs A/B"
    )
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| convert to F16 (median) | {conv_med:.2f} s = {src_bytes / conv_med / 1e9:.2f} GB/s |")
    print(
        f"| plain copy of the shards (median) | {copy_med:.2f} s = {ckpt_bytes / copy_med / 1e9:.2f} GB/s |"
    )
    print(f"| convert / copy time (median of pairs) | {ratio:.2f}x |")
    print(f"| peak RSS of the conversion process (max) | {peak / 1e6:.0f} MB |")
    print(f"| peak RSS / checkpoint size | {peak / ckpt_bytes:.3f} |")
    print(f"| peak RSS / largest tensor in f32 ({largest_f32 / 1e6:.0f} MB) | {peak / largest_f32:.2f}x |")
    print(f"| RSS of the imports alone (python+numpy+gguf+llama_cpp) | {rss_imports / 1e6:.0f} MB |")
    print(f"| (peak RSS − imports) / largest tensor in f32 | {(peak - rss_imports) / largest_f32:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
