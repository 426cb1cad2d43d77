"""``edgejudge review OUT.jsonl``: walk a moderator through the items of a policy log that need review.

Owns the terminal walk: per item the image as the judge saw it (the wizard's half-block preview,
``_tui_prompts.preview``), the instruction and response, a table of rules × (score, p_pass, passed,
severity, state) and each rule's feedback; then a key: ``a`` accept (compliant), ``v`` violation (then
the severity), ``c`` confirm the computed decision (items that have one: with ``--all``), ``s`` skip,
``q`` quit; then an optional note. Every decision is appended at once (``edgejudge.review``: the
queue, the override records, the locked append); a summary closes the walk. Without a terminal it
refuses with a hint, unless the decisions are given with ``--decide ID=DECISION`` (scripts;
``parse_decision`` reads that syntax). Incomplete items (the batch has not judged all their rules yet) are
never reviewed: the walk says how many it skipped. Text from the log is printed through ``shown``.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..decision import SEVERITIES
from ..errors import EdgeJudgeError, InputError
from ._common import (
    DECISION_STYLE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    STATE_STYLE,
    examples,
    fail,
    shown,
    stderr_console,
    usage_error,
)
from ._tui_prompts import Cancel, Prompter, preview

if TYPE_CHECKING:
    from ..batch.records import OverrideRecord, PolicyItem
    from ..review import ReviewQueue

__all__ = ["register", "parse_decision"]

HELP = """\
Walk through the items of a policy batch's output (edgejudge batch --policy) that need review: for each, \
the image as the judge saw it, the instruction and response, every rule's score, p_pass, pass/fail and \
severity, and the judge's feedback. Keys: [bold]a[/bold] accept (compliant), [bold]v[/bold] violation \
(then its severity), [bold]c[/bold] confirm the computed decision (with --all), [bold]s[/bold] skip, \
[bold]q[/bold] quit; then an optional note.

Each decision is appended to the log at once as an override record (who, when, the decision it replaces, \
the note), under the same one-writer lock as a batch; the report shows overridden decisions as such. \
Items already decided on the same results are not shown again (--all shows every item). Incomplete items \
(the batch has not judged every rule of them yet: run it again) are skipped. From a script, give the \
decisions with --decide ID=compliant or --decide ID=violation[:SEVERITY].
"""


def parse_decision(text: str) -> tuple[str, str, str | None]:
    """``--decide`` as ``(id, decision, severity or None)``: ``ID=compliant`` or ``ID=violation[:SEVERITY]``;
    the id is what precedes the last ``=``, spaces around each part are ignored. ``InputError`` for
    anything else."""
    from ..batch.records import OVERRIDE_DECISIONS

    row_id, sep, rest = text.rpartition("=")
    decision, _, severity = rest.partition(":")
    row_id, decision, severity = row_id.strip(), decision.strip(), severity.strip()
    if not sep or not row_id or decision not in OVERRIDE_DECISIONS or (severity and decision != "violation"):
        raise InputError(
            f"cannot read the decision {text!r}",
            hint="write --decide ID=compliant or --decide ID=violation, or --decide ID=violation:SEVERITY",
        )
    if severity and severity not in SEVERITIES:
        raise InputError(
            f"unknown severity {severity!r} in {text!r}", hint=f"use one of: {', '.join(SEVERITIES)}"
        )
    return row_id, decision, severity or None


def _changes(item: PolicyItem, record: OverrideRecord) -> bool:
    """True when the person's decision differs from the computed one (a violation's severity counts)."""
    return record.decision != item.decision.decision or record.severity != item.decision.severity


def _say(console: Console, text: str, style: str = "") -> None:
    """One line for people, printed as written (paths and names are never markup) and never hard-wrapped."""
    console.print(shown(text, style), soft_wrap=True)


def _reviewer(name: str | None) -> str:
    if name is not None:
        return name
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (OSError, KeyError): say how to give one
        usage_error("cannot tell who is reviewing: give --reviewer NAME", "--reviewer")


def _rules_table(item: PolicyItem) -> Table:
    table = Table(title_justify="left", expand=False)
    for col, justify in (
        ("rule", "left"),
        ("severity", "left"),
        ("score", "right"),
        ("p_pass", "right"),
        ("passed", "center"),
        ("state", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row, out in zip(item.rules, item.outcomes, strict=True):
        title = shown(row.rule_id or "")
        if row.rule_title:
            title.append(shown(f" {row.rule_title}", "dim"))
        table.add_row(
            title,
            shown(row.severity or ""),
            "—" if row.score is None else str(row.score),
            "—" if row.p_pass is None else f"{row.p_pass:.2f}",
            "—" if row.passed is None else ("yes" if row.passed else "no"),
            Text(out.state, style=STATE_STYLE.get(out.state, "")),
        )
    return table


def _image(item: PolicyItem, root: Path, width: int) -> Panel | Text:
    from ..images import prepare_image

    row = item.first
    candidates = [Path(p) for p in (row.image_path,) if p] + ([root / row.image] if row.image else [])
    for path in candidates:
        if not path.is_file():
            continue
        try:
            size = min(
                max(row.image_size or 336, 32), 672
            )  # the preview is small; a log's size is not trusted
            fitted = prepare_image(path, size, row.image_fit or "crop", name=path.name)
        except EdgeJudgeError as err:
            return shown(f"(image not shown: {err})", "dim")
        cols = min(32, max(16, width // 3))
        return Panel(
            preview(fitted, cols), title=shown(f"{path.name} as judged ({fitted.mode})"), expand=False
        )
    return shown(f"(image not shown: {row.image or 'no image'} not found)", "dim")


def _show(console: Console, item: PolicyItem, index: int, count: int, root: Path) -> None:
    row = item.first
    decision = item.decision
    head = Text.assemble(
        (f"item {index}/{count} · ", "bold"),
        shown(item.id, "bold"),
        shown(
            f" (line {item.line}) · policy {item.policy.get('name', '?')} {item.policy.get('version', '')} · "
        ),
        (decision.decision, DECISION_STYLE.get(decision.decision, "")),
    )
    if decision.severity:
        head.append(f" ({decision.severity})")
    if decision.uncertain:
        head.append(shown(f" · uncertain: {', '.join(decision.uncertain)}", "yellow"))
    texts = Text()
    for label, value in (("instruction", row.instruction), ("response", row.response)):
        texts.append(f"{label}: ", style="bold")
        texts.append(shown(value or "—"))
        texts.append("\n\n")
    beside = Table.grid(padding=(0, 2))
    beside.add_column(no_wrap=True)
    beside.add_column(ratio=1)
    texts.rstrip()
    beside.add_row(_image(item, root, console.width), texts)
    parts: list[object] = [head, beside]
    parts.append(_rules_table(item))
    for rule in item.rules:
        evidence = rule.feedback or rule.error or "—"
        parts.append(Text.assemble(shown(f"{rule.rule_id}: ", "bold"), shown(evidence)))
    if item.override is not None:
        o = item.override
        parts.append(
            shown(
                f"already decided: {o.decision}{f' ({o.severity})' if o.severity else ''} "
                f"by {o.reviewer} at {o.at}{f' · note: {o.note}' if o.note else ''}",
                "cyan",
            )
        )
    console.print(Panel(Group(*parts), expand=True))  # type: ignore[arg-type]


class _Quit(Exception):
    """``q`` at an item: end the walk (the summary follows, exit 0)."""


class _Walk(Prompter):
    def __init__(self, console: Console, queue: ReviewQueue, reviewer: str, root: Path) -> None:
        super().__init__(console)
        self.queue, self.reviewer, self.root = queue, reviewer, root
        self.reviewed = self.overridden = self.skipped = 0

    def decide(self, item: PolicyItem) -> tuple[str, str | None] | None:
        """The person's decision on ``item`` (None: skip); ``_Quit`` on ``q``, ``Cancel`` on Ctrl-C or end
        of input."""
        computed = item.decision.decision
        keys = ["a", "v", "s", "q"]
        label = "a: accept (compliant) · v: violation · s: skip · q: quit"
        if computed in ("compliant", "violation"):
            keys.insert(0, "c")
            label = f"c: confirm {computed} · " + label
        choice = self.ask(label, choices=keys)
        if choice == "q":
            raise _Quit
        if choice == "s":
            return None
        if choice == "c":
            return computed, item.decision.severity if computed == "violation" else None
        if choice == "a":
            return "compliant", None
        from ..review import default_severity

        return "violation", self.ask("severity", choices=list(SEVERITIES), default=default_severity(item))

    def run(self) -> None:
        from ..review import append_override, make_override

        count = len(self.queue.items)
        for index, item in enumerate(self.queue.items, start=1):
            _show(self.console, item, index, count, self.root)
            decided = self.decide(item)
            if decided is None:
                self.skipped += 1
                continue
            decision, severity = decided
            record = None
            while record is None:
                try:
                    note = self.console.input("note (optional, Enter to skip): ")
                except EOFError:
                    note = ""
                except KeyboardInterrupt:
                    self.console.print()
                    raise Cancel from None
                try:
                    record = make_override(
                        item, decision, reviewer=self.reviewer, note=note, severity=severity
                    )
                except InputError as err:  # a note too long: asked again
                    self.error(err)
            append_override(self.queue.path, record)
            self.reviewed += 1
            self.overridden += int(_changes(item, record))
            _say(
                self.console,
                f"saved: {record.decision}{f' ({severity})' if severity else ''} by {record.reviewer}",
                "green",
            )

    def summary(self) -> None:
        left = len(self.queue.items) - self.reviewed - self.skipped
        _say(
            self.console,
            f"reviewed {self.reviewed} item(s) ({self.overridden} overridden, "
            f"{self.reviewed - self.overridden} confirmed), skipped {self.skipped}"
            + (f", {left} not reached" if left else ""),
        )


def _scripted(console: Console, queue: ReviewQueue, decisions: list[str], reviewer: str, note: str) -> None:
    from ..review import append_override, find_items, make_override

    parsed = [parse_decision(text) for text in decisions]
    items = find_items(queue, [row_id for row_id, _, _ in parsed])
    records = [
        make_override(items[row_id], decision, reviewer=reviewer, note=note, severity=severity)
        for row_id, decision, severity in parsed
    ]
    for record in records:
        append_override(queue.path, record)
    overridden = sum(1 for r in records if _changes(items[r.id], r))
    _say(
        console,
        f"reviewed {len(records)} item(s) ({overridden} overridden, {len(records) - overridden} confirmed)",
    )


def register(app: typer.Typer) -> None:
    @app.command(
        "review",
        help=HELP,
        epilog=examples(
            "edgejudge review policy-out.jsonl",
            "edgejudge review policy-out.jsonl --reviewer ana --all",
            'edgejudge review policy-out.jsonl --decide r7=violation:major --note "shows a weapon"',
        ),
    )
    def review(
        results: Annotated[
            Path, typer.Argument(metavar="OUT.jsonl", help="Output of edgejudge batch --policy.")
        ],
        reviewer: Annotated[
            str | None, typer.Option("--reviewer", help="Who is reviewing (default: your login name).")
        ] = None,
        every: Annotated[
            bool, typer.Option("--all", help="Every item, not only those that need review.")
        ] = False,
        decide: Annotated[
            list[str] | None,
            typer.Option(
                "--decide",
                metavar="ID=DECISION",
                help="Decide without the walk: ID=compliant or ID=violation[:SEVERITY] (repeatable).",
            ),
        ] = None,
        note: Annotated[str, typer.Option("--note", help="The note of the --decide decisions.")] = "",
        image_root: Annotated[
            Path | None,
            typer.Option(
                "--image-root", help="Folder relative image paths start in (default: OUT's folder)."
            ),
        ] = None,
    ) -> None:
        from ..review import review_queue

        if note and not decide:
            usage_error("--note goes with --decide (the walk asks for a note after each decision)", "--note")
        queue = review_queue(results, include_all=every or bool(decide))
        console = stderr_console()
        name = _reviewer(reviewer)
        if decide:
            _scripted(console, queue, decide, name, note)
            return
        if queue.incomplete and not decide:
            from ..compliance import INCOMPLETE_WHY

            _say(
                console,
                f"{len(queue.incomplete)} incomplete item(s) skipped ({INCOMPLETE_WHY}): "
                + ", ".join(queue.incomplete[:5])
                + (", …" if len(queue.incomplete) > 5 else ""),
                "yellow",
            )
        if not queue.items:
            _say(
                console,
                f"nothing to review in {results}: {queue.total} item(s), {queue.needs_review} need review"
                + (f", all {queue.already} already decided" if queue.already else "")
                + (f", {len(queue.incomplete)} incomplete" if queue.incomplete else ""),
            )
            return
        if not sys.stdin.isatty():
            fail(
                "the review walk needs a terminal, and stdin is not one",
                "decide from a script with --decide ID=compliant or --decide ID=violation[:SEVERITY]",
                code=EXIT_USAGE,
            )
        walk = _Walk(console, queue, name, image_root if image_root is not None else queue.path.parent)
        _say(
            console,
            f"{len(queue.items)} item(s) to review in {queue.path.name} (of {queue.total}); reviewer {name}",
        )
        try:
            walk.run()
        except _Quit:
            pass
        except Cancel as cancel:  # Ctrl-C: what was decided is saved; end of input: the walk ends
            walk.summary()
            if cancel.eof:
                return
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except EdgeJudgeError as err:  # e.g. a batch started writing the file: stop, saying what was done
            walk.summary()
            fail(err)
        walk.summary()
