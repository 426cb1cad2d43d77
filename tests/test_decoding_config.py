"""Verdicts record the decoding configuration they depend on: ``settings.parallel``, the decoding group size.

Batched kernels round differently from single-sequence ones, so a verdict says how many sequences its
generations were decoded with, and a batch run's resume key holds the most it decodes together: a run
resumed with another ``--parallel`` judges its rows again instead of mixing two configurations. One verdict
from ``edgejudge judge`` takes the single-sequence path unless ``--samples`` asks for more (and
``--parallel`` lets them share a batch). Threads change nothing: the same greedy text and distribution at
1 and 2 threads. All on the tiny judge through REAL llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.batch import read_results, run_batch
from edgejudge.cli import app
from edgejudge.engine.base import GenerationParams
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge

GREEDY = GenerationParams(temperature=0.0, max_tokens=12)


def _judge_json(tiny_gguf: tuple[Path, Path], image: Path, *flags: str) -> dict[str, object]:
    text, mmproj = tiny_gguf
    args = ["judge", str(image), "-i", "What is shown?", "--response", "A house.", "--model", str(text)]
    args += ["--mmproj", str(mmproj), "--temperature", "0", "--max-tokens", "12", "--json"]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_one_verdict_takes_the_single_sequence_path_unless_samples_ask(
    tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    image = tmp_path / "one.png"
    synthetic_image(120, seed=1).save(image)
    alone = _judge_json(tiny_gguf, image)
    assert alone["settings"]["parallel"] == 1 and alone["timings"]["parallel"] == 1  # type: ignore[index]
    together = _judge_json(tiny_gguf, image, "--samples", "3")
    assert together["settings"]["parallel"] == 3  # type: ignore[index]
    assert {s["timings"]["parallel"] for s in together["samples"]} == {3}  # type: ignore[attr-defined]
    one_by_one = _judge_json(tiny_gguf, image, "--samples", "3", "--parallel", "1")
    assert one_by_one["settings"]["parallel"] == 1  # type: ignore[index]
    # the first sample alone and first of one by one are the same decoding: the same text
    assert one_by_one["samples"][0]["raw_output"] == alone["raw_output"]  # type: ignore[index]


def test_a_batch_resumed_with_another_parallel_judges_its_rows_again(
    tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    synthetic_image(120, seed=1).save(tmp_path / "one.png")
    rows = [
        {"id": f"r{i}", "image": "one.png", "instruction": "What is shown?", "response": answer}
        for i, answer in enumerate(["A house.", "A tree and the sun.", "Nothing at all."])
    ]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    text, mmproj = tiny_gguf

    def run(parallel: int) -> tuple[int, int]:
        judge = Judge.from_files(text, mmproj, n_ctx=4096, n_threads=1, parallel=parallel)
        try:
            summary = run_batch(judge, inp, out, default_rubric="vqa-helpfulness", params=GREEDY)
        finally:
            judge.close()
        return summary.judged, summary.skipped

    assert run(4) == (3, 0)
    together = read_results(out)
    assert {r["settings"]["parallel"] for r in together.values()} == {3}  # the group the rows were in
    assert run(4) == (0, 3)  # same configuration: resumed
    assert run(1) == (3, 0)  # another group size: judged again, never mixed in
    alone = read_results(out)
    assert {r["settings"]["parallel"] for r in alone.values()} == {1}
    assert {r["key"] for r in alone.values()}.isdisjoint(r["key"] for r in together.values())
    assert run(1) == (0, 3)


def test_threads_do_not_change_a_greedy_verdict(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    synthetic_image(120, seed=2).save(image)
    one, two = (_judge_json(tiny_gguf, image, "--threads", t) for t in ("1", "2"))
    assert one["raw_output"] == two["raw_output"] and one["score_probs"] == two["score_probs"]
    assert one["settings"] == two["settings"]  # threads are not part of what a verdict depends on
