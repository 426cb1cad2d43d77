"""``edgejudge batch INPUT.jsonl --output OUT.jsonl``: judge a JSONL file, resumably, with live progress.

Owns the terminal side of ``edgejudge.batch``: options, the Rich progress display on stderr (rows, rows/min,
ETA, errors, a running score histogram), SIGINT handling (first Ctrl-C: finish the rows in flight and stop;
second: drop it) and the resume hint. It holds the output's lock (``batch.OutputLock``) from before the
model loads, so a second run on the same output stops at once; an input without rows loads no model and
writes nothing. With ``--policy`` (or rows naming their own policy) progress counts rule judgments, each
row's decision is printed as it is written, and the summary counts the decisions. With servers behind
the engine (``Engine.servers``) a line per server sits under the bar (rows/min, in flight, alive, prompt
cache reuse) and the summary ends with a table of them. ``--shard K/N`` runs one share of the rows;
``--answers-format reference`` writes the original pipeline's answer file after the run
(``edgejudge.answers``). The logic lives in ``edgejudge.batch``.
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ._batch_view import BatchProgress, RateColumn, histogram_text, server_table
from ._common import (
    DECISION_STYLE,
    EXIT_INTERRUPTED,
    GenerationOptions,
    JsonOpt,
    build_judge,
    emit_json,
    examples,
    shown,
    status,
    stderr_console,
    usage_error,
    with_generation_options,
)
from ._options import PolicyOpt, ReviewBandOpt, review_band

__all__ = ["register", "histogram_text"]

HELP = """\
Judge every row of a JSONL file and append one verdict per row to OUT.jsonl.

Rows use the native fields [bold]id, image, instruction, response, reference, rubric[/bold] (a library name \
or an inline object with criteria and score1..score5) or the Perception-Collection/Bench fields \
(orig_instruction, orig_response, orig_reference_answer, orig_criteria, orig_scoreN_description). \
Relative image paths are read from --image-root (default: the input file's folder).

Rerunning the same command resumes: rows already judged with the same inputs and settings are skipped \
(--retry-errors re-runs failed rows). Bad rows become error rows and the batch goes on. Ctrl-C finishes the \
rows in flight (one row, or up to --parallel rows on one image), then stops (a second Ctrl-C drops \
them); exit code 130.

With [bold]--policy NAME|FILE[/bold] every row is judged against each rule of the policy (a row's own \
[bold]policy[/bold] field, a built-in name or a file relative to INPUT's folder, wins): one output row per \
(row, rule) with rule_id, passed, p_pass and rule_state, then a decision record per row (compliant, \
violation or needs_review: a rule's p_pass inside --review-band needs review). The instruction is the \
row's, else the rule's, else the policy's. Resume works per (row, rule). Fields such as student and \
system are copied into the output rows; --keep FIELD copies more.

[bold]Several machines:[/bold] put INPUT and its images on a folder every machine sees, run \
[bold]--shard K/N[/bold] on machine K (1..N), each with its own --output, then join the logs with \
[bold]edgejudge merge OUT1 … OUTN --output ALL.jsonl[/bold]. A row's shard depends on its id only, so the \
N shards judge every row exactly once; each resumes on its own. With servers (--engine llama-server or \
vllm) a line per server shows its rows/min, requests in flight, whether it is alive and its cache reuse.

[bold]The original pipeline:[/bold] rows of its question files (question_id, image, text: the judge \
prompt already rendered) are read into the fields above; [bold]--answers-format reference[/bold] writes \
its answer file (question_id, prompt, text, answer_id, model_id, metadata: one line per ok row, in input \
order) to --answers (default: OUT with .answers.jsonl), rewritten whole after each run.
"""

ANSWER_FORMATS = ("reference",)


class _Stopper:
    """SIGINT handler: the first Ctrl-C stops the batch after the rows in flight, the second drops them."""

    def __init__(self, on_first: Any) -> None:
        self.requested = False
        self._on_first = on_first
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._on_first()

    def __enter__(self) -> _Stopper:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C keeps its default meaning
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _resume_command(input_path: Path, output: Path, extra: list[str]) -> str:
    return shlex.join(["edgejudge", "batch", str(input_path), "--output", str(output), *extra])


def register(app: typer.Typer) -> None:
    @app.command(
        "batch",
        help=HELP,
        epilog=examples(
            "edgejudge batch bench.jsonl --output out.jsonl --rubric vqa-helpfulness",
            "edgejudge batch bench.jsonl -o out.jsonl --image-root images/ --limit 20 --temperature 0",
            "edgejudge batch bench.jsonl -o out.jsonl --retry-errors --json > summary.json",
            "edgejudge batch listings.jsonl -o checked.jsonl --policy marketplace-listing",
            "edgejudge batch posts.jsonl -o out.jsonl --policy rules.toml --review-band 0.2,0.8 --keep url",
            "edgejudge batch /shared/bench.jsonl -o /shared/out-2.jsonl --shard 2/4   # on machine 2 of 4",
            "edgejudge batch questions.jsonl -o out.jsonl --answers-format reference",
        ),
    )
    @with_generation_options
    def batch(
        input_path: Annotated[
            Path, typer.Argument(metavar="INPUT.jsonl", help="Rows to judge (JSON lines).")
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="Verdicts (JSON lines, appended).")],
        image_root: Annotated[
            Path | None,
            typer.Option("--image-root", help="Folder for relative image paths (default: INPUT's)."),
        ] = None,
        rubric: Annotated[
            str | None, typer.Option("--rubric", "-r", help="Rubric name or file for rows without their own.")
        ] = None,
        limit: Annotated[
            int | None, typer.Option("--limit", min=0, help="Only the first N input rows.")
        ] = None,
        retry_errors: Annotated[
            bool, typer.Option("--retry-errors", help="Re-run rows whose last result was an error.")
        ] = False,
        policy: PolicyOpt = None,
        band: ReviewBandOpt = None,
        keep: Annotated[
            list[str] | None,
            typer.Option(
                "--keep",
                metavar="FIELD",
                help="Copy this input field into the output rows (repeatable).",
            ),
        ] = None,
        shard: Annotated[
            str | None,
            typer.Option(
                "--shard", metavar="K/N", help="Judge only shard K of N: a stable share of the rows by id."
            ),
        ] = None,
        answers_format: Annotated[
            str | None,
            typer.Option(
                "--answers-format",
                metavar="FORMAT",
                help="Also write an answer file: reference (the original pipeline's answer rows).",
            ),
        ] = None,
        answers: Annotated[
            Path | None,
            typer.Option("--answers", help="The answer file (default: OUT's name with .answers.jsonl)."),
        ] = None,
        json_out: JsonOpt = False,
        *,
        options: GenerationOptions,
    ) -> None:
        from .._fs import user_path
        from ..answers import answers_path, check_answers_path
        from ..batch import BatchEvent, OutputLock, check_output, run_batch, settings_of
        from ..batch.keep import check_keep
        from ..batch.rows import has_rows
        from ..batch.shard import parse_shard
        from ..decision import DEFAULT_REVIEW_BAND
        from ..errors import InputError
        from ..policy import load_policy
        from ..rubric import load_rubric

        input_path = user_path(input_path, what="input path")
        output = user_path(output, what="--output path")
        image_root = None if image_root is None else user_path(image_root, what="--image-root")
        rows_there = has_rows(input_path)  # a folder, FIFO or device is refused here, never read
        if policy is not None and rubric is not None:
            usage_error(
                "give --policy or --rubric, not both: each rule of a policy has its own rubric", "--policy"
            )
        try:
            the_shard = None if shard is None else parse_shard(shard)
        except InputError as err:
            usage_error(f"{err} (e.g. --shard 1/4 ... --shard 4/4)", "--shard")
        if answers_format is not None and answers_format not in ANSWER_FORMATS:
            usage_error(f"unknown answer format {answers_format!r}: use reference", "--answers-format")
        if answers is not None and answers_format is None:
            usage_error(
                "--answers names the answer file of --answers-format reference: give both", "--answers"
            )
        if answers_format is not None and policy is not None:
            usage_error("the reference answer file has no rows for a policy run: leave out --policy",
                        "--answers-format")  # fmt: skip
        answers_file = None
        if answers_format is not None:
            answers_file = user_path(answers, what="--answers path") if answers else answers_path(output)
            check_answers_path(answers_file, input_path, output)
        the_band = review_band(band)
        the_policy = load_policy(policy) if policy is not None else None  # fail before loading a model
        check_keep(keep or ())  # a field edgejudge writes or reads: refused before the model loads too
        default_rubric = load_rubric(rubric) if rubric else None
        console = stderr_console()
        if not rows_there or limit == 0:
            why = f"no rows in {input_path}" if not rows_there else "--limit 0"
            console.print(shown(f"{why}: nothing to judge (no output written)"), soft_wrap=True)
            if json_out:
                emit_json(_empty_summary(input_path, output))
            return
        given = {"--rubric": rubric, "--policy": policy, "--review-band": band, "--image-root": image_root,
                 "--limit": limit, "--shard": shard, "--answers-format": answers_format,
                 "--answers": answers}  # fmt: skip
        extra = [f"{flag}={value}" for flag, value in given.items() if value is not None]
        extra += [f"--keep={name}" for name in keep or ()]
        resume = _resume_command(input_path, output, [*extra, *options.cli_args()])

        with OutputLock(output) as lock:  # one writer per output, taken before the model loads
            check_output(input_path, output)  # under the lock: what it reads is not being written
            with status("loading the judge model…"):
                judge = build_judge(options)
            progress = BatchProgress(
                TextColumn("[bold]judging[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeRemainingColumn(),
                TextColumn("errors {task.fields[errors]}"),
                TextColumn("{task.fields[hist]}"),
                TextColumn("{task.fields[now]}", markup=False),  # an id and a rule: shown, never markup
                console=console,
            )
            state: dict[str, Any] = {"task": None, "errors": 0, "hist": {}, "began": time.monotonic()}

            def on_event(event: BatchEvent) -> None:
                if event.servers:
                    progress.show_servers(event.servers, time.monotonic() - state["began"])
                if event.kind == "repaired":
                    console.print(Text("repaired: ", "yellow") + shown(event.message or ""), soft_wrap=True)
                elif event.kind == "ignored":
                    console.print(Text("warning: ", "yellow") + shown(event.message or ""), soft_wrap=True)
                elif event.kind == "started":
                    what = f"{event.rows} rows" + (
                        f" ({event.total} judgments: one per rule of a policy row)"
                        if event.total != event.rows
                        else ""
                    )
                    console.print(
                        shown(f"{what} in {input_path}: {event.skipped} already done, {event.todo} to judge"),
                        soft_wrap=True,
                    )
                    state["began"] = time.monotonic()
                    state["task"] = progress.add_task(
                        "batch", total=event.todo, errors=0, hist=histogram_text({}), now=""
                    )
                elif event.kind == "decision" and event.decision is not None:
                    record = event.decision
                    word = record.decision.decision
                    severity = f" ({record.decision.severity})" if record.decision.severity else ""
                    style = DECISION_STYLE.get(word, "bold")
                    progress.console.print(
                        Text.assemble(
                            shown(record.id), f" (line {record.line}): ", shown(f"{word}{severity}", style)
                        ),
                        soft_wrap=True,
                    )
                elif event.kind == "error":
                    state["errors"] += 1
                    row_id = event.row.id if event.row is not None else None
                    if event.row is not None and event.row.rule_id is not None:
                        row_id = f"{row_id} · {event.row.rule_id}"
                    progress.console.print(
                        Text.assemble(
                            ("error ", "red"), shown(f"{row_id} (line {event.line}): {event.message or ''}")
                        ),
                        soft_wrap=True,
                    )
                elif event.kind == "row_done":
                    if event.score is not None:
                        key = str(event.score)
                        state["hist"][key] = state["hist"].get(key, 0) + 1
                    row = event.row
                    now = "" if row is None or row.rule_id is None else f"{row.id} · {row.rule_id}"
                    progress.update(
                        state["task"],
                        advance=1,
                        errors=state["errors"],
                        hist=histogram_text(state["hist"]),
                        now=shown(now).plain,
                    )

            def on_first_interrupt() -> None:
                progress.console.print(
                    "[yellow]stopping after the rows in flight… (Ctrl-C again to drop them)[/yellow]"
                )

            try:
                with judge, _Stopper(on_first_interrupt) as stopper, progress:
                    summary = run_batch(
                        judge,
                        input_path,
                        output,
                        image_root=image_root,
                        default_rubric=default_rubric,
                        limit=limit,
                        retry_errors=retry_errors,
                        samples=options.samples,
                        params=options.params(),
                        on_event=on_event,
                        should_stop=stopper,
                        lock=lock,
                        policy=the_policy,
                        review_band=the_band or DEFAULT_REVIEW_BAND,
                        keep=tuple(keep or ()),
                        shard=the_shard,
                    )
                    run_settings = settings_of(judge, options.params(), options.samples)
            except KeyboardInterrupt:
                console.print(
                    "[yellow]interrupted:[/yellow] the rows in flight were dropped; finished rows are saved."
                )
                console.print(shown(f"resume with: {resume}"), soft_wrap=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            data = summary.to_dict()
            if answers_file is not None:
                from ..answers import write_reference_answers

                written = write_reference_answers(
                    input_path, output, answers_file, image_root=image_root, default_rubric=default_rubric,
                    limit=limit, shard=the_shard, keep=tuple(keep or ()), settings=run_settings,
                )  # fmt: skip
                data["answers"] = written.to_dict()
            _print_summary(data)
            if json_out:
                emit_json(data)
            if summary.stopped:
                left = f"{summary.remaining} judgments left"
                if summary.incomplete:
                    left += f", {summary.incomplete} policy rows incomplete"
                console.print(f"[yellow]stopped[/yellow] with {left}.")
                console.print(shown(f"resume with: {resume}"), soft_wrap=True)
                raise typer.Exit(EXIT_INTERRUPTED)


def _empty_summary(input_path: Path, output: Path) -> dict[str, Any]:
    """The ``--json`` summary of a run with nothing to judge (no model loaded, no output written)."""
    from ..batch import BatchSummary

    summary = BatchSummary(
        input=str(input_path), output=str(output), total=0, skipped=0, judged=0, ok=0, errors=0, malformed=0,
        remaining=0, stopped=False, repaired=0, elapsed_s=0.0, histogram={str(k): 0 for k in range(1, 6)},
    )  # fmt: skip
    return summary.to_dict()


def _print_summary(data: dict[str, Any]) -> None:
    console = stderr_console()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("judged", f"{data['judged']} ({data['ok']} ok, {data['errors']} errors)")
    table.add_row("skipped", f"{data['skipped']} already done")
    if data.get("decisions") or data.get("incomplete"):
        from ..decision import DECISIONS, INCOMPLETE

        counts = data["decisions"]
        cells = [f"[{DECISION_STYLE[k]}]{k}[/{DECISION_STYLE[k]}] {counts.get(k, 0)}" for k in DECISIONS]
        if data.get("incomplete"):
            cells.append(f"[yellow]{INCOMPLETE}[/yellow] {data['incomplete']}")
        table.add_row("decisions", "  ".join(cells))
    if data.get("warned"):
        table.add_row("warnings", f"{data['warned']} rows (text replaced with U+FFFD: see their warnings)")
    if data["mean_score"] is not None:
        table.add_row("mean score", f"{data['mean_score']:.2f}")
        table.add_row("scores", histogram_text(data["histogram"]))
    if data.get("shard"):
        table.add_row("shard", f"{data['shard'][0]}/{data['shard'][1]} ({data['total']} rows of the input)")
    table.add_row("output", shown(data["output"]))
    if data.get("answers"):
        a = data["answers"]
        left = [f"{a[k]} {k}" for k in ("errors", "missing", "stale") if a.get(k)]
        out = f"{a['written']} written to " + a["path"] + (f" (left out: {', '.join(left)})" if left else "")
        table.add_row("answers", shown(out))
    table.add_row("time", f"{data['elapsed_s']:.1f} s")
    console.print(table)
    if data.get("servers"):
        console.print(server_table(data["servers"], data["elapsed_s"]))
