"""``edgejudge policies list|show|check``: browse the built-in policies, inspect one, validate your own.

People read stderr (tables, the ``ok:`` line, warnings; a policy file's text through ``shown``, so a
control character in it is never run); ``--json`` writes the data on stdout. A policy that cannot be
used is the library's ``PolicyError`` (file, rule and field named), turned into one ``error:`` line and
exit 1 by ``_common.guard``. ``check`` also warns (exit 0) about a rule whose prompt, estimated without a
tokenizer (``policy.prompt_estimate``), would come near the judge's training length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ._common import JsonOpt, emit_json, examples, make_app, reflow, shown, stderr_console

if TYPE_CHECKING:
    from ..policy import Policy

__all__ = ["register"]

#: Tokens left for the feedback the judge writes: a prompt estimated above the training length minus
#: this is "near" it (Prometheus-Vision's feedback runs ~100-250 tokens).
FEEDBACK_ROOM = 256

HELP = reflow(
    f"""
    Browse the built-in policies, show one, or check a policy file of your own.

    A policy is several rules judged against the same content at once: a marketplace's listing rules,
    a platform's safety rules, a teacher's marking criteria. Each rule has an id, a title, a severity
    (info, minor, major, critical), pass_at (the lowest score 1-5 that complies, default 4) and a rubric:
    a built-in rubric's name, or its own criteria and score1..score5. Judge with a policy by passing
    --policy NAME|FILE to judge or batch.

    A policy file is TOML ({escape("[[rules]]")} tables, each with a {escape("[rules.rubric]")} table)
    or JSON ("rules": a list). Start from a built-in one: edgejudge policies show NAME --toml > mine.toml,
    edit it (give it your own name), then edgejudge policies check mine.toml.
    """
)

NameArg = Annotated[
    str, typer.Argument(metavar="NAME|FILE", help="A built-in policy's name or a .toml/.json policy file.")
]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _summary(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "version": policy.version,
        "title": _first_line(policy.description),
        "description": policy.description,
        "instruction": policy.instruction,
        "sha256": policy.sha256,
        "source": policy.source,
        "rules": [rule.id for rule in policy.rules],
    }


def _rules_table(policy: Policy) -> Table:
    table = Table(title_justify="left")
    table.add_column("rule", style="bold cyan", no_wrap=True)
    table.add_column("title")
    table.add_column("severity", no_wrap=True)
    table.add_column("pass_at", justify="right")
    for rule in policy.rules:
        table.add_row(shown(rule.id), shown(rule.title), shown(rule.severity), str(rule.pass_at))
    return table


def _print_rubrics(policy: Policy) -> None:
    console = stderr_console()
    for rule in policy.rules:
        console.print()
        head = Text.assemble(shown(rule.id, "bold cyan"), " — ", shown(rule.title, "bold"))
        head.append(shown(f"  ({rule.severity}, passes at {rule.pass_at}+)", "dim"))
        console.print(head)
        if rule.description:
            console.print(shown(rule.description, "dim"))
        if rule.instruction:
            console.print(Text.assemble(("instruction: ", "bold"), shown(rule.instruction)))
        console.print(Text.assemble(("criteria: ", "bold"), shown(rule.rubric.criteria)))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(justify="right", style="bold cyan", no_wrap=True)
        grid.add_column()
        for score, text in enumerate(rule.rubric.descriptions, start=1):
            grid.add_row(f"Score {score}", shown(text))
        console.print(grid)


def register(app: typer.Typer) -> None:
    policies = make_app(
        "policies",
        HELP,
        epilog=examples(
            "edgejudge policies list",
            "edgejudge policies show marketplace-listing --rules",
            "edgejudge policies show figure-grading --toml > my-grading.toml",
            "edgejudge policies check my-grading.toml",
        ),
    )
    app.add_typer(policies, name="policies")

    @policies.command("list", epilog=examples("edgejudge policies list", "edgejudge policies list --json"))
    def list_(as_json: JsonOpt = False) -> None:
        """List the built-in policies: name, version, number of rules and what each is for."""
        from ..policy import builtin_policies

        library = builtin_policies()
        if as_json:
            emit_json([_summary(p) for p in library.values()])
            return
        table = Table(title="Built-in policies", title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("version", no_wrap=True)
        table.add_column("rules", justify="right")
        table.add_column("what it is for")
        for p in library.values():
            about = shown(_first_line(p.description))
            table.add_row(shown(p.name), shown(p.version), str(len(p.rules)), about)
        console = stderr_console()
        console.print(table)
        console.print(
            "Show one with: edgejudge policies show NAME --rules   ·   use one with: --policy NAME",
            markup=False,
        )

    @policies.command(
        "show",
        epilog=examples(
            "edgejudge policies show social-media-safety",
            "edgejudge policies show marketplace-listing --rules",
            "edgejudge policies show my-policy.toml --json",
            "edgejudge policies show marketplace-listing --toml > my-listing-rules.toml",
        ),
    )
    def show(
        name: NameArg,
        as_json: JsonOpt = False,
        rubrics: Annotated[
            bool,
            typer.Option("--rules", "--full", help="Also show each rule's rubric (criteria, score 1-5)."),
        ] = False,
        as_toml: Annotated[
            bool, typer.Option("--toml", help="Print it as a TOML policy file on stdout (a starting point).")
        ] = False,
    ) -> None:
        """Show a policy: its description, the instruction the judge is told, and its rules.

        --json prints the whole policy (each rule with its rubric, the file's sha256 and where it came
        from); --toml prints it as a policy file to start your own from.
        """
        from ..policy import load_policy, policy_to_toml

        policy = load_policy(name)
        if as_json:
            emit_json(policy.to_dict())
            return
        if as_toml:
            typer.echo(policy_to_toml(policy), nl=False)
            return
        console = stderr_console()
        console.print(Text.assemble(shown(policy.name, "bold"), " ", shown(policy.version, "bold cyan")))
        console.print(shown(policy.description))
        if policy.instruction:
            console.print(Text.assemble(("instruction: ", "bold"), shown(policy.instruction)))
        else:
            console.print(Text.assemble(("instruction: ", "bold"), ("none (each item's own)", "dim")))
        console.print(shown(f"source: {policy.source}   sha256: {policy.sha256[:16]}…", "dim"))
        console.print(_rules_table(policy))
        if rubrics:
            _print_rubrics(policy)
        else:
            console.print("Each rule's rubric: add --rules", style="dim", markup=False)

    @policies.command(
        "check",
        epilog=examples("edgejudge policies check my-policy.toml", "edgejudge policies check rules.json"),
    )
    def check(name: NameArg) -> None:
        """Check a policy file: prints 'ok: FILE: policy NAME VERSION, N rules' and exits 0, or one error
        line naming the file, the rule and the field, and exits 1.

        It also warns (still exit 0) about a rule whose prompt, with a typical instruction and response,
        would come near the 2048 tokens the judge was trained on (estimated at ~4 characters a token plus
        576 for the image): shorten that rule's rubric.
        """
        from ..judge import TRAINING_CONTEXT
        from ..policy import load_policy, prompt_estimate

        policy = load_policy(name)
        console = stderr_console()
        near = TRAINING_CONTEXT - FEEDBACK_ROOM
        for rule in policy.rules:
            estimate = prompt_estimate(policy, rule)
            if estimate > near:
                console.print(
                    shown(
                        f"warning: {name}: rule '{rule.id}': the prompt would be about {estimate} tokens "
                        f"with a typical item, near or over the {TRAINING_CONTEXT} the judge was trained on "
                        "(with room for its feedback); shorten the rule's rubric or instruction",
                        "yellow",
                    ),
                    soft_wrap=True,
                )
        count = len(policy.rules)
        console.print(
            shown(f"ok: {name}: policy {policy.name} {policy.version}, {count} rule{'s' * (count != 1)}"),
            soft_wrap=True,
        )
