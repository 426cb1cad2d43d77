#!/usr/bin/env python3
"""Benchmark: how much does decoding K sequences per step speed up generation on this machine?

The raw llama.cpp side of edgejudge's parallel sequences (``LlamaCppEngine.generate_many``), without
sampling or grammar, to read the judging benchmark's numbers against. On
one text GGUF (default: the realistic-shape model that ``scripts/bench_judge.py`` caches in
``--bench-dir``), a context with ``n_seq_max = K`` and a unified KV cache evaluates an 800-token prompt
on sequence 0, copies it to sequences 1..K-1, then times ``--steps`` decode steps of K tokens (one per
sequence, logits for each) against the baseline in the same run: the same steps with one sequence.
Prints a Markdown table: ms per step and total tokens/s for each K, and the throughput gain over K=1.

    python scripts/bench_batch_decode.py --threads 1 --ks 1 2 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PROMPT_TOKENS = 800


def measure(model: object, k: int, threads: int, steps: int) -> float:
    """Seconds per decode step of ``k`` sequences (median of three passes over ``steps`` steps)."""
    import statistics

    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 4096
    params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = threads
    params.n_seq_max = max(k, 1)
    params.kv_unified = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise SystemExit("error: llama.cpp could not create a context")
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    try:

        def decode(items: list[tuple[int, int, int, bool]]) -> None:
            batch.n_tokens = len(items)
            for i, (token, pos, seq, logits) in enumerate(items):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
                batch.seq_id[i][0] = seq
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise SystemExit("error: llama_decode failed")

        for start in range(0, PROMPT_TOKENS, 512):
            n = min(512, PROMPT_TOKENS - start)
            decode(
                [(100 + (start + i) % 1000, start + i, 0, start + i == PROMPT_TOKENS - 1) for i in range(n)]
            )
        memory = llama_cpp.llama_get_memory(ctx)
        for seq in range(1, k):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, PROMPT_TOKENS)
        passes = []
        pos = PROMPT_TOKENS
        for _ in range(3):
            t0 = time.perf_counter()
            for step in range(steps):
                decode([(200 + step, pos, seq, True) for seq in range(k)])
                pos += 1
            passes.append((time.perf_counter() - t0) / steps)
        return statistics.median(passes)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a text GGUF (default: the judging benchmark's model)")
    parser.add_argument("--bench-dir", type=Path, default=Path("/tmp/edgejudge-bench"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    import llama_cpp

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_judge import ensure_model, machine_info

    model_path = args.model if args.model is not None else ensure_model(args.bench_dir, "Q4_K_M")[0]
    if not model_path.is_file():
        raise SystemExit(f"error: model not found: {model_path}")
    llama_cpp.llama_backend_init()
    silence = llama_cpp.llama_log_callback(lambda level, text, data: None)  # kept alive until exit
    llama_cpp.llama_log_set(silence, None)
    model = llama_cpp.llama_model_load_from_file(
        str(model_path).encode(), llama_cpp.llama_model_default_params()
    )
    if not model:
        raise SystemExit(f"error: llama.cpp could not load {model_path}")
    ks = sorted(set([1, *args.ks]))  # K=1 is the baseline, always measured in the same run
    results = {k: measure(model, k, args.threads, args.steps) for k in ks}
    llama_cpp.llama_model_free(model)

    print(f"Machine: {machine_info()}")
    print(f"Model: {model_path.name}; prompt {PROMPT_TOKENS} tokens, {args.steps} steps × 3 passes (median), "
          f"threads {args.threads}\n")  # fmt: skip
    print("| sequences K | ms per step | tokens/s (all sequences) | throughput vs K=1 |")
    print("|---:|---:|---:|---:|")
    base = 1 / results[1]
    for k in ks:
        rate = k / results[k]
        print(f"| {k} | {results[k] * 1000:.1f} | {rate:.1f} | {rate / base:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
