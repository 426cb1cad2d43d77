"""Policies: several rules judged against one piece of content (the decision they add up to: ``decision``).

A policy is a document a moderator or a teacher adopts: a ``name``, a ``version``, a ``description``, an
optional ``instruction`` (what the judge is told the content was meant to do, for every rule) and its
``rules``. Each ``Rule`` has an ``id``, a ``title``, a rubric (the name of a built-in rubric or an inline
table with ``criteria`` and ``score1``…``score5``), ``pass_at`` (the lowest score that complies, default 4),
a ``severity`` (``info < minor < major < critical``) and an optional ``instruction`` of its own.

The built-in policies are TOML data files in ``edgejudge/policies/*.toml`` (package data). Policy files are
TOML (``[[rules]]`` tables) or JSON (``"rules": [...]``). Loading never lets anything but ``PolicyError``
out, and every message names the file, the rule (by id, or by position when it has none) and the field.

Pure: no printing, no judging (``Judge.evaluate_policy`` does that).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ._fs import read_utf8, user_path
from .decision import SEVERITIES
from .errors import PolicyError, RubricError
from .prompt import full_conversation, render_judge_prompt
from .rubric import Rubric, load_rubric, parse_rubric_text, rubric_from_mapping, toml_string

__all__ = [
    "Policy",
    "Rule",
    "DEFAULT_PASS_AT",
    "IMAGE_TOKENS",
    "MAX_POLICY_BYTES",
    "MAX_RULES",
    "builtin_policies",
    "load_policy",
    "parse_policy",
    "policy_to_toml",
    "prompt_estimate",
]

DEFAULT_PASS_AT = 4
#: The largest policy file read (a policy is tens of KB of text).
MAX_POLICY_BYTES = 4 * 2**20
#: The most rules one policy may hold (each is one judgment per item).
MAX_RULES = 64

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TOP_KEYS = ("name", "version", "description", "instruction", "rules")
_RUBRIC_KEYS = ("criteria", "score1", "score2", "score3", "score4", "score5", "name", "title", "summary")
_RULE_KEYS = ("id", "title", "rubric", "pass_at", "severity", "instruction", "description")
POLICY_KEYS_HINT = (
    "a policy needs name, version, description and [[rules]]; each rule needs id, title, rubric (a built-in "
    "rubric name or a table with criteria and score1..score5) and severity (info, minor, major or critical); "
    "pass_at (1-5, default 4) and instruction are optional"
)


@dataclass(frozen=True)
class Rule:
    """One rule of a policy. ``rubric`` is resolved (a built-in one or the rule's inline table, named
    ``<policy>/<rule id>``); ``instruction`` is None when the rule has none of its own."""

    id: str
    title: str
    rubric: Rubric
    severity: str
    pass_at: int = DEFAULT_PASS_AT
    instruction: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The rule as a policy file writes it (the rubric inline, so the dict stands alone)."""
        data: dict[str, Any] = {"id": self.id, "title": self.title, "severity": self.severity}
        data["pass_at"] = self.pass_at
        if self.instruction is not None:
            data["instruction"] = self.instruction
        if self.description:
            data["description"] = self.description
        rubric = self.rubric.to_dict()
        if "/" in rubric["name"]:  # the name an inline rubric is given (<policy>/<rule id>), not its own
            del rubric["name"]
        data["rubric"] = {k: v for k, v in rubric.items() if k not in ("name", "title", "summary") or v}
        return data


@dataclass(frozen=True)
class Policy:
    """A loaded policy. ``sha256`` is the hash of the file's bytes (of the package data for a built-in
    one), ``source`` where it came from (``builtin:<name>`` or the file's path)."""

    name: str
    version: str
    description: str
    rules: tuple[Rule, ...]
    sha256: str
    source: str
    instruction: str | None = None

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise PolicyError(f"policy '{self.name}' has no rule '{rule_id}'; rules: {self.rule_ids()}")

    def rule_ids(self) -> str:
        return ", ".join(r.id for r in self.rules)

    def instruction_for(self, rule: Rule, given: str | None) -> str | None:
        """The instruction the judge is told for ``rule`` on an item: the item's own (``given``, when not
        blank), else the rule's, else the policy's; None when there is none at all."""
        if given is not None and given.strip():
            return given
        return rule.instruction or self.instruction

    def identity(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}``: what results and reports record of the policy."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON: its fields, ``sha256`` and ``source``, and every rule with its rubric inline
        (``Rule.to_dict``); ``instruction`` is None when the policy has none."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "instruction": self.instruction,
            "sha256": self.sha256,
            "source": self.source,
            "rules": [rule.to_dict() for rule in self.rules],
        }


def policy_to_toml(policy: Policy) -> str:
    """The policy as a TOML policy file (top-level fields, then each ``[[rules]]`` with its rubric inline
    as ``[rules.rubric]``, a built-in one copied); ``parse_policy`` of it gives back the same rules."""
    top = {k: v for k, v in policy.to_dict().items() if k in _TOP_KEYS and isinstance(v, str)}
    lines = [f"{key} = {toml_string(value)}" for key, value in top.items()]
    for rule in policy.rules:
        data = rule.to_dict()
        rubric = data.pop("rubric")
        lines += ["", "[[rules]]"]
        lines += [f"{k} = {v}" if k == "pass_at" else f"{k} = {toml_string(v)}" for k, v in data.items()]
        lines += ["", "[rules.rubric]"] + [f"{k} = {toml_string(v)}" for k, v in rubric.items()]
    return "\n".join(lines) + "\n"


#: Prompt positions one image takes (LLaVA-1.5's CLIP ViT-L/14 at 336 px: 24 x 24 patches).
IMAGE_TOKENS = 576
#: Characters per token of English text for the LLaMA tokenizer, roughly: the estimate needs no tokenizer.
CHARS_PER_TOKEN = 4
#: The item text ``prompt_estimate`` assumes where none is given: a question and a paragraph-long answer.
TYPICAL_INSTRUCTION = "What does the image show, and does it answer the question asked about it? " * 2
TYPICAL_RESPONSE = "The image shows the item described; its details are given here in a few sentences. " * 7


def prompt_estimate(
    policy: Policy,
    rule: Rule,
    *,
    instruction: str | None = None,
    response: str | None = None,
    reference: str | None = None,
    image_tokens: int = IMAGE_TOKENS,
) -> int:
    """A tokenizer-free estimate of the judge prompt's length in tokens for ``rule`` on one item: the
    whole conversation (``prompt.full_conversation``) at ``CHARS_PER_TOKEN`` characters a token, plus
    ``image_tokens``. The instruction is the one the rule would get (``instruction_for``), else a typical
    question; ``response`` defaults to a typical paragraph (``TYPICAL_RESPONSE``)."""
    text = policy.instruction_for(rule, instruction) or TYPICAL_INSTRUCTION
    judge_prompt = render_judge_prompt(text, response or TYPICAL_RESPONSE, rule.rubric, reference)
    return -(-len(full_conversation(judge_prompt, image_marker="")) // CHARS_PER_TOKEN) + image_tokens


# -- loading -------------------------------------------------------------------------------------------------
def _where(source: str, rule: str | None = None) -> str:
    return f"{source}, rule '{rule}'" if rule else source


def _text(data: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise PolicyError(f"{where}: missing the field '{key}'", hint=POLICY_KEYS_HINT)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PolicyError(
            f"{where}: the field '{key}' must be text, got {type(value).__name__}", hint=POLICY_KEYS_HINT
        )
    text = str(value).strip()
    if not text:
        if required:
            raise PolicyError(f"{where}: the field '{key}' is empty", hint=POLICY_KEYS_HINT)
        return None
    if _CONTROL.search(text):
        raise PolicyError(
            f"{where}: the field '{key}' holds a control character",
            hint="remove it (line breaks and tabs are fine)",
        )
    return text


def _rule(data: Any, position: int, policy_name: str, source: str, rubric_files: bool = True) -> Rule:
    if not isinstance(data, Mapping):
        raise PolicyError(
            f"{source}: rule {position} must be a table, got {type(data).__name__}", hint=POLICY_KEYS_HINT
        )
    raw_id = data.get("id")
    label = raw_id if isinstance(raw_id, str) and raw_id.strip() else f"#{position}"
    where = _where(source, label)
    unknown = [k for k in data if k not in _RULE_KEYS]
    if unknown:
        raise PolicyError(
            f"{where}: unknown field '{unknown[0]}'", hint="rule fields: " + ", ".join(_RULE_KEYS)
        )
    rule_id = _text(data, "id", f"{source}, rule {position}", required=True)
    assert rule_id is not None
    if not _ID.match(rule_id):
        raise PolicyError(
            f"{where}: the id must be 1-64 lower-case letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)",
            hint='e.g. id = "no-weapons"',
        )
    title = _text(data, "title", where, required=True)
    assert title is not None
    severity = _text(data, "severity", where, required=True)
    if severity not in SEVERITIES:
        raise PolicyError(
            f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {severity!r}",
            hint='e.g. severity = "major"',
        )
    pass_at = data.get("pass_at", DEFAULT_PASS_AT)
    if isinstance(pass_at, bool) or not isinstance(pass_at, int) or not 1 <= pass_at <= 5:
        raise PolicyError(
            f"{where}: pass_at must be a whole number from 1 to 5, got {pass_at!r}",
            hint="pass_at is the lowest score that complies (default 4)",
        )
    rubric_value = data.get("rubric")
    if rubric_value is None:
        raise PolicyError(f"{where}: missing the field 'rubric'", hint=POLICY_KEYS_HINT)
    try:
        if isinstance(rubric_value, str):
            if "/" in rubric_value or rubric_value.lower().endswith((".toml", ".json")):
                raise PolicyError(
                    f"{where}: rubric must be a built-in rubric name or an inline table, got a path",
                    hint="copy the rubric's criteria and score1..score5 into a [rules.rubric] table",
                )
            rubric = load_rubric(rubric_value) if rubric_files else _builtin_rubric(rubric_value)
        elif isinstance(rubric_value, Mapping):
            extra = [k for k in rubric_value if k not in _RUBRIC_KEYS]
            if extra:
                raise PolicyError(
                    f"{where}: unknown field '{extra[0]}' in the rubric",
                    hint="rubric fields: " + ", ".join(_RUBRIC_KEYS),
                )
            rubric = rubric_from_mapping(rubric_value, name=f"{policy_name}/{rule_id}", source=None)
            for text in (rubric.criteria, *rubric.descriptions, rubric.title, rubric.summary):
                if _CONTROL.search(text):
                    raise PolicyError(
                        f"{where}: the rubric holds a control character",
                        hint="remove it (line breaks and tabs are fine)",
                    )
        else:
            raise PolicyError(
                f"{where}: rubric must be a built-in rubric name or a table, "
                f"got {type(rubric_value).__name__}",
                hint=POLICY_KEYS_HINT,
            )
    except RubricError as err:  # the rubric's own messages name no file: the rule's place is put first
        hint = err.hint
        if isinstance(rubric_value, str):  # an unknown built-in name (a policy takes no rubric files)
            hint = "use a built-in rubric name (edgejudge rubrics list) or an inline [rules.rubric] table"
        raise PolicyError(f"{where}: {err.message}", hint=hint) from None
    return Rule(
        id=rule_id,
        title=title,
        rubric=rubric,
        severity=severity,
        pass_at=pass_at,
        instruction=_text(data, "instruction", where, required=False),
        description=_text(data, "description", where, required=False) or "",
    )


def _builtin_rubric(name: str) -> Rubric:
    """A built-in rubric by name (never a file: ``RubricError`` for any other name)."""
    from .rubric import _normalise_name, builtin_rubrics

    library = builtin_rubrics()
    found = library.get(_normalise_name(name))
    if found is None:
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise RubricError(f"unknown rubric '{shown}'; available: {', '.join(library)}")
    return found


def parse_policy(text: str, *, suffix: str, source: str, sha256: str, rubric_files: bool = True) -> Policy:
    """A policy from the text of a file (``suffix`` ``.toml`` or ``.json``); ``PolicyError`` naming
    ``source`` for anything wrong. ``rubric_files=False`` (a policy sent over the network): a rule's
    rubric name is looked up among the built-ins only, never as a file."""
    try:
        data = parse_rubric_text(text, suffix, source, unwrap=False)
    except RubricError as err:
        raise PolicyError(err.message, hint=POLICY_KEYS_HINT) from None
    if not isinstance(data, Mapping):
        raise PolicyError(
            f"{source}: a policy must be a table/object, got {type(data).__name__}", hint=POLICY_KEYS_HINT
        )
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise PolicyError(
            f"{source}: unknown field '{unknown[0]}'", hint="policy fields: " + ", ".join(_TOP_KEYS)
        )
    name = _text(data, "name", source, required=True)
    if isinstance(data.get("version"), float):  # TOML 2026.10 is the number 2026.1: the digits are lost
        raise PolicyError(
            f"{source}: the field 'version' must be text, got a number ({data['version']!r})",
            hint='quote it, e.g. version = "2026.12"',
        )
    version = _text(data, "version", source, required=True)
    description = _text(data, "description", source, required=True)
    assert name is not None and version is not None and description is not None
    rules_value = data.get("rules")
    if rules_value is None:
        raise PolicyError(f"{source}: the policy has no rules", hint="add at least one [[rules]] table")
    if not isinstance(rules_value, list):
        raise PolicyError(
            f"{source}: 'rules' must be an array of tables ([[rules]]), got {type(rules_value).__name__}",
            hint=POLICY_KEYS_HINT,
        )
    if not rules_value:
        raise PolicyError(f"{source}: the policy has no rules", hint="add at least one [[rules]] table")
    if len(rules_value) > MAX_RULES:
        raise PolicyError(
            f"{source}: {len(rules_value)} rules, more than the {MAX_RULES} a policy may hold",
            hint="split it into several policies",
        )
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(rules_value, start=1):
        rule = _rule(item, position, name, source, rubric_files)
        if rule.id in seen:
            raise PolicyError(
                f"{source}: rule {position} repeats the id '{rule.id}' (first used by rule {seen[rule.id]})",
                hint="give every rule its own id",
            )
        seen[rule.id] = position
        rules.append(rule)
    return Policy(
        name=name,
        version=version,
        description=description,
        rules=tuple(rules),
        sha256=sha256,
        source=source,
        instruction=_text(data, "instruction", source, required=False),
    )


@lru_cache(maxsize=1)
def _builtin_cache() -> tuple[Policy, ...]:
    folder = resources.files("edgejudge") / "policies"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = entry.read_bytes()
        found.append(
            parse_policy(
                data.decode("utf-8"),
                suffix=".toml",
                source=f"builtin:{entry.name[: -len('.toml')]}",
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return tuple(found)


def builtin_policies() -> dict[str, Policy]:
    """The built-in policies, ``{name: Policy}``, sorted by name."""
    return {p.name: p for p in sorted(_builtin_cache(), key=lambda p: p.name)}


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.lower().endswith((".toml", ".json")) or text.startswith((".", "~"))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, ...
        return False


def _exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a name the file system refuses is reported when read)."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return True


def load_policy(name_or_path: str | Path, *, root: Path | None = None) -> Policy:
    """A built-in policy by name, or a policy file (``.toml`` or ``.json``; a relative path is taken
    from ``root`` when given). Raises ``PolicyError`` (and nothing else): an unknown name (listing the
    built-in ones), a missing, unreadable, oversized or non-regular file, bytes that are not UTF-8, a file
    that is not valid TOML/JSON, or a policy that breaks a rule above (file, rule and field named)."""
    if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
        library = builtin_policies()
        key = re.sub(r"[\s_]+", "-", name_or_path.strip().lower())
        if key in library:
            return library[key]
        candidate = Path(name_or_path) if root is None else root / name_or_path
        if not _is_file(candidate):
            raise PolicyError(
                f"unknown policy '{name_or_path}'; built-in: {', '.join(library)}",
                hint="pass a built-in name (edgejudge policies list) or a .toml/.json policy file",
                about="policy",
            )
    path = user_path(name_or_path, what="policy file", error=PolicyError)
    if root is not None and not path.is_absolute():
        path = root / path
    if path.suffix.lower() not in (".toml", ".json"):
        raise PolicyError(
            f"policy file must end in .toml or .json: {path}", hint="rename it, or write it as TOML/JSON"
        )
    if not _exists(path):
        raise PolicyError(
            f"policy file not found: {path}",
            hint="check the path, or use a built-in name (edgejudge policies list)",
            about="policy",
        )
    hint = "save the policy as UTF-8"
    text, data = read_utf8(path, what="policy file", max_bytes=MAX_POLICY_BYTES, error=PolicyError, hint=hint)
    return parse_policy(
        text, suffix=path.suffix.lower(), source=str(path), sha256=hashlib.sha256(data).hexdigest()
    )
