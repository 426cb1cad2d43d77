"""Checkpoint sources: local directories and hub snapshots pinned to a revision (offline, from the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from edgejudge.convert.source import resolve_source
from edgejudge.errors import ModelNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    snapshot = cache / "models--owner--judge" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return snapshot


def test_revision_selects_the_cached_snapshot(hub_cache: Path) -> None:
    assert resolve_source("owner/judge", revision=COMMIT) == hub_cache


def test_unknown_revision_is_one_clear_error(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_source("owner/judge", revision="f" * 40)
    assert str(info.value).startswith(f"checkpoint owner/judge@{'f' * 40} is not in the local hub cache")
    assert info.value.hint and "\n" not in str(info.value)


def test_local_directory_ignores_revision(tmp_path: Path) -> None:
    assert resolve_source(tmp_path, revision=COMMIT) == tmp_path.resolve()
