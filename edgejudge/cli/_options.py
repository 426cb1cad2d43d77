"""The model and generation options shared by ``judge``, ``batch``, ``tui`` and ``demo``, and their record.

Every option is built from ``edgejudge.settings`` (its flag, help text, panel, default and bounds): none
is written again here. ``with_generation_options`` adds them to a command's signature (Typer reads it) and
hands the command one ``GenerationOptions``; ``GenerationOptions.load_options()`` and ``.params()`` turn it
into the library's records (``load.LoadOptions``, ``engine.base.GenerationParams``), and ``cli_args()``
turns it back into arguments (for the resume hint of ``batch``). A value out of bounds is a usage error
naming the flag (exit 2), refused by the library's own ``settings.check``.
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

from ..errors import InputError
from ..load_options import REMOTE_ENGINES
from ..settings import SETTINGS, Setting, check, default

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..load import LoadOptions

__all__ = [
    "JsonOpt",
    "VerboseOpt",
    "PolicyOpt",
    "ReviewBandOpt",
    "GenerationOptions",
    "with_generation_options",
    "option_for",
    "review_band",
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
#: ``--verbose`` of the commands that run native code without loading a judge (convert, models pull,
#: doctor: the probe, the quantizer); the judge-loading commands get it with the shared options.
VerboseOpt = Annotated[bool, typer.Option("--verbose", help=SETTINGS["verbose"].help)]

_POLICY_PANEL = "Policy"


def review_band(value: str | None) -> tuple[float, float] | None:
    """``--review-band LOW,HIGH`` as the library's band (``decision.check_band``); a usage error naming the
    flag for anything else."""
    from ..decision import check_band
    from ..errors import PolicyError

    if value is None:
        return None
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 2:
        raise typer.BadParameter(
            f"expected LOW,HIGH (two numbers from 0 to 1), got {value!r}", param_hint="--review-band"
        )
    try:
        return check_band(numbers)
    except PolicyError as err:
        raise typer.BadParameter(err.message, param_hint="--review-band") from None


PolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--policy",
        metavar="NAME|FILE",
        help="Judge against every rule of a policy: a built-in name (edgejudge policies list) or a "
        ".toml/.json policy file.",
        rich_help_panel=_POLICY_PANEL,
    ),
]
ReviewBandOpt = Annotated[
    str | None,
    typer.Option(
        "--review-band",
        metavar="LOW,HIGH",
        help="A rule whose p_pass falls strictly inside this band needs review (default 0.25,0.75).",
        rich_help_panel=_POLICY_PANEL,
    ),
]


@dataclass(frozen=True)
class GenerationOptions:
    """The shared generation/model options of ``judge``, ``batch``, the wizard and ``demo``: one field per
    setting (same names as ``edgejudge.settings``), in the order ``--help`` lists them."""

    model: str | None = default("model")
    mmproj: Path | None = default("mmproj")
    samples: int = default("samples")
    temperature: float = default("temperature")
    top_p: float = default("top_p")
    repeat_penalty: float = default("repeat_penalty")
    seed: int | None = default("seed")
    max_tokens: int = default("max_tokens")
    image_fit: str = default("image_fit")
    n_gpu_layers: int = default("n_gpu_layers")
    n_threads: int | None = default("n_threads")
    n_ctx: int = default("n_ctx")
    parallel: int = default("parallel")
    verbose: bool = default("verbose")
    grammar: bool = default("grammar")
    engine: str = default("engine")
    servers: tuple[str, ...] = default("servers")
    concurrency: int | None = default("concurrency")
    request_timeout: float = default("request_timeout")
    mmap: str = default("mmap")
    kv_size: str = default("kv_size")
    kv_cache_type: str = default("kv_cache_type")

    def __post_init__(self) -> None:
        """``image_fit`` in any case, as the flag takes it (``PAD`` → ``pad``), also for a record built in
        code (the wizard, embedders); an unknown mode is refused here, naming the flag."""
        from ..images import check_fit

        object.__setattr__(self, "servers", tuple(self.servers or ()))
        fit = self.image_fit.lower() if isinstance(self.image_fit, str) else self.image_fit
        try:
            check_fit(fit)
        except InputError as err:
            raise typer.BadParameter(err.message, param_hint="--image-fit") from None
        object.__setattr__(self, "image_fit", fit)

    def params(self) -> GenerationParams:
        """The generation settings as the engine takes them (``grammar`` is its ``constrained``)."""
        from ..engine.base import GenerationParams

        return GenerationParams(
            temperature=self.temperature,
            top_p=self.top_p,
            repeat_penalty=self.repeat_penalty,
            max_tokens=self.max_tokens,
            seed=self.seed,
            constrained=self.grammar,
        )

    def load_options(self) -> LoadOptions:
        """What to load and how, as ``load.load_judge`` takes it."""
        from ..load import LoadOptions

        return LoadOptions(
            model=self.model,
            mmproj=self.mmproj,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            parallel=self.parallel,
            image_fit=self.image_fit,
            verbose=self.verbose,
            engine=self.engine,
            servers=self.servers,
            concurrency=self.concurrency,
            request_timeout=self.request_timeout,
            mmap=self.mmap,
            kv_size=self.kv_size,
            kv_cache_type=self.kv_cache_type,
        )

    def cli_args(self) -> list[str]:
        """The options that differ from the defaults, as command-line arguments."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            spec = SETTINGS[f.name]
            assert spec.flag is not None
            if spec.kind is tuple:
                args.extend(f"{spec.flag}={item}" for item in value)
            else:
                args.append(spec.flag if spec.kind is bool else f"{spec.flag}={value}")
        return args


def _callback(spec: Setting) -> Callable[[Any], Any]:
    """The library's check of one option's value, as a usage error naming the flag (exit 2)."""

    def validate(value: Any) -> Any:
        if spec.name == "image_fit":
            from ..images import check_fit

            value = value.lower()
            try:
                check_fit(value)
            except InputError as err:
                raise typer.BadParameter(err.message) from None
            return value
        if spec.inverted:
            value = not value
        if spec.kind is tuple:
            value = tuple(value or ())
        if spec.name == "engine" and value not in REMOTE_ENGINES + ("llama.cpp",):
            raise typer.BadParameter(f"unknown engine {value!r}: use llama.cpp, llama-server or vllm")
        try:
            check(spec.name, value)
        except InputError as err:
            raise typer.BadParameter(err.message.removeprefix(f"{spec.name} ")) from None
        return not value if spec.inverted else value

    return validate


def option_for(name: str) -> tuple[str, Any, Any]:
    """(parameter name, annotation, default) of the command-line option of setting ``name``."""
    spec = SETTINGS[name]
    assert spec.flag is not None, name
    names = [spec.flag] if spec.short is None else [spec.flag, spec.short]
    extra: dict[str, Any] = {}
    if spec.kind in (int, float):
        if spec.minimum is not None:
            extra["min"] = spec.minimum
        if spec.maximum is not None:
            extra["max"] = spec.maximum
    if spec.metavar is not None:
        extra["metavar"] = spec.metavar
    option = typer.Option(
        *names, help=spec.help, rich_help_panel=spec.panel, callback=_callback(spec), **extra
    )
    if spec.inverted:  # a flag that turns the setting off: --no-grammar
        return f"no_{name}", Annotated[bool, option], not spec.default
    if spec.kind is tuple:  # a repeatable option: --server URL --server URL
        return name, Annotated[list[str] | None, option], None
    kind: Any = spec.kind | None if spec.optional else spec.kind
    return name, Annotated[kind, option], spec.default


#: (parameter name, annotation, default) of each shared option, in the order ``--help`` lists them.
_SHARED: tuple[tuple[str, Any, Any], ...] = tuple(option_for(f.name) for f in fields(GenerationOptions))


def with_generation_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared model/generation options.

    The command declares one keyword parameter ``options: GenerationOptions`` instead of the options;
    ``--help`` shows them after the command's own (in the Model and Generation panels).
    """
    hints = typing.get_type_hints(func, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(func).parameters.values()
        if p.name != "options"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=annotation)
        for name, annotation, value in _SHARED
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        values = {name: kwargs.pop(name) for name, _, _ in _SHARED}
        for f in fields(GenerationOptions):
            if SETTINGS[f.name].inverted:
                values[f.name] = not values.pop(f"no_{f.name}")
        func(*args, options=GenerationOptions(**values), **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return wrapper
