"""The policy side of a batch: which rows are judged against which policy, one job per (row, rule), the
rule rows' fields, the decision records and the run record (the audit trail).

A row is judged against its own ``policy`` field (a built-in name or a policy file; a relative path is
taken from the input file's folder) or else the run's policy; each distinct value is loaded once. A row
whose own policy cannot be loaded (or whose field holds no usable value) becomes ONE rule row with
``rule_id`` ``records.POLICY_ERROR_RULE`` ("*", never a rule id), ``policy`` ``{"name": <the value as
written>}`` and the error, plus its decision record (``error``): an item like any other for the report,
the CSV and the review (the batch goes on). Rows with neither stay plain rows. A policy row becomes one
``Job`` per rule: the row as judged for that rule (its instruction by ``Policy.instruction_for``, the
rule's rubric; no instruction anywhere is that job's problem), keyed by ``rule_key``: ``rows.row_key`` of
that row, the rule's id, ``pass_at`` and severity, and the policy's sha256 (``records.policy_items`` reads
an item's rules from one version of its policy, so a changed policy file judges its rows again).

``Decisions`` follows which rows have all their rules in the log (written now or by an earlier run, a
killed one too) and gives the ``DecisionRecord`` to append, unless the latest one for the id already has
that ``rules_key`` and no rule row of the id (of any policy) was judged after it: so a row's latest
decision record has the key of its rules exactly when they are all in (``PolicyItem.complete``), and a
rule row of another policy judged since (a run with another policy, stopped) cannot hide them.
``run_record`` gathers the ``RunRecord``. Nothing here judges or writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..decision import Decision, decide
from ..errors import EdgeJudgeError
from .input_fields import FIX_HINT, BatchRow
from .records import POLICY_ERROR_RULE, DecisionRecord, RunRecord, outcome_of, rules_key, utc_now
from .result import ResultRow, record_key
from .rows import row_key

if TYPE_CHECKING:
    from ..engine.base import Engine
    from ..policy import Policy, Rule
    from ..verdict import Verdict

__all__ = [
    "Job",
    "Decisions",
    "row_policies",
    "jobs_of",
    "rule_key",
    "rule_base",
    "rule_done",
    "run_record",
]


class Job(NamedTuple):
    """One result to produce: a plain row, one rule of a policy row (``rule`` and ``policy``), or the one
    error row of a row whose own policy could not be loaded (``bad_policy``: the value as written). ``row``
    is the row as judged (for a rule: its instruction and rubric), ``key`` its resume key, ``digest`` its
    image's."""

    row: BatchRow
    key: str
    digest: str | None
    rule: Rule | None = None
    policy: Policy | None = None
    bad_policy: str | None = None

    @property
    def rule_id(self) -> str | None:
        """The ``rule_id`` of the job's row: the rule's, ``POLICY_ERROR_RULE`` for a bad policy, else None."""
        if self.rule is not None:
            return self.rule.id
        return POLICY_ERROR_RULE if self.bad_policy is not None else None

    def identity(self) -> dict[str, str]:
        """The ``policy`` of the job's row: the policy's identity, ``{"name": value}`` for a bad one."""
        if self.policy is not None:
            return self.policy.identity()
        return {"name": self.bad_policy or ""}


def row_policies(
    rows: Sequence[BatchRow], run_policy: Policy | None, folder: Path
) -> tuple[list[tuple[BatchRow, Policy | None]], list[Policy]]:
    """Each row with the policy it is judged against (its own, else ``run_policy``, else None), and every
    policy in use (in order of first use). A row whose own policy cannot be loaded gets it as its problem."""
    from ..policy import load_policy

    loaded: dict[str, Policy | EdgeJudgeError] = {}
    used: dict[str, Policy] = {}
    if run_policy is not None:
        used[run_policy.sha256] = run_policy
    out: list[tuple[BatchRow, Policy | None]] = []
    for row in rows:
        if row.policy is None:
            out.append((row, run_policy))
            continue
        if not row.policy:  # a field with no usable value: the row's problem says so
            out.append((row, None))
            continue
        if row.policy not in loaded:
            try:
                loaded[row.policy] = load_policy(row.policy, root=folder)
            except EdgeJudgeError as err:
                loaded[row.policy] = err
        found = loaded[row.policy]
        if isinstance(found, EdgeJudgeError):
            if row.problem is None:
                row = replace(
                    row, problem=f"line {row.line}: policy {row.policy!r}: {found}", hint=found.hint
                )
            out.append((replace(row, hint=row.hint or FIX_HINT), None))
            continue
        used.setdefault(found.sha256, found)
        out.append((row, found))
    return out, list(used.values())


def rule_key(row: BatchRow, digest: str | None, settings: dict[str, Any], policy: Policy, rule: Rule) -> str:
    """The resume key of one rule of a row (see the module docstring); ``row`` as judged for the rule."""
    payload = [row_key(row, digest, settings), rule.id, rule.pass_at, rule.severity, policy.sha256]
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()


def jobs_of(row: BatchRow, policy: Policy | None, digest: str | None, settings: dict[str, Any]) -> list[Job]:
    """The jobs of one input row: itself for a plain row, one per rule for a policy row, the one error job
    of a row whose own policy could not be loaded (``row_policies`` gave it None and the problem)."""
    if policy is None and row.policy is not None:
        payload = [row_key(row, digest, settings), POLICY_ERROR_RULE, row.policy]
        key = hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()
        return [Job(row, key, digest, bad_policy=row.policy)]
    if policy is None:
        return [Job(row, row_key(row, digest, settings), digest)]
    from ..policy_judge import no_instruction

    jobs = []
    for rule in policy.rules:
        told = policy.instruction_for(rule, row.instruction)
        judged = replace(row, instruction=told if told is not None else row.instruction, rubric=rule.rubric)
        if told is None and row.problem is None:
            err = no_instruction(policy, rule)
            judged = replace(judged, problem=f"line {row.line}: {err}", hint=err.hint)
        jobs.append(Job(judged, rule_key(judged, digest, settings, policy, rule), digest, rule, policy))
    return jobs


def rule_base(base: ResultRow, job: Job) -> ResultRow:
    """A rule job's base row: the plain base row with the rule's fields (an error until ``rule_done``; a
    bad policy's row has no title, severity or ``pass_at``)."""
    rule = job.rule
    return replace(
        base,
        policy=job.identity(),
        rule_id=job.rule_id,
        rule_title=rule.title if rule is not None else None,
        severity=rule.severity if rule is not None else None,
        pass_at=rule.pass_at if rule is not None else None,
        rule_state="error",
    )


def rule_done(row: ResultRow, job: Job, verdict: Verdict | None, band: Sequence[float]) -> ResultRow:
    """The rule row with its outcome: ``passed``, ``p_pass`` and ``rule_state`` from ``verdict`` (the
    ``policy_judge.rule_verdict`` of ``judge --policy``), or the error state without one; ``judged_at``
    now (the verdict is done)."""
    from ..policy_judge import rule_verdict

    if verdict is None or not row.ok or job.rule is None:
        return replace(row, passed=None, p_pass=None, rule_state="error", judged_at=utc_now())
    ruled = rule_verdict(job.rule, verdict, band)
    return replace(row, passed=ruled.passed, p_pass=ruled.p_pass, rule_state=ruled.state, judged_at=utc_now())


class Decisions:
    """Which policy rows have all their rules in the log, and the decision records still to write.

    ``expect`` registers a row's rule jobs; ``seen`` records a rule row of the log (an earlier one, or one
    just written); ``due`` gives the ``DecisionRecord`` of a row whose every rule has a row with the job's
    key, unless the latest decision record for the id already has that ``rules_key``, decision and band
    (a retried error keeps its key and may change the decision; another band may too) and was decided no
    earlier than the newest rule row of the id (``judged``: the log's, then each row ``seen``; another
    policy's too). ``counts`` tallies the complete rows, ``incomplete`` the others."""

    def __init__(
        self, band: Sequence[float], latest: Mapping[str, DecisionRecord], judged: Mapping[str, str]
    ) -> None:
        self.band = (float(band[0]), float(band[1]))
        self._latest = {k: (v.key, v.decision, v.review_band) for k, v in latest.items()}
        self._decided = {k: v.decided_at or "" for k, v in latest.items()}
        self._judged = dict(judged)  # id -> the newest judged_at of its rule rows
        self._jobs: dict[str, list[Job]] = {}
        self._rows: dict[str, ResultRow] = {}  # record_key -> the rule row with the job's key

    def expect(self, row_id: str, jobs: list[Job]) -> None:
        self._jobs[row_id] = jobs

    def seen(self, row: ResultRow) -> None:
        self._rows[record_key({"id": row.id, "rule_id": row.rule_id})] = row
        if (row.judged_at or "") > self._judged.get(row.id, ""):
            self._judged[row.id] = row.judged_at or ""

    def _decision(self, row_id: str) -> tuple[str, Decision] | None:
        """(rules_key, decision) of a row whose rules are all there, else None."""
        jobs = self._jobs.get(row_id)
        if not jobs:
            return None
        rows = [self._rows.get(record_key({"id": row_id, "rule_id": j.rule_id})) for j in jobs]
        done = [r for r, j in zip(rows, jobs, strict=True) if r is not None and r.key == j.key]
        if len(done) < len(jobs):
            return None
        return rules_key(r.key for r in done), decide([outcome_of(r, self.band) for r in done])

    def counts(self) -> dict[str, int]:
        """How many complete rows have each decision."""
        out: dict[str, int] = {}
        for row_id in self._jobs:
            found = self._decision(row_id)
            if found is not None:
                out[found[1].decision] = out.get(found[1].decision, 0) + 1
        return out

    def incomplete(self) -> int:
        """How many policy rows do not have all their rules in the log."""
        return sum(1 for row_id in self._jobs if self._decision(row_id) is None)

    def due(self, row_ids: Iterable[str]) -> list[DecisionRecord]:
        out = []
        for row_id in dict.fromkeys(row_ids):
            found = self._decision(row_id)
            if found is None:
                continue
            stands = self._latest.get(row_id) == (*found, self.band)
            if stands and self._decided.get(row_id, "") >= self._judged.get(row_id, ""):
                continue
            key, decision = found
            jobs = self._jobs[row_id]
            first = jobs[0]
            self._latest[row_id] = (key, decision, self.band)
            self._decided[row_id] = now = utc_now()
            out.append(
                DecisionRecord(
                    id=row_id,
                    line=first.row.line,
                    key=key,
                    policy=first.identity(),
                    decision=decision,
                    rules=tuple(j.rule_id for j in jobs if j.rule_id is not None),
                    review_band=self.band,
                    decided_at=now,
                )
            )
        return out


def _file_identity(path: Path | None, recorded: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    """``{"file", "sha256", "sha256_from"}`` of a model file: the registry's hash when it recorded one and
    the size still matches (``"registry"``), else the file hashed now, once per run (``"file"``); None
    for both when there is no hash (no file, or one that cannot be read)."""
    from ..registry import sha256_file

    if path is None:
        return {"file": None, "sha256": None, "sha256_from": None}
    sha, size = recorded.get(str(path.resolve()), ("", -1))
    source = "registry"
    try:
        if not sha or path.stat().st_size != size:
            sha, source = sha256_file(path), "file"
    except OSError:
        sha = ""
    return {"file": path.name, "sha256": sha or None, "sha256_from": source if sha else None}


def _recorded() -> dict[str, tuple[str, int]]:
    """The sha256 and size the registry recorded for each installed file (by resolved path)."""
    from ..registry import load_registry

    try:
        models = load_registry().models
    except EdgeJudgeError:
        return {}
    out = {}
    for m in models:
        out[str(Path(m.text_model).resolve())] = (m.text_sha256, m.text_bytes)
        out[str(Path(m.mmproj).resolve())] = (m.mmproj_sha256, m.mmproj_bytes)
    return out


def run_record(
    engine: Engine,
    input_path: Path,
    policies: Sequence[Policy],
    settings: dict[str, Any],
    band: Sequence[float],
    started_at: str,
    shard: tuple[int, int] | None = None,
) -> RunRecord:
    """The audit trail of a policy run (``records.RunRecord``)."""
    from .. import __version__
    from ..prompt import template_sha256
    from ..registry import sha256_file

    recorded = _recorded()
    text, mmproj = engine.model_files
    model = {"name": engine.model_name, **_file_identity(text, recorded)}
    return RunRecord(
        started_at=started_at,
        edgejudge=__version__,
        model=model,
        mmproj=_file_identity(mmproj, recorded),
        policies=tuple(p.identity() for p in policies),
        template_sha256=template_sha256(),
        input={"file": str(input_path), "sha256": sha256_file(input_path)},
        settings=dict(settings),
        review_band=(float(band[0]), float(band[1])),
        shard=shard,
    )
