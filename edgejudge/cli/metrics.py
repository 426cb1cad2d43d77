"""``edgejudge metrics PRED.jsonl GOLD.jsonl``: agreement between judge scores and gold scores.

Owns the command's options, reading the two files (``-`` is stdin, a CLI convention: ``read_bytes_file``)
and how the result is shown (tables on stderr, or ``--json``). Pairing the rows by id (the batch's id
rule, which row of an id wins, what counts as failed or unmatched) is ``edgejudge.join``; the statistics
are ``edgejudge.metrics.agreement_metrics`` (scipy.stats).
"""

from __future__ import annotations

import math
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
    stderr_console,
)

if TYPE_CHECKING:
    from ..join import Joined
    from ..metrics import Metrics

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
    corr = Table(title=f"{pred_field} vs {gold_field}", title_justify="left")
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


def register(app: typer.Typer) -> None:
    @app.command(
        "metrics",
        epilog=examples(
            "edgejudge metrics out.jsonl bench.jsonl --gold-field orig_score",
            "edgejudge metrics out.jsonl gold.jsonl --gold-field human --pred-field expected_score --json",
            "edgejudge metrics scores.jsonl answers.jsonl --gold-field gpt4v --id-field question_id",
        ),
    )
    def metrics(
        pred_path: Annotated[
            Path, typer.Argument(metavar="PRED.jsonl", help="Judge scores (e.g. batch output).")
        ],
        gold_path: Annotated[Path, typer.Argument(metavar="GOLD.jsonl", help="Gold scores, joined by id.")],
        gold_field: Annotated[
            str, typer.Option("--gold-field", help="Field of GOLD rows holding the gold score.")
        ],
        pred_field: Annotated[
            str, typer.Option("--pred-field", help="Field of PRED rows holding the score.")
        ] = "score",
        id_field: Annotated[str, typer.Option("--id-field", help="Field joining the two files.")] = "id",
        bootstrap: Annotated[
            int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the CIs.")
        ] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        as_json: JsonOpt = False,
    ) -> None:
        """Agreement of judge scores with gold scores: Pearson, Spearman, Kendall τ-b with bootstrap 95%
        intervals, exact and ±1 agreement, a confusion matrix and histograms.

        Rows are joined by id; predictions with status "error" or no score are counted as failed, rows
        present in only one file as unmatched.
        """
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
            console.print(f"warning: {line}", style="yellow", highlight=False, markup=False)
        if not joined.ids:
            raise InputError(
                f"no scored rows matched between {pred_path.name} and {gold_path.name} "
                f"({joined.unmatched_pred} unmatched predictions, {joined.failed_pred} failed, "
                f"{joined.missing_gold} without {gold_field!r})",
                hint="check --id-field, --pred-field and --gold-field",
            )
        result = agreement_metrics(list(joined.pred), list(joined.gold), bootstrap=bootstrap, seed=seed)
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
