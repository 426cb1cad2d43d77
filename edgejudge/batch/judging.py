"""Judging one group of a batch: the jobs decoded together, and the result rows they give.

``groups`` cuts the jobs into groups decoded as parallel sequences, each written as soon as it is judged:
the rule jobs of one policy row stay together in chunks of at most ``max_parallel`` (the waves the engine
would decode anyway; its sequence 0 keeps the shared prefix between calls, so the next chunk of the row
reuses the image and the text up to the rubric), so a kill or a stop loses at most one chunk; further rows
on the same image join a group while it stays within ``max_parallel``.
``judge_jobs`` judges a group (each image file read, decoded and fitted once per group, checked against the
hash its key was made from) and turns every outcome into a ``ResultRow``; any ``EdgeJudgeError`` becomes
that job's error row, never raised. ``digest_of`` hashes each image file once per run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fs
from .._fs import FileStamp
from ..errors import EdgeJudgeError
from .policy_run import Job, rule_base, rule_done
from .result import ResultRow, base_row, error_row, ok_row
from .rows import BatchRow, image_digest, resolve_image

if TYPE_CHECKING:
    from ..engine.base import GenerationParams
    from ..images import FittedImage
    from ..judge import Judge, Task

__all__ = ["Digests", "digest_of", "groups", "judge_jobs"]

#: Each image file's digest and stamp, by resolved path (hashed once per run).
Digests = dict[Path, tuple[str, "FileStamp | None"]]


def digest_of(row: BatchRow, root: Path, cache: Digests) -> tuple[str | None, FileStamp | None]:
    """The row's image digest and file stamp: each image file hashed once per run (``cache`` by path)."""
    if row.image is None or row.problem is not None:
        return None, None
    path = resolve_image(row.image, root)
    if path not in cache:
        cache[path] = image_digest(path)
    return cache[path]


def groups(todo: Sequence[Job], size: int) -> list[list[Job]]:
    """The jobs in groups of at most ``size`` (see the module docstring): consecutive judgeable jobs on the
    same image; jobs with a problem or without an image digest stand alone, unless they are rules of one
    row (chunks of ``size``)."""
    size = max(1, size)
    blocks: list[list[Job]] = []
    for job in todo:
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and len(last) < size
            and job.rule is not None
            and last[0].rule is not None
            and last[0].row.id == job.row.id
        ):
            last.append(job)
        else:
            blocks.append([job])
    out: list[list[Job]] = []
    for block in blocks:
        last = out[-1] if out else None
        if (
            last is not None
            and len(last) + len(block) <= size
            and all(_judgeable(j) for j in block)
            and all(_judgeable(j) for j in last)
            and last[0].digest == block[0].digest
        ):
            last.extend(block)
        else:
            out.append(list(block))
    return out


def _judgeable(job: Job) -> bool:
    return job.digest is not None and job.row.problem is None


def _task(
    judge: Judge,
    row: BatchRow,
    root: Path,
    digest: str | None,
    stamp: FileStamp | None,
    fitted: dict[str, FittedImage],
) -> Task:
    """The judge's task for a row: its image read, decoded and fitted once per image file of a group
    (``fitted`` by digest) and not hashed again when the read's stamp equals the ``stamp`` from hashing (the
    same version of the file, unchanged from the hash's open to the read's last byte). Otherwise (a file
    written just before it was hashed, while it was hashed, since, or while it is read) the bytes read are
    hashed and must be the ones the key was made from. A missing, unreadable or broken image is an error."""
    from ..errors import InvalidImageError
    from ..images import MAX_FILE_BYTES
    from ..judge import Task

    assert row.image is not None and row.instruction is not None and row.response is not None
    assert row.rubric is not None
    image = fitted.get(digest) if digest is not None else None
    if image is None:
        path = resolve_image(row.image, root)
        data, now = _fs.read_stamped(
            path,
            label=f"{row.image} (looked at {path})",
            what="image",
            max_bytes=MAX_FILE_BYTES,
            error=InvalidImageError,
        )
        if (stamp is None or now != stamp) and _file_sha(data, digest) not in (None, digest):
            raise InvalidImageError(
                f"image {row.image} changed while the batch was running (looked at {path})",
                hint="run the batch again: the row is judged with the new image",
            )
        image = judge.fit(data, name=row.image)
        if digest is not None:
            fitted[digest] = image
    return Task(image, row.instruction, row.response, row.rubric, row.reference, image_name=row.image)


def judge_jobs(
    judge: Judge,
    group: list[Job],
    root: Path,
    settings: dict[str, Any],
    samples: int,
    params: GenerationParams,
    digests: Digests,
    band: Sequence[float],
) -> list[ResultRow]:
    """Judge a group of jobs in one go; any EdgeJudgeError becomes that job's error row (never raised).
    A rule job's row carries the rule's fields and its outcome under ``band``."""
    began = time.perf_counter()
    results: list[ResultRow | None] = [None] * len(group)
    tasks: list[Task] = []
    bases: list[tuple[int, ResultRow]] = []
    fitted: dict[str, FittedImage] = {}
    for k, job in enumerate(group):
        row, digest = job.row, job.digest
        sha = digest.removeprefix("sha256:") if digest is not None and digest.startswith("sha256:") else None
        base = base_row(row, job.key, root, settings, judge.engine.image_size, image_sha256=sha)
        if job.rule_id is not None:
            base = rule_base(base, job)
        if row.problem is not None:
            results[k] = _done(error_row(base, row.problem, row.hint, began), job, None, band)
            continue
        try:
            tasks.append(_task(judge, row, root, digest, digest_of(row, root, digests)[1], fitted))
        except EdgeJudgeError as err:
            results[k] = _done(error_row(base, str(err), err.hint, began), job, None, band)
            continue
        bases.append((k, base))
    verdicts = judge.evaluate_tasks(tasks, samples=samples, params=params) if tasks else []
    for (k, base), verdict in zip(bases, verdicts, strict=True):
        if isinstance(verdict, EdgeJudgeError):
            results[k] = _done(error_row(base, str(verdict), verdict.hint, began), group[k], None, band)
        else:
            results[k] = _done(ok_row(base, verdict, began), group[k], verdict, band)
    return [r for r in results if r is not None]


def _done(row: ResultRow, job: Job, verdict: Any, band: Sequence[float]) -> ResultRow:
    return row if job.rule_id is None else rule_done(row, job, verdict, band)


def _file_sha(data: bytes, digest: str | None) -> str | None:
    """``sha256:<hex>`` of ``data`` when ``digest`` is such a hash (else None: nothing to compare)."""
    if digest is None or not digest.startswith("sha256:"):
        return None
    return "sha256:" + hashlib.sha256(data).hexdigest()
