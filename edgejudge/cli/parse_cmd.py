"""``edgejudge parse``: score judge outputs produced elsewhere (the reference script, other runtimes).

One text (FILE or stdin) → one JSON object; ``--jsonl FILE --field text`` → one JSON line per input line,
keeping ``question_id``/``id``. Malformed lines are reported on stderr with their line number, emitted as
``{"line": N, "error": ...}`` records so output lines stay aligned with input lines, and make the exit
status 1 once every line has been processed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._common import EXIT_ERROR, examples, read_text_file, stderr_console, usage_error

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
    return read_text_file(file or Path("-"))


def _jsonl(path: Path, field: str) -> int:
    """Write one record per line of ``path``; returns the number of malformed lines."""
    console = stderr_console()
    bad = 0
    # read (and decode) everything first: a bad file fails before any line is printed
    content = read_text_file(path, option="--jsonl")
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        record: dict[str, Any] = {"line": lineno}
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as err:
            bad += 1
            console.print(
                f"[red]line {lineno}:[/red] malformed JSON ({escape(str(err))})", markup=True, highlight=False
            )
            record["error"] = f"malformed JSON: {err}"
            typer.echo(json.dumps(record, ensure_ascii=False))
            continue
        for key in KEEP_FIELDS:
            if key in row:
                record[key] = row[key]
        text = row.get(field)
        if not isinstance(text, str):
            bad += 1
            what = "missing" if text is None else f"not text ({type(text).__name__})"
            console.print(f"line {lineno}: field {field!r} is {what}", highlight=False, markup=False)
            record["error"] = f"field {field!r} is {what}"
        else:
            record.update(parse_record(text))
        typer.echo(json.dumps(record, ensure_ascii=False))
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
        typer.echo(json.dumps(parse_record(_read_text(file)), ensure_ascii=False, indent=2))
