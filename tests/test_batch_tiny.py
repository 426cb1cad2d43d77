"""``edgejudge batch`` end to end on the tiny REAL model (real converter, real llama.cpp), then the report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgejudge.batch import read_results
from edgejudge.cli import app
from edgejudge.images import synthetic_image

PERCEPTION = {
    "orig_criteria": "Does the response describe the image accurately?",
    **{f"orig_score{k}_description": f"The description is at level {k}." for k in range(1, 6)},
}


def test_batch_and_report_on_the_tiny_model(tiny_gguf: tuple[Path, Path], work_dir: Path) -> None:
    text_model, mmproj = tiny_gguf
    synthetic_image(120, seed=1).save(work_dir / "one.png")
    synthetic_image(90, seed=2).save(work_dir / "two.png")
    (work_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [
        {
            "image": "one.png",
            "orig_instruction": "What is shown?",
            "orig_response": "A house and a tree.",
            "orig_reference_answer": "A house with a red roof, a tree and the sun.",
            "orig_score": 4,
            **PERCEPTION,
        },
        {
            "image": "two.png",
            "orig_instruction": "What is shown?",
            "response": "A cat.",
            "orig_score": 1,
            **PERCEPTION,
        },
        {
            "id": "native",
            "image": "one.png",
            "instruction": "What colour is the roof?",
            "response": "Red.",
            "rubric": "vqa-helpfulness",
        },
        {"id": "corrupt", "image": "broken.jpg", "instruction": "Q", "response": "R"},
    ]
    inp = work_dir / "bench.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n", encoding="utf-8")
    out = work_dir / "out.jsonl"
    args = [
        "batch",
        str(inp),
        "-o",
        str(out),
        "--model",
        str(text_model),
        "--mmproj",
        str(mmproj),
        "--rubric",
        "visual-grounding",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--n-ctx",
        "2048",
        "--threads",
        "2",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["ok"], summary["errors"], summary["malformed"]) == (5, 3, 2, 1)
    results = read_results(out)
    for row_id in ("line-1", "line-2", "native"):
        row = results[row_id]
        assert row["status"] == "ok" and row["score"] in range(1, 6), row
        assert abs(sum(row["score_probs"].values()) - 1) < 1e-6
        assert 1 <= row["expected_score"] <= 5 and row["model"] == text_model.stem
        assert row["timings"]["prompt_tokens"] > 0 and row["image_size"] < 336  # the tiny tower's size
    assert results["line-1"]["orig_score"] == 4 and results["line-1"]["reference_given"] is True
    assert results["line-2"]["reference_given"] is False and results["native"]["rubric"] == "vqa-helpfulness"
    assert results["corrupt"]["status"] == "error" and "broken.jpg" in results["corrupt"]["error"]

    again = CliRunner().invoke(app, args)  # resume: nothing left to do
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 5
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5

    html = work_dir / "report.html"
    report = CliRunner().invoke(app, ["report", str(out), "-o", str(html), "--json"])
    assert report.exit_code == 0, report.stderr
    page = html.read_text(encoding="utf-8")
    assert json.loads(report.stdout)["images_missing"] == 2  # the corrupt image and the malformed line
    assert page.count('<img class="thumb" src="data:image/jpeg;base64,') == 3


def test_batch_rows_on_one_image_decode_together(tiny_gguf: tuple[Path, Path], work_dir: Path) -> None:
    text_model, mmproj = tiny_gguf
    synthetic_image(120, seed=1).save(work_dir / "one.png")
    rows = [
        {"id": f"r{i}", "image": "one.png", "instruction": "What is shown?", "response": answer}
        for i, answer in enumerate(["A house.", "A tree and the sun.", "Nothing at all."])
    ]
    inp = work_dir / "in.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    common = ["--model", str(text_model), "--mmproj", str(mmproj), "--rubric", "vqa-helpfulness"]
    common += ["--temperature", "0", "--max-tokens", "12", "--n-ctx", "4096", "--threads", "1", "--json"]
    outputs = {}
    for parallel in ("4", "1"):
        out = work_dir / f"out-{parallel}.jsonl"
        result = CliRunner().invoke(app, ["batch", str(inp), "-o", str(out), "--parallel", parallel, *common])
        assert result.exit_code == 0, result.stderr
        outputs[parallel] = read_results(out)
    for row in rows:
        together, alone = outputs["4"][row["id"]], outputs["1"][row["id"]]
        assert together["status"] == alone["status"] == "ok"
        assert together["raw_output"] == alone["raw_output"] and together["score"] == alone["score"]
        assert together["timings"]["parallel"] == 3 and alone["timings"]["parallel"] == 1
