"""The CLS-order self-test on the installed llama.cpp: its verdict, its fidelity numbers and its cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgejudge.config import cache_dir
from edgejudge.probe import cache_key, rel_err, run_selftest, runtime_cls_position


@pytest.fixture(scope="module")
def report():  # type: ignore[no-untyped-def]
    return run_selftest()


def test_selftest_detects_this_runtime(report) -> None:  # type: ignore[no-untyped-def]
    # llama-cpp-python 0.3.36 (pinned) concatenates CLS after the patches: ggml-org/llama.cpp#25814
    assert report.cls_position == "last"
    assert report.vision_rel_err < 5e-3
    assert 0.0 <= report.text_max_abs_err < 0.05


def test_runtime_position_is_cached(report) -> None:  # type: ignore[no-untyped-def]
    assert runtime_cls_position() == report.cls_position
    data = json.loads((cache_dir() / "cls-selftest.json").read_text())
    entry = data[cache_key()]
    assert entry["cls_position"] == report.cls_position
    assert set(entry) == {"cls_position", "text_max_abs_err", "vision_rel_err", "seconds"}


def test_cache_key_names_the_runtime() -> None:
    import llama_cpp

    assert llama_cpp.__version__ in cache_key() and "libmtmd" in cache_key()


def test_stale_cache_entry_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A cache written for another runtime (other key) does not decide this runtime's answer."""
    monkeypatch.setenv("EDGEJUDGE_CACHE", str(tmp_path))
    other = {"llama-cpp-python 9.9.9 libmtmd 1 1": {"cls_position": "first"}}
    (tmp_path / "cls-selftest.json").write_text(json.dumps(other))
    assert runtime_cls_position() == "last"
    data = json.loads((tmp_path / "cls-selftest.json").read_text())
    assert set(data) == {*other, cache_key()}


def test_rel_err() -> None:
    a = np.ones((2, 3))
    assert rel_err(a, a) == 0.0
    assert rel_err(a * 1.01, a) == pytest.approx(0.01)
