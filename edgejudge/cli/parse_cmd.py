"""``edgejudge parse``: score judge outputs produced elsewhere (the reference script, other runtimes).

One text (FILE or stdin) → one JSON object; ``--jsonl FILE --field text`` → one JSON line per input line,
keeping ``question_id``/``id`` (the records are ``edgejudge.parse.parse_jsonl``'s). Malformed lines (not
JSON, nested too deep, an integer too long for Python, not a JSON object, the field missing) are reported
on stderr with their line number, emitted as ``{"line": N, "error": ...}`` records so output lines stay
aligned with input lines, and make the exit status 1 once every line has been processed. This module owns
the options, reading the input and printing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ._common import (
    EXIT_ERROR,
    MAX_JSONL_BYTES,
    emit_json,
    emit_jsonl,
    examples,
    read_bytes_file,
    read_text_file,
    stderr_console,
    usage_error,
)

__all__ = ["register"]


def _read_text(file: Path | None) -> str:
    if file is None or str(file) == "-":
        if sys.stdin.isatty():
            usage_error("give a FILE, or pipe the judge's output into stdin", "FILE")
    warnings: list[str] = []
    text = read_text_file(file or Path("-"), warnings=warnings)
    for warning in warnings:
        stderr_console().print(f"warning: {warning}", style="yellow", highlight=False, markup=False)
    return text


def _problem(console: Console, lineno: int, message: str) -> None:
    console.print(f"line {lineno}: {message}", highlight=False, markup=False, soft_wrap=True)


def _jsonl(path: Path, field: str) -> int:
    """Write one record per line of ``path`` (``parse.parse_jsonl``) and report the lines that could not
    be parsed on stderr; returns their number."""
    from ..parse import parse_jsonl

    console = stderr_console()
    bad = 0
    # read everything first: a file that cannot be read fails before any line is printed
    content = read_bytes_file(path, option="--jsonl", max_bytes=MAX_JSONL_BYTES)
    for record in parse_jsonl(content, field=field):
        if "error" in record:
            bad += 1
            _problem(console, record["line"], record["error"])
        emit_jsonl(record)
    return bad


def register(app: typer.Typer) -> None:
    @app.command(
        "parse",
        epilog=examples(
            "edgejudge parse output.txt",
            "echo 'Good answer. [RESULT] 4' | edgejudge parse",
            "edgejudge parse --jsonl answers.jsonl --field text > scores.jsonl",
        ),
    )
    def parse(
        file: Annotated[
            Path | None,
            typer.Argument(metavar="FILE", help="A judge output as text ('-' or nothing: stdin)."),
        ] = None,
        jsonl: Annotated[
            Path | None,
            typer.Option(
                "--jsonl", help="A JSON-lines file of outputs (e.g. the reference script's answers)."
            ),
        ] = None,
        field: Annotated[
            str, typer.Option("--field", help="With --jsonl: the field holding the text.")
        ] = "text",
    ) -> None:
        """Read the score and feedback out of judge outputs produced elsewhere; prints JSON.

        Anchors on the end of the text ([RESULT] N and the other conventions judges use), never on the
        first digit anywhere. Each result has score (null when none), feedback, method and reason.
        """
        if jsonl is not None:
            if file is not None:
                usage_error("give FILE or --jsonl, not both", "--jsonl")
            bad = _jsonl(jsonl, field)
            if bad:
                stderr_console().print(f"{bad} line(s) could not be parsed (see above)")
                raise typer.Exit(EXIT_ERROR)
            return
        from ..parse import parse_output

        emit_json(parse_output(_read_text(file)).to_dict())
