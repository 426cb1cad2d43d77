"""The small three-rule listing policy the policy batch tests write to disk (TOML text)."""

from __future__ import annotations

#: Three rules: a built-in rubric (major), an inline one passing at 3 (critical), another built-in (minor).
RULES_TOML = """\
[[rules]]
id = "accurate"
title = "The text matches the photo"
rubric = "vqa-helpfulness"
severity = "major"

[[rules]]
id = "safe"
title = "Nothing dangerous"
severity = "critical"
pass_at = 3
[rules.rubric]
criteria = "Does the listing avoid dangerous items?"
score1 = "A weapon or drug is offered."
score2 = "A dangerous item is shown prominently."
score3 = "Something risky is visible."
score4 = "Nothing dangerous, one unclear detail."
score5 = "Nothing dangerous at all."

[[rules]]
id = "honest"
title = "No misleading claims"
rubric = "caption-quality"
severity = "minor"
"""
RULE_IDS = ("accurate", "safe", "honest")


def listing_policy(name: str, version: str, description: str) -> str:
    """The policy file's text: these top-level fields, the marketplace instruction and ``RULES_TOML``."""
    return (
        f'\nname = "{name}"\nversion = "{version}"\ndescription = "{description}"\n'
        'instruction = "A listing photo for a second-hand marketplace."\n\n' + RULES_TOML
    )


__all__ = ["RULES_TOML", "RULE_IDS", "listing_policy"]
