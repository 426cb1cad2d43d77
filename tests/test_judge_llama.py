"""Judge end to end on the tiny random-weight LLaVA through REAL llama.cpp: verdicts, determinism, images,
context overflow naming, samples, and the CLS-position metadata check at load."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from edgejudge.convert import convert_checkpoint
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.llama import CLS_KEY, LlamaCppEngine
from edgejudge.errors import CLSOrderMismatchError, ContextOverflowError, InvalidImageError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.probe import runtime_cls_position
from edgejudge.verdict import Verdict

GREEDY = GenerationParams(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def judge(tiny_gguf: tuple[Path, Path]) -> Iterator[Judge]:
    with Judge.from_files(tiny_gguf[0], n_ctx=2048, n_threads=1) as j:
        yield j


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def picture() -> bytes:
    return _png(synthetic_image(120, seed=5))


def _evaluate(
    judge: Judge, image: bytes, response: str = "A red square on a blue field.", **kw: object
) -> Verdict:
    kw.setdefault("params", GREEDY)
    return judge.evaluate(
        image,
        instruction="What is in the picture?",
        response=response,
        rubric="vqa-helpfulness",
        reference="A red square on a blue background.",
        **kw,  # type: ignore[arg-type]
    )


def test_full_judgment(judge: Judge, picture: bytes) -> None:
    verdict = _evaluate(judge, picture)
    assert verdict.score is not None and 1 <= verdict.score <= 5
    assert verdict.score_probs is not None and sum(verdict.score_probs.values()) == pytest.approx(1.0)
    assert 1.0 <= verdict.expected_score <= 5.0  # type: ignore[operator]
    assert verdict.raw_output.endswith(f"[RESULT] {verdict.score}")
    assert verdict.parse_method and verdict.samples[0].parse_error is None
    assert verdict.reference is True and verdict.model == "tiny-F16" and verdict.image_fit == "crop"
    assert verdict.timings.prompt_tokens > judge.engine.image_tokens
    assert Verdict.from_json(verdict.to_json()) == verdict


def test_deterministic_at_temperature_zero(
    judge: Judge, tiny_gguf: tuple[Path, Path], picture: bytes
) -> None:
    a = _evaluate(judge, picture, "Deterministic?")
    b = _evaluate(judge, picture, "Deterministic?")
    with Judge.from_files(tiny_gguf[0], n_ctx=2048, n_threads=1) as fresh:
        c = _evaluate(fresh, picture, "Deterministic?")
    assert a.raw_output == b.raw_output == c.raw_output
    assert a.score_probs == pytest.approx(c.score_probs, abs=1e-5)
    assert a.score == b.score == c.score


def test_forced_tail_through_judge(judge: Judge, picture: bytes) -> None:
    verdict = _evaluate(judge, picture, params=GenerationParams(temperature=0.0, max_tokens=1))
    assert verdict.samples[0].forced_tail and verdict.score is not None
    assert verdict.score_probs is not None


def test_samples_with_seeds(judge: Judge, picture: bytes) -> None:
    params = GenerationParams(temperature=1.0, top_p=0.9, seed=3, max_tokens=8)
    verdict = _evaluate(judge, picture, samples=3, params=params)
    assert [s.seed for s in verdict.samples] == [3, 4, 5]
    assert verdict.score in {s.score for s in verdict.samples}
    assert verdict.agreement is not None and 1 / 3 <= verdict.agreement <= 1
    assert sum(verdict.score_probs.values()) == pytest.approx(1.0)  # type: ignore[union-attr]
    again = _evaluate(judge, picture, samples=3, params=params)
    assert [s.raw_output for s in again.samples] == [s.raw_output for s in verdict.samples]


@pytest.mark.parametrize(
    "make",
    [
        lambda: _png(Image.new("L", (40, 90), 128)),
        lambda: _png(Image.new("RGBA", (300, 20), (10, 200, 30, 100))),
        lambda: _png(Image.new("P", (1, 1))),
        lambda: _png(synthetic_image(64).convert("CMYK"), "JPEG"),
    ],
    ids=["gray-tall", "rgba-wide", "palette-1px", "cmyk-jpeg"],
)
def test_image_variants_are_judged(judge: Judge, make) -> None:  # type: ignore[no-untyped-def]
    verdict = _evaluate(judge, make(), params=GenerationParams(temperature=0.0, max_tokens=4))
    assert verdict.score is not None


@pytest.mark.parametrize(
    "data", [b"", b"\x89PNG\r\n\x1a\n garbage", b"GIF89a"], ids=["empty", "corrupt", "truncated"]
)
def test_bad_images_raise(judge: Judge, data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        _evaluate(judge, data)


def test_context_overflow_names_field(tiny_gguf: tuple[Path, Path], picture: bytes) -> None:
    with Judge.from_files(tiny_gguf[0], n_ctx=1200, n_threads=1) as small:
        with pytest.raises(ContextOverflowError) as info:
            _evaluate(small, picture, "This answer rambles on and on. " * 60)
        assert info.value.field == "response" and info.value.over_by > 0
        assert "response" in str(info.value) and "response" in (info.value.hint or "")
        verdict = _evaluate(small, picture, "Short.", params=GenerationParams(temperature=0.0, max_tokens=4))
        assert verdict.score is not None  # the engine is still usable after the refusal


def test_long_prompt_warning(tiny_gguf: tuple[Path, Path], picture: bytes) -> None:
    with Judge.from_files(tiny_gguf[0], n_ctx=4096, n_threads=1) as big:
        verdict = _evaluate(
            big, picture, "word " * 350, params=GenerationParams(temperature=0.0, max_tokens=2)
        )
    assert verdict.timings.prompt_tokens > 2048
    assert any("2048" in w for w in verdict.warnings)


def test_cls_mismatch_refused(tiny_checkpoint: Path, tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    opposite = "first" if runtime_cls_position() == "last" else "last"
    result = convert_checkpoint(tiny_checkpoint, tmp_path, name="other", quant="F16", cls_position=opposite)
    with pytest.raises(CLSOrderMismatchError) as info:
        LlamaCppEngine(tiny_gguf[0], result.mmproj, n_ctx=1024)
    assert opposite in str(info.value) and info.value.hint and "convert" in info.value.hint


def test_mmproj_without_key_warns(tiny_gguf: tuple[Path, Path], tmp_path: Path, picture: bytes) -> None:
    foreign = tmp_path / "mmproj-foreign-F16.gguf"
    shutil.copyfile(tiny_gguf[1], foreign)
    data = foreign.read_bytes()
    key = CLS_KEY.encode()
    assert data.count(key) == 1
    foreign.write_bytes(data.replace(key, b"x" * len(key)))  # same length: still a valid GGUF, key gone
    with Judge.from_files(tiny_gguf[0], foreign, n_ctx=2048, n_threads=1) as j:
        assert len(j.engine.warnings) == 1 and "converted elsewhere" in j.engine.warnings[0]  # type: ignore[attr-defined]
        verdict = _evaluate(j, picture, params=GenerationParams(temperature=0.0, max_tokens=2))
    assert any("converted elsewhere" in w for w in verdict.warnings)


def test_prompt_text_matches_what_engine_sees(judge: Judge) -> None:
    text = judge.prompt_text(instruction="Q?", response="A.", rubric="vqa-helpfulness")
    assert text.startswith("A chat between a curious user") and text.endswith("###Feedback: ASSISTANT:")
    assert "\n###Response to evaluate:\nA.\n" in text


def test_evaluate_many_matches_one_by_one(tiny_gguf: tuple[Path, Path], picture: bytes) -> None:
    responses = ["A red square on a blue field.", "A cat.", "Two shapes."]
    kw = {"instruction": "What is in the picture?", "rubric": "vqa-helpfulness", "params": GREEDY}
    with Judge.from_files(tiny_gguf[0], n_ctx=4096, n_threads=1) as parallel:
        verdicts = parallel.evaluate_many(picture, responses=responses, **kw)  # type: ignore[arg-type]
        sampled = parallel.evaluate(
            picture,
            response=responses[0],
            samples=3,
            **{**kw, "params": GenerationParams(seed=7, max_tokens=8)},
        )  # type: ignore[arg-type]
    with Judge.from_files(tiny_gguf[0], n_ctx=4096, n_threads=1, max_parallel=1) as alone:
        for response, verdict in zip(responses, verdicts, strict=True):
            alone.engine.clear_cache()  # type: ignore[attr-defined]
            fresh = alone.evaluate(picture, response=response, **kw)  # type: ignore[arg-type]
            assert verdict.raw_output == fresh.raw_output and verdict.score == fresh.score
            assert verdict.expected_score == pytest.approx(fresh.expected_score, abs=1e-2)
    assert [v.timings.parallel for v in verdicts] == [3, 3, 3]
    assert sampled.timings.parallel == 3 and len(sampled.samples) == 3
    assert [s.seed for s in sampled.samples] == [7, 8, 9] and sampled.score is not None
