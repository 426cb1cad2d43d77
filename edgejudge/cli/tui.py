"""The guided terminal wizard (``edgejudge`` alone in a terminal, or ``edgejudge tui``).

Owns the interactive flow: choose a model (registered ones listed with size and quantization, or a path),
an image (previewed with half-block characters exactly as the judge sees it after crop/pad), the
instruction, the response (multi-line or ``@file``), an optional reference, a rubric (library, written
step by step, or a file); then the feedback streams live and a score panel follows. Afterwards: judge
another response to the same image (prefix reuse; the time is shown), change the rubric, take a new image,
save the verdict as JSON, or quit. Ctrl-C cancels the current step (back to the menu; at the top level the
wizard exits with code 130). The prompts and the preview live in ``edgejudge.cli._tui_prompts``; only these
two modules and ``edgejudge.cli`` import Rich/Typer.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .._fs import atomic_write
from ..errors import EdgeJudgeError
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FeedbackStream,
    GenerationOptions,
    build_judge,
    human_bytes,
    registered_name,
    stderr_console,
    verdict_panel,
)
from ._tui_prompts import Cancel, Prompter, enable_path_completion, preview, timing_line

if TYPE_CHECKING:
    from ..images import FittedImage
    from ..judge import Judge
    from ..rubric import Rubric
    from ..verdict import Verdict

__all__ = ["run_wizard", "preview", "NOT_A_TERMINAL"]

NOT_A_TERMINAL = (
    "the guided wizard needs a terminal, and stdin is not one. To judge from a script use:\n"
    '  edgejudge judge IMAGE --instruction "..." --response "..." --rubric NAME  (see edgejudge judge --help)'
)
NO_REFERENCE_NOTE = (
    "Optional. Press Enter to skip. Prometheus-Vision was trained with a reference answer that scores 5; "
    "without one the judge grades against the rubric alone and its scores are less calibrated "
    "(the verdict is marked reference: false)."
)
MENU = "Next? a: another response · r: change the rubric · i: new image · s: save as JSON · q: quit"


class Wizard(Prompter):
    """One wizard session. ``judge_factory(options)`` loads a judge (``build_judge`` by default)."""

    def __init__(
        self,
        console: Console,
        judge_factory: Callable[[GenerationOptions], Judge],
        options: GenerationOptions,
    ) -> None:
        super().__init__(console)
        self.factory = judge_factory
        self.options = options
        self.model_label: str | None = None  # the registered name:QUANT, for the verdict panel
        self.judge: Judge | None = None
        self.fitted: FittedImage | None = None
        self.image_name = ""
        self.instruction = ""
        self.response = ""
        self.reference: str | None = None
        self.rubric: Rubric | None = None
        self.verdict: Verdict | None = None

    # -- steps -----------------------------------------------------------------------------------------
    def step_model(self) -> None:
        from ..registry import load_registry

        if self.options.model is not None:
            self._load(self.options.model)
            if self.judge is not None:
                return
        models = [m for m in load_registry().models if m.present]
        if models:
            table = Table(title="Installed judges", title_justify="left")
            for column in ("#", "model", "quant", "size"):
                table.add_column(column)
            for i, m in enumerate(models, 1):
                table.add_row(str(i), escape(m.name), m.quant, human_bytes(m.total_bytes))
            self.console.print(table)
        else:
            self.console.print(
                "No judge installed yet: type the path of a text model .gguf (its mmproj-*.gguf beside it), "
                "or quit and run [bold]edgejudge models pull prometheus-vision-7b[/bold] "
                "(or [bold]edgejudge demo[/bold] for a tiny test model)."
            )
        while self.judge is None:
            enable_path_completion()
            value = self.ask("Model (number, name or path to .gguf)", default="1" if models else None)
            if value.isdigit() and models and 1 <= int(value) <= len(models):
                value = models[int(value) - 1].key
            if value:
                self._load(value)

    def _load(self, value: str) -> None:
        try:
            with self.console.status("loading the judge…"):
                self.judge = self.factory(replace(self.options, model=value))
        except EdgeJudgeError as err:
            self.error(err)
            return
        self.model_label = registered_name(replace(self.options, model=value))
        engine = self.judge.engine
        self.console.print(
            f"[green]loaded[/green] {escape(engine.model_name)} · image {engine.image_size}px · "
            f"context {engine.n_ctx} tokens"
        )

    def step_image(self) -> None:
        assert self.judge is not None
        enable_path_completion()
        while True:
            value = self.ask("Image (path; Tab completes)")
            if not value:
                continue
            try:
                fitted = self.judge.fit(Path(value).expanduser(), name=value)
            except EdgeJudgeError as err:
                self.error(err)
                continue
            break
        self.fitted, self.image_name = fitted, value
        cols = min(48, max(16, self.console.width - 4))
        self.console.print(
            Panel(
                preview(fitted, cols),
                title=f"what the judge sees ({fitted.width}×{fitted.height}, {self.judge.image_fit})",
                expand=False,
            )
        )

    def step_texts(self) -> None:
        self.instruction = self.ask_text(
            "Instruction (the question or task given about the image; @FILE reads one)"
        )
        self.response = self.ask_multiline("Response to evaluate")
        self.console.print(f"[dim]{NO_REFERENCE_NOTE}[/dim]")
        self.reference = self.ask_text("Reference answer (score 5)", required=False) or None

    def step_rubric(self) -> None:
        from ..rubric import builtin_rubrics, load_rubric

        library = sorted(builtin_rubrics().values(), key=lambda r: r.name)
        table = Table(title="Rubrics", title_justify="left")
        for column in ("#", "name", "what it grades"):
            table.add_column(column)
        for i, r in enumerate(library, 1):
            table.add_row(str(i), r.name, escape(r.summary or r.title or r.criteria))
        table.add_row("w", "write one", "type a criterion and what each score 1-5 means")
        table.add_row("f", "from a file", "a .toml or .json rubric")
        self.console.print(table)
        names = [r.name for r in library]
        default = str(names.index("vqa-helpfulness") + 1) if "vqa-helpfulness" in names else "1"
        while True:
            value = self.ask("Rubric (number, name, w or f)", default=default)
            try:
                if value.isdigit() and 1 <= int(value) <= len(library):
                    self.rubric = library[int(value) - 1]
                elif value.lower() == "w":
                    self.rubric = self._write_rubric()
                elif value.lower() == "f":
                    enable_path_completion()
                    self.rubric = load_rubric(Path(self.ask("Rubric file (.toml or .json)")).expanduser())
                else:
                    self.rubric = load_rubric(value)
            except EdgeJudgeError as err:
                self.error(err)
                continue
            self.console.print(
                f"rubric [bold]{escape(self.rubric.name)}[/bold]: {escape(self.rubric.criteria)}"
            )
            return

    def _write_rubric(self) -> Rubric:
        from ..rubric import Rubric, save_rubric

        criteria = self.ask_text("Criterion (a question, e.g. 'Is the answer grounded in the image?')")
        descriptions = tuple(self.ask_text(f"What does a score of {k} mean?") for k in range(1, 6))
        rubric = Rubric(name="custom", criteria=criteria, descriptions=descriptions)  # type: ignore[arg-type]
        target = self.ask("Save it to a file for next time? (path, or Enter to skip)", default="")
        if target:
            save_rubric(rubric, Path(target).expanduser())
            self.console.print(f"saved {escape(target)}")
        return rubric

    # -- judging ---------------------------------------------------------------------------------------
    def judge_now(self) -> None:
        assert self.judge is not None and self.fitted is not None and self.rubric is not None
        stream = FeedbackStream(self.console, title="Feedback (streaming…)")
        began = time.perf_counter()
        try:
            with stream:
                verdict = self.judge.evaluate(
                    self.fitted,
                    instruction=self.instruction,
                    response=self.response,
                    rubric=self.rubric,
                    reference=self.reference,
                    samples=self.options.samples,
                    params=self.options.params(),
                    on_text=stream.on_text,
                    image_name=self.image_name,
                )
        except KeyboardInterrupt:
            self.console.print("[yellow]judging cancelled[/yellow]")
            return
        except EdgeJudgeError as err:
            self.error(err)
            return
        elapsed = time.perf_counter() - began
        self.verdict = verdict
        self.console.print(verdict_panel(verdict, model=self.model_label))
        self.console.print(f"[dim]{timing_line(elapsed, verdict)}[/dim]")

    def save(self) -> None:
        if self.verdict is None:
            self.console.print("[yellow]no verdict to save yet[/yellow]")
            return
        target = Path(self.ask("Save the verdict as", default="verdict.json")).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            data = (self.verdict.to_json(indent=2) + "\n").encode("utf-8")
            atomic_write(target, data, mode=0o600)  # the user's instruction and response: private
        except OSError as err:
            self.console.print(f"[red]cannot write {escape(str(target))}:[/red] {escape(str(err))}")
            return
        self.console.print(f"[green]saved[/green] {escape(str(target))}")

    def menu(self) -> None:
        actions = {"a": self._another, "r": self._new_rubric, "i": self._new_image, "s": self.save}
        while True:
            try:
                choice = self.ask(MENU, choices=["a", "r", "i", "s", "q"], default="a")
            except Cancel as cancel:
                if cancel.eof:  # Ctrl-D at the menu: quit
                    return
                raise typer.Exit(EXIT_INTERRUPTED) from None
            if choice == "q":
                return
            try:
                actions[choice]()
            except Cancel:
                self.console.print("[yellow]cancelled[/yellow]")

    def _another(self) -> None:
        self.response = self.ask_multiline("Another response to the same image and instruction")
        self.judge_now()

    def _new_rubric(self) -> None:
        self.step_rubric()
        self.judge_now()

    def _new_image(self) -> None:
        self.step_image()
        self.step_texts()
        self.judge_now()

    def run(self) -> None:
        self.console.print(
            Panel(
                "Judge a response to an image with Prometheus-Vision, step by step.\n"
                "Ctrl-C cancels the current step; at the first steps it leaves the wizard.",
                title="edgejudge wizard",
                expand=False,
            )
        )
        try:
            self.step_model()
            self.step_image()
            self.step_texts()
            self.step_rubric()
        except Cancel:
            self.console.print("[yellow]cancelled[/yellow]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        self.judge_now()
        self.menu()


def run_wizard(
    console: Console | None = None,
    *,
    judge_factory: Callable[[GenerationOptions], Judge] | None = None,
    options: GenerationOptions | None = None,
) -> None:
    """Run the wizard on a terminal; raises ``typer.Exit(2)`` when stdin is not one, 130 on Ctrl-C."""
    console = console or stderr_console()
    if not sys.stdin.isatty():
        console.print(f"edgejudge: {NOT_A_TERMINAL}")
        raise typer.Exit(EXIT_USAGE)
    wizard = Wizard(console, judge_factory or build_judge, options or GenerationOptions())
    try:
        wizard.run()
    finally:
        if wizard.judge is not None:
            wizard.judge.close()
    console.print("bye")
