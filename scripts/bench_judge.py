#!/usr/bin/env python3
"""Benchmark: judging K responses to one image, edgejudge vs llama-cpp-python's stock ``Llava15ChatHandler``.

Both sides use the same GGUF pair (a random-weight model with realistic shapes: CLIP-L/336 tower, 576 image
tokens, ~1.1B LLaMA text model from ``TinySpec.realistic()``, converted by edgejudge's converter), the same
n_ctx / n_batch / threads, the same image (a 336×336 PNG, so neither side resamples), the same conversation
text (system prompt + judge prompt; the handler's own template then drops separators, see the README), the
same max_tokens and temperature 0. edgejudge runs with its grammar, prefix reuse and image-embedding cache,
starting each run cold (``clear_cache``), twice: one judgment after another (``max_parallel=1``), and the K
responses through ``Judge.evaluate_many`` (decoded as K parallel sequences). The handler clears the KV
cache and re-encodes on every call.

Runs alternate stock, sequential, parallel (``--pairs`` rounds, at least 3) after one warm-up judgment per
side; reported: per-stage medians, the median of the per-round wall-time ratios against the stock side, and
generation tokens/s against the memory-bandwidth limit (measured ``numpy.copyto`` bandwidth ÷ bytes of
weights read per token). Prints Markdown; exits 0.

    python scripts/bench_judge.py --bench-dir /tmp/edgejudge-bench --pairs 3 --max-tokens 16
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

RESPONSES = (
    "The picture shows a red square in the upper left, a blue circle and a green stripe along the bottom.",
    "It is a photo of a cat sleeping on a sofa next to a window.",
    "There are three shapes: a square, a circle and a band of colour; the square is red and the circle is "
    "blue, and the background is a light gradient with some noise.",
    "A geometric test pattern with coloured shapes on a pale background.",
    "An abstract composition. The main colours are red, blue and green; nothing else can be seen clearly.",
    "Shapes.",
)
INSTRUCTION = "Describe the image in one or two sentences."
REFERENCE = "A synthetic picture with a red square, a blue circle and a green stripe on a light background."


def machine_info() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        mem = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    import gguf  # noqa: F401
    import llama_cpp

    flags = llama_cpp.llama_print_system_info().decode().strip()
    return (
        f"CPU {cpu}, {len(os.sched_getaffinity(0))} cores available, RAM {mem}; "
        f"Python {platform.python_version()}, "
        f"llama-cpp-python {llama_cpp.__version__} (CPU build; {flags})"
    )


def ensure_model(bench_dir: Path, quant: str) -> tuple[Path, Path]:
    from edgejudge import convert_checkpoint
    from edgejudge.fixtures.tiny import TinySpec, make_tiny_llava

    out = bench_dir / "gguf"
    text, mmproj = out / f"realistic-{quant}.gguf", out / "mmproj-realistic-F16.gguf"
    if text.is_file() and mmproj.is_file():
        return text, mmproj
    ckpt = bench_dir / "checkpoint"
    t0 = time.perf_counter()
    if not (ckpt / "config.json").is_file():
        shutil.rmtree(ckpt, ignore_errors=True)
        print(f"generating the realistic-shape checkpoint in {ckpt} (once) ...", file=sys.stderr)
        make_tiny_llava(ckpt, TinySpec.realistic(), fmt="safetensors", dtype="f16")
    print(f"converting to {quant} ...", file=sys.stderr)
    result = convert_checkpoint(ckpt, out, name="realistic", quant=quant, mmproj_quant="F16")
    shutil.rmtree(ckpt, ignore_errors=True)  # 3 GB; the GGUF pair is what is cached
    print(f"model ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return result.text_model, result.mmproj


def weights_bytes_per_token(text_model: Path) -> int:
    """Bytes of weights read to generate one token: every tensor except the embedding table (one row)."""
    import gguf

    reader = gguf.GGUFReader(str(text_model), "r")
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def copy_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes/s of numpy.copyto (read + write counted)."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / statistics.median(times)


def _new_stats() -> dict[str, float]:
    """Per-run totals: wall and stage seconds, prompt/reused/generated token counts."""
    keys = ("wall", "encode", "prompt", "gen", "prompt_tok", "reused", "gen_tok")
    return dict.fromkeys(keys, 0.0)


class EdgeSide:
    """edgejudge; ``parallel``: the K responses through ``Judge.evaluate_many`` (decoded as parallel
    sequences), else one ``Judge.evaluate`` after another on an engine with ``max_parallel=1``."""

    def __init__(self, text: Path, mmproj: Path, args: argparse.Namespace, *, parallel: bool) -> None:
        from edgejudge.engine.llama import LlamaCppEngine
        from edgejudge.judge import Judge

        self.parallel = parallel
        self.name = "edgejudge, parallel sequences" if parallel else "edgejudge, one after another"
        self.engine = LlamaCppEngine(
            text,
            mmproj,
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            n_batch=args.n_batch,
            image_cache_size=8,
            max_parallel=args.k if parallel else 1,
        )
        self.judge = Judge(self.engine)
        self.args = args

    def run(self, png: bytes, responses: tuple[str, ...]) -> dict[str, float]:
        from edgejudge.engine.base import GenerationParams

        self.engine.clear_cache()  # every run starts cold: no KV prefix, no cached embedding
        params = GenerationParams(temperature=0.0, max_tokens=self.args.max_tokens, seed=0)
        stats = _new_stats()
        common = {
            "instruction": INSTRUCTION,
            "rubric": "vqa-helpfulness",
            "reference": REFERENCE,
            "params": params,
        }
        t0 = time.perf_counter()
        if self.parallel:
            verdicts = self.judge.evaluate_many(png, responses=list(responses), **common)  # type: ignore[arg-type]
        else:
            verdicts = [self.judge.evaluate(png, response=r, **common) for r in responses]  # type: ignore[arg-type]
        stats["wall"] = time.perf_counter() - t0
        for v in verdicts:
            t = v.timings
            stats["encode"] += t.image_encode_s
            stats["prompt"] += t.prompt_eval_s
            stats["gen"] += t.generation_s  # parallel: each sequence's share of the shared decode loop
            stats["prompt_tok"] += t.prompt_tokens
            stats["reused"] += t.reused_tokens
            stats["gen_tok"] += t.generated_tokens
        return stats

    def close(self) -> None:
        self.judge.close()


class StockSide:
    name = "Llava15ChatHandler"

    def __init__(self, text: Path, mmproj: Path, args: argparse.Namespace) -> None:
        from llama_cpp.llama_chat_format import Llava15ChatHandler

        from edgejudge.native.model import SafeLlama  # stock Llama, without the AMX kernels that crash

        self.llm = SafeLlama(
            str(text),
            chat_handler=Llava15ChatHandler(str(mmproj), verbose=False),
            n_ctx=args.n_ctx,
            n_batch=args.n_batch,
            n_ubatch=args.n_batch,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_gpu_layers=0,
            verbose=False,
        )
        self.args = args

    def run(self, png: bytes, responses: tuple[str, ...]) -> dict[str, float]:
        from edgejudge.prompt import render_judge_prompt
        from edgejudge.rubric import load_rubric

        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        rubric = load_rubric("vqa-helpfulness")
        stats = _new_stats()
        t0 = time.perf_counter()
        for response in responses:
            self.call(uri, render_judge_prompt(INSTRUCTION, response, rubric, REFERENCE), stats)
        stats["wall"] = time.perf_counter() - t0
        return stats

    def call(self, uri: str, prompt: str, stats: dict[str, float]) -> None:
        """One chat completion on the image at ``uri`` with the judge prompt ``prompt``; its stages and
        token counts added to ``stats`` (llama.cpp's perf counters)."""
        import llama_cpp

        from edgejudge.prompt import SYSTEM_PROMPT

        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                         {"type": "text", "text": "\n" + prompt}]},
        ]  # fmt: skip
        llama_cpp.llama_perf_context_reset(self.llm.ctx)
        tc = time.perf_counter()
        out = self.llm.create_chat_completion(
            messages=messages, temperature=0.0, max_tokens=self.args.max_tokens, repeat_penalty=1.0
        )
        wall = time.perf_counter() - tc
        perf = llama_cpp.llama_perf_context(self.llm.ctx)
        p_eval, gen = perf.t_p_eval_ms / 1e3, perf.t_eval_ms / 1e3
        stats["prompt"] += p_eval
        stats["gen"] += gen
        stats["encode"] += max(wall - p_eval - gen, 0.0)  # image load, tokenize, sampling
        stats["prompt_tok"] += out["usage"]["prompt_tokens"]
        stats["gen_tok"] += out["usage"]["completion_tokens"]

    def close(self) -> None:
        self.llm.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgejudge-bench"
    )
    parser.add_argument("--quant", default="Q4_K_M", choices=("Q4_K_M", "Q8_0", "Q5_K_M", "F16"))
    parser.add_argument("--k", type=int, default=4, help="responses judged per image")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-batch", type=int, default=512)
    args = parser.parse_args()

    from edgejudge.images import synthetic_image
    from edgejudge.native.log import set_native_logging

    text, mmproj = ensure_model(args.bench_dir, args.quant)
    buf = io.BytesIO()
    synthetic_image(336, seed=1).save(buf, "PNG")
    png = buf.getvalue()
    responses = tuple(RESPONSES[i % len(RESPONSES)] for i in range(args.k))

    set_native_logging(False)
    seq = EdgeSide(text, mmproj, args, parallel=False)
    edge = EdgeSide(text, mmproj, args, parallel=True)
    stock = StockSide(text, mmproj, args)
    sides = (stock, seq, edge)
    set_native_logging(False)
    print("warm-up ...", file=sys.stderr)
    for side in sides:
        side.run(png, responses[:1])
    results: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    for i in range(args.pairs):
        for side in sides:
            results[side.name].append(side.run(png, responses))
            print(f"round {i + 1}: {side.name} {results[side.name][-1]['wall']:.2f} s", file=sys.stderr)

    def ratios(name: str) -> list[float]:
        return [b["wall"] / a["wall"] for a, b in zip(results[name], results[stock.name], strict=True)]

    for side in sides:
        side.close()

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    bw = copy_bandwidth()
    wbytes = weights_bytes_per_token(text)
    limit = bw / wbytes
    print(f"\n### Judging K={args.k} responses to one image ({args.quant} text + F16 mmproj)\n")
    print(f"{machine_info()}\n")
    print(
        f"n_ctx {args.n_ctx}, n_batch {args.n_batch}, threads {args.threads}, max_tokens {args.max_tokens}, "
        f"temperature 0; {args.pairs} alternating pairs after one warm-up judgment per side; medians; "
        "warm page cache.\n"
    )
    print(
        "| side | wall s (K judgments) | CLIP encode s | prompt eval s | generation s "
        "| prompt tokens | reused | generated | speed-up vs stock |"
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
    for side in (seq, edge):
        rounds = ", ".join(f"{r:.2f}" for r in ratios(side.name))
        print(
            f"\nSpeed-up of {side.name} (median of per-round stock/edgejudge wall ratios): "
            f"**{statistics.median(ratios(side.name)):.2f}×** ({rounds})"
        )
    print(
        "Stock stages come from llama.cpp's perf counters, which charge the CLIP encode (run between two "
        "decodes) to prompt eval.\n"
    )
    gen_tps = med(seq.name, "gen_tok") / med(seq.name, "gen")
    par_tps = med(edge.name, "gen_tok") / med(edge.name, "gen")
    stock_tps = med(stock.name, "gen_tok") / med(stock.name, "gen")
    print(
        f"Generation: edgejudge {gen_tps:.1f} tok/s one sequence at a time (grammar sampling included), "
        f"{par_tps:.1f} tok/s in all with {args.k} parallel sequences; stock {stock_tps:.1f} tok/s (decode "
        f"only). Memory-bandwidth limit for one sequence {limit:.1f} tok/s = numpy.copyto "
        f"{bw / 1e9:.1f} GB/s ÷ {wbytes / 1e6:.0f} MB of weights per token → one sequence runs at "
        f"{100 * gen_tps / limit:.0f}% of it."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
