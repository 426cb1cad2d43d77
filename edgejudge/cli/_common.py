"""What every edgejudge command shares: the stderr console, JSON output, the one error guard, the shared
generation options, ``build_judge`` and the verdict panel.

Rules kept here so the commands stay thin:

- stdout carries data only (``emit_json``); everything for people goes to ``stderr_console()``.
- Errors are turned into ``error: <message>`` / ``hint: <hint>`` lines and exit codes in ONE place:
  ``guard`` (applied to every command and callback by ``EdgeJudgeTyper``, so modules never catch errors
  themselves). Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted.
- ``build_judge`` is the single seam between the CLI and the model runtime; tests replace
  ``JUDGE_FACTORY`` (e.g. with a ``FakeEngine``-backed factory) to exercise the plumbing.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.text import Text

from .. import config
from ..errors import EdgeJudgeError
from ._console import (
    FeedbackStream,
    StageProgress,
    human_bytes,
    make_progress,
    score_table,
    status,
    stderr_console,
    verdict_panel,
)

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..judge import Judge

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "EdgeJudgeTyper",
    "make_app",
    "guard",
    "stderr_console",
    "emit_json",
    "fail",
    "usage_error",
    "examples",
    "reflow",
    "make_progress",
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
    "NoGrammarOpt",
    "JsonOpt",
    "GenerationOptions",
    "JUDGE_FACTORY",
    "build_judge",
    "verdict_panel",
    "score_table",
    "FeedbackStream",
    "status",
    "StageProgress",
    "human_bytes",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(obj: Any, *, indent: int | None = 2) -> None:
    """Write one JSON document to stdout (NaN/inf become null, Paths strings). The only stdout writer
    besides JSONL streams and ``--print-prompt``."""
    typer.echo(json.dumps(_json_safe(obj), ensure_ascii=False, indent=indent))


def _print_error(message: str, hint: str | None) -> None:
    console = stderr_console()
    # soft_wrap: one logical line each, never hard-wrapped at the console width (logs, pipes, grep)
    console.print(Text.assemble(("error: ", "bold red"), " ".join(message.split())), soft_wrap=True)
    if hint:
        console.print(Text.assemble(("hint: ", "yellow"), " ".join(hint.split())), soft_wrap=True)


def fail(err: EdgeJudgeError | str, hint: str | None = None, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error:``/``hint:`` lines on stderr and exit with ``code`` (1 by default)."""
    if isinstance(err, EdgeJudgeError):
        _print_error(str(err), hint or err.hint)
    else:
        _print_error(err, hint)
    raise typer.Exit(code)


def usage_error(message: str, param: str | None = None) -> NoReturn:
    """A command-line usage problem (conflicting or missing options): Typer prints it, exit 2."""
    raise typer.BadParameter(message, param_hint=param)


def guard(func: F) -> F:
    """Turn everything a command raises into one-line messages and exit codes (the ONE error handler).

    EdgeJudgeError → ``error:``/``hint:``, exit 1; KeyboardInterrupt → exit 130; Typer's own exits and
    usage errors pass through (exit 0/2); anything else → one line and a pointer to EDGEJUDGE_DEBUG=1
    (which shows the traceback).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except EdgeJudgeError as err:
            if config.debug_enabled():
                stderr_console().print_exception()
            fail(err)
        except KeyboardInterrupt:
            stderr_console().print("\ninterrupted", style="yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # the reader of stdout went away (``| head``): stop quietly, keep the interpreter from
            # complaining about the flush at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(EXIT_ERROR) from None
        except Exception as err:  # noqa: BLE001 - the one place that catches everything
            if config.debug_enabled():
                stderr_console().print_exception()
                raise typer.Exit(EXIT_ERROR) from None
            fail(f"unexpected {type(err).__name__}: {err}", "set EDGEJUDGE_DEBUG=1 for the traceback")

    return wrapper  # type: ignore[return-value]


class EdgeJudgeTyper(typer.Typer):
    """A Typer app whose commands and callbacks all run inside ``guard``."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[override]
        def decorator(func: F) -> F:
            if kwargs.get("help") is None and func.__doc__:
                kwargs["help"] = reflow(func.__doc__)
            super(EdgeJudgeTyper, self).command(*args, **kwargs)(guard(func))
            return func

        return decorator

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[override]
        register = super().callback(*args, **kwargs)

        def decorator(func: F) -> F:
            register(guard(func))
            return func

        return decorator


def reflow(doc: str) -> str:
    """A docstring as help text: paragraphs (blank-line separated) each joined into one line, so the
    terminal, not the source code, decides where lines break."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def make_app(name: str, help: str, *, epilog: str | None = None, **kwargs: Any) -> EdgeJudgeTyper:
    """A (sub-)app with edgejudge's settings: rich help, -h/--help, no completion, no pretty tracebacks."""
    kwargs.setdefault("no_args_is_help", True)
    return EdgeJudgeTyper(
        name=name,
        help=help,
        epilog=epilog,
        rich_markup_mode="rich",
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )


def examples(*lines: str) -> str:
    """An epilog listing example command lines (each shown on its own line in ``--help``)."""
    body = "\n\n".join(f"  [cyan]$ {escape(line)}[/cyan]" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"


# --------------------------------------------------------------------------------- shared options
_GEN = "Generation"
_MODEL = "Model"

SamplesOpt = Annotated[
    int,
    typer.Option(
        "--samples", min=1, help="Number of verdicts to sample (majority score).", rich_help_panel=_GEN
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
    int, typer.Option("--max-tokens", min=8, help="Generation budget in tokens.", rich_help_panel=_GEN)
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
    grammar: bool = True

    def __post_init__(self) -> None:
        fit = self.image_fit.lower()
        if fit not in IMAGE_FITS:
            usage_error(
                f"--image-fit must be one of {', '.join(IMAGE_FITS)}, not {self.image_fit!r}", "--image-fit"
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


#: Tests (and embedders) may replace this with ``callable(options) -> Judge`` to skip the real runtime.
JUDGE_FACTORY: Callable[[GenerationOptions], Judge] | None = None


def build_judge(options: GenerationOptions) -> Judge:
    """Resolve the model through the registry and load it with llama.cpp (or ``JUDGE_FACTORY``)."""
    if JUDGE_FACTORY is not None:
        return JUDGE_FACTORY(options)
    from ..judge import Judge
    from ..registry import resolve_model

    text, mmproj = resolve_model(options.model, mmproj=options.mmproj)
    return Judge.from_files(
        text,
        mmproj,
        image_fit=options.image_fit,
        n_ctx=options.n_ctx,
        n_threads=options.threads,
        n_gpu_layers=options.n_gpu_layers,
    )
