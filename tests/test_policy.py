"""Policy files: loading good ones (TOML and JSON), refusing broken ones with one message naming the file,
the rule and the field (table-driven), and the built-in policies as documents (rules, rubrics, prompt)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgejudge.errors import PolicyError
from edgejudge.judge import TRAINING_CONTEXT
from edgejudge.policy import (
    MAX_POLICY_BYTES,
    MAX_RULES,
    Policy,
    builtin_policies,
    load_policy,
    parse_policy,
    policy_to_toml,
    prompt_estimate,
)
from edgejudge.rubric import load_rubric

RUBRIC = {
    "criteria": "Is the listing free of weapons?",
    "score1": "A weapon is offered for sale.",
    "score2": "A replica weapon is offered.",
    "score3": "Unclear whether it is a weapon.",
    "score4": "A tool that could be misused.",
    "score5": "Nothing weapon-like at all.",
}
GOOD: dict[str, Any] = {
    "name": "shop-rules",
    "version": "2026.12",
    "description": "Rules of a small shop.\nTwo rules.",
    "instruction": "A listing photo.",
    "rules": [
        {"id": "r1", "title": "Safe content", "rubric": "content-moderation", "severity": "critical"},
        {
            "id": "r2",
            "title": "No weapons",
            "severity": "major",
            "pass_at": 3,
            "instruction": "A photo of a tool for sale.",
            "rubric": dict(RUBRIC),
        },
    ],
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string here
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(data: dict[str, Any]) -> str:
    """The tests' own writer: top-level keys, then [[rules]] (each with a [rules.rubric] when a table)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if k != "rules"]
    rules = data.get("rules")
    if isinstance(rules, list) and rules and all(isinstance(r, dict) for r in rules):
        for rule in rules:
            lines.append("[[rules]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items() if not isinstance(v, dict)]
            for k, v in rule.items():
                if isinstance(v, dict):
                    lines.append(f"[rules.{k}]")
                    lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    elif "rules" in data:
        lines.insert(0, f"rules = {_toml_value(rules)}")
    return "\n".join(lines) + "\n"


def write(folder: Path, data: dict[str, Any], fmt: str, stem: str = "policy") -> Path:
    path = folder / f"{stem}.{fmt}"
    path.write_text(json.dumps(data) if fmt == "json" else to_toml(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_good_file_loads(work_dir: Path, fmt: str) -> None:
    path = write(work_dir, GOOD, fmt)
    policy = load_policy(str(path))
    assert (policy.name, policy.version, policy.instruction) == ("shop-rules", "2026.12", "A listing photo.")
    assert policy.description == "Rules of a small shop.\nTwo rules."
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.source == str(path)
    assert [r.id for r in policy.rules] == ["r1", "r2"]
    first, second = policy.rules
    assert first.rubric == load_rubric("content-moderation") and first.pass_at == 4
    assert (second.rubric.name, second.pass_at, second.severity) == ("shop-rules/r2", 3, "major")
    assert second.rubric.descriptions[2] == RUBRIC["score3"]
    assert policy.rule("r2") is second
    assert policy.identity() == {"name": "shop-rules", "version": "2026.12", "sha256": policy.sha256}
    # the same policy from a path object and relative to a root
    assert load_policy(path).rules == policy.rules
    assert load_policy(path.name, root=work_dir).rules == policy.rules


def test_instruction_precedence(work_dir: Path) -> None:
    policy = load_policy(write(work_dir, GOOD, "toml"))
    first, second = policy.rules
    assert policy.instruction_for(second, "The item's own question.") == "The item's own question."
    assert policy.instruction_for(second, "   ") == "A photo of a tool for sale."  # blank: not given
    assert policy.instruction_for(first, None) == "A listing photo."  # no rule instruction: the policy's
    bare = copy.deepcopy(GOOD)
    del bare["instruction"]
    assert load_policy(write(work_dir, bare, "json")).instruction_for(first, None) is None


def test_to_dict_and_toml_round_trip(work_dir: Path) -> None:
    policy = load_policy(write(work_dir, GOOD, "json"))
    data = policy.to_dict()
    assert set(data) == {"name", "version", "description", "instruction", "sha256", "source", "rules"}
    assert data["rules"][1]["rubric"]["score3"] == RUBRIC["score3"]
    assert "name" not in data["rules"][1]["rubric"]  # the generated <policy>/<id> name is not written
    again = parse_policy(policy_to_toml(policy), suffix=".toml", source="again.toml", sha256="")
    assert again.rules == policy.rules
    assert (again.name, again.description, again.instruction) == (
        policy.name,
        policy.description,
        policy.instruction,
    )


def _drop(*keys: str, rule: int | None = None) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        target = data if rule is None else data["rules"][rule]
        for key in keys:
            target.pop(key)

    return change


def _set(key: str, value: Any, rule: int | None = None) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        (data if rule is None else data["rules"][rule])[key] = value

    return change


def _drop_score3(data: dict[str, Any]) -> None:
    del data["rules"][1]["rubric"]["score3"]


def _duplicate(data: dict[str, Any]) -> None:
    data["rules"][1]["id"] = "r1"


def _rubric_typo(data: dict[str, Any]) -> None:
    data["rules"][1]["rubric"]["scor4"] = "a typo of score4"


def _rubric_control(data: dict[str, Any]) -> None:
    data["rules"][1]["rubric"]["score2"] = "Mostly \x1b]0;owned\x07 wrong."


def _title_typo(data: dict[str, Any]) -> None:
    data["rules"][1]["titel"] = data["rules"][1].pop("title")


def _many(data: dict[str, Any]) -> None:
    data["rules"] = [dict(GOOD["rules"][0], id=f"r{k}") for k in range(MAX_RULES + 1)]


# (case, change to GOOD, the fragments the message must hold besides the file's path)
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, ...]]] = [
    ("no name", _drop("name"), ("missing the field 'name'",)),
    ("no version", _drop("version"), ("missing the field 'version'",)),
    ("no description", _drop("description"), ("missing the field 'description'",)),
    ("blank name", _set("name", "  "), ("the field 'name' is empty",)),
    ("no rules", _drop("rules"), ("has no rules",)),
    ("empty rules", _set("rules", []), ("has no rules",)),
    ("rules not a list", _set("rules", "r1"), ("'rules' must be an array",)),
    ("rule not a table", _set("rules", ["r1"]), ("rule 1 must be a table",)),
    ("unknown top field", _set("colour", "red"), ("unknown field 'colour'",)),
    ("rule without id", _drop("id", rule=1), ("rule 2", "missing the field 'id'")),
    ("rule without title", _drop("title", rule=1), ("rule 'r2'", "missing the field 'title'")),
    ("rule without rubric", _drop("rubric", rule=1), ("rule 'r2'", "missing the field 'rubric'")),
    ("rule without severity", _drop("severity", rule=1), ("rule 'r2'", "missing the field 'severity'")),
    ("bad severity", _set("severity", "severe", 1), ("rule 'r2'", "severity must be one of", "'severe'")),
    ("pass_at 0", _set("pass_at", 0, 1), ("rule 'r2'", "pass_at must be", "got 0")),
    ("pass_at 6", _set("pass_at", 6, 1), ("rule 'r2'", "pass_at must be", "got 6")),
    ("pass_at text", _set("pass_at", "4", 1), ("rule 'r2'", "pass_at must be", "got '4'")),
    ("pass_at true", _set("pass_at", True, 1), ("rule 'r2'", "pass_at must be", "got True")),
    ("pass_at 3.5", _set("pass_at", 3.5, 1), ("rule 'r2'", "pass_at must be", "got 3.5")),
    ("bad id", _set("id", "No Weapons", 1), ("rule 'No Weapons'", "the id must be")),
    ("duplicate ids", _duplicate, ("rule 2 repeats the id 'r1'", "first used by rule 1")),
    ("unknown rule field", _set("colour", "red", 1), ("rule 'r2'", "unknown field 'colour'")),
    ("title not text", _set("title", ["a"], 1), ("rule 'r2'", "the field 'title' must be text")),
    ("rubric score3 missing", _drop_score3, ("rule 'r2'", "rubric is missing the field 'score3'")),
    ("rubric a path", _set("rubric", "rubrics/mine.toml", 1), ("rule 'r2'", "rubric must be", "a path")),
    ("rubric a file name", _set("rubric", "mine.json", 1), ("rule 'r2'", "got a path")),
    ("unknown rubric", _set("rubric", "nope", 1), ("rule 'r2'", "unknown rubric 'nope'")),
    ("rubric a number", _set("rubric", 3, 1), ("rule 'r2'", "rubric must be", "got int")),
    ("version a number", _set("version", 2026.1), ("the field 'version' must be text",)),
    ("too many rules", _many, (f"more than the {MAX_RULES}",)),
    ("unknown rubric field", _rubric_typo, ("rule 'r2'", "unknown field 'scor4' in the rubric")),
    ("a typo is named, not the field it hides", _title_typo, ("rule 'r2'", "unknown field 'titel'")),
    ("control character", _set("title", "No\x1b[2J weapons", 1), ("rule 'r2'", "control character")),
    ("control character in a rubric", _rubric_control, ("rule 'r2'", "rubric holds a control character")),
]


@pytest.mark.parametrize("fmt", ["toml", "json"])
@pytest.mark.parametrize(("case", "change", "fragments"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_policy_is_one_clear_error(
    work_dir: Path,
    fmt: str,
    case: str,
    change: Callable[[dict[str, Any]], None],
    fragments: tuple[str, ...],
) -> None:
    data = copy.deepcopy(GOOD)
    change(data)
    path = write(work_dir, data, fmt)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = info.value.message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (case, message)
    assert "\n" not in str(info.value)
    assert info.value.hint, case


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.toml"
    os.mkfifo(path)
    return path


def _folder(folder: Path) -> Path:
    path = folder / "folder.toml"
    path.mkdir()
    return path


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return make


# (case, how to make the file, a fragment of the message)
BAD_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("not UTF-8", _file("latin.toml", 'name = "caf\xe9"\n'.encode("latin-1")), "is not UTF-8 text"),
    ("not TOML", _file("bad.toml", b"name = = 'x'\n"), "is not valid TOML"),
    ("not JSON", _file("bad.json", b'{"name": '), "is not valid JSON"),
    ("JSON not an object", _file("list.json", b"[1, 2]"), "must be a table/object"),
    ("oversized", _file("big.toml", b"#" * (MAX_POLICY_BYTES + 1)), "too large"),
    ("wrong suffix", _file("policy.yaml", b"name: x\n"), "must end in .toml or .json"),
    ("a FIFO", _fifo, "named pipe"),
    ("a folder", _folder, "folder"),
    ("missing", lambda folder: folder / "missing.toml", "not found"),
]


@pytest.mark.parametrize(("case", "make", "fragment"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_one_clear_error(
    work_dir: Path, case: str, make: Callable[[Path], Path], fragment: str
) -> None:
    path = make(work_dir)
    with pytest.raises(PolicyError) as info:  # a FIFO must be refused, never waited on
        load_policy(path)
    assert fragment in info.value.message, (case, info.value.message)
    assert str(path) in info.value.message


def test_a_name_the_file_system_refuses_is_an_unknown_policy() -> None:
    with pytest.raises(PolicyError) as info:  # ENAMETOOLONG from the file system, never an OSError
        load_policy("p" * 300)
    assert "unknown policy" in info.value.message


def test_unknown_name_lists_the_builtins_and_is_about_the_policy() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("no-such-policy")
    assert "unknown policy 'no-such-policy'" in info.value.message
    for name in builtin_policies():
        assert name in info.value.message
    assert info.value.about == ("policy",)
    with pytest.raises(PolicyError) as missing:
        load_policy("./nowhere.toml")
    assert missing.value.about == ("policy",)


def test_builtin_names_are_forgiving() -> None:
    assert load_policy("Marketplace_Listing").name == "marketplace-listing"
    assert load_policy("figure grading").name == "figure-grading"


# -- the built-in policies ----------------------------------------------------------------------------------
REQUIRED = ("marketplace-listing", "social-media-safety", "children-education-content", "figure-grading")
#: A typical item: a question and a paragraph-long response (the estimate counts characters).
TYPICAL_QUESTION = (
    "Is the jacket in the photo in the condition the seller describes, and is anything missing from it?"
)
TYPICAL_RESPONSE = (
    "Blue denim jacket, size M, from a smoke-free home. Worn a few times, no stains or tears; all buttons "
    "present. Slight fading on the cuffs (see photo). Machine washable. Collection from the town centre "
    "or postage at the buyer's cost. Measurements: chest 52 cm, length 68 cm, sleeve 62 cm. "
) * 2


@pytest.fixture(scope="module")
def library() -> dict[str, Policy]:
    return builtin_policies()


def test_the_required_policies_are_built_in(library: dict[str, Policy]) -> None:
    assert set(REQUIRED) <= set(library)
    assert list(library) == sorted(library)
    for name, policy in library.items():
        assert policy.source == f"builtin:{name}"
        assert policy.version == "2026.12"
        assert len(policy.sha256) == 64
        assert policy.description.splitlines()[0].strip()
    assert "MLCommons AILuminate v1.0" in library["social-media-safety"].description
    # the figure-grading policy leaves the instruction to each item (the question); the others set one
    assert library["figure-grading"].instruction is None
    for name in ("marketplace-listing", "social-media-safety", "children-education-content"):
        assert library[name].instruction


@pytest.mark.parametrize("name", REQUIRED)
def test_builtin_policy_rules_are_real_documents(library: dict[str, Policy], name: str) -> None:
    policy = library[name]
    minimum = 3 if name == "figure-grading" else 4
    assert len(policy.rules) >= minimum
    ids = [r.id for r in policy.rules]
    assert len(set(ids)) == len(ids)
    for rule in policy.rules:
        assert rule.title and rule.description
        assert rule.rubric.name == f"{name}/{rule.id}"  # every built-in rule has its own inline rubric
        texts = rule.rubric.descriptions
        assert all(len(text) >= 40 for text in texts), (rule.id, [len(t) for t in texts])
        assert len(set(texts)) == 5, rule.id
        assert rule.rubric.criteria.endswith("?"), rule.id  # the criterion is asked, as in training
        words = len(" ".join((rule.rubric.criteria, *texts)).split())
        assert 60 <= words <= 160, (rule.id, words)


def test_builtin_severities_fit_their_use(library: dict[str, Policy]) -> None:
    grading = library["figure-grading"]
    assert {r.id for r in grading.rules} >= {"correctness", "use-of-figure", "reasoning"}
    assert grading.rule("correctness").severity == "major"
    assert all(r.pass_at == 3 for r in grading.rules)
    assert {r.severity for r in grading.rules} == {"major", "minor"}
    assert library["marketplace-listing"].rule("prohibited-items").severity == "critical"
    safety = library["social-media-safety"]
    critical = ("violent-crimes", "child-sexual-exploitation", "suicide-self-harm", "indiscriminate-weapons")
    for hazard in critical:
        assert safety.rule(hazard).severity == "critical"


@pytest.mark.parametrize("name", REQUIRED)
def test_builtin_prompts_fit_the_training_length(library: dict[str, Policy], name: str) -> None:
    policy = library[name]
    reference = "A model answer of two sentences that the judge compares the response with, for a score of 5."
    for rule in policy.rules:
        typical = prompt_estimate(policy, rule, instruction=TYPICAL_QUESTION, response=TYPICAL_RESPONSE)
        with_reference = prompt_estimate(
            policy, rule, instruction=TYPICAL_QUESTION, response=TYPICAL_RESPONSE, reference=reference
        )
        # room left for the feedback the judge writes, within the 2048 tokens it was trained on
        assert with_reference + 256 < TRAINING_CONTEXT, (rule.id, typical, with_reference)
        assert prompt_estimate(policy, rule) + 256 < TRAINING_CONTEXT


def test_prompt_estimate_counts_characters_and_the_image(library: dict[str, Policy]) -> None:
    policy = library["marketplace-listing"]
    rule = policy.rules[0]
    short = prompt_estimate(policy, rule, response="ok")
    longer = prompt_estimate(policy, rule, response="ok" + "x" * 400)
    assert longer - short == 100  # 400 more characters at 4 a token
    assert prompt_estimate(policy, rule, response="ok", image_tokens=0) == short - 576


@pytest.mark.parametrize("name", REQUIRED)
def test_builtin_policy_round_trips_through_toml(library: dict[str, Policy], name: str) -> None:
    policy = library[name]
    again = parse_policy(policy_to_toml(policy), suffix=".toml", source="copy.toml", sha256="")
    assert again.rules == policy.rules and again.description == policy.description
