#!/usr/bin/env python3
"""Benchmark: one batch (40 rows, 10 images, 4 responses each) judged on the local engine and on llama-server
fleets, in the same run: rows per minute, the scaling ratio against one single-slot server, the prefix-cache
hit rate and the tokens the servers evaluated and generated per second.

Configurations (the same GGUF pair, temperature 0, the same max_tokens; ``--threads`` cores in total on each
side, so on a small machine the slots compete for the same cores):

- **local**: ``edgejudge batch`` in this process (``LlamaCppEngine``, ``--parallel 4``: the rows of one image
  decoded as parallel sequences over a shared prefix);
- **server ×1 slot / ×2 / ×4**: one llama-server started by ``edgejudge.serverctl.start_server`` with that
  many slots and ``--threads`` threads; the batch keeps one image's rows on one slot (its prompt cache keeps
  the image and the shared prompt) and as many images in flight as there are slots;
- **2 servers ×2 slots**: two servers with half the threads each (the fleet: images spread over both).

Realistic proportions: the model of ``bench_judge.py`` (CLIP-L/336 tower, 576 image tokens, ~1.1B LLaMA
text model, Q4_K_M), the built-in ``vqa-helpfulness`` rubric trimmed to about ``--rubric-tokens`` 120
tokens of the fixture's tokenizer (as ``bench_policy.py`` does: its synthetic vocabulary spends more tokens
per English word than LLaMA's; 0 keeps the rubric as written), a reference answer, ``--max-tokens`` 64.
The output logs are written in a temporary folder and each configuration starts cold (fresh engine or
fresh servers). Prints Markdown; exits 0.

    python scripts/bench_scale.py --bench-dir /tmp/edgejudge-bench
    python scripts/bench_scale.py --rows 40 --images 10 --only local,server1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_judge import INSTRUCTION, REFERENCE, RESPONSES, ensure_model, machine_info  # noqa: E402
from bench_policy import trim_rubric  # noqa: E402

CONFIGS = {
    "local": ("local engine (in process, --parallel 4)", 0, 0),
    "server1": ("1 llama-server, 1 slot", 1, 1),
    "server2": ("1 llama-server, 2 slots", 1, 2),
    "server4": ("1 llama-server, 4 slots", 1, 4),
    "fleet": ("2 llama-servers, 2 slots each", 2, 2),
}


@dataclass
class Outcome:
    name: str
    rows: int
    ok: int
    wall_s: float
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    scores: dict[str, int]

    @property
    def rows_per_min(self) -> float:
        return 60.0 * self.rows / self.wall_s if self.wall_s else 0.0

    @property
    def hit_rate(self) -> float:
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def bench_rubric(text_model: Path, target: int) -> dict[str, Any]:
    """The ``vqa-helpfulness`` rubric as an inline table, trimmed to about ``target`` tokens (0: whole)."""
    from edgejudge.native.model import TextModel
    from edgejudge.rubric import load_rubric

    rubric = load_rubric("vqa-helpfulness")
    if target > 0:
        model = TextModel(text_model, n_ctx=512, n_threads=1)
        try:
            rubric = trim_rubric(rubric, model, target)
        finally:
            model.close()
    return {"criteria": rubric.criteria, **{f"score{k + 1}": d for k, d in enumerate(rubric.descriptions)}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_input(folder: Path, rows: int, images: int, rubric: dict[str, Any]) -> Path:
    from edgejudge.images import synthetic_image

    for k in range(images):
        synthetic_image(336, seed=100 + k).save(folder / f"image-{k}.png")
    lines = []
    for i in range(rows):
        lines.append(
            {
                "id": f"row-{i}",
                "image": f"image-{i % images}.png",
                "instruction": INSTRUCTION,
                "response": RESPONSES[i % len(RESPONSES)] + f" (answer {i})",
                "reference": REFERENCE,
                "rubric": rubric,
            }
        )
    path = folder / "input.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines), encoding="utf-8")
    return path


def run_one(name: str, judge: Any, inp: Path, out: Path, max_tokens: int) -> Outcome:
    from edgejudge.batch import run_batch
    from edgejudge.engine.base import GenerationParams

    params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
    t0 = time.perf_counter()
    summary = run_batch(judge, inp, out, params=params)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    prompt = reused = generated = 0
    for row in rows:
        timings = row.get("timings") or {}
        prompt += int(timings.get("prompt_tokens", 0))
        reused += int(timings.get("reused_tokens", 0))
        generated += int(timings.get("generated_tokens", 0))
    return Outcome(name, summary.judged, summary.ok, wall, prompt, reused, generated, summary.histogram)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgejudge-bench"
    )
    parser.add_argument("--quant", default="Q4_K_M", choices=("Q4_K_M", "Q8_0", "Q5_K_M", "F16"))
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rubric-tokens", type=int, default=120, help="trim the rubric (0: as written)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ctx-per-seq", type=int, default=2048)
    parser.add_argument("--only", default=",".join(CONFIGS), help="configurations to run, comma-separated")
    args = parser.parse_args()
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")

    from edgejudge.judge import Judge
    from edgejudge.load_options import LoadOptions
    from edgejudge.native.log import set_native_logging
    from edgejudge.serverctl import find_server_binary, start_server

    set_native_logging(False)
    text, mmproj = ensure_model(args.bench_dir, args.quant)
    if any(CONFIGS[c][1] for c in wanted) and find_server_binary() is None:
        print("no llama-server binary: run `edgejudge server build` first", file=sys.stderr)
        return 1
    outcomes: list[Outcome] = []
    server_stats: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgejudge-bench-scale-") as tmp:
        folder = Path(tmp)
        inp = write_input(folder, args.rows, args.images, bench_rubric(text, args.rubric_tokens))
        for config in wanted:
            label, servers, slots = CONFIGS[config]
            out = folder / f"{config}.jsonl"
            print(f"running {label} ...", file=sys.stderr)
            with ExitStack() as stack:
                if servers == 0:
                    options = LoadOptions(model=text, mmproj=mmproj, n_threads=args.threads, parallel=4)
                else:
                    urls = []
                    for k in range(servers):
                        handle = start_server(
                            text, mmproj=mmproj, port=free_port(), slots=slots, ctx_per_seq=args.ctx_per_seq,
                            threads=max(1, args.threads // servers), log=folder / f"{config}-{k}.log",
                        )  # fmt: skip
                        stack.callback(handle.stop)
                        urls.append(handle.url)
                    options = LoadOptions(
                        model=text, mmproj=mmproj, engine="llama-server", servers=tuple(urls), parallel=4
                    )
                judge = stack.enter_context(Judge.from_options(options))
                outcome = run_one(label, judge, inp, out, args.max_tokens)
                outcomes.append(outcome)
                server_stats[label] = list(judge.engine.servers)
                print(
                    f"  {label}: {outcome.ok}/{outcome.rows} rows in {outcome.wall_s:.1f} s "
                    f"({outcome.rows_per_min:.2f} rows/min), {100 * outcome.hit_rate:.0f} % of the prompt "
                    f"reused, {outcome.prompt_tokens} prompt / {outcome.generated_tokens} generated tokens",
                    file=sys.stderr,
                    flush=True,
                )

    print(f"\n## Scale-out ({args.rows} rows, {args.images} images, max_tokens {args.max_tokens})\n")
    print(machine_info() + "\n")
    base = next((o for o in outcomes if o.name == CONFIGS["server1"][0]), None)
    print("| configuration | rows ok | wall s | rows/min | × 1-slot server | prompt tok/row | prefix reused "
          "| evaluated tok/s | generated tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        ratio = "-"
        if base is not None and base.rows_per_min:
            ratio = f"{o.rows_per_min / base.rows_per_min:.2f}×"
        evaluated = o.prompt_tokens - o.reused_tokens
        print(
            f"| {o.name} | {o.ok}/{o.rows} | {o.wall_s:.1f} | {o.rows_per_min:.2f} | {ratio} | "
            f"{o.prompt_tokens / max(o.rows, 1):.0f} | {100 * o.hit_rate:.0f} % | "
            f"{evaluated / o.wall_s:.0f} | {o.generated_tokens / o.wall_s:.1f} |"
        )
    print("\nPer server (requests done, cache reuse, busy seconds):\n")
    for label, stats in server_stats.items():
        for s in stats:
            reuse = 100 * s.reused_tokens / s.prompt_tokens if s.prompt_tokens else 0.0
            print(
                f"- {label}: {s.url}: {s.done} done, {s.failed} failed, {reuse:.0f} % reused, "
                f"{s.busy_s:.1f} s busy"
            )
    scores = {o.name: o.scores for o in outcomes}
    print("\nScore histograms (same inputs, temperature 0):\n")
    for name, hist in scores.items():
        print(f"- {name}: {hist}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
