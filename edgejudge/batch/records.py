"""The policy records of a batch log, beside its result rows, and the items a policy log adds up to.

A policy batch writes, into the same append-only log as plain batches (``batch.log`` owns the file):

- **rule rows**: a ``ResultRow`` per (input row, rule), with ``rule_id``, ``rule_title``, ``severity``,
  ``pass_at``, ``passed``, ``p_pass``, ``rule_state``, ``judged_at`` (when its verdict was done) and
  ``policy`` (``{"name", "version", "sha256"}``) set. Their identity is (``id``, ``rule_id``): the last
  line for a pair wins (``record_key``). A row whose own policy could not be loaded has ONE rule row,
  ``rule_id`` ``POLICY_ERROR_RULE`` ("*": no rule id can be it), ``policy`` ``{"name": <the value as
  written>}``, status ``error`` and the reason;
- a **decision** record per input row once its rules are all judged (also on a rerun when a killed run
  wrote the rules): ``DecisionRecord``;
- a **run** record when a policy run starts (the audit trail: versions, files and their hashes, the
  policies, the prompt template's hash, the settings, the input's hash): ``RunRecord``;
- **override** records appended by ``edgejudge review``: a person's decision on an item, with a note,
  who and when: ``OverrideRecord``.

Every record starts like a result row (``{"id": …, "line": N, "status": "ok", …``), so the cut-row rule of
``batch.log`` holds for all of them, and carries ``"kind"`` (``decision``/``run``/``override``); rule rows
and plain rows have no ``kind``. ``is_log_record`` is what the log takes for one of its records.

``policy_items`` groups the rule rows of a log into ``PolicyItem`` values (one per input row, in input
order): the rules of the row's latest policy (by sha256: the policy of its latest decision record when
no rule was judged after it, else of its latest judged rule; rows of another version of the policy, or
the error row of a policy that could not be loaded, are left out), the decision recomputed from them
(``policy.decide``; the rows are the truth, the decision record says they are all in: ``complete``), and
the person's override when its ``key`` is the key of those rules (an override of other results does not
carry over). Pure; never raises on the
contents of a record (records come from files anyone can edit).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import _fs
from ..decision import (
    DECISIONS,
    DEFAULT_REVIEW_BAND,
    INCOMPLETE,
    SEVERITIES,
    Decision,
    RuleOutcome,
    check_band,
    decide,
    outcome,
)
from ..errors import PolicyError
from .log import scan_output
from .result import KINDS, ResultRow

__all__ = [
    "KINDS",
    "OVERRIDE_DECISIONS",
    "POLICY_ERROR_RULE",
    "RECORD_KEYS",
    "DecisionRecord",
    "RunRecord",
    "OverrideRecord",
    "PolicyItem",
    "PolicyLog",
    "read_log",
    "rules_key",
    "policy_items",
    "outcome_of",
    "utc_now",
]

#: What a person may decide on an item (``edgejudge review``).
OVERRIDE_DECISIONS = ("compliant", "violation")
#: The ``rule_id`` of the one rule row of a row whose own policy could not be loaded (not a valid rule id).
POLICY_ERROR_RULE = "*"
#: The keys of decision, run and override records besides a row's (``id``, ``line``, ``status``).
RECORD_KEYS = frozenset(
    (
        "kind key policy decision severity failed uncertain errors rules review_band decided_at "
        "started_at edgejudge model mmproj policies template_sha256 input settings shard "
        "previous note reviewer at"
    ).split()
)


def utc_now(at: datetime | None = None) -> str:
    """``at`` (default: now) as ISO 8601 in UTC to the second: THE timestamp of the log (``judged_at``,
    ``decided_at``, ``started_at``, an override's ``at``)."""
    return (at or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")


def rules_key(keys: Iterable[str]) -> str:
    """The key of a set of rule results: sha256 over their resume keys, sorted and joined with U+001F
    (what a decision and an override apply to)."""
    return hashlib.sha256("\x1f".join(sorted(keys)).encode("utf-8")).hexdigest()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _identity(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: value[k] for k in ("name", "version", "sha256") if isinstance(value.get(k), str)}


def _band(value: Any) -> tuple[float, float]:
    """A recorded review band (``decision.check_band``), the default when it is not a usable one."""
    if isinstance(value, list) and len(value) == 2 and not any(isinstance(v, bool) for v in value):
        if all(isinstance(v, (int, float)) for v in value):
            try:
                return check_band(value)
            except (PolicyError, OverflowError):  # OverflowError: an integer beyond float range
                pass
    return DEFAULT_REVIEW_BAND


@dataclass(frozen=True)
class DecisionRecord:
    """An input row's decision as the batch wrote it when its rules were done. ``key`` is ``rules_key``
    of the rule rows' resume keys; ``rules`` the rule ids in policy order; ``review_band`` the band used."""

    id: str
    line: int
    key: str
    policy: dict[str, str]
    decision: Decision
    rules: tuple[str, ...]
    review_band: tuple[float, float] = DEFAULT_REVIEW_BAND
    decided_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "line": self.line,
            "status": "ok",
            "kind": "decision",
            "key": self.key,
            "policy": dict(self.policy),
            **self.decision.to_dict(),
            "rules": list(self.rules),
            "review_band": list(self.review_band),
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRecord:
        decision = _text(data.get("decision"))
        severity = _text(data.get("severity"))
        return cls(
            id=_text(data.get("id")) or "",
            line=data["line"] if type(data.get("line")) is int else 0,
            key=_text(data.get("key")) or "",
            policy=_identity(data.get("policy")),
            decision=Decision(
                decision if decision in DECISIONS else "error",
                severity if severity in SEVERITIES else None,
                _texts(data.get("failed")),
                _texts(data.get("uncertain")),
                _texts(data.get("errors")),
            ),
            rules=_texts(data.get("rules")),
            review_band=_band(data.get("review_band")),
            decided_at=_text(data.get("decided_at")),
        )


@dataclass(frozen=True)
class RunRecord:
    """The audit trail of one policy run, written when it starts. ``model``/``mmproj``: ``{"file",
    "sha256", "sha256_from"}`` (``name`` too for the model; ``sha256_from`` ``"registry"`` when the hash is
    the one the registry recorded for a file of the same size, ``"file"`` when the file was hashed by the
    run, None without a hash); ``policies``: the identities of the policies in use; ``template_sha256``:
    ``prompt.template_sha256()`` (the whole prompt format); ``input``: ``{"file", "sha256"}``; ``shard``:
    ``(K, N)`` when the run took shard K of N of the rows (``batch --shard``), else None."""

    started_at: str
    edgejudge: str
    model: dict[str, Any]
    mmproj: dict[str, Any]
    policies: tuple[dict[str, str], ...]
    template_sha256: str
    input: dict[str, Any]
    settings: dict[str, Any]
    review_band: tuple[float, float] = DEFAULT_REVIEW_BAND
    shard: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": "",
            "line": 0,
            "status": "ok",
            "kind": "run",
            "shard": list(self.shard) if self.shard is not None else None,
            "started_at": self.started_at,
            "edgejudge": self.edgejudge,
            "model": dict(self.model),
            "mmproj": dict(self.mmproj),
            "policies": [dict(p) for p in self.policies],
            "template_sha256": self.template_sha256,
            "input": dict(self.input),
            "settings": dict(self.settings),
            "review_band": list(self.review_band),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        def mapping(key: str) -> dict[str, Any]:
            value = data.get(key)
            return dict(value) if isinstance(value, Mapping) else {}

        policies = data.get("policies")
        return cls(
            started_at=_text(data.get("started_at")) or "",
            edgejudge=_text(data.get("edgejudge")) or "",
            model=mapping("model"),
            mmproj=mapping("mmproj"),
            policies=tuple(_identity(p) for p in policies) if isinstance(policies, list) else (),
            template_sha256=_text(data.get("template_sha256")) or "",
            input=mapping("input"),
            settings=mapping("settings"),
            review_band=_band(data.get("review_band")),
            shard=_shard(data.get("shard")),
        )


def _shard(value: Any) -> tuple[int, int] | None:
    ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int and v >= 1 for v in value)
    return (value[0], value[1]) if ok else None


@dataclass(frozen=True)
class OverrideRecord:
    """A person's decision on an item (``edgejudge review``): ``decision`` one of ``OVERRIDE_DECISIONS``
    (``severity`` with a violation), ``previous`` the decision it replaces, ``key`` the ``rules_key`` of
    the results it was made on, ``note``, ``reviewer`` and ``at`` (ISO 8601, UTC)."""

    id: str
    line: int
    key: str
    decision: str
    previous: str
    reviewer: str
    at: str
    note: str = ""
    severity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "line": self.line,
            "status": "ok",
            "kind": "override",
            "key": self.key,
            "decision": self.decision,
            "severity": self.severity,
            "previous": self.previous,
            "note": self.note,
            "reviewer": self.reviewer,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OverrideRecord | None:
        """The record, or None when it is not a usable override (an unknown decision)."""
        decision = _text(data.get("decision"))
        if decision not in OVERRIDE_DECISIONS:
            return None
        severity = _text(data.get("severity"))
        return cls(
            id=_text(data.get("id")) or "",
            line=data["line"] if type(data.get("line")) is int else 0,
            key=_text(data.get("key")) or "",
            decision=decision,
            previous=_text(data.get("previous")) or "",
            reviewer=_text(data.get("reviewer")) or "",
            at=_text(data.get("at")) or "",
            note=_text(data.get("note")) or "",
            severity=severity if severity in SEVERITIES and decision == "violation" else None,
        )


@dataclass(frozen=True)
class PolicyItem:
    """One input row judged against a policy: its rule rows (policy order), the decision they add up to,
    and the override a person made on exactly these results (or None). ``complete`` is True when the
    latest decision record of the id has this item's ``key``: the batch writes one only once every rule
    of the row is in the log, so an item cut short by a kill, or read while its batch runs, is not
    complete. ``final`` is the decision that stands: the override's when there is one, ``INCOMPLETE``
    for an incomplete item, else the computed one."""

    id: str
    line: int
    policy: dict[str, str]
    rules: tuple[ResultRow, ...]
    decision: Decision
    key: str
    review_band: tuple[float, float]
    override: OverrideRecord | None = None
    outcomes: tuple[RuleOutcome, ...] = field(default=())
    complete: bool = True

    @property
    def first(self) -> ResultRow:
        return self.rules[0]

    @property
    def final(self) -> str:
        if self.override is not None:
            return self.override.decision
        return self.decision.decision if self.complete else INCOMPLETE

    @property
    def final_severity(self) -> str | None:
        if self.override is not None:
            return self.override.severity
        return self.decision.severity if self.complete else None


def outcome_of(row: ResultRow, band: Sequence[float]) -> RuleOutcome:
    """A rule row's outcome under ``band`` (``policy.outcome``), from what the row recorded: the state is
    recomputed from its ``p_pass`` and ``passed``, so a row edited by hand cannot claim a state its
    numbers do not give; an error row, or one without ``p_pass``, is ``error``."""
    severity = row.severity if row.severity in SEVERITIES else "major"
    prob = row.p_pass if row.ok and row.p_pass is not None and 0 <= row.p_pass <= 1 else None
    return outcome(row.rule_id or "", severity, row.passed, prob, _band(list(band)))


def policy_items(
    rows: Iterable[ResultRow],
    decisions: Mapping[str, DecisionRecord] | None = None,
    overrides: Iterable[OverrideRecord] = (),
    *,
    band: Sequence[float] | None = None,
) -> list[PolicyItem]:
    """The items of a policy log (see the module docstring), in input order (``line``, then id).

    ``rows``: the log's result rows, last-wins already applied (rows without ``rule_id`` are skipped);
    ``decisions``: the latest decision record per id (its band is used, else ``band``, else the default);
    ``overrides``: in file order, the last matching one wins."""
    decisions = decisions or {}
    by_id: dict[str, list[ResultRow]] = {}
    for row in rows:
        if row.rule_id:
            by_id.setdefault(row.id, []).append(row)
    latest_override: dict[tuple[str, str], OverrideRecord] = {}
    for override in overrides:
        latest_override[(override.id, override.key)] = override
    items: list[PolicyItem] = []
    for row_id, rule_rows in by_id.items():
        record = decisions.get(row_id)
        newest = max(rule_rows, key=lambda r: r.judged_at or "")  # the policy of the latest judgment
        sha = (newest.policy or {}).get("sha256")
        if record is not None and (record.decided_at or "") >= (newest.judged_at or ""):
            decided = record.policy.get("sha256")  # nothing judged since the latest decision: its policy
            if any((r.policy or {}).get("sha256") == decided for r in rule_rows):
                sha = decided
        current = [r for r in rule_rows if (r.policy or {}).get("sha256") == sha]
        newest = max(current, key=lambda r: r.judged_at or "")
        order = {rule: k for k, rule in enumerate(record.rules)} if record is not None else {}
        current.sort(key=lambda r: (order.get(r.rule_id or "", len(order)), r.line or 0))
        use = record.review_band if record is not None else _band(list(band or DEFAULT_REVIEW_BAND))
        outcomes = tuple(outcome_of(r, use) for r in current)
        key = rules_key(r.key for r in current)
        items.append(
            PolicyItem(
                id=row_id,
                line=current[0].line or 0,
                policy=dict(newest.policy or {}),
                rules=tuple(current),
                decision=decide(outcomes),
                key=key,
                review_band=use,
                override=latest_override.get((row_id, key)),
                outcomes=outcomes,
                complete=record is not None and record.key == key,
            )
        )
    items.sort(key=lambda item: (item.line, item.id))
    return items


@dataclass(frozen=True)
class PolicyLog:
    """A batch log read whole: ``rows`` as ``read_result_rows`` gives them, the latest decision record per
    id, the override records and run records in file order."""

    rows: dict[str, ResultRow]
    decisions: dict[str, DecisionRecord]
    overrides: tuple[OverrideRecord, ...]
    runs: tuple[RunRecord, ...]


def read_log(path: str | Path) -> PolicyLog:
    """Every record of a batch log (see ``read_results`` for what is ignored and raised); a missing file
    gives an empty log. ``records.policy_items(log.rows.values(), log.decisions, log.overrides)`` gives
    its policy items."""
    output = _fs.user_path(path, what="results path")
    try:
        os.stat(output)
    except FileNotFoundError:
        return PolicyLog({}, {}, (), ())
    except (OSError, ValueError):
        pass
    scan = scan_output(output, str(output))
    decisions: dict[str, DecisionRecord] = {}
    overrides: list[OverrideRecord] = []
    runs: list[RunRecord] = []
    for record in scan.records:
        kind = record["kind"]
        if kind == "decision":
            decisions[record["id"]] = DecisionRecord.from_dict(record)
        elif kind == "override":
            override = OverrideRecord.from_dict(record)
            if override is not None:
                overrides.append(override)
        else:
            runs.append(RunRecord.from_dict(record))
    rows = {key: ResultRow.from_dict(row) for key, row in scan.rows.items()}
    return PolicyLog(rows, decisions, tuple(overrides), tuple(runs))
