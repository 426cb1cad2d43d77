#!/usr/bin/env python3
"""Benchmark: peak memory and speed of ``edgejudge judge`` per memory configuration, and where loading goes.

Each candidate is one ``edgejudge judge IMAGE ... --json`` process (one verdict, temperature 0, the given
threads and max_tokens) started from a small spawner and measured by ``wait4`` (its own peak RSS, as
``tests/_support.run_measured`` does); the verdict's timings give prompt and generation tokens/s. The
candidates run in turn, in a rotated order each round (``--rounds``), so that a machine shared with other
work weighs on all of them alike; medians are printed, with every round's figures under ``--all``.

Candidates (``--candidates``, default all):

- ``before``: the previous defaults, ``--mmap on --kv-size full --kv-cache-type f16``;
- ``no-mmap``: ``--mmap off --kv-size full`` (one copy of the repacked weights);
- ``fit``: ``--mmap on --kv-size fit`` (the KV cache sized to the prompt);
- ``default``: the current defaults (mmap auto, kv_size fit, f16);
- ``default-1024``: what the defaults allocate for a ~1400-position prompt at the default max_tokens
  (1024): 2560 KV cells (``--n-ctx 2560 --kv-size full``), so a short ``--max-tokens`` run measures the
  default's memory;
- ``q8``: the defaults with ``--kv-cache-type q8_0`` (flash attention); ``q8-1024`` likewise at 2560 cells;
- ``q8-full``: ``--mmap off --kv-size full --kv-cache-type q8_0``;
- ``no-repack``: ``--mmap on --kv-size fit`` with llama.cpp's weight repacking turned off
  (``llama_model_params.use_extra_bufts`` False, set in the child: not an edgejudge option).

``--stages`` also loads the pair once per configuration in a child and prints how long each stage took
(``LlamaCppEngine.load_times``, the vocabulary alone, one context creation). Prints Markdown; exits 0.

    python scripts/bench_memory.py --model /tmp/edgejudge-bench/gguf/realistic-Q4_K_M.gguf \\
        --mmproj /tmp/edgejudge-bench/gguf/mmproj-realistic-F16.gguf --rounds 3 --threads 2 --stages
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES: dict[str, list[str]] = {
    "before": ["--mmap", "on", "--kv-size", "full", "--kv-cache-type", "f16"],
    "no-mmap": ["--mmap", "off", "--kv-size", "full"],
    "fit": ["--mmap", "on", "--kv-size", "fit"],
    "default": [],
    "default-1024": ["--n-ctx", "2560", "--kv-size", "full"],
    "q8": ["--kv-cache-type", "q8_0"],
    "q8-1024": ["--n-ctx", "2560", "--kv-size", "full", "--kv-cache-type", "q8_0"],
    "q8-full": ["--mmap", "off", "--kv-size", "full", "--kv-cache-type", "q8_0"],
    "no-repack": ["--mmap", "on", "--kv-size", "fit"],
}
#: Candidates run with llama.cpp's repacking off (a model parameter llama-cpp-python does not expose).
NO_REPACK = {"no-repack"}

INSTRUCTION = "Describe the image in one or two sentences."
RESPONSE = (
    "The picture shows a red square in the upper left, a blue circle and a green stripe along the bottom."
)
REFERENCE = "A synthetic picture with a red square, a blue circle and a green stripe on a light background."

#: The child: optionally turns repacking off, then runs the edgejudge command line.
_CHILD = """
import os, sys
if os.environ.get("BENCH_NO_REPACK") == "1":
    import llama_cpp.llama_cpp as _lib
    _default = _lib.llama_model_default_params
    def _params():
        p = _default()
        p.use_extra_bufts = False
        return p
    _lib.llama_model_default_params = _params
from edgejudge.cli import main
sys.argv[0] = "edgejudge"
main()
"""

#: Started between this process and the measured one, so that its ru_maxrss is its own.
_SPAWNER = """
import json, os, subprocess, sys
args, report = json.loads(sys.argv[1]), sys.argv[2]
proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
with open(report, "w") as fh:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss,
               "stdout": out.decode("utf-8", "replace")}, fh)
"""

_STAGES = """
import json, sys, time
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.native.log import set_native_logging
import llama_cpp
text, mmproj, threads, mmap, kv_size, kv_type = sys.argv[1:7]
set_native_logging(False)
t0 = time.perf_counter()
vocab = llama_cpp.Llama(text, vocab_only=True, verbose=False)
vocab_s = time.perf_counter() - t0
vocab.close()
eng = LlamaCppEngine(text, mmproj, n_threads=int(threads), mmap=mmap, kv_size=kv_size,
                     kv_cache_type=kv_type)
times = dict(eng.load_times)
t0 = time.perf_counter()
eng._model.resize(4096)
times["context_4096_s"] = time.perf_counter() - t0
times["vocab_only_s"] = vocab_s
eng.close()
print(json.dumps(times))
"""


def machine() -> str:
    cpu = platform.processor() or "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {mem / 1024**2:.1f} GiB RAM, "
        f"Python {platform.python_version()}; "
        f"load average at start {load[0]:.2f} (the machine is shared: figures are medians of rotated rounds)"
    )


def make_image(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = np.full((336, 336, 3), 235, dtype=np.uint8)
    pixels[20:140, 20:140] = (200, 30, 30)
    pixels[300:330, :] = (30, 160, 60)
    pixels = np.clip(pixels.astype(int) + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    path = folder / "image.png"
    Image.fromarray(pixels).save(path)
    return path


def run_judge(name: str, args: argparse.Namespace, image: Path) -> dict[str, float]:
    argv = [
        sys.executable, "-c", _CHILD, "judge", str(image), "-i", INSTRUCTION, "--response", RESPONSE,
        "--reference", REFERENCE, "--model", str(args.model), "--mmproj", str(args.mmproj), "--json",
        "--temperature", "0", "--threads", str(args.threads), "--max-tokens", str(args.max_tokens),
        *CANDIDATES[name],
    ]  # fmt: skip
    env = {**os.environ, "BENCH_NO_REPACK": "1" if name in NO_REPACK else "0", "NO_COLOR": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-S", "-c", _SPAWNER, json.dumps(argv), str(report)],
            env=env, check=True, stderr=subprocess.DEVNULL if not args.show_stderr else None,
        )  # fmt: skip
        wall = time.perf_counter() - began
        result = json.loads(report.read_text())
    if result["code"] != 0:
        raise SystemExit(f"{name}: edgejudge judge exited {result['code']}")
    verdict = json.loads(result["stdout"])
    t = verdict["timings"]
    evaluated = t["prompt_tokens"] - t["reused_tokens"]
    return {
        "peak_gib": result["maxrss_kib"] / 1024**2,
        "wall_s": wall,
        "prompt_tps": evaluated / t["prompt_eval_s"] if t["prompt_eval_s"] else 0.0,
        "gen_tps": t["generated_tokens"] / t["generation_s"] if t["generation_s"] else 0.0,
        "encode_s": t["image_encode_s"],
        "generated": t["generated_tokens"],
        "score": verdict["score"],
    }


def stages(args: argparse.Namespace) -> None:
    print("\n### Load stages (seconds, one child per configuration)\n")
    rows = [("mmap on, full", "on", "full", "f16"), ("mmap off, fit", "off", "fit", "f16")]
    print("| configuration | CLS check | text model + first context | of which vocab alone | projector | "
          "total | one 4096-cell context |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for label, mmap, kv_size, kv_type in rows:
        out = subprocess.run(
            [sys.executable, "-c", _STAGES, str(args.model), str(args.mmproj), str(args.threads), mmap,
             kv_size, kv_type], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        t = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {label} | {t['probe_s']:.2f} | {t['text_model_s']:.2f} | {t['vocab_only_s']:.2f} | "
            f"{t['mmproj_s']:.2f} | {t['total_s']:.2f} | {t['context_4096_s']:.2f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mmproj", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--stages", action="store_true", help="also time the load stages")
    parser.add_argument("--all", action="store_true", help="print every round's figures too")
    parser.add_argument("--show-stderr", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates: {', '.join(unknown)} (known: {', '.join(CANDIDATES)})")
    print(f"## bench_memory: {args.model.name} + {args.mmproj.name}\n")
    print(f"Machine: {machine()}.")
    print(f"`edgejudge judge`, one verdict, --temperature 0 --threads {args.threads} "
          f"--max-tokens {args.max_tokens}; {args.rounds} rounds, order rotated each round.\n")  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        image = make_image(Path(tmp))
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                results[name].append(run_judge(name, args, image))
                if args.all:
                    figures = {k: round(v, 3) for k, v in results[name][-1].items()}
                    print(f"round {r + 1} {name}: {json.dumps(figures)}")
                sys.stdout.flush()
    print("| candidate | flags | peak RSS GiB | wall s | prompt tok/s | generation tok/s | tokens | score |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        rs = results[name]

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(x[key] for x in rs)

        flags = " ".join(CANDIDATES[name]) or "(defaults)"
        if name in NO_REPACK:
            flags += " + repacking off"
        peaks = sorted(x["peak_gib"] for x in rs)
        print(
            f"| {name} | `{flags}` | {med('peak_gib'):.2f} ({peaks[0]:.2f}-{peaks[-1]:.2f}) | "
            f"{med('wall_s'):.1f} | "
            f"{med('prompt_tps'):.1f} | {med('gen_tps'):.1f} | {int(med('generated'))} | "
            f"{','.join(str(x['score']) for x in rs)} |"
        )
    if args.stages:
        stages(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
