"""``edgejudge merge``: being written (issue #11); registered here so the command list is edited once."""

from __future__ import annotations

from typing import Any


def register(app: Any) -> None:
    """Nothing yet."""
