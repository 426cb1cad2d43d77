"""Shards of a batch: ``--shard K/N`` takes a stable share of the rows by id, so that N machines running
their own batch over the same input judge every row exactly once between them (``edgejudge merge`` joins
their logs). A row's shard depends on its id alone (sha256, not Python's salted ``hash``), never on its
place in the file, so adding, removing or reordering rows moves no other row to another shard."""

from __future__ import annotations

import hashlib

from ..errors import InputError

__all__ = ["parse_shard", "shard_of", "in_shard"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) as ``(K, N)``; InputError otherwise."""
    k_text, sep, n_text = text.strip().partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise InputError(
            f"shard {text!r} is not K/N with 1 <= K <= N", hint="give the shard as K/N, e.g. 1/4 ... 4/4"
        )
    return k, n


def shard_of(row_id: str, n: int) -> int:
    """The shard (1..n) of the row with id ``row_id``."""
    digest = hashlib.sha256(row_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def in_shard(row_id: str, shard: tuple[int, int] | None) -> bool:
    """True when the row belongs to ``shard`` (K, N); every row belongs to no shard (None)."""
    return shard is None or shard_of(row_id, shard[1]) == shard[0]
