"""``edgejudge metrics PRED.jsonl GOLD.jsonl``: agreement between judge scores and gold scores; and
``edgejudge metrics OUT.jsonl --by FIELD``: the leaderboard or grade sheet of one results file.

Owns the command's options, reading the two files (``-`` is stdin, a CLI convention: ``read_bytes_file``)
and how the result is shown (tables on stderr, or ``--json``). Pairing the rows by id (the batch's id
rule, which row of an id wins, what counts as failed or unmatched) is ``edgejudge.join``; the statistics
are ``edgejudge.metrics.agreement_metrics`` (scipy.stats); the views by a field are ``edgejudge.views``
(``leaderboard`` for ``--by system`` or ``--view leaderboard``, else ``grade_sheet``).
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.bar import Bar
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..errors import InputError
from ._common import (
    MAX_JSONL_BYTES,
    JsonOpt,
    emit_json,
    examples,
    read_bytes_file,
    shown,
    stderr_console,
    usage_error,
)

if TYPE_CHECKING:
    from ..join import Joined
    from ..metrics import Metrics
    from ..views import GradeSheet, Leaderboard

__all__ = ["register"]


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _render(metrics: Metrics, joined: Joined, pred_field: str, gold_field: str) -> Group:
    counts = Text()
    counts.append(f"{metrics.n} pairs", style="bold")
    counts.append(
        f" · predictions {joined.pred_rows} rows, gold {joined.gold_rows} rows · unmatched: "
        f"{joined.unmatched_pred} predictions, {joined.unmatched_gold} gold · failed predictions "
        f"{joined.failed_pred} · missing gold {joined.missing_gold}"
    )
    corr = Table(title=shown(f"{pred_field} vs {gold_field}"), title_justify="left")
    for col, justify in (("statistic", "left"), ("value", "right"), ("95% CI", "center"), ("p", "right")):
        corr.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, c in (
        ("Pearson r", metrics.pearson),
        ("Spearman ρ", metrics.spearman),
        ("Kendall τ-b", metrics.kendall),
    ):
        corr.add_row(name, _fmt(c.value), f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]", _fmt(c.p_value, ".2g"))
    corr.add_row("exact agreement", _fmt(metrics.exact_agreement, ".1%"), "", "")
    corr.add_row("within ±1", _fmt(metrics.within_one, ".1%"), "", "")
    corr.add_row("mean abs. error", _fmt(metrics.mean_abs_error), "", "")
    conf = Table(title="confusion (rows gold, columns predicted)", title_justify="left")
    conf.add_column("gold \\ pred", justify="right", style="bold")
    for k in range(1, 6):
        conf.add_column(str(k), justify="right")
    peak = max((v for row in metrics.confusion for v in row), default=0) or 1
    for g, row in enumerate(metrics.confusion, start=1):
        cells = [
            Text(str(v), style="bold green" if g == p and v else ("cyan" if v / peak > 0.25 else ""))
            for p, v in enumerate(row, start=1)
        ]
        conf.add_row(str(g), *cells)
    hist = Table(title="score histograms", title_justify="left")
    hist.add_column("score", justify="right")
    hist.add_column("predicted", width=24)
    hist.add_column("n", justify="right")
    hist.add_column("gold", width=24)
    hist.add_column("n", justify="right")
    top = max((*metrics.pred_histogram, *metrics.gold_histogram), default=0) or 1
    for k in range(1, 6):
        p, g = metrics.pred_histogram[k - 1], metrics.gold_histogram[k - 1]
        hist.add_row(str(k), Bar(top, 0, p, color="cyan"), str(p), Bar(top, 0, g, color="magenta"), str(g))
    parts: list[Any] = [counts, corr, conf, hist]
    parts += [Text(f"note: {note}", style="yellow") for note in metrics.notes]
    return Group(*parts)


class View(str, Enum):
    auto = "auto"
    leaderboard = "leaderboard"
    grades = "grades"


def _render_leaderboard(board: Leaderboard, name: str) -> Group:
    pct = round(board.confidence * 100)
    table = Table(title=shown(f"leaderboard by {board.field} ({name})"), title_justify="left")
    for col, justify in (("#", "right"), (board.field, "left"), ("n", "right"), ("mean", "right")):
        table.add_column(Text(col), justify=justify)  # type: ignore[arg-type]
    table.add_column(f"{pct}% CI", justify="center")
    for rank, s in enumerate(board.systems, start=1):
        table.add_row(
            str(rank), Text(s.system), str(s.n), _fmt(s.mean), f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"
        )
    parts: list[Any] = [table]
    if len(board.systems) > 1:
        wins = Table(title="win rate of the row against the column (shared items)", title_justify="left")
        wins.add_column("", style="bold")
        for s in board.systems:
            wins.add_column(Text(s.system), justify="right")
        for a in board.systems:
            cells: list[Any] = []
            for b in board.systems:
                rate = board.win(a.system, b.system)
                cells.append("—" if rate is None else f"{rate.rate:.0%} ({rate.n})")
            wins.add_row(Text(a.system), *cells)
        parts.append(wins)
    parts.append(
        Text(
            f"{pct}% intervals: bootstrap (BCa, {board.resamples} resamples, seed {board.seed}); "
            f"{board.left_out} row(s) left out (errors, no score, no usable {board.field}"
            f"{_incomplete_note(board.incomplete)})",
            style="dim",
        )
    )
    return Group(*parts)


def _render_grades(sheet: GradeSheet, name: str) -> Group:
    table = Table(title=shown(f"grade sheet by {sheet.field} ({name})"), title_justify="left")
    table.add_column(shown(sheet.field))
    table.add_column("items", justify="right")
    for column in sheet.columns:
        table.add_column(Text(column), justify="right")
    table.add_column("total", justify="right", style="bold")
    for row in sheet.rows:
        cells = []
        for column in sheet.columns:
            mean = row.scores.get(column)
            cell = _fmt(mean, ".2f") if mean is not None else "—"
            if column in row.passed and mean is not None:
                cell += f" ({row.passed[column]} passed)"
            cells.append(cell)
        table.add_row(Text(row.group), str(row.n_items), *cells, _fmt(row.total, ".2f"))
    note = Text(
        f"mean scores (1-5); total = mean of the row's columns; {sheet.left_out} row(s) left out "
        f"(errors, no score, no usable {sheet.field}{_incomplete_note(sheet.incomplete)})",
        style="dim",
    )
    return Group(table, note)


def _incomplete_note(incomplete: int) -> str:
    """The footers' words for the rule rows of incomplete items (left out of a view)."""
    return f"; the rules of {incomplete} incomplete item(s): run the batch again" if incomplete else ""


def _by_hint(field: str) -> str:
    """What to check when no row carries ``field``: a field other than the pass-through ones reaches a
    batch's output only with ``batch --keep FIELD``."""
    from ..batch.input_fields import PASS_THROUGH
    from ..batch.keep import RESERVED

    if field in PASS_THROUGH:
        return "check --by: the field of the input rows to group by, e.g. system or student"
    if field in RESERVED:
        return (
            f"{field!r} is a field edgejudge itself uses, not one copied from the input rows: group by one "
            "the batch copies (system, student, or a field kept with batch --keep FIELD)"
        )
    return (
        f"a batch copies only {', '.join(PASS_THROUGH)} and its --keep fields into its output: run it again "
        f"with batch --keep {field} to group by {field!r}"
    )


def _by_field(
    pred_path: Path, field: str, view: View, bootstrap: int | None, seed: int, as_json: bool
) -> None:
    """``metrics OUT.jsonl --by FIELD``: the leaderboard or grade sheet of one results file."""
    from ..batch.records import read_log
    from ..views import grade_sheet, leaderboard

    if str(pred_path) == "-":
        raise InputError(
            "--by reads a results file by name, not stdin", hint="pass the batch output file, e.g. out.jsonl"
        )
    if not pred_path.expanduser().exists():
        raise InputError(f"no such results file: {pred_path}", hint="pass the output of a batch run")
    log = read_log(pred_path)
    rows = list(log.rows.values())
    board = view is View.leaderboard or (view is View.auto and field == "system")
    ranked = (
        leaderboard(
            rows,
            field,
            resamples=2000 if bootstrap is None else bootstrap,
            seed=seed,
            decisions=log.decisions,
        )
        if board
        else None
    )
    sheet = None if board else grade_sheet(rows, field, decisions=log.decisions)
    result = ranked or sheet
    if result is None:
        raise InputError(
            f"no judged row of {pred_path.name} carries the field {field!r} ({len(rows)} row(s) read)",
            hint=_by_hint(field),
        )
    if as_json:
        emit_json({"view": "leaderboard" if board else "grades", **result.to_dict()})
        return
    console = stderr_console()
    if ranked is not None:
        console.print(_render_leaderboard(ranked, pred_path.name))
    elif sheet is not None:
        console.print(_render_grades(sheet, pred_path.name))


def register(app: typer.Typer) -> None:
    @app.command(
        "metrics",
        epilog=examples(
            "edgejudge metrics out.jsonl bench.jsonl --gold-field orig_score",
            "edgejudge metrics out.jsonl gold.jsonl --gold-field human --pred-field expected_score --json",
            "edgejudge metrics scores.jsonl answers.jsonl --gold-field gpt4v --id-field question_id",
            "edgejudge metrics out.jsonl --by system --json",
            "edgejudge metrics graded.jsonl --by student",
        ),
    )
    def metrics(
        pred_path: Annotated[
            Path, typer.Argument(metavar="PRED.jsonl", help="Judge scores (e.g. batch output).")
        ],
        gold_path: Annotated[
            Path | None,
            typer.Argument(metavar="GOLD.jsonl", help="Gold scores, joined by id (not with --by)."),
        ] = None,
        gold_field: Annotated[
            str | None,
            typer.Option(
                "--gold-field", help="Field of GOLD rows holding the gold score (needed with GOLD)."
            ),
        ] = None,
        pred_field: Annotated[
            str, typer.Option("--pred-field", help="Field of PRED rows holding the score.")
        ] = "score",
        id_field: Annotated[str, typer.Option("--id-field", help="Field joining the two files.")] = "id",
        by: Annotated[
            str | None,
            typer.Option(
                "--by",
                metavar="FIELD",
                help="Group the judged rows of PRED by this input field: a leaderboard for 'system', a grade "
                "sheet for any other (see --view).",
            ),
        ] = None,
        view: Annotated[
            View,
            typer.Option(
                "--view", help="With --by: the leaderboard, the grade sheet, or auto (by the field)."
            ),
        ] = View.auto,
        bootstrap: Annotated[
            int | None,
            typer.Option(
                "--bootstrap", min=0, help="Bootstrap resamples for the CIs (default 1000; 2000 with --by)."
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        as_json: JsonOpt = False,
    ) -> None:
        """Agreement of judge scores with gold scores: Pearson, Spearman, Kendall τ-b with bootstrap 95%
        intervals, exact and ±1 agreement, a confusion matrix and histograms.

        Rows are joined by id; predictions with status "error" or no score are counted as failed, rows
        present in only one file as unmatched.

        With --by FIELD (no GOLD): the judged rows of one results file grouped by a field the input rows
        carried. --by system: a leaderboard (per system the mean score with a bootstrap 95% interval, and
        pairwise win rates on the items both systems were judged on); --by student (or any other field): a
        grade sheet (group × rule or rubric, mean scores, totals).
        """
        if by is not None:
            if gold_path is not None or gold_field is not None:
                usage_error("--by reads one results file: give no GOLD.jsonl or --gold-field with it", "--by")
            if bootstrap == 0:
                usage_error("the leaderboard needs at least 1 bootstrap resample", "--bootstrap")
            _by_field(pred_path, by, view, bootstrap, seed, as_json)
            return
        if gold_path is None:
            usage_error("give GOLD.jsonl (with --gold-field) to compare with gold scores, or --by FIELD")
        if gold_field is None:
            usage_error(
                "GOLD.jsonl needs --gold-field: the field of its rows holding the gold score", "--gold-field"
            )
        from ..join import join_rows
        from ..metrics import agreement_metrics

        joined = join_rows(
            read_bytes_file(pred_path, max_bytes=MAX_JSONL_BYTES),
            read_bytes_file(gold_path, max_bytes=MAX_JSONL_BYTES),
            pred_field=pred_field,
            gold_field=gold_field,
            id_field=id_field,
            pred_name=pred_path.name,
            gold_name=gold_path.name,
        )
        console = stderr_console()
        for line in joined.malformed_lines:
            console.print(shown(f"warning: {line}", "yellow"), soft_wrap=True)
        if not joined.ids:
            raise InputError(
                f"no scored rows matched between {pred_path.name} and {gold_path.name} "
                f"({joined.unmatched_pred} unmatched predictions, {joined.failed_pred} failed, "
                f"{joined.missing_gold} without {gold_field!r})",
                hint="check --id-field, --pred-field and --gold-field",
            )
        result = agreement_metrics(
            list(joined.pred),
            list(joined.gold),
            bootstrap=1000 if bootstrap is None else bootstrap,
            seed=seed,
        )
        if as_json:
            emit_json(
                {
                    **result.to_dict(),
                    "pred_field": pred_field,
                    "gold_field": gold_field,
                    **joined.counts(),
                }
            )
            return
        console.print(_render(result, joined, pred_field, gold_field))
