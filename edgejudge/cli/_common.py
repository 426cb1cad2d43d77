"""What every edgejudge command shares: the stderr console, JSON output, the one error guard, the shared
generation options, ``build_judge`` and the verdict panel.

Rules kept here so the commands stay thin:

- stdout carries data only (``emit_json``); everything for people goes to ``stderr_console()``.
- Errors are turned into ``error: <message>`` / ``hint: <hint>`` lines and exit codes in ONE place:
  ``guard`` (applied to every command and callback by ``EdgeJudgeTyper``, so modules never catch errors
  themselves). Exit codes: 0 ok, 1 error, 2 usage, 130 interrupted. A library hint becomes CLI words
  there (``_hints.hint_for_people``: setting names → flags, verbose logging → ``--verbose``, the flags of
  the error's ``about`` appended; only flags the running command offers); messages are printed as written.
- ``build_judge`` is the single seam between the CLI and the model runtime; tests replace
  ``JUDGE_FACTORY`` (e.g. with a ``FakeEngine``-backed factory) to exercise the plumbing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.text import Text

from .. import config
from ..errors import EdgeJudgeError, InputError
from ._console import (
    DECISION_STYLE,
    STATE_STYLE,
    FeedbackStream,
    StageProgress,
    human_bytes,
    make_progress,
    score_table,
    shown,
    status,
    stderr_console,
    verdict_panel,
)
from ._hints import command_options, hint_for_people, running
from ._options import GenerationOptions, JsonOpt, VerboseOpt, with_generation_options

if TYPE_CHECKING:
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
    "command_options",
    "native_logs",
    "usage_error",
    "examples",
    "reflow",
    "make_progress",
    "read_text_file",
    "read_bytes_file",
    "emit_jsonl",
    "MAX_TEXT_BYTES",
    "MAX_JSONL_BYTES",
    "JsonOpt",
    "VerboseOpt",
    "GenerationOptions",
    "with_generation_options",
    "JUDGE_FACTORY",
    "build_judge",
    "registered_name",
    "verdict_panel",
    "score_table",
    "FeedbackStream",
    "status",
    "StageProgress",
    "human_bytes",
    "shown",
    "DECISION_STYLE",
    "STATE_STYLE",
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
    besides JSONL streams and ``--print-prompt``. Text that cannot be encoded (lone surrogates, e.g. a
    path typed as bytes that are not UTF-8) is written as ``\\uXXXX`` escapes instead of failing."""
    safe = _json_safe(obj)
    text = json.dumps(safe, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(safe, ensure_ascii=True, indent=indent)
    typer.echo(text)


def emit_jsonl(obj: Any) -> None:
    """Write one JSON line to stdout through ``_jsonl.dumps_line`` (never raises on a string)."""
    from .._jsonl import dumps_line

    typer.echo(dumps_line(_json_safe(obj)), nl=False)


def _print_error(message: str, hint: str | None) -> None:
    console = stderr_console()
    # soft_wrap: one logical line each, never hard-wrapped at the console width (logs, pipes, grep)
    # messages quote paths and values from files: shown, so a control character in one is never run
    console.print(Text.assemble(("error: ", "bold red"), shown(" ".join(message.split()))), soft_wrap=True)
    if hint:
        console.print(Text.assemble(("hint: ", "yellow"), shown(" ".join(hint.split()))), soft_wrap=True)


def fail(err: EdgeJudgeError | str, hint: str | None = None, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error:``/``hint:`` lines on stderr and exit with ``code`` (1 by default).

    A library error's message is printed as it is (it quotes paths and user values); its hint names
    settings by field name and is printed in CLI words for the running command (``_hints.hint_for_people``:
    ``raise n_ctx`` → ``raise --n-ctx``, ``choose another output directory (--outdir)``). A ``hint`` given
    here, and a plain ``err`` string, are the CLI's own words and are printed as they are."""
    if isinstance(err, EdgeJudgeError):
        _print_error(str(err), hint or hint_for_people(err.hint, err.about, command_options()))
    else:
        _print_error(err, hint)
    raise typer.Exit(code)


@contextlib.contextmanager
def native_logs(verbose: bool) -> Iterator[None]:
    """With ``verbose``, llama.cpp's and mtmd's own messages on stderr for the block (``--verbose`` of the
    commands that run the probe or the quantizer); else nothing changes."""
    if not verbose:
        yield
        return
    from ..native.log import verbose_native_logs

    with verbose_native_logs():
        yield


def usage_error(message: str, param: str | None = None) -> NoReturn:
    """A command-line usage problem (conflicting or missing options): Typer prints it, exit 2."""
    raise typer.BadParameter(message, param_hint=param)


def guard(func: F) -> F:
    """Turn everything a command raises into one-line messages and exit codes (the ONE error handler).

    EdgeJudgeError → ``error:``/``hint:``, exit 1; KeyboardInterrupt → exit 130; Typer's own exits and
    usage errors pass through (exit 0/2); anything else → one line and a pointer to EDGEJUDGE_DEBUG=1
    (which shows the traceback).
    """

    ctx_name, injected = _context_parameter(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(ctx_name) if injected else kwargs.get(ctx_name)
        with running(getattr(ctx, "command", None)):
            return _guarded(func, args, kwargs)

    if injected:  # Typer hands a typer.Context to the parameter annotated with it: the running command
        signature = inspect.signature(func, eval_str=True)  # as Typer reads it (real annotations)
        extra = inspect.Parameter(ctx_name, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), extra]
        )
        wrapper.__annotations__ = {**getattr(func, "__annotations__", {}), ctx_name: typer.Context}
    return wrapper  # type: ignore[return-value]


def _context_parameter(func: Callable[..., Any]) -> tuple[str, bool]:
    """The name of ``func``'s ``typer.Context`` parameter, and whether ``guard`` adds one (it has none)."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: Typer will say so itself
        hints = {}
    for name, hint in hints.items():
        if isinstance(hint, type) and issubclass(hint, typer.Context):
            return name, False
    return "_edgejudge_ctx", True


def _guarded(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``func`` and map what it raises (see ``guard``)."""
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


#: The largest text file (``--response-file``, ``parse FILE``) read: far above any prompt the judge can hold.
MAX_TEXT_BYTES = 64 * 2**20
#: The largest JSONL file ``parse --jsonl`` and ``metrics`` read whole.
MAX_JSONL_BYTES = 2 * 2**30


def read_bytes_file(path: Path | str, *, option: str | None = None, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file (``-`` = stdin), ``~`` expanded; folders, FIFOs and devices are refused
    (never a hang), and so is a file over ``max_bytes``. Errors name ``option`` when the file came from
    one."""
    from .._fs import read_regular, user_path

    what = option or "file"
    if str(path) == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text-only stdin (embedders): take it as it is
            data = sys.stdin.read(max_bytes + 1).encode("utf-8", "surrogateescape")
        else:
            data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InputError(f"{what}: stdin holds more than {max_bytes} bytes", hint="pass a smaller input")
        return data
    label = os.fsdecode(path)
    return read_regular(user_path(label, what=what), label=label, what=what, max_bytes=max_bytes)


def read_text_file(path: Path | str, *, option: str | None = None, warnings: list[str] | None = None) -> str:
    """The UTF-8 text of ``path`` (``-`` = stdin), read with ``read_bytes_file``'s checks.

    Bytes that are not UTF-8 are replaced with U+FFFD; with a ``warnings`` list a line saying so is
    appended to it (the caller puts it on the verdict), without one the file is refused instead."""
    data = read_bytes_file(path, option=option)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"{option} {os.fsdecode(path)}" if option else os.fsdecode(path)
        if warnings is None:
            raise InputError(
                f"{where} is not UTF-8 text (byte {err.start}: {err.reason})", hint="pass a UTF-8 text file"
            ) from None
        text = data.decode("utf-8", errors="replace")
        warnings.append(
            f"{where} is not valid UTF-8 (first bad byte at offset {err.start}): "
            f"{text.count(chr(0xFFFD))} character(s) were replaced with U+FFFD; save it as UTF-8"
        )
        return text


def examples(*lines: str) -> str:
    """An epilog listing example command lines (each shown on its own line in ``--help``)."""
    body = "\n\n".join(f"  [cyan]$ {escape(line)}[/cyan]" for line in lines)
    return f"[bold]Examples[/bold]\n\n{body}"


#: Tests (and embedders) may replace this with ``callable(options) -> Judge`` to skip the real runtime.
JUDGE_FACTORY: Callable[[GenerationOptions], Judge] | None = None


def build_judge(options: GenerationOptions) -> Judge:
    """Load the judge ``options`` name (``load.load_judge``), or call ``JUDGE_FACTORY`` when set."""
    if JUDGE_FACTORY is not None:
        return JUDGE_FACTORY(options)
    from ..load import load_judge

    return load_judge(options.load_options())


def registered_name(options: GenerationOptions) -> str | None:
    """The registry key (``name:QUANT``) of the model ``options`` names, for display; None for a path or an
    unregistered model (``load.registered_name``)."""
    from ..load import registered_name as registry_key

    return registry_key(options.load_options())
