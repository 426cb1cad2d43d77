"""``edgejudge models …``: list, pull, verify, locate, register and choose judge models.

Thin over ``edgejudge.registry`` (names → files, manifest, registry file, ``models_overview``) and
``edgejudge.install`` (pull = download + convert + hash + register; add; remove; verify = sha256 + GGUF
metadata): this module parses arguments, draws tables and progress, and prints.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..judgefile import DEFAULT_MMPROJ_QUANT, MMPROJ_QUANTS, TEXT_QUANTS
from ._common import (
    EXIT_ERROR,
    JsonOpt,
    StageProgress,
    VerboseOpt,
    emit_json,
    examples,
    human_bytes,
    make_app,
    native_logs,
    stderr_console,
)

__all__ = ["register"]

NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="A model name, or name:QUANT (e.g. prometheus-vision-7b:Q8_0).")
]


def _list_tables(data: dict[str, Any]) -> list[Table]:
    inst = Table(title="Installed models", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("name", "quant", "size", "needs", "sha256", "files", "source"):
        inst.add_column(col, no_wrap=col in ("name", "quant", "size", "needs"), overflow="fold")
    for m in data["installed"]:
        name = Text(m["name"], style="bold cyan")
        if m["default"]:
            name.append(" (default)", style="green")
        files = Text("present", style="green") if m["present"] else Text("MISSING", style="bold red")
        # Text, not markup: a source path such as ``ckpt[/x]`` must print as typed, not as a Rich tag
        need = m.get("memory")
        needs = (
            "?"
            if need is None
            else f"{human_bytes(need['total_bytes'])} / {human_bytes(need['batch_bytes'])}"
        )
        inst.add_row(name, m["quant"], human_bytes(m["bytes"]), needs, m["sha256"], files, Text(m["source"]))
    known = Table(
        title="Known judges (edgejudge models pull NAME)", title_justify="left", box=box.SIMPLE_HEAD
    )
    known.add_column("name / hub repo", no_wrap=True)
    known.add_column("download", justify="right", no_wrap=True)
    known.add_column("Q4_K_M", justify="right", no_wrap=True)
    known.add_column("installed")
    for k in data["known"]:
        approx = k["gguf_bytes"].get("Q4_K_M", 0) + k["mmproj_bytes"].get("F16", 0)
        label = Text(k["name"], style="bold cyan")
        label.append(f"\n{k['repo']}", style="dim")
        known.add_row(
            label, human_bytes(k["source_bytes"]), f"~{human_bytes(approx)}", ", ".join(k["installed"]) or "-"
        )
    return [inst, known] if data["installed"] else [known]


def register(app: typer.Typer) -> None:
    models = make_app(
        "models",
        "Install and manage judge models (GGUF text model + mmproj pairs).",
        epilog=examples(
            "edgejudge models list",
            "edgejudge models pull prometheus-vision-7b --quant Q4_K_M",
            "edgejudge models pull my-judge --source ./llava-checkpoint",
            "edgejudge models add ./judge-Q8_0.gguf --name my-judge",
            "edgejudge models default prometheus-vision-7b",
            "edgejudge models verify",
        ),
    )
    app.add_typer(models, name="models")

    @models.command("list", epilog=examples("edgejudge models list", "edgejudge models list --json"))
    def list_(as_json: JsonOpt = False) -> None:
        """Known judges and installed models, with sizes, quantization, sha256 status and the memory each
        needs (one verdict / the context full, as [bold]edgejudge doctor[/bold] reports it)."""
        from ..doctor import model_needs
        from ..errors import EdgeJudgeError
        from ..registry import models_overview

        data = models_overview()
        for m in data["installed"]:  # what it needs in memory: doctor's figures (memory.estimate)
            try:
                m["memory"] = model_needs(m["text_model"], m["mmproj"]) if m["present"] else None
            except (EdgeJudgeError, OSError):
                m["memory"] = None
        if as_json:
            emit_json(data)
            return
        console = stderr_console()
        for table in _list_tables(data):
            console.print(table)
        if not data["installed"]:
            console.print("No models installed yet. Try: edgejudge models pull prometheus-vision-7b")

    @models.command(
        "pull",
        epilog=examples(
            "edgejudge models pull prometheus-vision-7b",
            "edgejudge models pull prometheus-vision-13b --quant Q5_K_M --mmproj-quant q8_0",
            "edgejudge models pull prometheus-vision-7b:Q8_0",
            "edgejudge models pull my-judge --source ./my-llava-checkpoint",
        ),
    )
    def pull(
        name: NameArg,
        quant: Annotated[
            str | None,
            typer.Option("--quant", "-q", help=f"Text model quantization: {', '.join(TEXT_QUANTS)}."),
        ] = None,
        mmproj_quant: Annotated[
            str, typer.Option("--mmproj-quant", help=f"Projector quantization: {', '.join(MMPROJ_QUANTS)}.")
        ] = DEFAULT_MMPROJ_QUANT,
        source: Annotated[
            str | None,
            typer.Option(
                "--source",
                help="Convert from this local checkpoint dir or hub repo instead of the manifest's.",
            ),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Convert again even if already installed.")
        ] = False,
        verbose: VerboseOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Download a judge from the Hugging Face hub, convert and quantize it, record its sha256.

        Interrupted downloads resume where they stopped. With HF_HUB_OFFLINE=1 only the local hub cache
        is used. The files go to the models directory (EDGEJUDGE_MODELS_DIR).
        """
        from .._fs import user_path
        from ..install import pull_model

        if source is not None and source.startswith("~"):  # a local checkpoint as the shell did not expand it
            source = str(user_path(source, what="--source"))
        with native_logs(verbose), StageProgress() as progress:
            result = pull_model(
                name, quant=quant, mmproj_quant=mmproj_quant, source=source, force=force, progress=progress
            )
        entry = result.entry
        console = stderr_console()
        if result.already_installed:
            console.print(f"{entry.key} is already installed (use --force to convert again)")
        else:
            console.print(
                f"[green]installed[/green] {entry.key} ({human_bytes(entry.total_bytes)}) "
                f"in {result.seconds:.1f}s",
                highlight=False,
            )
        if as_json:
            emit_json({**asdict(entry), "already_installed": result.already_installed})
        else:
            console.print(f"use it with: edgejudge judge IMAGE --model {entry.key} …", highlight=False)

    @models.command(
        "verify", epilog=examples("edgejudge models verify", "edgejudge models verify my-judge --json")
    )
    def verify(
        name: Annotated[
            str | None, typer.Argument(metavar="NAME", help="Model to check (default: all).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Re-hash installed models against the registry and check their GGUF metadata."""
        from ..install import verify_model
        from ..registry import installed_for

        entries = installed_for(name)
        console = stderr_console()
        if not entries:
            console.print("No models installed. Try: edgejudge models pull prometheus-vision-7b")
        reports = []
        with StageProgress(transient=True) as progress:
            for entry in entries:
                reports.append(verify_model(entry, progress=progress))
        if as_json:
            emit_json({"ok": all(r.ok for r in reports), "models": [r.to_dict() for r in reports]})
        else:
            for r in reports:
                style = "green" if r.ok else "bold red"
                console.print(Text.assemble((f"{r.status:>9} ", style), r.key))
                for problem in r.problems:
                    console.print(f"          problem: {problem}", style="red", highlight=False, markup=False)
                for note in r.notes:
                    console.print(f"          note: {note}", style="dim", highlight=False, markup=False)
        if not all(r.ok for r in reports):
            raise typer.Exit(EXIT_ERROR)

    @models.command(
        "path",
        epilog=examples(
            "edgejudge models path prometheus-vision-7b", "edgejudge models path my-judge --mmproj"
        ),
    )
    def path(
        name: Annotated[
            str | None, typer.Argument(metavar="NAME", help="Model (default: the default model).")
        ] = None,
        mmproj: Annotated[bool, typer.Option("--mmproj", help="Print the projector's path instead.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Print where a model's files are (the text GGUF, or the mmproj with --mmproj)."""
        from ..registry import resolve_model

        text, proj = resolve_model(name)
        if as_json:
            emit_json({"text_model": str(text), "mmproj": str(proj)})
        else:
            typer.echo(str(proj if mmproj else text))

    @models.command(
        "default",
        epilog=examples("edgejudge models default", "edgejudge models default prometheus-vision-7b:Q8_0"),
    )
    def default(
        name: Annotated[str | None, typer.Argument(metavar="NAME", help="Model to make the default.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Show or set the default model (used when --model is not given; EDGEJUDGE_DEFAULT_MODEL wins)."""
        from .. import config
        from ..registry import load_registry, set_default

        if name is not None:
            entry = set_default(name)
            stderr_console().print(
                f"default model: {name} ({entry.text_model})", highlight=False, markup=False
            )
        current = load_registry().default
        if as_json:
            emit_json({"default": current, "env": config.default_model()})
        elif name is None:
            typer.echo(current or "")
            if config.default_model():
                stderr_console().print(
                    f"note: EDGEJUDGE_DEFAULT_MODEL={config.default_model()} overrides it", markup=False
                )

    @models.command(
        "add",
        epilog=examples(
            "edgejudge models add ~/gguf/judge-Q4_K_M.gguf --name my-judge",
            "edgejudge models add model.gguf --mmproj projector.gguf --name other",
        ),
    )
    def add(
        text_model: Annotated[Path, typer.Argument(metavar="PATH", help="The text model .gguf.")],
        name: Annotated[str, typer.Option("--name", "-n", help="Name to register it under.")],
        mmproj: Annotated[
            Path | None, typer.Option("--mmproj", help="The projector .gguf (default: found beside PATH).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Register an existing GGUF pair (converted elsewhere or earlier) under a name."""
        from ..install import add_model

        with StageProgress(transient=True) as progress:
            entry = add_model(text_model, name, mmproj=mmproj, progress=progress)
        stderr_console().print(f"[green]registered[/green] {entry.key}", highlight=False)
        if as_json:
            emit_json(asdict(entry))

    @models.command("remove", epilog=examples("edgejudge models remove my-judge:Q8_0 --delete-files"))
    def remove(
        name: NameArg,
        delete_files: Annotated[
            bool, typer.Option("--delete-files", help="Also delete the GGUF files.")
        ] = False,
    ) -> None:
        """Unregister a model (and optionally delete its files)."""
        from ..install import remove_model

        for entry in remove_model(name, delete_files=delete_files):
            stderr_console().print(f"removed {entry.key}" + (" and its files" if delete_files else ""))
