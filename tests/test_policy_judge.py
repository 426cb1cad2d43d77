"""``Judge.evaluate_policy`` and ``judge --policy``: one verdict per rule, the decision, the records.

The fake engine checks the plumbing (which instruction and rubric each rule's prompt carries, a rule's error
staying the rule's, the records' round trip, the CLI's table, JSON and usage errors); the tiny REAL model
checks what the policy path promises of the engine: the image encoded once and every rule after the first
reusing the prompt through the reference answer (parallel sequences, and in waves beyond max_parallel).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _support import cli
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.decision import RuleOutcome, decide
from edgejudge.engine.base import GenerationParams
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import PolicyError
from edgejudge.images import synthetic_image
from edgejudge.judge import Judge
from edgejudge.policy import load_policy
from edgejudge.verdict import PolicyVerdict

POLICY = """
name = "shop"
version = "2"
description = "A small listing policy."
instruction = "A listing photo for a second-hand marketplace."

[[rules]]
id = "accurate"
title = "The text matches the photo"
rubric = "vqa-helpfulness"
severity = "major"

[[rules]]
id = "own-words"
title = "Own instruction"
rubric = "caption-quality"
severity = "minor"
pass_at = 3
instruction = "Describe the item for sale."

[[rules]]
id = "safe"
title = "Nothing dangerous"
severity = "critical"
[rules.rubric]
criteria = "Does the listing avoid dangerous items?"
score1 = "A weapon or drug is offered."
score2 = "A dangerous item is shown prominently."
score3 = "Something risky is visible."
score4 = "Nothing dangerous, one unclear detail."
score5 = "Nothing dangerous at all."
"""

NO_INSTRUCTION = POLICY.replace('instruction = "A listing photo for a second-hand marketplace."\n', "")


@pytest.fixture()
def policy_file(work_dir: Path) -> Path:
    path = work_dir / "shop.toml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def _instruction_of(after_image: str) -> str:
    return after_image.split("###The instruction to evaluate:\n", 1)[1].split("\n\n###Response", 1)[0]


def _criteria_of(after_image: str) -> str:
    return after_image.split("###Score Rubrics:\n", 1)[1].split("\n", 1)[0]


def test_one_verdict_per_rule_with_the_right_instruction_and_rubric(policy_file: Path) -> None:
    engine = FakeEngine(max_parallel=4)
    judge = Judge(engine)
    verdict = judge.evaluate_policy(synthetic_image(80, seed=3), policy=policy_file, response="A red bike.")
    policy = load_policy(policy_file)
    assert [r.rule_id for r in verdict.rules] == ["accurate", "own-words", "safe"]
    assert verdict.policy == policy.identity() and verdict.review_band == (0.25, 0.75)
    prompts = [parts.after_image for parts, _ in engine.history]
    # the policy's instruction, then the rule's own, then the policy's again; each rule its rubric
    assert [_instruction_of(p) for p in prompts] == [
        "A listing photo for a second-hand marketplace.",
        "Describe the item for sale.",
        "A listing photo for a second-hand marketplace.",
    ]
    assert [_criteria_of(p) for p in prompts] == [r.rubric.criteria for r in policy.rules]
    assert len({parts.pixels_sha256 for parts, _ in engine.history}) == 1
    outcomes = [RuleOutcome(r.rule_id, r.severity, r.state, r.passed, r.p_pass) for r in verdict.rules]
    assert verdict.decision == decide(outcomes)
    for rule, ruled in zip(policy.rules, verdict.rules, strict=True):
        assert ruled.verdict is not None and ruled.error is None
        assert ruled.passed == (ruled.verdict.score is not None and ruled.verdict.score >= rule.pass_at)
        assert ruled.p_pass is not None and 0.0 <= ruled.p_pass <= 1.0
    assert PolicyVerdict.from_dict(json.loads(verdict.to_json())) == verdict


def test_the_items_own_instruction_wins(policy_file: Path) -> None:
    engine = FakeEngine()
    Judge(engine).evaluate_policy(
        synthetic_image(40), policy=policy_file, response="A bike.", instruction="Is this bike for sale?"
    )
    assert {_instruction_of(parts.after_image) for parts, _ in engine.history} == {"Is this bike for sale?"}


@pytest.mark.parametrize(
    ("texts", "decision", "states"),
    [
        (("[RESULT] 5", "[RESULT] 5", "[RESULT] 5"), "compliant", ["pass", "pass", "pass"]),
        (("[RESULT] 5", "[RESULT] 1", "[RESULT] 5"), "violation", ["pass", "fail", "pass"]),
        (("[RESULT] 1", "[RESULT] 5", "[RESULT] 2"), "violation", ["fail", "pass", "fail"]),
    ],
)
def test_decisions_from_scripted_scores(
    policy_file: Path, texts: tuple[str, ...], decision: str, states: list[str]
) -> None:
    engine = FakeEngine([f"Feedback. {t}" for t in texts])
    verdict = Judge(engine).evaluate_policy(synthetic_image(40), policy=policy_file, response="A bike.")
    assert verdict.decision.decision == decision
    assert [r.state for r in verdict.rules] == states
    if decision == "violation":
        failed = [r for r in verdict.rules if r.state == "fail"]
        worst = max((r.severity for r in failed), key=["info", "minor", "major", "critical"].index)
        assert verdict.decision.severity == worst


def _uncertain_engine() -> FakeEngine:
    engine = FakeEngine()
    engine.enqueue("Fine. [RESULT] 5", {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.05, 5: 0.95})
    engine.enqueue("Fine. [RESULT] 4", {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.3, 5: 0.1})  # pass_at 3: p 0.7
    engine.enqueue("Fine. [RESULT] 5", {5: 1.0})
    return engine


@pytest.mark.parametrize(
    ("band", "state", "decision"),
    [((0.25, 0.75), "uncertain", "needs_review"), ((0.1, 0.6), "pass", "compliant")],
)
def test_the_review_band_decides_what_needs_review(
    policy_file: Path, band: tuple[float, float], state: str, decision: str
) -> None:
    verdict = Judge(_uncertain_engine()).evaluate_policy(
        synthetic_image(40), policy=policy_file, response="A bike.", review_band=band
    )
    assert [r.state for r in verdict.rules] == ["pass", state, "pass"]
    assert verdict.rule("own-words").p_pass == pytest.approx(0.7)
    assert verdict.decision.decision == decision and verdict.review_band == band
    assert verdict.decision.uncertain == (("own-words",) if state == "uncertain" else ())


def test_a_rule_without_an_instruction_is_that_rules_error(work_dir: Path) -> None:
    path = work_dir / "bare.toml"
    path.write_text(NO_INSTRUCTION, encoding="utf-8")
    engine = FakeEngine(["Good. [RESULT] 5"])
    verdict = Judge(engine).evaluate_policy(synthetic_image(40), policy=path, response="A bike.")
    states = {r.rule_id: r.state for r in verdict.rules}
    assert states == {"accurate": "error", "own-words": "pass", "safe": "error"}
    error = verdict.rule("accurate")
    assert error.verdict is None and error.p_pass is None and error.passed is None
    assert error.error is not None and "no instruction" in error.error and error.hint
    assert len(engine.history) == 1  # only the rule with its own instruction was judged
    assert verdict.decision.decision == "error" and verdict.decision.errors == ("accurate", "safe")


def test_an_overlong_rule_costs_only_itself(policy_file: Path) -> None:
    engine = FakeEngine(n_ctx=2048)
    policy = load_policy(policy_file)
    long_rule = policy.rules[2]
    from dataclasses import replace

    huge = replace(long_rule.rubric, criteria="word " * 2400)
    policy = replace(policy, rules=(*policy.rules[:2], replace(long_rule, rubric=huge)))
    verdict = Judge(engine).evaluate_policy(
        synthetic_image(40), policy=policy, response="A bike.", params=GenerationParams(max_tokens=32)
    )
    assert [r.state == "error" for r in verdict.rules] == [False, False, True]
    assert "context" in (verdict.rule("safe").error or "")


def test_bad_policy_and_band_are_refused_before_judging(policy_file: Path) -> None:
    engine = FakeEngine()
    judge = Judge(engine)
    with pytest.raises(PolicyError, match="unknown policy"):
        judge.evaluate_policy(synthetic_image(40), policy="no-such-policy", response="x")
    with pytest.raises(PolicyError, match="review band"):
        judge.evaluate_policy(synthetic_image(40), policy=policy_file, response="x", review_band=(0.8, 0.2))
    assert engine.history == []


def test_samples_use_the_mean_distribution(policy_file: Path) -> None:
    verdict = Judge(FakeEngine()).evaluate_policy(
        synthetic_image(40), policy=policy_file, response="A bike.", samples=3
    )
    from edgejudge.decision import p_pass

    for rule, ruled in zip(load_policy(policy_file).rules, verdict.rules, strict=True):
        assert ruled.verdict is not None and len(ruled.verdict.samples) == 3
        expected = p_pass(ruled.verdict.score_probs, rule.pass_at, ruled.verdict.score)
        assert ruled.p_pass == pytest.approx(expected, abs=1e-6)


# -- the CLI, on the fake engine -------------------------------------------------------------------------
def test_judge_policy_cli_prints_the_table_and_the_decision(
    fake: FakeEngine, policy_file: Path, work_dir: Path
) -> None:
    synthetic_image(60).save(work_dir / "item.png")
    fake.enqueue("Matches. [RESULT] 5")
    fake.enqueue("Too short. [RESULT] 1")
    fake.enqueue("Safe. [RESULT] 5")
    args = ["judge", str(work_dir / "item.png"), "--policy", str(policy_file), "--response", "A bike."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "violation"
    for text in ("accurate", "own-words", "safe", "p_pass", "severity", "Too short.", "decision:", "minor"):
        assert text in result.stderr


def test_judge_policy_json_is_the_policy_verdict(fake: FakeEngine, policy_file: Path, work_dir: Path) -> None:
    synthetic_image(60).save(work_dir / "item.png")
    args = ["judge", str(work_dir / "item.png"), "--policy", str(policy_file), "--response", "A bike."]
    result = CliRunner().invoke(app, [*args, "--json", "--review-band", "0.1,0.9"])
    assert result.exit_code == 0, result.stderr
    verdict = PolicyVerdict.from_dict(json.loads(result.stdout))
    assert [r.rule_id for r in verdict.rules] == ["accurate", "own-words", "safe"]
    assert verdict.review_band == (0.1, 0.9)
    assert verdict.decision.decision in ("compliant", "violation", "needs_review")


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--rubric", "vqa-helpfulness"], "--policy"),
        (["--criteria", "ok?"], "--policy"),
        (["--print-prompt"], "--print-prompt"),
        (["--review-band", "0.9,0.1"], "--review-band"),
        (["--review-band", "half"], "--review-band"),
    ],
)
def test_judge_policy_usage_errors(
    fake: FakeEngine, policy_file: Path, work_dir: Path, extra: list[str], flag: str
) -> None:
    synthetic_image(60).save(work_dir / "item.png")
    args = ["judge", str(work_dir / "item.png"), "--policy", str(policy_file), "--response", "A bike."]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 2 and flag in result.stderr
    assert fake.history == []


def test_judge_policy_without_any_instruction_names_the_flag(fake: FakeEngine, work_dir: Path) -> None:
    (work_dir / "bare.toml").write_text(NO_INSTRUCTION, encoding="utf-8")
    synthetic_image(60).save(work_dir / "item.png")
    args = ["judge", str(work_dir / "item.png"), "--policy", str(work_dir / "bare.toml"), "--response", "x"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--instruction" in result.stderr and "accurate, safe" in result.stderr
    assert CliRunner().invoke(app, [*args, "-i", "Is it for sale?"]).exit_code == 0


def test_judge_policy_unknown_policy_is_one_error_line(fake: FakeEngine, work_dir: Path) -> None:
    synthetic_image(60).save(work_dir / "item.png")
    result = CliRunner().invoke(
        app, ["judge", str(work_dir / "item.png"), "--policy", "nope", "--response", "x"]
    )
    assert result.exit_code == 1 and "error: unknown policy 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_judge_without_policy_still_needs_an_instruction(fake: FakeEngine, work_dir: Path) -> None:
    synthetic_image(60).save(work_dir / "item.png")
    result = CliRunner().invoke(app, ["judge", str(work_dir / "item.png"), "--response", "x"])
    assert result.exit_code == 2 and "--instruction" in result.stderr


# -- the tiny REAL model ---------------------------------------------------------------------------------
def _tokens_through_reference(judge: Judge, response: str, reference: str) -> int:
    """Prompt positions up to the rubric: BOS, the text before the image, the image, the text after it
    up to '###Score Rubrics' (tokenized apart, so a token or two at each seam may differ)."""
    from edgejudge.prompt import conversation_parts, render_judge_prompt
    from edgejudge.rubric import load_rubric

    prompt = render_judge_prompt("A listing photo.", response, load_rubric("vqa-helpfulness"), reference)
    before, after = conversation_parts(prompt)
    head = after.split("###Score Rubrics:", 1)[0]
    engine = judge.engine
    return 1 + engine.count_tokens(before) + engine.image_tokens + engine.count_tokens(head)


@pytest.mark.parametrize("parallel", [4, 2])
def test_rules_share_the_prefix_through_the_reference_on_the_real_engine(
    tiny_gguf: tuple[Path, Path], policy_file: Path, parallel: int
) -> None:
    text = POLICY.replace('instruction = "Describe the item for sale."\n', "")  # one instruction for all
    text = text.replace("A listing photo for a second-hand marketplace.", "A listing photo.")
    policy_file.write_text(text, encoding="utf-8")
    response, reference = "A red bicycle leaning on a wall.", "A red bicycle with a basket."
    with Judge.from_files(*tiny_gguf, n_ctx=4096, n_threads=2, max_parallel=parallel) as judge:
        verdict = judge.evaluate_policy(
            synthetic_image(90, seed=5),
            policy=policy_file,
            response=response,
            reference=reference,
            params=GenerationParams(temperature=0.0, max_tokens=12),
        )
        through = _tokens_through_reference(judge, response, reference)
    timings = [r.verdict.timings if r.verdict else None for r in verdict.rules]
    samples = [r.verdict.samples[0].timings for r in verdict.rules if r.verdict is not None]
    assert len(samples) == 3 and all(t is not None for t in timings)
    encoded = [t for t in samples if t.image_encode_s > 0]
    assert len(encoded) == 1 and samples[0] is encoded[0]  # the image went through CLIP once
    for t in samples[1:]:  # every later rule reused the prompt through the reference answer
        assert t.reused_tokens >= through - 4, (t.reused_tokens, through)
        assert t.prompt_tokens - t.reused_tokens < t.prompt_tokens - through + 8
    if parallel == 4:
        assert all(t.parallel == 3 for t in samples)
    else:  # waves of two, then one: the third rule reuses the prefix the first wave left
        assert [t.parallel for t in samples] == [2, 2, 1]
    assert verdict.decision.decision in ("compliant", "violation", "needs_review", "error")


def test_judge_policy_cli_on_the_tiny_model_in_a_child(
    tiny_gguf: tuple[Path, Path], policy_file: Path, work_dir: Path
) -> None:
    text_model, mmproj = tiny_gguf
    synthetic_image(70, seed=9).save(work_dir / "item.png")
    args = cli(
        "judge", str(work_dir / "item.png"), "--policy", str(policy_file), "--response", "A bike.",
        "--model", str(text_model), "--mmproj", str(mmproj), "--temperature", "0", "--max-tokens", "12",
        "--n-ctx", "4096", "--threads", "2", "--json",
    )  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    verdict = PolicyVerdict.from_dict(json.loads(done.stdout))
    assert [r.rule_id for r in verdict.rules] == ["accurate", "own-words", "safe"]
    assert all(r.verdict is not None and r.verdict.model == text_model.stem for r in verdict.rules)
    outcomes = [RuleOutcome(r.rule_id, r.severity, r.state, r.passed, r.p_pass) for r in verdict.rules]
    assert verdict.decision == decide(outcomes)
