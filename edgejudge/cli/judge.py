"""``edgejudge judge IMAGE``: one verdict from the command line (the non-interactive path).

Inputs → rubric → ``Judge`` (built by ``_common.build_judge``) → verdict panel on stderr. stdout gets data
only: the bare score (so ``score=$(edgejudge judge …)`` works), the verdict as JSON with ``--json``, or
the exact prompt text with ``--print-prompt``. With ``--policy`` every rule of the policy is judged
(``Judge.evaluate_policy``): a table of rules and their feedback and the decision on stderr, the decision
word on stdout (``PolicyVerdict`` as JSON with ``--json``).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._common import (
    DECISION_STYLE,
    STATE_STYLE,
    FeedbackStream,
    GenerationOptions,
    JsonOpt,
    build_judge,
    emit_json,
    examples,
    read_text_file,
    registered_name,
    shown,
    status,
    stderr_console,
    usage_error,
    verdict_panel,
    with_generation_options,
)
from ._options import PolicyOpt, ReviewBandOpt, review_band

if TYPE_CHECKING:
    from ..policy import Policy
    from ..rubric import Rubric
    from ..verdict import PolicyVerdict

__all__ = ["register", "choose_rubric", "read_text_arg", "policy_view", "DEFAULT_RUBRIC"]

#: The rubric used when neither --rubric nor --criteria is given.
DEFAULT_RUBRIC = "vqa-helpfulness"
_INPUT = "Inputs"
_RUBRIC = "Rubric"
#: --score1 … --score5 (the option name comes from the parameter name)
_ScoreOpt = Annotated[
    str | None,
    typer.Option(help="Inline rubric: what this score means (1 = worst, 5 = best).", rich_help_panel=_RUBRIC),
]


def read_text_arg(
    value: str | None, file: Path | None, name: str, warnings: list[str] | None = None
) -> str | None:
    """The text of ``--name`` or ``--name-file`` (``-`` = stdin); both given is a usage error.

    A file that is not valid UTF-8 is read with U+FFFD for the bad bytes and a line saying so appended to
    ``warnings`` (it goes on the verdict); without a ``warnings`` list such a file is refused."""
    if value is not None and file is not None:
        usage_error(f"give --{name} or --{name}-file, not both", f"--{name}")
    if file is None:
        return value
    return read_text_file(file, option=f"--{name}-file", warnings=warnings)


def choose_rubric(rubric: str | None, criteria: str | None, scores: list[str | None]) -> Rubric:
    """The rubric from ``--rubric NAME|FILE``, or inline ``--criteria`` + ``--score1..5``, or the default."""
    from ..rubric import Rubric, load_rubric

    inline = criteria is not None or any(s is not None for s in scores)
    if inline:
        if rubric is not None:
            usage_error("give --rubric or an inline --criteria with --score1..--score5, not both", "--rubric")
        missing = [f"--score{k}" for k, s in enumerate(scores, 1) if s is None]
        if criteria is None:
            missing.insert(0, "--criteria")
        if missing:
            usage_error(f"an inline rubric needs {', '.join(missing)} too", missing[0])
        data = {"criteria": criteria, **{f"score{k}": s for k, s in enumerate(scores, 1)}}
        return Rubric.from_mapping(data, name="inline")
    return load_rubric(rubric or DEFAULT_RUBRIC)


def register(app: typer.Typer) -> None:
    @app.command(
        "judge",
        epilog=examples(
            'edgejudge judge cat.jpg -i "What animal is it?" --response "A tabby cat." --reference "A cat."',
            'edgejudge judge chart.png -i "Which year peaked?" --response-file answer.txt -r chart-reasoning',
            'edgejudge judge post.jpg -i "Caption it" --response "..." -r my-rubric.toml --json | jq .score',
            'edgejudge judge a.jpg -i "?" --response "cat" --criteria "OK?" --score1 "No" … --score5 "Yes"',
            'edgejudge judge cat.jpg -i "?" --response "A cat." --print-prompt > prompt.txt',
            'edgejudge judge cat.jpg -i "?" --response "A cat." --samples 3 -m prometheus-vision-13b',
            'edgejudge judge listing.jpg --policy marketplace-listing --response "Barely used bike, 80 EUR"',
            'edgejudge judge post.jpg --policy rules.toml -i "A post" --response "..." --json | jq .decision',
        ),
    )
    @with_generation_options
    def judge(
        image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The image the response is about.")],
        instruction: Annotated[
            str | None,
            typer.Option(
                "--instruction",
                "-i",
                help="The question or task given about the image (with --policy: optional when the policy "
                "or its rules give one).",
                rich_help_panel=_INPUT,
            ),
        ] = None,
        response: Annotated[
            str | None, typer.Option("--response", help="The response to judge.", rich_help_panel=_INPUT)
        ] = None,
        response_file: Annotated[
            Path | None,
            typer.Option(
                "--response-file", help="Read the response from a file ('-' = stdin).", rich_help_panel=_INPUT
            ),
        ] = None,
        reference: Annotated[
            str | None,
            typer.Option(
                "--reference",
                help="A reference answer that would score 5 (optional but recommended).",
                rich_help_panel=_INPUT,
            ),
        ] = None,
        rubric: Annotated[
            str | None,
            typer.Option(
                "--rubric",
                "-r",
                help=f"Built-in rubric name or a .toml/.json file (default: {DEFAULT_RUBRIC}).",
                rich_help_panel=_RUBRIC,
            ),
        ] = None,
        criteria: Annotated[
            str | None,
            typer.Option("--criteria", help="Inline rubric: the criterion.", rich_help_panel=_RUBRIC),
        ] = None,
        score1: _ScoreOpt = None,
        score2: _ScoreOpt = None,
        score3: _ScoreOpt = None,
        score4: _ScoreOpt = None,
        score5: _ScoreOpt = None,
        print_prompt: Annotated[
            bool,
            typer.Option("--print-prompt", help="Print the exact prompt text on stdout and exit (no model)."),
        ] = False,
        policy: PolicyOpt = None,
        band: ReviewBandOpt = None,
        as_json: JsonOpt = False,
        *,
        options: GenerationOptions,
    ) -> None:
        """Judge one response to one image: feedback, a score 1-5 and the probability of each score.

        The feedback streams live on a terminal; the verdict panel goes to stderr, and stdout gets only
        the score (or the whole verdict with [bold]--json[/bold]). Without [bold]--model[/bold] the default
        model is used (see [bold]edgejudge models default[/bold]). Each run loads the model first (about 12 s
        for a 7B Q4_K_M on 2 CPU cores): to judge more than one response, [bold]edgejudge batch[/bold], the
        wizard ([bold]edgejudge tui[/bold]) or [bold]edgejudge serve[/bold] load it once for all of them.

        With [bold]--policy[/bold] the response is judged against every rule of the policy at once (the
        rules share the prompt up to the rubric and decode as parallel sequences): a table of rules ×
        (score, p_pass, passed, severity) with each rule's feedback, and the decision ([bold]compliant[/bold],
        [bold]violation[/bold] or [bold]needs_review[/bold]) on stdout. The instruction is the one given,
        else the rule's, else the policy's.
        """
        from .._fs import user_path
        from ..errors import InvalidImageError
        from ..judge import check_texts

        input_warnings: list[str] = []
        text = read_text_arg(response, response_file, "response", input_warnings)
        if text is None:
            usage_error(
                "give the response to judge with --response TEXT or --response-file FILE", "--response"
            )
        scores = [score1, score2, score3, score4, score5]
        if policy is not None:
            if rubric is not None or criteria is not None or any(v is not None for v in scores):
                usage_error(
                    "give --policy or a rubric (--rubric, --criteria), not both: each rule has its own",
                    "--policy",
                )
            if print_prompt:
                usage_error(
                    "--print-prompt shows one rubric's prompt; it does not take --policy", "--print-prompt"
                )
            _judge_policy(
                image,
                policy,
                instruction,
                text,
                reference,
                review_band(band),
                input_warnings,
                as_json,
                options,
            )
            return
        if band is not None:
            usage_error("--review-band goes with --policy", "--review-band")
        if instruction is None:
            usage_error(
                "give the instruction with --instruction TEXT (or judge against a --policy)", "--instruction"
            )
        check_texts(instruction, text)  # the library's rule (an empty response is refused), before any load
        the_rubric = choose_rubric(rubric, criteria, scores)
        if print_prompt:
            from .._jsonl import scrub
            from ..prompt import full_conversation, render_judge_prompt

            prompt = full_conversation(render_judge_prompt(instruction, text, the_rubric, reference))
            prompt = str(scrub(prompt)[0])  # text typed as non-UTF-8 bytes: U+FFFD, as the judge sees it
            sys.stdout.write(prompt + ("\n" if sys.stdout.isatty() else ""))
            sys.stdout.flush()
            return
        from ..images import load_image

        image = user_path(image, what="image", error=InvalidImageError)
        picture = load_image(image)  # read and decoded once: fails on a bad image before a multi-GB load
        console = stderr_console()
        with status("loading the judge model…"):
            judge_obj = build_judge(options)
        with judge_obj, FeedbackStream(console) as stream:
            on_sample = None
            if stream.enabled and options.samples > 1:
                stream.title = f"Feedback (sample 1/{options.samples})"

                def on_sample(done: int, total: int) -> None:
                    if done < total:
                        stream.title = f"Feedback (sample {done + 1}/{total})"
                        stream.on_text("\n\n")

            verdict = judge_obj.evaluate(
                picture,
                image_name=image.name,
                instruction=instruction,
                response=text,
                rubric=the_rubric,
                reference=reference,
                samples=options.samples,
                params=options.params(),
                on_text=stream.on_text if stream.enabled else None,
                on_sample=on_sample,
            )
        if input_warnings:
            verdict = replace(verdict, warnings=(*verdict.warnings, *input_warnings))
        if as_json:
            for warning in verdict.warnings:  # people still hear about them; the JSON carries them too
                console.print(shown(f"warning: {warning}", "yellow"), soft_wrap=True)
            emit_json(verdict.to_dict())
        else:
            console.print(verdict_panel(verdict, model=registered_name(options)))
            typer.echo("" if verdict.score is None else str(verdict.score))


def _judge_policy(
    image: Path,
    policy_name: str,
    instruction: str | None,
    text: str,
    reference: str | None,
    band: tuple[float, float] | None,
    input_warnings: list[str],
    as_json: bool,
    options: GenerationOptions,
) -> None:
    """``judge --policy``: every rule of the policy judged on one image, the table and the decision."""
    from .._fs import user_path
    from ..decision import DEFAULT_REVIEW_BAND
    from ..errors import InvalidImageError
    from ..images import load_image
    from ..judge import check_texts
    from ..policy import load_policy

    the_policy = load_policy(policy_name)  # fails on a bad policy before a multi-GB load
    missing = [r.id for r in the_policy.rules if the_policy.instruction_for(r, instruction) is None]
    if missing:
        usage_error(
            f"policy '{the_policy.name}' gives no instruction for rule(s) {', '.join(missing)}: "
            "give --instruction",
            "--instruction",
        )
    for rule in the_policy.rules:
        check_texts(the_policy.instruction_for(rule, instruction), text)
    path = user_path(image, what="image", error=InvalidImageError)
    picture = load_image(path)
    console = stderr_console()
    with status("loading the judge model…"):
        judge_obj = build_judge(options)
    with judge_obj, status(f"judging {len(the_policy.rules)} rules of {the_policy.name}…"):
        verdict = judge_obj.evaluate_policy(
            picture,
            policy=the_policy,
            response=text,
            instruction=instruction,
            reference=reference,
            samples=options.samples,
            params=options.params(),
            image_name=path.name,
            review_band=band or DEFAULT_REVIEW_BAND,
        )
    for warning in input_warnings:
        console.print(shown(f"warning: {warning}", "yellow"), soft_wrap=True)
    if as_json:
        data = verdict.to_dict()
        if input_warnings:
            data["warnings"] = list(input_warnings)
        emit_json(data)
    else:
        console.print(policy_view(verdict, the_policy, model=registered_name(options)))
        typer.echo(verdict.decision.decision)


def policy_view(verdict: PolicyVerdict, policy: Policy, *, model: str | None = None) -> Group:
    """The policy verdict for people: rules × (score, p_pass, passed, severity), each rule's feedback (or
    error) and the decision line, coloured by decision. Text from the policy file and the model is printed
    through ``shown``."""
    table = Table(title=shown(f"{policy.name} {policy.version}"), title_justify="left", expand=False)
    for name, justify in (("rule", "left"), ("severity", "left"), ("score", "right"), ("p_pass", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("passed", justify="center")
    table.add_column("state")
    for rule in verdict.rules:
        passed = "?" if rule.passed is None else ("yes" if rule.passed else "no")
        table.add_row(
            shown(f"{rule.rule_id}  {rule.title}"),
            shown(rule.severity),
            "?" if rule.score is None else str(rule.score),
            "-" if rule.p_pass is None else f"{rule.p_pass:.2f}",
            passed,
            Text(rule.state, style=STATE_STYLE.get(rule.state, "")),
        )
    parts: list[Text | Table] = [table]
    for rule in verdict.rules:
        parts.append(shown(f"\n{rule.rule_id}", "bold"))
        if rule.verdict is not None:
            parts.append(shown(rule.verdict.feedback.strip() or "(no feedback)"))
            parts += [shown(f"warning: {w}", "yellow") for w in rule.verdict.warnings]
        else:
            parts.append(shown(f"error: {rule.error}", "magenta"))
            if rule.hint:
                parts.append(shown(f"hint: {rule.hint}", "dim"))
    parts.append(_decision_line(verdict))
    if model:
        parts.append(shown(f"model {model}", "dim"))
    return Group(*parts)


def _decision_line(verdict: PolicyVerdict) -> Text:
    decision = verdict.decision
    line = Text("\ndecision: ", style="bold")
    word = decision.decision + (f" ({decision.severity})" if decision.severity else "")
    line.append(word, style=DECISION_STYLE.get(decision.decision, ""))
    for label, ids in (
        ("failed", decision.failed),
        ("uncertain", decision.uncertain),
        ("errors", decision.errors),
    ):
        if ids:
            line.append(shown(f"  {label}: {', '.join(ids)}"))
    return line
