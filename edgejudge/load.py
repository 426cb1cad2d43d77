"""Loading a judge by name: ``load_judge(options: LoadOptions) -> Judge``.

``load_judge`` is the one path from "which model, with which runtime settings" to a loaded ``Judge``:
registry name or path → the GGUF pair (``registry.resolve_model``: a registered ``name``/``name:QUANT``,
a ``.gguf`` path with its projector found beside it, or the default model) → ``Judge.from_options``
(``LlamaCppEngine``, which checks the projector's CLS-position stamp against the runtime's order by the
pair rule of ``judgefile``) → ``Judge``. The CLI, the wizard and the demo load through it.

``LoadOptions`` (re-exported here) is defined in ``edgejudge.load_options`` from the settings table of
``edgejudge.settings``: every field's default and bounds are written there once. With the ``vllm`` engine
the model is the served model's name (or its llava-hf folder), not a GGUF pair: it is passed on as given.
``registered_name`` names the registry entry a ``LoadOptions`` points at, for display.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EdgeJudgeError
from .load_options import LoadOptions

if TYPE_CHECKING:
    from .judge import Judge

__all__ = ["LoadOptions", "load_judge", "registered_name"]


def _model_value(model: str | Path | None) -> str | None:
    return None if model is None else os.fspath(model)


def load_judge(options: LoadOptions) -> Judge:
    """Resolve ``options.model`` to its GGUF pair and load it (the module docstring).

    Raises ``InputError`` for an unknown image fit (before anything is read), ``ModelNotFoundError`` for a
    model or projector that cannot be found, ``CLSOrderMismatchError`` for a projector converted for the
    other CLS order, ``EngineError`` when llama.cpp cannot load the files.
    """
    from .images import check_fit
    from .judge import Judge
    from .registry import resolve_model

    check_fit(options.image_fit)
    if options.engine == "vllm":
        return Judge.from_options(options)
    text, mmproj = resolve_model(_model_value(options.model), mmproj=options.mmproj)
    return Judge.from_options(replace(options, model=text, mmproj=mmproj))


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
