"""The one stderr console and what is drawn on it: progress bars, spinners, the streamed feedback and the
verdict panel (shared by the commands and the wizard). Re-exported by ``_common``.

Not a terminal (a pipe, a file, CI) ⇒ no colours, no live displays, no spinners. NO_COLOR is honoured.

Text that comes from a log, an input file or a policy file is untrusted: it is printed through ``shown``
(a Rich ``Text``, never markup, with control characters written as ``\\xNN``, so an ESC in an id or a
feedback cannot drive the terminal). The colours of decisions and rule states (``DECISION_STYLE``,
``STATE_STYLE``) are set here once, for every command that shows them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.bar import Bar
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import config

if TYPE_CHECKING:
    from ..verdict import Verdict

__all__ = [
    "shown",
    "DECISION_STYLE",
    "STATE_STYLE",
    "stderr_console",
    "make_progress",
    "status",
    "human_bytes",
    "StageProgress",
    "FeedbackStream",
    "score_table",
    "verdict_panel",
]

_CONSOLE: tuple[tuple[Any, ...], Console] | None = None

#: How an item's decision is coloured on a terminal (``decision.DECISIONS`` and ``decision.INCOMPLETE``).
DECISION_STYLE = {
    "compliant": "green",
    "violation": "bold red",
    "needs_review": "yellow",
    "error": "magenta",
    "incomplete": "cyan",
}
#: How a rule's state (``decision.RuleOutcome.state``) is coloured on a terminal.
STATE_STYLE = {"pass": "green", "fail": "bold red", "uncertain": "yellow", "error": "magenta"}

#: C0 controls but line feed and tab, DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(value: object, style: str = "") -> Text:
    """Untrusted text (from a log, an input or a policy file) as it may be printed on a terminal: a Rich
    ``Text`` (never read as markup) with control characters (an ESC would start an escape sequence)
    written as ``\\xNN``; line feeds and tabs kept. ``.plain`` gives it as a string."""
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)), style=style)


def stderr_console() -> Console:
    """The one Rich console of the process, on stderr.

    Re-created only when stderr is swapped (tests) or NO_COLOR/TERM change. Not a terminal (a pipe, a
    file, CI) ⇒ no colours, no live displays, no spinners (see ``make_progress``).
    """
    global _CONSOLE
    key = (id(sys.stderr), config.no_color(), os.environ.get("TERM"), os.environ.get("COLUMNS"))
    if _CONSOLE is None or _CONSOLE[0] != key:
        console = Console(stderr=True, highlight=False, no_color=config.no_color() or None)
        _CONSOLE = (key, console)
    return _CONSOLE[1]


def make_progress(
    *columns: str | ProgressColumn, console: Console | None = None, transient: bool = False
) -> Progress:
    """A Rich progress display on stderr, disabled (silent) when stderr is not a terminal."""
    console = console or stderr_console()
    return Progress(*columns, console=console, disable=not console.is_terminal, transient=transient)


def score_table(score_probs: Mapping[int, float] | None, chosen: int | None, *, width: int = 30) -> Table:
    """One row per score 1..5: the probability as a bar and a percentage; the chosen score highlighted."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column(width=width)
    table.add_column(justify="right")
    probs = score_probs or {}
    for k in range(1, 6):
        p = float(probs.get(k, 0.0))
        color = "green" if k == chosen else "cyan"
        label = Text(f"{'▶' if k == chosen else ' '} {k}", style="bold" if k == chosen else "")
        table.add_row(label, Bar(1.0, 0.0, p, width=width, color=color), Text(f"{p:6.1%}"))
    return table


#: The verdict panel spans the terminal up to this many columns (room for the feedback and the subtitle).
PANEL_WIDTH = 100


def verdict_panel(verdict: Verdict, *, title: str = "Verdict", model: str | None = None) -> Panel:
    """The verdict for people: feedback, the score, a bar per score probability and the expected score.

    The subtitle names ``model`` (e.g. the registered ``name:QUANT`` the CLI resolved) or else the
    verdict's own model name (the file stem), and the rubric.
    """
    parts: list[RenderableType] = [shown(verdict.feedback.strip() or "(no feedback)")]
    headline = Text()
    headline.append("Score ", style="bold")
    headline.append(f"{verdict.score if verdict.score is not None else '?'}", style="bold green")
    headline.append(" / 5")
    if verdict.expected_score is not None:
        headline.append(f"    expected {verdict.expected_score:.2f}")
    if len(verdict.samples) > 1 and verdict.agreement is not None:
        headline.append(f"    {len(verdict.samples)} samples, {verdict.agreement:.0%} agree")
    parts += [Text(""), headline]
    if verdict.score_probs:
        parts.append(score_table(verdict.score_probs, verdict.score))
    else:
        parts.append(Text(f"no score distribution (parse method: {verdict.parse_method})", style="dim"))
    if not verdict.reference:
        parts.append(Text("no reference answer was given", style="dim"))
    for warning in verdict.warnings:
        parts.append(shown(f"warning: {warning}", style="yellow"))
    subtitle = f"{model or verdict.model} · rubric {verdict.rubric}"
    return Panel(
        Group(*parts),
        title=title,
        subtitle=shown(subtitle),
        border_style="green",
        expand=True,  # a panel shrunk to its content would cut the subtitle off
        width=PANEL_WIDTH,
    )


class FeedbackStream:
    """Shows generated text live in a panel on stderr while a judgment runs (only on a terminal).

    Use as a context manager; pass ``stream.on_text`` as the judge's ``on_text`` callback.
    """

    def __init__(self, console: Console | None = None, *, title: str = "Feedback") -> None:
        self.console = console or stderr_console()
        self.title = title
        self.text = Text()
        self._live: Live | None = None

    @property
    def enabled(self) -> bool:
        return self.console.is_terminal

    def on_text(self, piece: str) -> None:
        self.text.append(piece)
        if self._live is not None:
            self._live.update(self._panel())

    def _panel(self) -> Panel:
        return Panel(self.text, title=self.title, border_style="blue")

    def __enter__(self) -> FeedbackStream:
        if self.enabled:
            self._live = Live(self._panel(), console=self.console, transient=True, refresh_per_second=12)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with ``message`` on a terminal; nothing otherwise (no spinners in pipes and logs)."""
    console = stderr_console()
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        yield


def human_bytes(n: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as disk sizes are sold)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


_BYTE_STAGES = ("text model", "mmproj", "downloading", "hashing")


class StageProgress:
    """A ``progress(stage, done, total)`` callback drawn as one Rich bar per stage on stderr.

    Byte stages (reading tensors, downloading, hashing) show sizes, the others counts. Not a terminal ⇒
    no bars: one plain line per stage as it starts (none at all when ``transient``).
    """

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.console = console or stderr_console()
        self.transient = transient
        self.progress = make_progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=transient,
        )
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        is_bytes = stage.startswith(_BYTE_STAGES)
        amount = f"{human_bytes(done)} / {human_bytes(total)}" if is_bytes else f"{done} / {total}"
        task = self._tasks.get(stage)
        if task is None:
            if not self.console.is_terminal and not self.transient:
                self.console.print(f"{stage}…", highlight=False, markup=False)
            # stage names may hold file names such as ``shard[1].bin``: shown as typed, not as Rich markup
            task = self._tasks[stage] = self.progress.add_task(
                escape(stage), total=total or None, amount=amount
            )
        self.progress.update(task, completed=done, total=total or None, amount=amount)

    def __enter__(self) -> StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
