"""``edgejudge parse``: score judge outputs produced elsewhere (the reference script, other runtimes).

One text (FILE or stdin) → one JSON object; ``--jsonl FILE --field text`` → one JSON line per input line,
keeping ``question_id``/``id``. Malformed lines (not JSON, nested too deep, an integer too long for Python,
not a JSON object, the field missing) are reported on stderr with their line number, emitted as
``{"line": N, "error": ...}`` records so output lines stay aligned with input lines, and make the exit
status 1 once every line has been processed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

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

__all__ = ["register", "parse_record"]

KEEP_FIELDS = ("question_id", "id", "answer_id")


def parse_record(text: str) -> dict[str, Any]:
    """The JSON record of one parsed output: score, feedback, method, reason."""
    from ..parse import parse_output

    result = parse_output(text)
    return {
        "score": result.score,
        "feedback": result.feedback,
        "method": result.method,
        "reason": result.reason,
    }


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
    """Write one record per line of ``path``; returns the number of malformed lines.

    Every line goes through ``_jsonl.loads_line``: a line that is not JSON, is nested too deep, holds an
    integer too long for Python or is not UTF-8 becomes an ``error`` record, and the next line goes on.
    Lone surrogates (``"\\ud800"``) in a valid line are replaced with U+FFFD."""
    from .._jsonl import loads_line, split_lines

    console = stderr_console()
    bad = 0
    # read everything first: a file that cannot be read fails before any line is printed
    content = read_bytes_file(path, option="--jsonl", max_bytes=MAX_JSONL_BYTES)
    for lineno, line, replaced in split_lines(content):
        record: dict[str, Any] = {"line": lineno}
        decoded = loads_line(line)
        row: Any = decoded.value
        problem = decoded.problem
        if replaced:  # undecodable bytes: the text is not what was written, so no score is read from it
            problem, row = "not valid UTF-8 (undecodable bytes in the line)", None
        elif problem is None and not isinstance(row, dict):
            problem = f"expected a JSON object, got {type(row).__name__}"
        if problem is not None:
            bad += 1
            _problem(console, lineno, problem)
            record["error"] = problem
            emit_jsonl(record)
            continue
        for key in KEEP_FIELDS:
            if key in row:
                record[key] = row[key]
        text = row.get(field)
        if not isinstance(text, str):
            bad += 1
            what = "missing" if text is None else f"not text ({type(text).__name__})"
            _problem(console, lineno, f"field {field!r} is {what}")
            record["error"] = f"field {field!r} is {what}"
        else:
            record.update(parse_record(text))
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
        emit_json(parse_record(_read_text(file)))
