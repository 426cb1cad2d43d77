"""``edgejudge demo``: the whole pipeline on a tiny random-weight judge, offline, on a fresh machine.

``ensure_demo_model`` builds once (cached in ``config.cache_dir()/demo``) a tiny LLaVA-1.5 checkpoint in the
real layout (``edgejudge.fixtures.tiny``) and converts it with the real converter and quantizer;
``run_demo`` judges a generated picture with ``Judge`` on real llama.cpp + mtmd. The weights are random, so
the feedback is gibberish; the mechanics (conversion, CLS compensation, grammar, score distribution) are
the real ones. Nothing here prints; progress goes through callbacks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from ._fs import atomic_write

if TYPE_CHECKING:
    from .convert import ProgressFn
    from .engine.base import TokenCallback
    from .verdict import Verdict

__all__ = ["DemoModel", "DemoResult", "demo_dir", "ensure_demo_model", "run_demo", "DEMO_NAME", "DEMO_INPUTS"]

DEMO_NAME = "edgejudge-demo-tiny"
DEMO_QUANT = "Q4_K_M"
#: Bump when the fixture or converter output changes so cached demo models are rebuilt.
DEMO_VERSION = 1
DEMO_INPUTS = {
    "instruction": "What is in this picture?",
    "response": "A small house with a red roof stands on green hills under a sunny sky, next to a tree.",
    "reference": "A house with a red roof and a tree on green hills, under a blue sky with the sun.",
    "rubric": "vqa-helpfulness",
}


@dataclass(frozen=True)
class DemoModel:
    """The cached demo pair; ``built`` is True when this call had to build it (``seconds`` it took)."""

    text_model: Path
    mmproj: Path
    built: bool
    seconds: float


@dataclass(frozen=True)
class DemoResult:
    """A demo judgment: the verdict, the model used and where the judged picture was saved."""

    verdict: Verdict
    model: DemoModel
    picture: Path
    seconds: float


def demo_dir() -> Path:
    return config.cache_dir() / "demo"


def _stamp(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / "demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_demo_model(*, rebuild: bool = False, progress: ProgressFn | None = None) -> DemoModel:
    """The demo GGUF pair, built on first use with the real fixture generator, converter and quantizer."""
    from .fixtures.tiny import make_tiny_llava
    from .install import convert_checkpoint

    final = demo_dir()
    stamp = _stamp(final)
    if not rebuild and stamp is not None and stamp.get("version") == DEMO_VERSION:
        text, mmproj = final / str(stamp["text_model"]), final / str(stamp["mmproj"])
        if text.is_file() and mmproj.is_file():
            return DemoModel(text, mmproj, built=False, seconds=0.0)
    start = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=final.parent))
    try:
        if progress is not None:
            progress("tiny checkpoint", 0, 1)
        ckpt = make_tiny_llava(work / "checkpoint", fmt="bin")
        if progress is not None:
            progress("tiny checkpoint", 1, 1)
        out = work / "gguf"
        result = convert_checkpoint(ckpt, out, name=DEMO_NAME, quant=DEMO_QUANT, progress=progress)
        (out / "demo.json").write_text(
            json.dumps(
                {"version": DEMO_VERSION, "text_model": result.text_model.name, "mmproj": result.mmproj.name}
            ),
            encoding="utf-8",
        )
        # swap the finished directory into place (a concurrent build may have won: keep theirs)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(out, final)
        except OSError:
            if _stamp(final) is None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stamp = _stamp(final) or {}
    return DemoModel(
        final / str(stamp["text_model"]),
        final / str(stamp["mmproj"]),
        built=True,
        seconds=time.perf_counter() - start,
    )


def run_demo(
    *,
    rebuild: bool = False,
    seed: int = 0,
    max_tokens: int = 48,
    progress: ProgressFn | None = None,
    on_text: TokenCallback | None = None,
    verbose: bool = False,
) -> DemoResult:
    """Build (once) the demo judge and judge the generated picture with the full pipeline (loaded with the
    default load settings; ``verbose`` lets llama.cpp's own log through)."""
    from .engine.base import GenerationParams
    from .images import synthetic_image
    from .load import LoadOptions, load_judge

    model = ensure_demo_model(rebuild=rebuild, progress=progress)
    start = time.perf_counter()
    picture = demo_dir() / "picture.png"
    buffer = BytesIO()
    synthetic_image(336, seed=seed).save(buffer, format="PNG")
    data = buffer.getvalue()
    atomic_write(picture, data)
    options = LoadOptions(model=str(model.text_model), mmproj=model.mmproj, verbose=verbose)
    with load_judge(options) as judge:
        verdict = judge.evaluate(
            data,
            instruction=DEMO_INPUTS["instruction"],
            response=DEMO_INPUTS["response"],
            reference=DEMO_INPUTS["reference"],
            rubric=DEMO_INPUTS["rubric"],
            params=GenerationParams(seed=seed, max_tokens=max_tokens),
            on_text=on_text,
            image_name="demo picture",
        )
    return DemoResult(verdict=verdict, model=model, picture=picture, seconds=time.perf_counter() - start)
