"""``edgejudge judge IMAGE``: one verdict from the command line (the non-interactive path).

Inputs → rubric → ``Judge`` (built by ``_common.build_judge``) → verdict panel on stderr. stdout gets data
only: the bare score (so ``score=$(edgejudge judge …)`` works), the verdict as JSON with ``--json``, or
the exact prompt text with ``--print-prompt``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._common import (
    FeedbackStream,
    GenerationOptions,
    JsonOpt,
    build_judge,
    emit_json,
    examples,
    read_text_file,
    registered_name,
    status,
    stderr_console,
    usage_error,
    verdict_panel,
    with_generation_options,
)

if TYPE_CHECKING:
    from ..rubric import Rubric

__all__ = ["register", "choose_rubric", "read_text_arg", "DEFAULT_RUBRIC"]

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
            'edgejudge judge post.jpg -i "Caption it" --response "..." -r policy.toml --json | jq .score',
            'edgejudge judge a.jpg -i "?" --response "cat" --criteria "OK?" --score1 "No" … --score5 "Yes"',
            'edgejudge judge cat.jpg -i "?" --response "A cat." --print-prompt > prompt.txt',
            'edgejudge judge cat.jpg -i "?" --response "A cat." --samples 3 -m prometheus-vision-13b',
        ),
    )
    @with_generation_options
    def judge(
        image: Annotated[Path, typer.Argument(metavar="IMAGE", help="The image the response is about.")],
        instruction: Annotated[
            str,
            typer.Option(
                "--instruction",
                "-i",
                help="The question or task given about the image.",
                rich_help_panel=_INPUT,
            ),
        ],
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
        as_json: JsonOpt = False,
        *,
        options: GenerationOptions,
    ) -> None:
        """Judge one response to one image: feedback, a score 1-5 and the probability of each score.

        The feedback streams live on a terminal; the verdict panel goes to stderr, and stdout gets only
        the score (or the whole verdict with [bold]--json[/bold]). Without [bold]--model[/bold] the default
        model is used (see [bold]edgejudge models default[/bold]).
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
        check_texts(instruction, text)  # the library's rule (an empty response is refused), before any load
        the_rubric = choose_rubric(rubric, criteria, [score1, score2, score3, score4, score5])
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
                console.print(
                    f"warning: {warning}", style="yellow", highlight=False, soft_wrap=True, markup=False
                )
            emit_json(verdict.to_dict())
        else:
            console.print(verdict_panel(verdict, model=registered_name(options)))
            typer.echo("" if verdict.score is None else str(verdict.score))
