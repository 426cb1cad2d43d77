#!/usr/bin/env python3
"""Benchmark: the judging path at an older commit against the working tree, in one run.

A refactor must not slow judging. This script exports ``--before`` (a git revision, default the commit
before the restructure of issue #9) into a temporary directory and runs the same workload on both trees,
alternating, on the same GGUF pair as ``bench_judge.py`` (the realistic-shape 1.1B model, cached in
``--bench-dir``):

- ``parallel``: K responses to one image through ``Judge.evaluate_many`` (parallel sequences), cold cache;
- ``sequential``: the same K judgments one after another (``max_parallel=1``), cold cache;
- ``process``: one ``edgejudge judge IMAGE --json`` process from start to exit (imports, model load,
  one judgment), as a user meets it.

Each tree's library sides run in one long-lived worker process (its own interpreter with that tree first
on ``PYTHONPATH``, the same virtual environment and llama.cpp build); each round runs every workload on
both sides, and which side goes first alternates from round to round (after one warm-up each); the
``process`` rounds run after the workers have exited, since idle workers slow a new process down.
Reported: medians per side and the median of the per-round after/before wall-time ratios (1.00 = no
change; below 1 = faster). Prints Markdown; exits 0.

    python scripts/bench_before_after.py --threads 2 --rounds 5 --max-tokens 16
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_judge import INSTRUCTION, REFERENCE, RESPONSES, ensure_model, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BEFORE = "2574ae4"  # main before the restructure (issue #9)

# The worker speaks only the public API that both trees have: LlamaCppEngine, Judge, GenerationParams.
WORKER = r"""
import json, sys, time
from pathlib import Path
import edgejudge
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.llama import LlamaCppEngine
from edgejudge.judge import Judge

cfg = json.loads(sys.argv[1])
png = Path(cfg["image"]).read_bytes()
common = dict(n_ctx=cfg["n_ctx"], n_threads=cfg["threads"], n_batch=cfg["n_batch"], image_cache_size=8)
judges = {
    "parallel": Judge(LlamaCppEngine(cfg["text"], cfg["mmproj"], max_parallel=cfg["k"], **common)),
    "sequential": Judge(LlamaCppEngine(cfg["text"], cfg["mmproj"], max_parallel=1, **common)),
}
params = GenerationParams(temperature=0.0, max_tokens=cfg["max_tokens"], seed=0)
kw = dict(instruction=cfg["instruction"], rubric="vqa-helpfulness", reference=cfg["reference"], params=params)
print(json.dumps({"ready": edgejudge.__file__}), flush=True)
for line in sys.stdin:
    mode, k = json.loads(line)
    judge = judges[mode]
    judge.engine.clear_cache()
    responses = cfg["responses"][:k]
    t0 = time.perf_counter()
    if mode == "parallel":
        verdicts = judge.evaluate_many(png, responses=responses, **kw)
    else:
        verdicts = [judge.evaluate(png, response=r, **kw) for r in responses]
    wall = time.perf_counter() - t0
    scores = [v.score for v in verdicts]
    gen = sum(v.timings.generated_tokens for v in verdicts)
    print(json.dumps({"wall": wall, "scores": scores, "generated": gen}), flush=True)
"""


class Worker:
    def __init__(self, tree: Path, cfg: dict[str, object]) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        ready = json.loads(self._line())
        if not Path(ready["ready"]).is_relative_to(tree):
            raise SystemExit(f"the worker imported {ready['ready']}, not the tree {tree}")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("a benchmark worker died (see its stderr above)")
        return line

    def run(self, mode: str, k: int) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([mode, k]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def judge_process(tree: Path, cfg: dict[str, object]) -> dict[str, float]:
    """One ``edgejudge judge`` process, start to exit."""
    args = [
        sys.executable, "-c", "from edgejudge.cli import main; main()", "judge", str(cfg["image"]),
        "--model", str(cfg["text"]), "--mmproj", str(cfg["mmproj"]),
        "--instruction", str(cfg["instruction"]), "--response", RESPONSES[0],
        "--reference", str(cfg["reference"]), "--rubric", "vqa-helpfulness",
        "--temperature", "0", "--seed", "0", "--max-tokens", str(cfg["max_tokens"]),
        "--threads", str(cfg["threads"]), "--n-ctx", str(cfg["n_ctx"]), "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree), "EDGEJUDGE_HOME": str(cfg["home"])}
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"edgejudge judge failed in {tree}:\n{done.stderr}")
    return {"wall": wall, "scores": [json.loads(done.stdout)["score"]]}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default=DEFAULT_BEFORE, help="git revision to compare against")
    parser.add_argument(
        "--bench-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgejudge-bench"
    )
    parser.add_argument("--k", type=int, default=4, help="responses judged per image")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-batch", type=int, default=512)
    args = parser.parse_args()

    from edgejudge.images import synthetic_image

    text, mmproj = ensure_model(args.bench_dir, "Q4_K_M")
    with tempfile.TemporaryDirectory(prefix="edgejudge-before-") as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        image = Path(tmp) / "image.png"
        buf = io.BytesIO()
        synthetic_image(336, seed=1).save(buf, "PNG")
        image.write_bytes(buf.getvalue())
        cfg: dict[str, object] = {
            "text": str(text), "mmproj": str(mmproj), "image": str(image), "k": args.k,
            "threads": args.threads, "n_ctx": args.n_ctx, "n_batch": args.n_batch,
            "max_tokens": args.max_tokens, "instruction": INSTRUCTION, "reference": REFERENCE,
            "responses": [RESPONSES[i % len(RESPONSES)] for i in range(args.k)],
            "home": str(Path(tmp) / "home"),
        }  # fmt: skip
        trees = {"before": before, "after": ROOT}
        workers = {side: Worker(tree, cfg) for side, tree in trees.items()}
        modes = ("parallel", "sequential", "process")
        results: dict[tuple[str, str], list[dict[str, float]]] = {(s, m): [] for s in trees for m in modes}

        def once(side: str, mode: str, k: int) -> dict[str, float]:
            if mode == "process":
                return judge_process(trees[side], cfg)
            return workers[side].run(mode, k)

        def rounds(phase: tuple[str, ...]) -> None:
            for side in trees:  # one warm-up each
                for mode in phase:
                    once(side, mode, 1)
            for i in range(args.rounds):
                order = list(trees) if i % 2 == 0 else list(trees)[::-1]  # who goes first alternates
                for mode in phase:
                    for side in order:
                        results[side, mode].append(once(side, mode, args.k))
                    print(
                        f"round {i + 1} {mode}: before {results['before', mode][-1]['wall']:.2f} s, "
                        f"after {results['after', mode][-1]['wall']:.2f} s",
                        file=sys.stderr,
                    )

        rounds(("parallel", "sequential"))
        for worker in workers.values():  # idle workers holding two models each slow a new process down
            worker.close()
        rounds(("process",))

    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True, text=True
    ).stdout.strip()
    print(f"\n### Judging before ({commit}) and after (working tree), same run\n")
    print(f"{machine_info()}\n")
    print(
        f"Realistic-shape 1.1B Q4_K_M text + F16 mmproj; K={args.k}; n_ctx {args.n_ctx}, "
        f"n_batch {args.n_batch}, threads {args.threads}, max_tokens {args.max_tokens}, temperature 0; "
        f"{args.rounds} rounds (which side goes first alternates) after one warm-up per side; medians.\n"
    )
    print(
        "| workload | before s | after s | after/before (median of rounds) | per-round ratios | same scores |"
    )
    print("|---|---:|---:|---:|---|---|")
    labels = {
        "parallel": f"{args.k} judgments, parallel sequences",
        "sequential": f"{args.k} judgments, one after another",
        "process": "one `edgejudge judge` process",
    }
    for mode in modes:
        b, a = results["before", mode], results["after", mode]
        ratios = [y["wall"] / x["wall"] for x, y in zip(b, a, strict=True)]
        same = all(x["scores"] == y["scores"] for x, y in zip(b, a, strict=True))
        print(
            f"| {labels[mode]} | {statistics.median(r['wall'] for r in b):.2f} | "
            f"{statistics.median(r['wall'] for r in a):.2f} | **{statistics.median(ratios):.3f}** | "
            f"{', '.join(f'{r:.3f}' for r in ratios)} | {'yes' if same else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
