"""The result records of a judgment: ``StageTimings`` (what one generation cost, as an engine reports it),
``Sample`` (one generation) and ``Verdict`` (one judgment); and of a judgment against a policy:
``RuleVerdict`` (one rule) and ``PolicyVerdict`` (every rule and the decision they add up to).

Frozen dataclasses that round-trip through JSON (``to_dict``/``from_dict``, ``to_json``/``from_json``) and
always keep the raw model text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .decision import DEFAULT_REVIEW_BAND, Decision

__all__ = ["StageTimings", "Sample", "Verdict", "RuleVerdict", "PolicyVerdict"]


def _dumps(data: dict[str, Any], **kwargs: Any) -> str:
    """``data`` as JSON text; a string that cannot be encoded as UTF-8 (a lone surrogate, e.g. an image name
    that was not UTF-8) makes the whole text ASCII with ``\\uXXXX`` escapes instead."""
    text = json.dumps(data, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True, **kwargs)
    return text


def _probs_to_json(probs: dict[int, float] | None) -> dict[str, float] | None:
    return None if probs is None else {str(k): float(v) for k, v in sorted(probs.items())}


def _probs_from_json(probs: dict[str, float] | None) -> dict[int, float] | None:
    return None if probs is None else {int(k): float(v) for k, v in probs.items()}


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock seconds per stage of one generation, and token counts."""

    image_encode_s: float = 0.0  # CLIP encode (0 when the embedding came from the cache)
    prompt_eval_s: float = 0.0  # decoding prompt tokens (text and image embeddings) not reused
    generation_s: float = 0.0  # sampling the output
    prompt_tokens: int = 0  # total prompt tokens, image included
    reused_tokens: int = 0  # prompt tokens whose KV entries were reused
    generated_tokens: int = 0
    image_cached: bool = False  # True when the image embedding came from the LRU cache (or a shared prefix)
    parallel: int = 1  # sequences decoded together (generate_many); generation_s is then this one's share

    @property
    def generation_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.reused_tokens
        return evaluated / self.prompt_eval_s if self.prompt_eval_s > 0 else 0.0


@dataclass(frozen=True)
class Sample:
    """One generation of the judge.

    ``score`` is the parsed integer 1..5 (None when the text had no score), ``score_probs`` the digit
    distribution at the score position, ``expected_score`` = Σ k·p_k, ``parse_method`` how the score was
    found (see edgejudge.parse), ``seed`` the seed used, ``forced_tail`` whether the score had to be forced
    after ``max_tokens`` ran out.
    """

    score: int | None
    feedback: str
    raw_output: str
    parse_method: str
    score_probs: dict[int, float] | None = None
    expected_score: float | None = None
    seed: int | None = None
    forced_tail: bool = False
    parse_error: str | None = None
    timings: StageTimings = field(default_factory=StageTimings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["score_probs"] = _probs_to_json(self.score_probs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sample:
        values = dict(data)
        values["score_probs"] = _probs_from_json(values.get("score_probs"))
        values["timings"] = StageTimings(**values.get("timings") or {})
        return cls(**values)


@dataclass(frozen=True)
class Verdict:
    """One judgment of one response.

    With one sample, ``score``/``feedback``/``raw_output`` are that sample's. With several, ``score`` is
    the majority score (ties go to the score closest to the mean expected score), ``expected_score`` the
    mean of the samples' expected scores, ``score_probs`` the mean distribution, ``agreement`` the share
    of samples that gave the majority score, and ``feedback``/``raw_output`` those of the first sample
    with the majority score. ``reference`` is False when no reference answer was given. ``settings`` is
    the judgment's settings object (``settings.settings_object``: the model, the image fit and the
    generation settings, with the same keys as a batch row's ``settings``).
    """

    score: int | None
    feedback: str
    raw_output: str
    parse_method: str
    expected_score: float | None
    score_probs: dict[int, float] | None
    samples: tuple[Sample, ...]
    agreement: float | None
    reference: bool
    rubric: str
    model: str
    image: str
    image_fit: str
    settings: dict[str, Any] = field(default_factory=dict)
    timings: StageTimings = field(default_factory=StageTimings)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["score_probs"] = _probs_to_json(self.score_probs)
        data["samples"] = [s.to_dict() for s in self.samples]
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        values = dict(data)
        values["score_probs"] = _probs_from_json(values.get("score_probs"))
        values["samples"] = tuple(Sample.from_dict(s) for s in values.get("samples") or ())
        values["timings"] = StageTimings(**values.get("timings") or {})
        values["warnings"] = tuple(values.get("warnings") or ())
        return cls(**values)

    def to_json(self, **kwargs: Any) -> str:
        """The verdict as JSON text; a string that cannot be encoded as UTF-8 (a lone surrogate, e.g. an
        image name that was not UTF-8) makes the whole text ASCII with ``\\uXXXX`` escapes instead."""
        return _dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class RuleVerdict:
    """One rule of a policy judged on one item. ``verdict`` is the judgment (None when the rule could not be
    judged: ``error`` and ``hint`` say why); ``passed`` is its score against ``pass_at``, ``p_pass`` the
    probability mass at or above ``pass_at`` (``decision.p_pass``), ``state`` the rule's outcome under the
    review band (``pass``, ``fail``, ``uncertain`` or ``error``)."""

    rule_id: str
    title: str
    severity: str
    pass_at: int
    passed: bool | None
    p_pass: float | None
    state: str
    verdict: Verdict | None = None
    error: str | None = None
    hint: str | None = None

    @property
    def score(self) -> int | None:
        return None if self.verdict is None else self.verdict.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity,
            "pass_at": self.pass_at,
            "passed": self.passed,
            "p_pass": self.p_pass,
            "state": self.state,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "error": self.error,
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleVerdict:
        values = dict(data)
        verdict = values.get("verdict")
        values["verdict"] = None if verdict is None else Verdict.from_dict(verdict)
        return cls(**values)


@dataclass(frozen=True)
class PolicyVerdict:
    """One item judged against a policy: ``policy`` its identity (``{"name", "version", "sha256"}``),
    ``review_band`` the band the states were read with, ``rules`` one ``RuleVerdict`` per rule in policy
    order, ``decision`` what they add up to (``decision.decide``)."""

    policy: dict[str, str]
    rules: tuple[RuleVerdict, ...]
    decision: Decision
    review_band: tuple[float, float] = DEFAULT_REVIEW_BAND

    def rule(self, rule_id: str) -> RuleVerdict:
        """The verdict of rule ``rule_id`` (KeyError when the policy has no such rule)."""
        for rule in self.rules:
            if rule.rule_id == rule_id:
                return rule
        raise KeyError(rule_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": dict(self.policy),
            "review_band": list(self.review_band),
            "decision": self.decision.to_dict(),
            "rules": [r.to_dict() for r in self.rules],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyVerdict:
        d = data["decision"]
        decision = Decision(
            d["decision"],
            d.get("severity"),
            tuple(d.get("failed") or ()),
            tuple(d.get("uncertain") or ()),
            tuple(d.get("errors") or ()),
        )
        low, high = data.get("review_band") or DEFAULT_REVIEW_BAND
        return cls(
            policy=dict(data["policy"]),
            rules=tuple(RuleVerdict.from_dict(r) for r in data.get("rules") or ()),
            decision=decision,
            review_band=(float(low), float(high)),
        )

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict`` as JSON text (ASCII escapes when a string cannot be encoded as UTF-8)."""
        return _dumps(self.to_dict(), **kwargs)
