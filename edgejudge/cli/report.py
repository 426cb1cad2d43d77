"""``edgejudge report OUT.jsonl --output report.html``: the self-contained HTML report of a batch.

Owns the command's options and messages; the pages are built by ``edgejudge.report`` (which hands a policy
log to ``edgejudge.compliance``) and the CSV by ``edgejudge.report_csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ._common import JsonOpt, emit_json, examples, shown, status, stderr_console, usage_error

__all__ = ["register"]

HELP = """\
Write ONE self-contained HTML page for a batch's results: a summary, the score distribution, and a card \
per row with the image as the judge saw it, the score, the probability of each score, the expected score \
and the feedback. Filter by score with the buttons (or open the page with [bold]#filter=1,2[/bold] or \
[bold]#filter=error[/bold] in the URL). Images are embedded, so the file can be mailed or archived as \
is. Only images under the image root (--image-root, default: the results file's folder; symlinks \
resolved) are embedded, so a results file cannot make the report carry pictures from elsewhere on this \
machine; --embed-outside-root embeds the others too.

The output of a policy batch (edgejudge batch --policy) gets the compliance report instead: decisions \
and their counts, failures per rule and severity, a card per item with the rules' scores, p_pass and the \
judge's feedback as evidence, overrides from edgejudge review shown as such, filters by decision, rule and \
severity and a search box ([bold]#decision=violation[/bold] in the URL), a print stylesheet for the \
browser's "Save as PDF", and the audit trail (versions, model and policy files with their sha256, \
settings, input hash, start and end). Items whose rules are not all judged yet (a batch cut short or still \
running) are shown as incomplete: run the batch again. Rows with a [bold]student[/bold] field (or \
--group-by FIELD: a field the batch copied into its output, e.g. with batch --keep FIELD) add a grade \
sheet, rows with a [bold]system[/bold] field a leaderboard with 95% intervals and win rates.

--format csv writes a spreadsheet instead: one line per item and rule for a policy batch, one per row \
otherwise; the rows of a mixed log judged without a policy are lines with an empty decision (UTF-8, RFC \
4180). A text cell starting with = + - @, a tab or a carriage return gets a leading \
apostrophe so a spreadsheet shows it as text and never runs it as a formula. --title and --group-by are \
for the HTML page only.
"""

FORMATS = ("html", "csv")


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help=HELP,
        epilog=examples(
            "edgejudge report out.jsonl --output report.html",
            'edgejudge report out.jsonl -o report.html --image-root images/ --title "Week 3 answers"',
            "edgejudge report policy-out.jsonl -o compliance.html",
            "edgejudge report policy-out.jsonl --format csv -o decisions.csv",
            "edgejudge report graded.jsonl -o grades.html --group-by class",
            "edgejudge report ~/runs/out.jsonl -o ~/report.html --embed-outside-root",
        ),
    )
    def report(
        results: Annotated[Path, typer.Argument(metavar="OUT.jsonl", help="Output of edgejudge batch.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="The HTML (or CSV) file to write.")],
        image_root: Annotated[
            Path | None,
            typer.Option(
                "--image-root",
                help="Folder the images are in: relative image paths start here, and only images under it "
                "are embedded (default: the results file's folder).",
            ),
        ] = None,
        embed_outside_root: Annotated[
            bool,
            typer.Option(
                "--embed-outside-root",
                help="Also embed images outside the image root (any path the results file names).",
            ),
        ] = False,
        title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
        output_format: Annotated[
            str,
            typer.Option(
                "--format",
                metavar="html|csv",
                help="html: the report page; csv: one line per item and rule (policy batches) or per row, "
                "text cells starting with = + - @ tab or CR prefixed with ' (no formulas run).",
            ),
        ] = "html",
        group_by: Annotated[
            str | None,
            typer.Option(
                "--group-by",
                metavar="FIELD",
                help="The input field the grade sheet groups by (default: student); a field other than "
                "student, system or orig_score reaches the output only with batch --keep FIELD.",
            ),
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        from .._fs import user_path

        chosen = output_format.strip().lower()
        if chosen not in FORMATS:
            usage_error(f"unknown format {output_format!r}: choose html or csv", "--format")
        if chosen == "csv":
            for flag, value in (("--group-by", group_by), ("--title", title)):
                if value is not None:
                    usage_error(f"{flag} is for the HTML report: the CSV has every row and field", flag)
        results = user_path(results, what="results path")
        output = user_path(output, what="--output")
        image_root = user_path(image_root, what="--image-root") if image_root is not None else None
        console = stderr_console()
        if chosen == "csv":
            from ..report_csv import write_csv

            with status("writing the CSV…"):
                table = write_csv(results, output)
            unit = "items" if table.kind == "policy" else "rows"
            plain = f" and {table.plain_rows} rows judged without a policy" if table.plain_rows else ""
            console.print(
                shown(
                    f"wrote {table.output}: {table.lines} lines ({table.items} {unit}{plain}, "
                    f"{table.columns} columns), {table.bytes / 1024:.0f} KiB"
                ),
                soft_wrap=True,
            )
            if json_out:
                emit_json(table.to_dict())
            return
        from ..compliance import ComplianceSummary
        from ..report import write_report

        with status("writing the report…"):
            summary = write_report(
                results,
                output,
                image_root=image_root,
                title=title,
                embed_outside_root=embed_outside_root,
                group_by=group_by,
            )
        if isinstance(summary, ComplianceSummary):
            incomplete = f", {summary.incomplete} incomplete" if summary.incomplete else ""
            console.print(
                shown(
                    f"wrote {summary.output}: compliance report, {summary.items} items "
                    f"({summary.compliant} compliant, {summary.violation} violation, {summary.needs_review} "
                    f"needs review, {summary.error} error{incomplete}; {summary.overridden} overridden), "
                    f"{summary.bytes / 1024:.0f} KiB"
                ),
                soft_wrap=True,
            )
            noun = "items"
        else:
            console.print(
                shown(
                    f"wrote {summary.output}: {summary.rows} rows ({summary.ok} judged, "
                    f"{summary.errors} errors), {summary.bytes / 1024:.0f} KiB"
                ),
                soft_wrap=True,
            )
            noun = "rows"
        outside = summary.images_outside_root
        if summary.images_missing > outside:
            console.print(
                f"[yellow]{summary.images_missing - outside} {noun} have no thumbnail[/yellow] (no image, "
                "image not found or unreadable); pass --image-root DIR if the images moved"
            )
        if outside:
            console.print(
                f"[yellow]{outside} images outside the image root were not embedded[/yellow]; pass "
                "--image-root DIR (the folder they are in) or --embed-outside-root to embed them"
            )
        if group_by is not None and summary.group_rows == 0:
            from ..batch.input_fields import PASS_THROUGH

            console.print(
                shown(f"no row carries the field {group_by!r}: no grade sheet", "yellow")
                + shown(
                    f" (a batch copies only {', '.join(PASS_THROUGH)} and its --keep fields into its output; "
                    f"run it again with --keep {group_by} to pass {group_by!r} through)"
                ),
                soft_wrap=True,
            )
        if isinstance(summary, ComplianceSummary):
            from ..compliance import INCOMPLETE_WHY

            if summary.incomplete:
                console.print(
                    Text(f"{summary.incomplete} items incomplete", "yellow") + f": {INCOMPLETE_WHY}",
                    soft_wrap=True,
                )
            if summary.other_rows:
                console.print(
                    f"[yellow]{summary.other_rows} rows without a rule not shown[/yellow] (rows of the log "
                    "judged without a policy); --format csv lists them"
                )
        elif summary.skipped:
            console.print(f"[yellow]{summary.skipped} results rows skipped[/yellow] (not JSON objects)")
        if json_out:
            emit_json(summary.to_dict())
