#!/usr/bin/env python3
"""Benchmark: one image and response against a five-rule policy, three ways, in the same run.

- **stock**: five separate ``Llava15ChatHandler`` calls, one per rule (what a user would do by hand with
  llama-cpp-python): every call clears the KV cache, re-encodes the image and evaluates the whole prompt.
- **one after another, cold**: edgejudge judging the five rules with ``Judge.evaluate``, one after another,
  the engine's caches cleared before each (no shared prefix, no cached image embedding).
- **policy path**: ``Judge.evaluate_policy``: the image encoded once, the prompt through the reference
  answer evaluated once, the five rubric tails and generations decoded as parallel sequences.

Realistic proportions: the model of ``bench_judge.py`` (CLIP-L/336 tower, 576 image tokens, ~1.1B LLaMA text
model, Q4_K_M), the first five rules of the built-in ``marketplace-listing`` policy, each rubric trimmed to
about 120 tokens of the model's tokenizer (``--rule-tokens``; 0 keeps them as written: 330-450 tokens with
the fixture's synthetic vocabulary),
``--max-tokens`` 64 generated per rule, temperature 0, the same threads / n_ctx / n_batch on every side.
Runs alternate stock, cold, policy (``--rounds``, at least 3) after one warm-up per side; reports per-stage
medians and the median of the per-round wall-time ratios against the stock side. Target: the policy path
at least 3× faster than stock. Prints Markdown; exits 0.

    python scripts/bench_policy.py --bench-dir /tmp/edgejudge-bench --rounds 3
    python scripts/bench_policy.py --rounds 0 --decode-table     # only the decode-step table
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_judge import StockSide, ensure_model, machine_info  # noqa: E402

INSTRUCTION = "A photo and description posted as a listing on a second-hand marketplace."
RESPONSE = (
    "Selling my road bike, 54 cm aluminium frame, Shimano 105 groupset, ridden about 2000 km. Small scratch "
    "on the top tube, otherwise excellent condition. Pick-up only."
)
REFERENCE = (
    "A clear photo of a used road bike matching the description, with no people, documents or other "
    "personal data visible and nothing prohibited in the picture."
)
STAGES = ("wall", "encode", "prompt", "gen", "prompt_tok", "reused", "gen_tok")


def _stats() -> dict[str, float]:
    return dict.fromkeys(STAGES, 0.0)


def _add(stats: dict[str, float], timings: object) -> None:
    stats["encode"] += timings.image_encode_s  # type: ignore[attr-defined]
    stats["prompt"] += timings.prompt_eval_s  # type: ignore[attr-defined]
    stats["gen"] += timings.generation_s  # type: ignore[attr-defined]
    stats["prompt_tok"] += timings.prompt_tokens  # type: ignore[attr-defined]
    stats["reused"] += timings.reused_tokens  # type: ignore[attr-defined]
    stats["gen_tok"] += timings.generated_tokens  # type: ignore[attr-defined]


class EdgePolicy:
    """edgejudge; ``policy_path`` True: ``evaluate_policy`` (parallel sequences, shared prefix), else one
    ``evaluate`` per rule with the caches cleared before each."""

    def __init__(
        self, text: Path, mmproj: Path, args: argparse.Namespace, policy: object, *, policy_path: bool
    ):
        from edgejudge.engine.llama import LlamaCppEngine
        from edgejudge.judge import Judge

        self.policy = policy
        self.policy_path = policy_path
        self.name = (
            "edgejudge policy path (parallel, shared prefix)"
            if policy_path
            else ("edgejudge, rules one after another, cold")
        )
        rules = len(policy.rules)  # type: ignore[attr-defined]
        self.engine = LlamaCppEngine(
            text, mmproj, n_ctx=args.n_ctx, n_threads=args.threads, n_batch=args.n_batch,
            image_cache_size=8, max_parallel=rules if policy_path else 1,
        )  # fmt: skip
        self.judge = Judge(self.engine)
        self.args = args

    def run(self, png: bytes) -> dict[str, float]:
        from edgejudge.engine.base import GenerationParams

        params = GenerationParams(temperature=0.0, max_tokens=self.args.max_tokens, seed=0)
        stats = _stats()
        self.engine.clear_cache()
        t0 = time.perf_counter()
        if self.policy_path:
            result = self.judge.evaluate_policy(
                png, policy=self.policy, instruction=INSTRUCTION, response=RESPONSE, reference=REFERENCE,
                params=params,
            )  # fmt: skip
            verdicts = [r.verdict for r in result.rules]
        else:
            verdicts = []
            for rule in self.policy.rules:  # type: ignore[attr-defined]
                self.engine.clear_cache()
                verdicts.append(
                    self.judge.evaluate(
                        png,
                        instruction=INSTRUCTION,
                        response=RESPONSE,
                        rubric=rule.rubric,
                        reference=REFERENCE,
                        params=params,
                    )  # fmt: skip
                )
        stats["wall"] = time.perf_counter() - t0
        for verdict in verdicts:
            if verdict is None:
                raise SystemExit("a rule got no verdict; the benchmark needs every rule judged")
            _add(stats, verdict.timings)
        return stats

    def close(self) -> None:
        self.judge.close()


class StockPolicy(StockSide):
    """Five separate ``Llava15ChatHandler`` calls, one per rule."""

    name = "Llava15ChatHandler, one call per rule"

    def __init__(self, text: Path, mmproj: Path, args: argparse.Namespace, policy: object) -> None:
        super().__init__(text, mmproj, args)
        self.policy = policy

    def run(self, png: bytes) -> dict[str, float]:  # type: ignore[override]
        from edgejudge.prompt import render_judge_prompt

        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        stats = _stats()
        t0 = time.perf_counter()
        for rule in self.policy.rules:  # type: ignore[attr-defined]
            self.call(uri, render_judge_prompt(INSTRUCTION, RESPONSE, rule.rubric, REFERENCE), stats)
        stats["wall"] = time.perf_counter() - t0
        return stats


def trim_rubric(rubric: Any, model: Any, target: int) -> Any:
    """``rubric`` with its criterion and five score descriptions cut to the same share of each field's
    words, the largest share that keeps it within about ``target`` tokens of ``model``'s tokenizer (a
    ``native.model.TextModel``): the issue's proportions, whatever the tokenizer (the fixture's synthetic
    vocabulary spends more tokens per English word than LLaMA's)."""

    def cut(fields: list[list[str]], share: float) -> list[str]:
        return [" ".join(words[: max(3, math.ceil(share * len(words)))]) for words in fields]

    fields = [f.split() for f in (rubric.criteria, *rubric.descriptions)]
    low, high = 0.0, 1.0
    for _ in range(12):  # the largest share of every field's words that fits the target
        mid = (low + high) / 2
        if len(model.tokenize("\n".join(cut(fields, mid)))) > target:
            high = mid
        else:
            low = mid
    criteria, *descriptions = cut(fields, low)
    return replace(rubric, criteria=criteria, descriptions=tuple(descriptions))


def trim_rules(policy: Any, text_model: Path, target: int) -> Any:
    """The policy with each rule's rubric trimmed to about ``target`` tokens (``trim_rubric``)."""
    from edgejudge.native.model import TextModel

    model = TextModel(text_model, n_ctx=512, n_threads=1)
    try:
        rules = tuple(replace(rule, rubric=trim_rubric(rule.rubric, model, target)) for rule in policy.rules)
        return replace(policy, rules=rules)
    finally:
        model.close()


def decode_steps(text_model: Path, threads: int, sizes: tuple[int, ...] = (1, 2, 4, 5, 8)) -> None:
    """Print the cost of one decode step for batches of 1..8 sequences after a shared 1000-token prefix
    (what bounds the policy path's generation: on a compute-bound CPU a batch of N costs almost N steps)."""
    from edgejudge.native.model import TextModel

    model = TextModel(text_model, n_ctx=4096, n_threads=threads, n_seq=max(sizes))
    try:
        prefix = list(range(100, 1100))
        for at in range(0, len(prefix), 500):
            piece = prefix[at : at + 500]
            model.decode([(t, at + i, 0, at + i == len(prefix) - 1) for i, t in enumerate(piece)])
        print("\n| sequences decoded together | ms per step | tokens/s in all |\n|---:|---:|---:|")
        for n in sizes:
            for seq in range(1, n):
                model.copy_sequence(0, seq, len(prefix))
            steps = 16
            t0 = time.perf_counter()
            for k in range(steps):
                model.decode([(500 + k, len(prefix) + k, seq, True) for seq in range(n)])
            step = (time.perf_counter() - t0) / steps
            print(f"| {n} | {step * 1e3:.0f} | {n / step:.1f} |")
            model.truncate(len(prefix))
            for seq in range(1, n):
                model.drop_sequence(seq)
    finally:
        model.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgejudge-bench"
    )
    parser.add_argument("--quant", default="Q4_K_M", choices=("Q4_K_M", "Q8_0", "Q5_K_M", "F16"))
    parser.add_argument("--policy", default="marketplace-listing", help="built-in policy or policy file")
    parser.add_argument("--rules", type=int, default=5, help="rules of the policy judged (its first N)")
    parser.add_argument(
        "--rule-tokens",
        type=int,
        default=120,
        help="trim each rule's rubric to about this many tokens (the issue's proportions; 0: as written)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument(
        "--decode-table", action="store_true", help="also print the cost of a decode step per batch size"
    )
    args = parser.parse_args()
    if args.rounds == 0 and args.decode_table:  # only the decode table
        from edgejudge.native.log import set_native_logging

        set_native_logging(False)
        decode_steps(ensure_model(args.bench_dir, args.quant)[0], args.threads)
        return 0
    args.rounds = max(3, args.rounds)

    from edgejudge.engine.llama import LlamaCppEngine
    from edgejudge.images import synthetic_image
    from edgejudge.native.log import set_native_logging
    from edgejudge.policy import load_policy

    text, mmproj = ensure_model(args.bench_dir, args.quant)
    policy = load_policy(args.policy)
    policy = replace(policy, rules=policy.rules[: args.rules])
    buf = io.BytesIO()
    synthetic_image(336, seed=1).save(buf, "PNG")
    png = buf.getvalue()

    set_native_logging(False)
    if args.rule_tokens > 0:
        policy = trim_rules(policy, text, args.rule_tokens)
    stock = StockPolicy(text, mmproj, args, policy)
    cold = EdgePolicy(text, mmproj, args, policy, policy_path=False)
    fast = EdgePolicy(text, mmproj, args, policy, policy_path=True)
    sides = (stock, cold, fast)
    counter = LlamaCppEngine.count_tokens
    rule_tokens = [
        counter(fast.engine, "\n".join((r.rubric.criteria, *r.rubric.descriptions))) for r in policy.rules
    ]
    print("warm-up ...", file=sys.stderr)
    for side in sides:
        side.run(png)
    results: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    for i in range(args.rounds):
        for side in sides:
            results[side.name].append(side.run(png))
            print(f"round {i + 1}: {side.name} {results[side.name][-1]['wall']:.2f} s", file=sys.stderr)
    for side in sides:
        side.close()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def ratios(name: str) -> list[float]:
        return [b["wall"] / a["wall"] for a, b in zip(results[name], results[stock.name], strict=True)]

    n = len(policy.rules)
    print(f"\n### One image and response against a {n}-rule policy ({args.quant} text + F16 mmproj)\n")
    print(f"{machine_info()}\n")
    print(
        f"Policy `{policy.name}` (first {n} rules; rubrics {min(rule_tokens)}-{max(rule_tokens)} tokens"
        f"{f', trimmed to about {args.rule_tokens}' if args.rule_tokens else ''}), "
        f"max_tokens {args.max_tokens}, temperature 0, n_ctx {args.n_ctx}, n_batch {args.n_batch}, "
        f"threads {args.threads} (generation and prompt evaluation, every side); {args.rounds} alternating "
        "rounds after one warm-up per side; medians; warm page cache.\n"
    )
    print(
        "| side | wall s | CLIP encode s | prompt eval s | generation s | prompt tokens | reused | generated "
        "| speed-up vs stock |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        name = side.name
        encode = "(in prompt eval)" if side is stock else f"{med(name, 'encode'):.2f}"
        speedup = "1.00×" if side is stock else f"**{statistics.median(ratios(name)):.2f}×**"
        print(
            f"| {name} | {med(name, 'wall'):.2f} | {encode} | {med(name, 'prompt'):.2f} | "
            f"{med(name, 'gen'):.2f} | {med(name, 'prompt_tok'):.0f} | {med(name, 'reused'):.0f} | "
            f"{med(name, 'gen_tok'):.0f} | {speedup} |"
        )
    for side in (cold, fast):
        rounds = ", ".join(f"{r:.2f}" for r in ratios(side.name))
        print(f"\n{side.name}: **{statistics.median(ratios(side.name)):.2f}×** stock ({rounds})")
    target = statistics.median(ratios(fast.name))
    print(
        f"\nTarget (policy path ≥ 3× stock): {'met' if target >= 3 else 'NOT met'} ({target:.2f}×). "
        "Stock stages come from llama.cpp's perf counters, which charge the CLIP encode to prompt eval; "
        "edgejudge's generation time of parallel sequences is each one's share of the shared decode loop."
    )
    if args.decode_table:
        decode_steps(text, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
