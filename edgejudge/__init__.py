"""edgejudge: a quantized local judge for vision-language outputs (Prometheus-Vision on llama.cpp).

Load once, grade many::

    from edgejudge import Judge, load_rubric
    with Judge.from_files("models/prometheus-vision-7b-Q4_K_M.gguf") as judge:
        verdict = judge.evaluate("cat.jpg", instruction="...", response="...",
                                 rubric=load_rubric("vqa-helpfulness"), reference="...")
        print(verdict.score, verdict.expected_score)

Heavy modules (llama.cpp bindings, Pillow) are imported lazily, on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import (
    CLSOrderMismatchError,
    ContextOverflowError,
    ConversionError,
    EdgeJudgeError,
    EngineError,
    InputError,
    InvalidImageError,
    ModelNotFoundError,
    PolicyError,
    RegistryError,
    RubricError,
    UnsafePickleError,
)

__version__ = "0.1.0"

_LAZY = {
    "Judge": "edgejudge.judge",
    "Client": "edgejudge.client",
    "LoadOptions": "edgejudge.load",
    "load_judge": "edgejudge.load",
    "Verdict": "edgejudge.verdict",
    "Sample": "edgejudge.verdict",
    "PolicyVerdict": "edgejudge.verdict",
    "RuleVerdict": "edgejudge.verdict",
    "Policy": "edgejudge.policy",
    "load_policy": "edgejudge.policy",
    "builtin_policies": "edgejudge.policy",
    "Rubric": "edgejudge.rubric",
    "load_rubric": "edgejudge.rubric",
    "builtin_rubrics": "edgejudge.rubric",
    "ParseResult": "edgejudge.parse",
    "parse_output": "edgejudge.parse",
    "GenerationParams": "edgejudge.engine.base",
    "FakeEngine": "edgejudge.engine.fake",
    "LlamaCppEngine": "edgejudge.engine.llama",
    "convert_checkpoint": "edgejudge.install",
}

__all__ = [
    "__version__",
    "CLSOrderMismatchError",
    "ContextOverflowError",
    "ConversionError",
    "EdgeJudgeError",
    "EngineError",
    "InputError",
    "InvalidImageError",
    "ModelNotFoundError",
    "PolicyError",
    "RegistryError",
    "RubricError",
    "UnsafePickleError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgejudge' has no attribute {name!r}")
    return getattr(import_module(module), name)
