"""Loading a judge: one frozen ``LoadOptions`` record and ``load_judge(options) -> Judge``.

``load_judge`` is the one path from "which model, with which runtime settings" to a loaded ``Judge``:
registry name or path → the GGUF pair (``registry.resolve_model``: a registered ``name``/``name:QUANT``,
a ``.gguf`` path with its projector found beside it, or the default model) → ``LlamaCppEngine`` (which
checks the projector's CLS-position stamp against the runtime's order, ``probe.runtime_cls_position``,
by the pair rule of ``judgefile``) → ``Judge``. ``Judge.from_files`` and the CLI both go through it.

Every field's default and bounds come from ``edgejudge.settings`` (``check``); ``image_fit`` is checked
by ``images.check_fit``. ``registered_name`` names the registry entry a ``LoadOptions`` points at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EdgeJudgeError
from .settings import check, default

if TYPE_CHECKING:
    from .judge import Judge

__all__ = ["LoadOptions", "load_judge", "registered_name", "ENGINE_FIELDS"]

#: The ``LoadOptions`` fields that are ``LlamaCppEngine`` keyword arguments (``parallel`` is its
#: ``max_parallel``).
ENGINE_FIELDS = (
    "n_ctx",
    "n_threads",
    "n_gpu_layers",
    "verbose",
    "mmproj_offload",
    "image_cache_size",
    "n_batch",
)


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how: the model (a registered ``name``/``name:QUANT``, a text ``.gguf`` path, or
    None for the default model), the projector (None: found beside the text model or in the registry) and
    the runtime settings. Checked on creation; see ``edgejudge.settings`` for each field's meaning.
    """

    model: str | Path | None = default("model")
    mmproj: str | Path | None = default("mmproj")
    n_ctx: int = default("n_ctx")
    n_threads: int | None = default("n_threads")
    n_gpu_layers: int = default("n_gpu_layers")
    parallel: int = default("parallel")
    image_fit: str = default("image_fit")
    verbose: bool = default("verbose")
    mmproj_offload: bool = default("mmproj_offload")
    image_cache_size: int = default("image_cache_size")
    n_batch: int = default("n_batch")

    def __post_init__(self) -> None:
        from .images import check_fit

        for f in fields(self):
            check(f.name, getattr(self, f.name))
        check_fit(self.image_fit)

    @classmethod
    def from_engine_options(
        cls, model: str | Path | None, mmproj: str | Path | None, image_fit: str, options: dict[str, Any]
    ) -> LoadOptions:
        """From ``LlamaCppEngine``'s keyword arguments (``max_parallel`` is ``parallel``), as
        ``Judge.from_files`` takes them; an unknown keyword is a TypeError, as it is for the engine."""
        values = dict(options)
        if "max_parallel" in values:
            if "parallel" in values:
                raise TypeError("give parallel or max_parallel, not both")
            values["parallel"] = values.pop("max_parallel")
        unknown = sorted(set(values) - {*ENGINE_FIELDS, "parallel"})
        if unknown:
            raise TypeError(f"unexpected engine option(s): {', '.join(unknown)}")
        return cls(model=model, mmproj=mmproj, image_fit=image_fit, **values)

    def engine_options(self) -> dict[str, Any]:
        """The ``LlamaCppEngine`` keyword arguments these options set."""
        return {name: getattr(self, name) for name in ENGINE_FIELDS} | {"max_parallel": self.parallel}


def _model_value(model: str | Path | None) -> str | None:
    return None if model is None else os.fspath(model)


def load_judge(options: LoadOptions) -> Judge:
    """Resolve ``options.model`` to its GGUF pair and load it with llama.cpp (the module docstring).

    Raises ``ModelNotFoundError`` for a model or projector that cannot be found, ``CLSOrderMismatchError``
    for a projector converted for the other CLS order, ``EngineError`` when llama.cpp cannot load it.
    """
    from .engine.llama import LlamaCppEngine
    from .judge import Judge
    from .probe import runtime_cls_position
    from .registry import resolve_model

    text, mmproj = resolve_model(_model_value(options.model), mmproj=options.mmproj)
    engine = LlamaCppEngine(text, mmproj, runtime_cls=runtime_cls_position, **options.engine_options())
    return Judge(engine, image_fit=options.image_fit)


def registered_name(options: LoadOptions) -> str | None:
    """The registry key (``name:QUANT``) of the model ``options`` names (or the default model), for
    display; None when it was given as a file path, is not registered or cannot be resolved."""
    from .registry import load_registry, resolve_model

    value = _model_value(options.model)
    if value is not None and (value.lower().endswith(".gguf") or "/" in value or os.sep in value):
        return None
    try:
        text, _ = resolve_model(value, mmproj=options.mmproj)
        entries = load_registry().models
    except EdgeJudgeError:
        return None
    return next((m.key for m in entries if Path(m.text_model).resolve() == text.resolve()), None)
