#!/usr/bin/env python3
"""Benchmark: do greedy verdicts depend on how many rows are decoded together (parallel vs sequential)?

Two parts, each printing a Markdown table as soon as it is measured:

1. **Judging** (``edgejudge batch``, temperature 0): the same rows judged twice by one judge pair, once with
   ``--parallel 4`` (each image's responses decoded as parallel sequences) and once with ``--parallel 1``
   (one at a time). Rows: ``--rows`` per pair over ``rows / 4`` images (four responses each, so the
   parallel run really makes groups of four). Reported: rows whose score differs, whose feedback text
   differs, and where the feedback diverges (the first differing character: min / median / max).
2. **llama.cpp alone** (``--raw``; text model only, no image): a shared prompt of ``--raw-prompt`` tokens,
   four different suffixes, ``--raw-steps`` greedy steps, decoded as four sequences in one context against
   each sequence alone (one-sequence context, the same prompt), for the llama.cpp 0.3.36 settings that
   could matter: the unified KV cache (``kv_unified``) or one stream per sequence, weight repacking for the
   CPU kernels (``use_extra_bufts``), flash attention, and ``n_ubatch``. Reported: sequences whose greedy
   tokens differ from their single-sequence run, the first differing step, and the largest logit
   difference at the first generated position.

Pairs: ``--pair NAME TEXT MMPROJ ROWS`` (repeatable; default the ~1B realistic pair of
/tmp/edgejudge-bench/gguf with 32 rows and the 7B Q4_K_M pair of /tmp/edgejudge-7b/gguf with 8 rows, each
when present).

    python scripts/bench_agreement.py --threads 2
    python scripts/bench_agreement.py --threads 2 --no-judging --raw \
        --raw-model /tmp/edgejudge-7b/gguf/7b-Q4_K_M.gguf
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "tests"))
sys.path.insert(0, str(ROOT_DIR / "scripts"))
from _support import cli, run_measured  # noqa: E402
from bench_shapes import machine_info  # noqa: E402

DEFAULT_PAIRS = [
    ("1b Q4_K_M", "/tmp/edgejudge-bench/gguf/realistic-Q4_K_M.gguf",
     "/tmp/edgejudge-bench/gguf/mmproj-realistic-F16.gguf", "32"),
    ("7b Q4_K_M", "/tmp/edgejudge-7b/gguf/7b-Q4_K_M.gguf", "/tmp/edgejudge-7b/gguf/mmproj-7b-F16.gguf", "8"),
]  # fmt: skip
INSTRUCTIONS = (
    "Describe the image in detail.",
    "What colours dominate the picture, and where?",
    "How many distinct shapes are there?",
    "Is there any text in the image?",
)
RESPONSES = (
    "The picture shows a red square in the upper left, a blue circle and a green stripe along the bottom.",
    "It is a photo of a cat sleeping on a sofa next to a window.",
    "There are three shapes: a square, a circle and a band of colour.",
    "A blue square and a red circle on a white background, with the word HELLO written underneath.",
    "Mostly light colours; a strong red block near the top left corner and some green at the bottom.",
    "I cannot tell what the image shows.",
    "Two shapes and a stripe; the circle overlaps nothing and the square is the largest object.",
    "No text is visible anywhere in the image.",
)


def write_images(directory: Path, n: int) -> list[str]:
    """``n`` different 336x336 PNGs (shapes on a noisy gradient) in ``directory``; their file names."""
    from PIL import Image

    names = []
    for k in range(n):
        rng = np.random.default_rng([k, 11])
        y, x = np.mgrid[0:336, 0:336]
        img = np.stack([180 + 40 * x / 336, 200 + 30 * y / 336, 230 - 30 * x / 336], -1)
        img += rng.normal(0, 8, img.shape)
        for _ in range(3):
            cx, cy, r = rng.integers(40, 296), rng.integers(40, 296), rng.integers(15, 60)
            img[((x - cx) ** 2 + (y - cy) ** 2) < r * r] = rng.integers(0, 255, 3)
        name = f"img{k:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(directory / name)
        names.append(name)
    return names


def _first_diff(a: str, b: str) -> int | None:
    """Index of the first differing character (None when equal)."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _run_batch(rows: Path, out: Path, text: str, mmproj: str, parallel: int, args: argparse.Namespace) -> Any:
    out.unlink(missing_ok=True)
    argv = cli(
        "batch", str(rows), "--output", str(out), "--model", text, "--mmproj", mmproj,
        "--threads", str(args.threads), "--temperature", "0", "--max-tokens", str(args.max_tokens),
        "--parallel", str(parallel), "--rubric", "vqa-helpfulness", *args.judge_arg,
    )  # fmt: skip
    run = run_measured(argv, timeout=args.timeout)
    if run.returncode != 0:
        raise RuntimeError(f"batch --parallel {parallel} failed: {run.stderr.strip()[-300:]}")
    results: dict[str, dict[str, Any]] = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        if "kind" not in row and row.get("status") == "ok":
            results[str(row["id"])] = row
    return run, results


def _verdict(row: dict[str, Any]) -> tuple[int | None, str]:
    nested = row.get("verdict")
    verdict: dict[str, Any] = nested if isinstance(nested, dict) else row
    return verdict.get("score"), str(verdict.get("feedback") or "")


def judging(args: argparse.Namespace) -> None:
    pairs = args.pair or [p for p in DEFAULT_PAIRS if Path(p[1]).is_file() and Path(p[2]).is_file()]
    print("### Parallel (--parallel 4) vs sequential (--parallel 1) greedy verdicts\n", flush=True)
    print("| judge | rows | scores differ | feedback differs | first difference (char: min / median / max) "
          "| scores parallel | scores sequential | wall parallel | wall sequential |")  # fmt: skip
    print("|---|---:|---:|---:|---|---|---|---:|---:|", flush=True)
    details: list[str] = []
    for name, text, mmproj, n_rows in pairs:
        n = int(n_rows)
        with tempfile.TemporaryDirectory(prefix="bench-agree-") as tmp:
            work = Path(tmp)
            images = write_images(work, max(1, -(-n // 4)))
            rows = work / "rows.jsonl"
            with rows.open("w") as fh:
                for i in range(n):
                    row = {
                        "id": f"r{i:03d}",
                        "image": images[i // 4],
                        "instruction": INSTRUCTIONS[(i // 4) % 4],
                        "response": RESPONSES[(i * 3 + i // 4) % len(RESPONSES)],
                    }
                    fh.write(json.dumps(row) + "\n")
            try:
                par_run, par = _run_batch(rows, work / "par.jsonl", text, mmproj, 4, args)
                seq_run, seq = _run_batch(rows, work / "seq.jsonl", text, mmproj, 1, args)
            except (RuntimeError, OSError) as err:
                print(f"| {name} | {n} | failed: {str(err)[:200]} | | | | | | |", flush=True)
                continue
        ids = sorted(set(par) & set(seq))
        score_diff = feedback_diff = 0
        firsts: list[int] = []
        sp, ss = [], []
        for rid in ids:
            (a_score, a_text), (b_score, b_text) = _verdict(par[rid]), _verdict(seq[rid])
            sp.append(str(a_score))
            ss.append(str(b_score))
            score_diff += a_score != b_score
            first = _first_diff(a_text, b_text)
            if first is not None:
                feedback_diff += 1
                firsts.append(first)
                lo, hi = max(0, first - 20), first + 30
                details.append(
                    f"- {name} {rid}: score {a_score} vs {b_score}; diverge at char {first}: "
                    f"{a_text[lo:hi]!r} vs {b_text[lo:hi]!r}"
                )
        spread = f"{min(firsts)} / {statistics.median(firsts):.0f} / {max(firsts)}" if firsts else "-"
        print(
            f"| {name} | {len(ids)} | {score_diff} ({100 * score_diff / max(1, len(ids)):.0f} %) | "
            f"{feedback_diff} | {spread} | {''.join(s if s != 'None' else '-' for s in sp)} | "
            f"{''.join(s if s != 'None' else '-' for s in ss)} | {par_run.elapsed_s:.0f} s | "
            f"{seq_run.elapsed_s:.0f} s |",
            flush=True,
        )
    if details and args.details:
        print("\nWhere the feedback diverges (parallel vs sequential):\n")
        print("\n".join(details), flush=True)
    print(flush=True)


@dataclass(frozen=True)
class RawConfig:
    key: str
    name: str
    kv_unified: bool = True
    repack: bool = True
    flash_attn: bool = False
    n_ubatch: int = 512


RAW_CONFIGS = (
    RawConfig("default", "edgejudge's: unified KV, repack, no flash attention, n_ubatch 512"),
    RawConfig("streams", "one KV stream per sequence (kv_unified false)", kv_unified=False),
    RawConfig("norepack", "no weight repacking (use_extra_bufts false)", repack=False),
    RawConfig(
        "norepack-streams", "no repacking + one KV stream per sequence", kv_unified=False, repack=False
    ),
    RawConfig("flash", "flash attention", flash_attn=True),
    RawConfig("ubatch1", "n_ubatch 1 (every token its own micro-batch)", n_ubatch=1),
    RawConfig("streams-ubatch1", "one KV stream per sequence + n_ubatch 1", kv_unified=False, n_ubatch=1),
)


class _Raw:
    """One model + context for the raw comparison (llama_cpp's C API, like bench_batch_decode)."""

    def __init__(self, model_path: Path, cfg: RawConfig, n_seq: int, n_ctx: int, threads: int) -> None:
        import llama_cpp

        self.ll = llama_cpp
        mp = llama_cpp.llama_model_default_params()
        mp.use_extra_bufts = cfg.repack
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = 512
        cp.n_ubatch = cfg.n_ubatch
        cp.n_threads = cp.n_threads_batch = threads
        cp.n_seq_max = n_seq
        cp.kv_unified = cfg.kv_unified
        cp.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if cfg.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError("llama.cpp could not create the context")
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.memory = llama_cpp.llama_get_memory(self.ctx)

    def decode(self, items: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Decode (token, pos, seq, want logits) items in chunks of 512; the logits asked for, in order."""
        out: list[np.ndarray] = []
        for start in range(0, len(items), 512):
            chunk = items[start : start + 512]
            b = self.batch
            b.n_tokens = len(chunk)
            wanted = []
            for i, (token, pos, seq, logits) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
                b.seq_id[i][0] = seq
                if logits:
                    wanted.append(i)
            if self.ll.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
            for i in wanted:
                ptr = self.ll.llama_get_logits_ith(self.ctx, i)
                out.append(np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)),
                                                 (self.n_vocab,)).copy())  # fmt: skip
        return out

    def close(self) -> None:
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)


def _greedy(raw: _Raw, prompt: list[int], suffixes: list[list[int]], seqs: list[int], steps: int) -> Any:
    """Decode ``suffixes`` on ``seqs`` (after ``prompt``, already in seq 0 and copied) and ``steps`` greedy
    tokens each, all sequences in the same batches; per sequence: (tokens, first logits)."""
    p = len(prompt)
    items = [(tok, p + j, seq, j == len(suf) - 1) for suf, seq in zip(suffixes, seqs, strict=True)
             for j, tok in enumerate(suf)]  # fmt: skip
    logits = raw.decode(items)
    first = list(logits)
    tokens: list[list[int]] = [[int(np.argmax(lg))] for lg in logits]
    for step in range(1, steps):
        logits = raw.decode(
            [(tokens[k][-1], p + len(suffixes[k]) + step - 1, seq, True) for k, seq in enumerate(seqs)]
        )
        for k, lg in enumerate(logits):
            tokens[k].append(int(np.argmax(lg)))
    return tokens, first


def raw_one(args: argparse.Namespace, cfg: RawConfig) -> dict[str, Any]:
    """One setting, in this process: the 4-together and 4-alone greedy runs compared (a JSON-able dict)."""
    import llama_cpp

    llama_cpp.llama_backend_init()
    silence = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(silence, None)
    model_path = Path(args.raw_model)
    rng = np.random.default_rng(5)
    prompt = [1] + [int(t) for t in rng.integers(300, 30000, args.raw_prompt - 1)]
    suffixes = [[int(t) for t in rng.integers(300, 30000, 24)] for _ in range(4)]
    n_ctx = 2 * (args.raw_prompt + 24 + args.raw_steps) * 4
    # the same cells per sequence as the 4-sequence context: all of them (unified) or a quarter (streams)
    single = _Raw(model_path, cfg, 1, n_ctx if cfg.kv_unified else n_ctx // 4, args.threads)
    prompt = [prompt[0]] + [3 + t % (single.n_vocab - 3) for t in prompt[1:]]  # ids the vocabulary has
    suffixes = [[3 + t % (single.n_vocab - 3) for t in suf] for suf in suffixes]
    t0 = time.perf_counter()
    alone_tokens, alone_first = [], []
    single.decode([(t, i, 0, False) for i, t in enumerate(prompt)])
    for suf in suffixes:
        toks, first = _greedy(single, prompt, [suf], [0], args.raw_steps)
        alone_tokens.append(toks[0])
        alone_first.append(first[0])
        llama_cpp.llama_memory_seq_rm(single.memory, 0, len(prompt), -1)
    t_alone = time.perf_counter() - t0
    single.close()
    multi = _Raw(model_path, cfg, 4, n_ctx, args.threads)
    t0 = time.perf_counter()
    multi.decode([(t, i, 0, False) for i, t in enumerate(prompt)])
    for seq in range(1, 4):
        llama_cpp.llama_memory_seq_cp(multi.memory, 0, seq, -1, -1)  # whole: copies across streams too
    together, first = _greedy(multi, prompt, suffixes, [0, 1, 2, 3], args.raw_steps)
    t_together = time.perf_counter() - t0
    multi.close()
    differ = [
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), None)
        for x, y in zip(together, alone_tokens, strict=True)
    ]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(first, alone_first, strict=True))
    return {
        "steps": [d for d in differ if d is not None],
        "diff": diff,
        "together": t_together,
        "alone": t_alone,
    }


def raw_agreement(args: argparse.Namespace) -> None:
    """Every setting in its own child process (a llama.cpp abort costs only that row)."""
    import subprocess

    print(
        f"### llama.cpp alone: 4 sequences in one context vs each alone ({Path(args.raw_model).name}, "
        f"prompt {args.raw_prompt} tokens, 4 different 24-token suffixes, {args.raw_steps} greedy steps)\n"
    )
    print(
        "| setting | sequences whose greedy tokens differ | first differing step | max logit diff at step 0 "
        "| time 4 together | time 4 alone |"
    )
    print("|---|---:|---|---:|---:|---:|", flush=True)
    for cfg in RAW_CONFIGS:
        if args.raw_configs and cfg.key not in args.raw_configs:
            continue
        argv = [sys.executable, __file__, "--raw-one", cfg.key, "--raw-model", str(args.raw_model),
                "--raw-prompt", str(args.raw_prompt), "--raw-steps", str(args.raw_steps),
                "--threads", str(args.threads)]  # fmt: skip
        child = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, check=False)
        lines = child.stdout.strip().splitlines()
        if child.returncode != 0 or not lines:
            why = (child.stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1][:150]
            print(f"| {cfg.name} | failed: {why} | | | | |", flush=True)
            continue
        r = json.loads(lines[-1])
        print(
            f"| {cfg.name} | {len(r['steps'])} of 4 | {', '.join(map(str, r['steps'])) or '-'} | "
            f"{r['diff']:.2e} | {r['together']:.1f} s | {r['alone']:.1f} s |",
            flush=True,
        )
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=4, action="append", metavar=("NAME", "TEXT", "MMPROJ", "ROWS"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--judge-arg", action="append", default=[], help="extra option for both batch runs")
    parser.add_argument("--no-judging", action="store_true", help="skip part 1")
    parser.add_argument("--details", action="store_true", help="list where each differing feedback diverges")
    parser.add_argument("--raw", action="store_true", help="run part 2 (llama.cpp alone)")
    parser.add_argument("--raw-model", default=DEFAULT_PAIRS[0][1])
    parser.add_argument("--raw-prompt", type=int, default=256)
    parser.add_argument("--raw-steps", type=int, default=32)
    parser.add_argument(
        "--raw-configs",
        nargs="*",
        help="settings to run (default all): " + " ".join(c.key for c in RAW_CONFIGS),
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--raw-one", help=argparse.SUPPRESS)  # one setting, in a child: a JSON line
    args = parser.parse_args()
    if args.raw_one:
        cfg = next(c for c in RAW_CONFIGS if c.key == args.raw_one)
        print(json.dumps(raw_one(args, cfg)))
        return 0
    print(
        f"Machine: {machine_info(args.threads)}; temperature 0, --max-tokens {args.max_tokens}\n", flush=True
    )
    if not args.no_judging:
        judging(args)
    if args.raw:
        raw_agreement(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
