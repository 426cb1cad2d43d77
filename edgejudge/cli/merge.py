"""``edgejudge merge OUT1.jsonl OUT2.jsonl … --output ALL.jsonl``: join batch logs (the shards of a sweep).

Owns the terminal side of ``edgejudge.merge``: the options, the conflict listing on stderr (count and the
first few), ``--strict`` (a conflict is an error, nothing written) and the ``--json`` summary. The rules
live in ``edgejudge.merge``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ._common import JsonOpt, emit_json, examples, shown, stderr_console

__all__ = ["register", "SHOWN_CONFLICTS"]

#: How many conflicts are listed on stderr (all of them are in ``--json``).
SHOWN_CONFLICTS = 5

HELP = """\
Join batch logs (e.g. the outputs of [bold]edgejudge batch --shard K/N[/bold] on several machines) into one.

The merged file is a batch log like any other: [bold]report[/bold], [bold]metrics[/bold] and \
[bold]review[/bold] read it, and [bold]batch --output ALL.jsonl[/bold] resumes from it (judging nothing \
already done). The last row for an id (for a policy run: an id and a rule) wins, in the order the logs are \
given, except that an ok row always beats an error row. Policy records (run, decision and override \
records) are carried over.

A conflict is an id whose rows in two logs disagree: judged from other inputs or settings (different \
keys), or different scores. Conflicts are listed on stderr (and in --json); the row the rule picks is \
written, unless --strict makes a conflict an error. Lines that are not batch rows (a last line cut short \
by a killed run, hand edits) are skipped and counted. The output is written in one step (never a partial \
file) and is never one of the inputs; an existing output is replaced only with --force.
"""


def register(app: typer.Typer) -> None:
    @app.command(
        "merge",
        help=HELP,
        epilog=examples(
            "edgejudge merge out-1.jsonl out-2.jsonl out-3.jsonl --output all.jsonl",
            "edgejudge merge shards/*.jsonl -o all.jsonl --strict --json > merge.json",
            "edgejudge report all.jsonl --output report.html",
        ),
    )
    def merge(
        logs: Annotated[
            list[Path], typer.Argument(metavar="OUT.jsonl...", help="The batch logs to join, in order.")
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="The merged batch log to write.")],
        strict: Annotated[
            bool, typer.Option("--strict", help="Stop on a conflict (write nothing) instead of keeping one.")
        ] = False,
        force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
        json_out: JsonOpt = False,
    ) -> None:
        from ..merge import check_target, conflict_error, plan_merge, write_merge

        check_target(logs, output, overwrite=force)  # before anything is read
        plan = plan_merge(logs)
        console = stderr_console()
        for item in plan.inputs:
            skipped = f", {item.malformed} line(s) skipped (not batch rows)" if item.malformed else ""
            console.print(
                shown(f"{item.file}: {item.rows} result rows, {item.records} policy records{skipped}"),
                soft_wrap=True,
            )
        if plan.conflicts:
            console.print(
                Text(
                    f"{len(plan.conflicts)} conflict(s): the same id judged differently in two logs", "yellow"
                )
            )
            for conflict in plan.conflicts[:SHOWN_CONFLICTS]:
                console.print(Text("  ") + shown(conflict.describe()), soft_wrap=True)
            if len(plan.conflicts) > SHOWN_CONFLICTS:
                more = len(plan.conflicts) - SHOWN_CONFLICTS
                console.print(f"  … and {more} more" + (" (see --json)" if not json_out else ""))
        if strict and plan.conflicts:
            raise conflict_error(plan)
        written = write_merge(plan, output, overwrite=force)
        records = ", ".join(f"{n} {kind}" for kind, n in plan.records.items() if n)
        console.print(
            shown(
                f"wrote {written}: {plan.rows} result rows ({plan.ok} ok, {plan.errors} errors)"
                + (f", records: {records}" if records else "")
            ),
            soft_wrap=True,
        )
        if json_out:
            emit_json({"output": str(written), **plan.to_dict()})
