"""Terminal pieces of the guided wizard: the prompts (one line, several lines, ``@FILE``), Ctrl-C as
"cancel this step", path completion, the half-block image preview and the timing line.

Used by the wizard (``edgejudge.cli.tui``) and the review walk (``edgejudge.cli.review``).
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING

from rich.console import Console
from rich.prompt import Prompt
from rich.text import Text

from ..errors import EdgeJudgeError, InputError
from ._common import read_text_file, shown
from ._hints import command_options, for_people

if TYPE_CHECKING:
    from ..images import FittedImage
    from ..verdict import Verdict

__all__ = ["Cancel", "Prompter", "preview", "timing_line", "enable_path_completion"]


class Cancel(Exception):
    """Ctrl-C (or end of input: ``eof``) at a prompt: cancel the current step."""

    def __init__(self, eof: bool = False) -> None:
        super().__init__("cancelled")
        self.eof = eof


def preview(fitted: FittedImage, cols: int) -> Text:
    """The fitted image drawn with "▀" (top pixel = foreground, bottom pixel = background)."""
    from ..images import pixel_grid

    cols = max(8, cols)
    grid = pixel_grid(fitted.image, cols, cols)  # square image, 2 pixel rows per character line
    text = Text()
    for y in range(0, grid.shape[0] - 1, 2):
        for x in range(grid.shape[1]):
            top = grid[y, x]
            bottom = grid[y + 1, x]
            text.append(
                "▀",
                style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})",
            )
        text.append("\n")
    text.rstrip()
    return text


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def timing_line(elapsed: float, verdict: Verdict) -> str:
    """How long a judgment took and what was reused (the image, the prompt prefix)."""
    t = verdict.timings
    if t.image_cached:
        image = "image embedding from cache"
    elif t.image_encode_s > 0:
        image = f"image encoded in {_seconds(t.image_encode_s)}"
    else:
        image = "image reused with the prompt prefix" if t.reused_tokens else "image not re-encoded"
    return (
        f"took {_seconds(elapsed)} · {image} · reused {t.reused_tokens} of {t.prompt_tokens} prompt tokens · "
        f"{t.generated_tokens} tokens generated"
    )


def _path_completer(text: str, state: int) -> str | None:
    matches = [m + ("/" if os.path.isdir(m) else "") for m in glob.glob(os.path.expanduser(text) + "*")]
    return sorted(matches)[state] if state < len(matches) else None


def enable_path_completion() -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return
    readline.set_completer_delims(" \t\n")
    readline.set_completer(_path_completer)
    readline.parse_and_bind("tab: complete")


class Prompter:
    """Asking for input on ``console``; Ctrl-C (or end of input) raises ``Cancel``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    # -- prompts ---------------------------------------------------------------------------------------
    def ask(self, label: str, *, default: str | None = None, choices: list[str] | None = None) -> str:
        try:
            if default is None:
                value = Prompt.ask(label, console=self.console, choices=choices)
            else:
                value = Prompt.ask(label, console=self.console, default=default, choices=choices)
        except (KeyboardInterrupt, EOFError) as exc:
            self.console.print()
            raise Cancel(eof=isinstance(exc, EOFError)) from None
        return value.strip()

    def ask_text(self, label: str, *, required: bool = True) -> str:
        while True:
            value = self.ask(label)
            if value.startswith("@"):
                content = self._read_file(value[1:])
                if content is None:
                    continue
                value = content
            if value or not required:
                return value
            self.console.print("[yellow]please type something (Ctrl-C cancels)[/yellow]")

    def ask_multiline(self, label: str) -> str:
        self.console.print(
            f"[bold]{label}[/bold] [dim](several lines; finish with a line holding only '.', or Ctrl-D; "
            "or type @FILE to read a file)[/dim]"
        )
        while True:
            lines: list[str] = []
            while True:
                try:
                    line = self.console.input("[dim]│[/dim] ")
                except EOFError:
                    self.console.print()
                    break
                except KeyboardInterrupt:
                    self.console.print()
                    raise Cancel from None
                if line.strip() == ".":
                    break
                if not lines and line.startswith("@"):
                    content = self._read_file(line[1:])
                    if content is not None:
                        return content
                    continue
                lines.append(line)
            text = "\n".join(lines).strip("\n")
            if text.strip():
                return text
            self.console.print("[yellow]the text is empty; type it again (Ctrl-C cancels)[/yellow]")

    def _read_file(self, name: str) -> str | None:
        """The UTF-8 text of the file typed after ``@``, read like every user file (``read_text_file``: a
        regular file of bounded size, so ``@/dev/zero`` or a FIFO is refused, never a hang)."""
        name = name.strip()
        try:
            if name in ("", "-"):
                raise InputError("give a file name after @", hint="e.g. @answer.txt")
            return read_text_file(name).strip()
        except EdgeJudgeError as err:
            self.error(err)
            return None

    def error(self, err: EdgeJudgeError) -> None:
        """A library error as ``error:``/``hint:`` lines, and the step goes on: the message as written, the
        hint in CLI words (``_hints.for_people``, the flags the running command offers)."""
        self.console.print(Text.assemble(("error: ", "bold red"), shown(err)))
        if err.hint:
            hint = for_people(err.hint, command_options()) or ""
            self.console.print(Text.assemble(("hint: ", "yellow"), shown(hint)))
