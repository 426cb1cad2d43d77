"""What ``edgejudge batch`` shows while it runs: the score histogram, the rows/min column, a line per server
under the progress bar (``BatchProgress``) and the summary's table of servers (``server_table``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import Progress, ProgressColumn, Task
from rich.table import Table
from rich.text import Text

from ._common import shown

__all__ = ["histogram_text", "RateColumn", "server_line", "server_table", "BatchProgress"]

_SPARK = " ▁▂▃▄▅▆▇█"


def histogram_text(counts: dict[str, int]) -> str:
    """A one-line score histogram, e.g. ``1:▂2 2:·0 3:█9 4:▅5 5:▁1`` (bar height relative to the top)."""
    top = max(counts.values(), default=0)
    cells = []
    for k in range(1, 6):
        n = counts.get(str(k), 0)
        level = 0 if top == 0 or n == 0 else max(1, round(n / top * (len(_SPARK) - 1)))
        cells.append(f"{k}:{_SPARK[level] if level else '·'}{n}")
    return " ".join(cells)


class RateColumn(ProgressColumn):
    """Rows per minute, from Rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rows/min" if not speed else f"{speed * 60:.1f} rows/min", style="progress.data.speed")


def server_line(stats: Any, elapsed_s: float) -> str:
    """One server's state for people: url, alive or down, rows/min since the start, requests in flight
    out of its lanes, failures and the share of prompt positions its prompt cache reused."""
    rate = f"{stats.done / elapsed_s * 60:.1f} rows/min" if elapsed_s > 0 else "-- rows/min"
    reuse = f"{stats.reused_tokens / stats.prompt_tokens:.0%}" if stats.prompt_tokens else "--"
    state = "alive" if stats.alive else "DOWN"
    return (
        f"{stats.url}  {state}  {rate}  in flight {stats.in_flight}/{stats.lanes}  done {stats.done}  "
        f"failed {stats.failed}  cache reuse {reuse}"
    )


def server_table(servers: Iterable[Mapping[str, Any]], elapsed_s: float) -> Table:
    """The summary's table of servers (``BatchSummary.servers``: ``ServerStats`` as dicts)."""
    table = Table(box=None, padding=(0, 2), show_edge=False)
    table.add_column("server", no_wrap=True, min_width=12)
    for name in ("state", "done", "failed", "rows/min", "cache reuse", "gen tok/s"):
        table.add_column(name, justify="left" if name == "state" else "right", no_wrap=True)
    for s in servers:
        prompt, busy = s.get("prompt_tokens") or 0, s.get("busy_s") or 0.0
        table.add_row(
            shown(str(s.get("url"))),
            Text("alive", "green") if s.get("alive") else Text("down", "red"),
            str(s.get("done", 0)),
            str(s.get("failed", 0)),
            f"{(s.get('done') or 0) / elapsed_s * 60:.1f}" if elapsed_s > 0 else "--",
            f"{(s.get('reused_tokens') or 0) / prompt:.0%}" if prompt else "--",
            f"{(s.get('generated_tokens') or 0) / busy:.1f}" if busy > 0 else "--",
        )
    return table


class BatchProgress(Progress):
    """The batch's progress display (on stderr, silent when stderr is not a terminal), with a line per
    server under the bar (``show_servers``)."""

    def __init__(self, *columns: str | ProgressColumn, console: Console) -> None:
        self._servers: list[str] = []  # before Progress starts drawing
        super().__init__(*columns, console=console, disable=not console.is_terminal)

    def show_servers(self, servers: Iterable[Any], elapsed_s: float) -> None:
        self._servers = [server_line(stats, elapsed_s) for stats in servers]

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        for line in self._servers:
            yield Text("  ") + shown(line)
