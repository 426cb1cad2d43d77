"""Shared test fixtures: an isolated environment and the tiny real LLaVA judge.

Nothing here touches the user's home: ``pytest_configure`` points every edgejudge, XDG and Hugging Face
directory at a session temp dir (so subprocesses inherit it too) and forbids hub network access; each test
then gets its own ``EDGEJUDGE_HOME``. The CLS self-test cache lives in the session dir, so it runs once.

``tiny_checkpoint`` / ``tiny_gguf`` / ``tiny_gguf_q4`` build a random-weight LLaVA-1.5 checkpoint in the
real layout and convert it with the real converter; tests run it on real llama.cpp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from edgejudge.engine.fake import FakeEngine

if TYPE_CHECKING:
    from edgejudge.cli._options import GenerationOptions

# Property-based tests (tests/test_fuzz_*.py): a quick profile by default (CI), and "fuzz" for
# scripts/fuzz.py, which sets EDGEJUDGE_FUZZ_EXAMPLES. Every example must finish within the deadline.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("EDGEJUDGE_FUZZ_EXAMPLES_CI", "60")),
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("EDGEJUDGE_FUZZ_EXAMPLES", "10000")),
    deadline=5000,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="edgejudge-tests-"))

_SCRUBBED = ("EDGEJUDGE_DEFAULT_MODEL", "EDGEJUDGE_DEBUG", "EDGEJUDGE_MODELS_DIR", "NO_COLOR", "HF_TOKEN")


def pytest_configure(config: pytest.Config) -> None:
    # the real llama-server build in the user's cache stays findable once the cache is replaced below
    if not os.environ.get("EDGEJUDGE_LLAMA_SERVER", "").strip():
        from edgejudge.serverctl import find_server_binary

        binary = find_server_binary()
        if binary is not None:
            os.environ["EDGEJUDGE_LLAMA_SERVER"] = str(binary)
    env = {
        "EDGEJUDGE_HOME": _SESSION_ROOT / "home",
        "EDGEJUDGE_CACHE": _SESSION_ROOT / "cache",
        "XDG_DATA_HOME": _SESSION_ROOT / "xdg-data",
        "XDG_CACHE_HOME": _SESSION_ROOT / "xdg-cache",
        "XDG_CONFIG_HOME": _SESSION_ROOT / "xdg-config",
        "HF_HOME": _SESSION_ROOT / "hf",
    }
    for key, path in env.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    for key in _SCRUBBED:
        os.environ.pop(key, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test gets its own data dir (registry, installed models); the cache stays session-wide."""
    home = tmp_path / "edgejudge-home"
    home.mkdir()
    monkeypatch.setenv("EDGEJUDGE_HOME", str(home))
    for key in _SCRUBBED:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """A tiny random-weight LLaVA-1.5 checkpoint (original layout, BF16 zip-pickle shards)."""
    from edgejudge.fixtures.tiny import make_tiny_llava

    return make_tiny_llava(_SESSION_ROOT / "fixtures" / "tiny-bin", fmt="bin")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_checkpoint: Path) -> tuple[Path, Path]:
    """(text model, mmproj) converted at F16/F16 by the real converter."""
    from edgejudge import convert_checkpoint

    result = convert_checkpoint(
        tiny_checkpoint, _SESSION_ROOT / "fixtures" / "gguf-f16", name="tiny", quant="F16", mmproj_quant="F16"
    )
    return result.text_model, result.mmproj


@pytest.fixture(scope="session")
def tiny_gguf_q4(tiny_checkpoint: Path) -> tuple[Path, Path]:
    """(text model, mmproj) converted at Q4_K_M/F16 by the real converter."""
    from edgejudge import convert_checkpoint

    result = convert_checkpoint(
        tiny_checkpoint,
        _SESSION_ROOT / "fixtures" / "gguf-q4",
        name="tiny",
        quant="Q4_K_M",
        mmproj_quant="F16",
    )
    return result.text_model, result.mmproj


@pytest.fixture()
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory for a test's own files."""
    path = tmp_path / "work"
    path.mkdir()
    yield path


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The CLI's judge replaced by one scripted FakeEngine (CLI plumbing only, never llama.cpp tests)."""
    from edgejudge.cli import _common
    from edgejudge.judge import Judge

    engine = FakeEngine(model_name="fake-judge")
    monkeypatch.setattr(_common, "JUDGE_FACTORY", lambda options: Judge(engine, image_fit=options.image_fit))
    return engine


@pytest.fixture()
def fake_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeEngine]]:
    """The CLI's judge factory replaced by one that makes a new FakeEngine per command (listed in order)."""
    from edgejudge.cli import _common
    from edgejudge.judge import Judge

    engines: list[FakeEngine] = []

    def factory(options: GenerationOptions) -> Judge:
        engines.append(FakeEngine())
        return Judge(engines[-1], image_fit=options.image_fit)

    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    yield engines
