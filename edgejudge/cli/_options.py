"""The model and generation options shared by ``judge``, ``batch`` and ``tui``, and their record.

``with_generation_options`` adds the twelve options to a command's signature (Typer reads it) and hands the
command one ``GenerationOptions``; ``GenerationOptions.cli_args()`` turns them back into arguments (for the
resume hint of ``batch``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..judge import MAX_SAMPLES

if TYPE_CHECKING:
    from ..engine.base import GenerationParams

__all__ = [
    "SamplesOpt",
    "TemperatureOpt",
    "SeedOpt",
    "MaxTokensOpt",
    "ImageFitOpt",
    "NGpuLayersOpt",
    "ThreadsOpt",
    "ModelOpt",
    "MmprojOpt",
    "NCtxOpt",
    "ParallelOpt",
    "NoGrammarOpt",
    "JsonOpt",
    "IMAGE_FITS",
    "GenerationOptions",
    "with_generation_options",
]

# --------------------------------------------------------------------------------- shared options
_GEN = "Generation"
_MODEL = "Model"

SamplesOpt = Annotated[
    int,
    typer.Option(
        "--samples",
        min=1,
        max=MAX_SAMPLES,
        help=f"Number of verdicts to sample (majority score; at most {MAX_SAMPLES}).",
        rich_help_panel=_GEN,
    ),
]
TemperatureOpt = Annotated[
    float,
    typer.Option(
        "--temperature", min=0.0, help="Sampling temperature; 0 = greedy, reproducible.", rich_help_panel=_GEN
    ),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Random seed (default: random).", rich_help_panel=_GEN)
]
MaxTokensOpt = Annotated[
    int, typer.Option("--max-tokens", min=1, help="Generation budget in tokens.", rich_help_panel=_GEN)
]
ImageFitOpt = Annotated[
    str,
    typer.Option(
        "--image-fit",
        help="crop: shortest side to the tower's size, centre crop (as in training); pad: keep it all.",
        rich_help_panel=_GEN,
        case_sensitive=False,
    ),
]
NoGrammarOpt = Annotated[
    bool,
    typer.Option(
        "--no-grammar",
        help="Do not constrain the output format (the parser reads the score).",
        rich_help_panel=_GEN,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Registered model name (name or name:QUANT) or path to the text GGUF.",
        rich_help_panel=_MODEL,
    ),
]
MmprojOpt = Annotated[
    Path | None,
    typer.Option(
        "--mmproj",
        help="Projector GGUF (found beside the model when named mmproj-<name>-*.gguf).",
        rich_help_panel=_MODEL,
    ),
]
NGpuLayersOpt = Annotated[
    int,
    typer.Option("--n-gpu-layers", help="Layers to offload to the GPU (-1 = all).", rich_help_panel=_MODEL),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads (default: all cores).", rich_help_panel=_MODEL),
]
NCtxOpt = Annotated[
    int, typer.Option("--n-ctx", min=256, help="Context window in tokens.", rich_help_panel=_MODEL)
]
ParallelOpt = Annotated[
    int,
    typer.Option(
        "--parallel",
        min=1,
        max=16,
        help="Judgments of one image decoded together as parallel sequences (samples, batch rows); "
        "1 = one at a time.",
        rich_help_panel=_MODEL,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

IMAGE_FITS = ("crop", "pad")


@dataclass(frozen=True)
class GenerationOptions:
    """The shared generation/model options of ``judge``, ``batch``, the wizard and ``demo``."""

    model: str | None = None
    mmproj: Path | None = None
    samples: int = 1
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int = 1024
    image_fit: str = "crop"
    n_gpu_layers: int = -1
    threads: int | None = None
    n_ctx: int = 4096
    parallel: int = 4
    grammar: bool = True

    def __post_init__(self) -> None:
        fit = self.image_fit.lower()
        if fit not in IMAGE_FITS:
            raise typer.BadParameter(
                f"must be one of {', '.join(IMAGE_FITS)}, not {self.image_fit!r}", param_hint="--image-fit"
            )
        object.__setattr__(self, "image_fit", fit)

    def params(self) -> GenerationParams:
        from ..engine.base import GenerationParams

        return GenerationParams(
            temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed, constrained=self.grammar
        )

    def settings(self) -> dict[str, Any]:
        """The settings as plain JSON values (for --json outputs and batch records)."""
        return {
            "samples": self.samples,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "image_fit": self.image_fit,
            "grammar": self.grammar,
            "n_ctx": self.n_ctx,
        }

    def cli_args(self) -> list[str]:
        """The options that differ from the defaults, as command-line arguments."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.name == "grammar":
                args.append("--no-grammar")
            else:
                args.append(f"--{f.name.replace('_', '-')}={value}")
        return args


#: (parameter name, annotation, default) of each shared option, in the order ``--help`` lists them.
_SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("model", ModelOpt, None),
    ("mmproj", MmprojOpt, None),
    ("samples", SamplesOpt, 1),
    ("temperature", TemperatureOpt, 1.0),
    ("seed", SeedOpt, None),
    ("max_tokens", MaxTokensOpt, 1024),
    ("image_fit", ImageFitOpt, "crop"),
    ("n_gpu_layers", NGpuLayersOpt, -1),
    ("threads", ThreadsOpt, None),
    ("n_ctx", NCtxOpt, 4096),
    ("parallel", ParallelOpt, 4),
    ("no_grammar", NoGrammarOpt, False),
)


def with_generation_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared model/generation options.

    The command declares one keyword parameter ``options: GenerationOptions`` instead of the twelve
    options; ``--help`` shows them after the command's own (in the Model and Generation panels).
    """
    hints = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(func).parameters.values()
        if p.name != "options"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in _SHARED
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        values = {name: kwargs.pop(name) for name, _, _ in _SHARED}
        grammar = not values.pop("no_grammar")
        func(*args, options=GenerationOptions(**values, grammar=grammar), **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return wrapper
