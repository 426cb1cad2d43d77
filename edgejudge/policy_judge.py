"""Judging one item against a policy: one task per rule, decoded together, and the ``PolicyVerdict``.

``evaluate_policy`` (what ``Judge.evaluate_policy`` runs) fits the image once, builds one ``Task`` per rule
(the instruction by ``Policy.instruction_for``: the item's own, else the rule's, else the policy's; the
rule's rubric) and hands them all to ``Judge.evaluate_tasks`` at once. The prompts differ only from the
rubric on (the template's order is instruction, response, reference, rubric), so the engine's
``generate_many`` evaluates the shared prefix (system, image, instruction, response, reference) once and
decodes the rules as parallel sequences, ``max_parallel`` at a time (the engine forms the waves; with
different instructions the shared prefix ends at the image). A rule that cannot be judged (no instruction
anywhere, a prompt too long for the context...) is that rule's error, never the others'.

``rule_verdict`` turns one rule's result into its ``RuleVerdict`` (``p_pass`` from the verdict's score
distribution, the mean one with several samples; the state under the review band), shared with the batch's
rule rows. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .decision import DEFAULT_REVIEW_BAND, RuleOutcome, check_band, decide, rule_outcome
from .errors import EdgeJudgeError, PolicyError
from .inputs import Task
from .verdict import PolicyVerdict, RuleVerdict, Verdict

if TYPE_CHECKING:
    from .engine.base import GenerationParams
    from .images import FittedImage, ImageInput
    from .policy import Policy, Rule

__all__ = ["evaluate_policy", "rule_task", "rule_verdict", "as_policy", "no_instruction"]


class _Judging(Protocol):
    """What ``evaluate_policy`` uses of a ``Judge`` (a Protocol: ``judge`` imports this module)."""

    def fit(self, image: ImageInput, *, name: str | None = None) -> FittedImage: ...

    def evaluate_tasks(
        self, tasks: Sequence[Task], *, samples: int = 1, params: GenerationParams | None = None
    ) -> list[Verdict | EdgeJudgeError]: ...


def as_policy(policy: Policy | str | Path) -> Policy:
    """``policy`` itself, or the built-in policy or policy file it names (``policy.load_policy``)."""
    from .policy import Policy, load_policy

    return policy if isinstance(policy, Policy) else load_policy(policy)


def no_instruction(policy: Policy, rule: Rule) -> PolicyError:
    """The error of a rule judged on an item without an instruction, when neither the rule nor the policy
    has one."""
    return PolicyError(
        f"rule '{rule.id}' of policy '{policy.name}': no instruction (the item gives none, and neither the "
        "rule nor the policy has one)",
        hint="give the item an instruction, or add an instruction to the rule or to the policy",
        about="instruction",
    )


def rule_task(
    policy: Policy,
    rule: Rule,
    image: Any,
    response: str,
    instruction: str | None,
    reference: str | None,
    image_name: str | None = None,
) -> Task:
    """The task of judging ``rule`` on an item; ``PolicyError`` when there is no instruction anywhere."""
    told = policy.instruction_for(rule, instruction)
    if told is None:
        raise no_instruction(policy, rule)
    return Task(image, told, response, rule.rubric, reference, image_name)


def rule_verdict(
    rule: Rule, result: Verdict | EdgeJudgeError, band: Sequence[float] = DEFAULT_REVIEW_BAND
) -> RuleVerdict:
    """One rule's ``RuleVerdict`` from its judgment (or the error it got) under ``band``."""
    if isinstance(result, EdgeJudgeError):
        return RuleVerdict(
            rule.id,
            rule.title,
            rule.severity,
            rule.pass_at,
            None,
            None,
            "error",
            None,
            str(result),
            result.hint,
        )
    ruled = rule_outcome(rule, result.score, result.score_probs, band)  # p_pass as recorded: rounded
    return RuleVerdict(
        rule_id=rule.id,
        title=rule.title,
        severity=rule.severity,
        pass_at=rule.pass_at,
        passed=ruled.passed,
        p_pass=ruled.p_pass,
        state=ruled.state,
        verdict=result,
    )


def evaluate_policy(
    judge: _Judging,
    image: ImageInput,
    *,
    policy: Policy | str | Path,
    response: str,
    instruction: str | None = None,
    reference: str | None = None,
    samples: int = 1,
    params: GenerationParams | None = None,
    image_name: str | None = None,
    review_band: Sequence[float] = DEFAULT_REVIEW_BAND,
) -> PolicyVerdict:
    """Judge ``response`` to ``image`` against every rule of ``policy`` (see the module docstring).

    Raises ``PolicyError`` for an unknown or broken policy or a bad review band, and the image's error
    (``InvalidImageError``) before anything is judged; every other error is the rule's
    (``RuleVerdict.error``).
    """
    band = check_band(review_band)
    the_policy = as_policy(policy)
    fitted = judge.fit(image, name=image_name)  # read, decoded and fitted once for every rule
    results: list[Verdict | EdgeJudgeError | None] = [None] * len(the_policy.rules)
    tasks: list[Task] = []
    where: list[int] = []
    for position, rule in enumerate(the_policy.rules):
        try:
            tasks.append(rule_task(the_policy, rule, fitted, response, instruction, reference, image_name))
        except PolicyError as err:
            results[position] = err
            continue
        where.append(position)
    judged = judge.evaluate_tasks(tasks, samples=samples, params=params) if tasks else []
    for position, result in zip(where, judged, strict=True):
        results[position] = result
    rules = tuple(
        rule_verdict(rule, result, band)
        for rule, result in zip(the_policy.rules, results, strict=True)
        if result is not None
    )
    outcomes = [RuleOutcome(v.rule_id, v.severity, v.state, v.passed, v.p_pass) for v in rules]
    return PolicyVerdict(the_policy.identity(), rules, decide(outcomes), band)
