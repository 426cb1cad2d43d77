"""``edgejudge doctor``: is this machine ready? Versions, CPU, GPU offload, models, self-test, memory.

The facts come from ``edgejudge.doctor.collect``; this module draws them (or prints them as JSON) and
exits 1 when there is a problem to fix.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ._common import (
    EXIT_ERROR,
    JsonOpt,
    VerboseOpt,
    emit_json,
    examples,
    human_bytes,
    native_logs,
    status,
    stderr_console,
)

__all__ = ["register"]


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text("-" if value is None or value == "" else str(value)))
    return table


def _fmt_bytes(value: int | None) -> str:
    return "unknown" if value is None else human_bytes(value)


def register(app: typer.Typer) -> None:
    @app.command(
        "doctor",
        epilog=examples(
            "edgejudge doctor", "edgejudge doctor --json | jq .gpu", "edgejudge doctor --no-selftest"
        ),
    )
    def doctor(
        selftest: Annotated[
            bool,
            typer.Option("--selftest/--no-selftest", help="Run the CLS-order self-test (a second or two)."),
        ] = True,
        verbose: VerboseOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Check this machine: versions, CPU features, GPU offload, installed models and whether they fit
        in memory, and the converter's CLS-order self-test with its fidelity numbers.

        Exits 1 when something needs fixing (listed under problems).
        """
        from ..doctor import collect

        with native_logs(verbose), status("checking…"):
            report = collect(selftest=selftest)
        if as_json:
            emit_json(report.to_dict())
        else:
            console = stderr_console()
            v = report.versions
            console.print(_kv_table("Versions", list(v.items())))
            cpu, gpu = report.cpu, report.gpu
            console.print(
                _kv_table(
                    "Hardware",
                    [
                        ("cpu", f"{cpu['model']} ({cpu['cores']} cores, {cpu['machine']})"),
                        ("features", " ".join(cpu["features"]) or "none detected"),
                        ("llama.cpp", cpu["llama_system_info"]),
                        (
                            "gpu offload",
                            {True: "yes", False: "no (CPU-only build)", None: "unknown"}[
                                gpu["offload_supported"]
                            ],
                        ),
                        ("gpu backend", gpu["gpu_backend"] or "none"),
                        (
                            "memory",
                            f"{_fmt_bytes(report.memory['available_bytes'])} free of "
                            f"{_fmt_bytes(report.memory['total_bytes'])}",
                        ),
                    ],
                )
            )
            if report.selftest is not None:
                t = report.selftest
                rows = (
                    [("error", t["error"])]
                    if "error" in t
                    else [
                        ("CLS position", f"{t['cls_position']} (how this libmtmd orders the CLS token)"),
                        ("text max abs err", f"{t['text_max_abs_err']:.2e} (llama.cpp vs numpy reference)"),
                        ("vision rel err", f"{t['vision_rel_err']:.2e} (mtmd vs numpy CLIP + projector)"),
                        ("took", f"{t['seconds']:.2f}s"),
                    ]
                )
                console.print(_kv_table("Converter self-test", rows))
            models = Table(title=f"Models in {report.models_dir}", title_justify="left")
            for col in ("model", "files", "needs: judge", "batch", "fits"):
                models.add_column(col)
            for m in report.models:
                fits = m.get("fits_in_memory")
                models.add_row(
                    m["model"] + (" (default)" if m["default"] else ""),
                    "present" if m["present"] else "MISSING",
                    _fmt_bytes(m.get("total_bytes")),
                    _fmt_bytes(m.get("batch_bytes")),
                    {True: "yes", False: "no", None: "?"}[fits],
                )
            if report.models:
                console.print(models)
            for note in report.notes:
                console.print(f"note: {note}", style="dim", highlight=False, markup=False)
            for problem in report.problems:
                console.print(f"problem: {problem}", style="bold red", highlight=False, markup=False)
            if not report.problems:
                console.print("[green]all checks passed[/green]")
        if report.problems:
            raise typer.Exit(EXIT_ERROR)
