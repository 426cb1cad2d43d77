"""Prompt bookkeeping of the llama.cpp engine, in plain values: a tokenized prompt as *units* (text token
ids; one ``(pixels_sha256, i)`` per image position), the longest common prefix of two prompts, and how
``generate_many`` groups requests into parallel sequences (the shared prefix, the KV cells a group needs).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import TAIL_RESERVE, GenerationParams, PromptParts

if TYPE_CHECKING:
    from ..native.mtmd import Chunk, Chunks

__all__ = ["Request", "lcp", "units_of", "shared_prefix", "cells", "group_requests"]

#: Each chunk's (start, end) span in the units, with the chunk.
Layout = list[tuple[int, int, "Chunk"]]


def lcp(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def units_of(chunks: Chunks, sha: str) -> tuple[list[Hashable], Layout]:
    """The prompt as units (text token ids; ``(sha, i)`` per image position) and each chunk's span."""
    layout: Layout = []
    units: list[Hashable] = []
    for c in chunks:
        start = len(units)
        units.extend(c.tokens if c.is_text else [(sha, i) for i in range(c.n_pos)])
        layout.append((start, len(units), c))
    return units, layout


@dataclass(frozen=True)
class Request:
    """One prompt of ``generate_many``, tokenized: its chunks (alive until the call ends) and units."""

    parts: PromptParts
    params: GenerationParams
    chunks: Chunks
    units: list[Hashable]
    layout: Layout


def shared_prefix(group: Sequence[Request]) -> int | None:
    """Units every prompt of ``group`` starts with, image included and at least one unit short of the
    shortest prompt (each sequence evaluates a tail of its own); None when the image is not shared."""
    first = group[0]
    shared = min(len(r.units) for r in group) - 1
    for other in group[1:]:
        shared = min(shared, lcp(first.units, other.units))
    image_end = max((end for _, end, c in first.layout if not c.is_text), default=0)
    return shared if shared >= image_end else None


def cells(group: Sequence[Request], shared: int) -> int:
    """KV cells a group with ``shared`` prefix units may need: the prefix once, then each tail, its
    max_tokens and, when constrained, room for a forced tail after them."""
    extra = sum(r.params.max_tokens + (TAIL_RESERVE if r.params.constrained else 0) for r in group)
    return shared + sum(len(r.units) - shared for r in group) + extra


def group_requests(requests: Sequence[Request], max_group: int, n_ctx: int) -> list[list[Request]]:
    """Consecutive requests with the same image, up to ``max_group`` whose prompts and budgets fit
    ``n_ctx`` cells together; in order."""
    groups: list[list[Request]] = []
    for req in requests:
        group = groups[-1] if groups else None
        if (
            group is not None
            and len(group) < max_group
            and req.parts.pixels_sha256 == group[0].parts.pixels_sha256
        ):
            shared = shared_prefix([*group, req])
            if shared is not None and cells([*group, req], shared) <= n_ctx:
                group.append(req)
                continue
        groups.append([req])
    return groups
