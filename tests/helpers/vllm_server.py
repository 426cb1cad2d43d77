"""A real vLLM server for tests: ``running_vllm(folder)`` starts one on a free loopback port.

The server runs from the environment ``scripts/install_vllm.sh`` creates: its python is
``EDGEJUDGE_VLLM_PYTHON`` (scripts/test.sh exports it, and ``EDGEJUDGE_REQUIRE_VLLM=1``, when that
environment exists). Without it a test is skipped, naming the script, unless ``EDGEJUDGE_REQUIRE_VLLM=1``
makes that a failure. The flags are the ones the README documents for a CPU (``SERVE_FLAGS``), the KV cache
is 1 GiB (``VLLM_CPU_KVCACHE_SPACE``) and vLLM's caches go to a temporary folder. The server (a process
group: vLLM starts an engine process of its own) is always stopped.

    with running_vllm(llava_hf_folder) as server:
        httpx.get(f"{server.url}/v1/models")
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.llama_server import free_port

__all__ = ["SERVE_FLAGS", "VllmServer", "running_vllm", "vllm_python", "require_vllm"]

#: What the server needs besides --model/--host/--port (docs: engines.md "vLLM on CPU").
SERVE_FLAGS = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--chat-template-content-format",
    "string",
    "--enable-prompt-tokens-details",
)


def require_vllm() -> bool:
    """True when a missing vLLM environment must fail the test instead of skipping it."""
    return os.environ.get("EDGEJUDGE_REQUIRE_VLLM", "").strip() == "1"


def vllm_python() -> Path:
    """The vLLM environment's python, or a skip (a failure under ``EDGEJUDGE_REQUIRE_VLLM=1``)."""
    value = os.environ.get("EDGEJUDGE_VLLM_PYTHON", "").strip()
    python = Path(value) if value else None
    if python is not None and python.is_file() and os.access(python, os.X_OK):
        return python
    reason = (
        f"EDGEJUDGE_VLLM_PYTHON={value} is not an executable python"
        if value
        else "no vLLM environment (EDGEJUDGE_VLLM_PYTHON is unset)"
    ) + ": create it with scripts/install_vllm.sh and set EDGEJUDGE_VLLM_PYTHON to its bin/python"
    if require_vllm():
        pytest.fail(reason + " (EDGEJUDGE_REQUIRE_VLLM=1)", pytrace=False)
    pytest.skip(reason)


@dataclass
class VllmServer:
    """A started server: ``url``, its ``process`` and the ``log`` file of its output."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


@contextmanager
def running_vllm(
    folder: Path,
    *,
    max_model_len: int = 2048,
    extra: Sequence[str] = (),
    timeout: float = 300.0,
) -> Iterator[VllmServer]:
    """A healthy vLLM server on the llava-hf ``folder`` (served under its path), stopped on exit."""
    python = vllm_python()
    with tempfile.TemporaryDirectory(prefix="edgejudge-vllm-") as tmp:
        root = Path(tmp)
        env = dict(os.environ)
        env.update(
            VLLM_TARGET_DEVICE="cpu",
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CACHE_ROOT=str(root / "vllm-cache"),
            TORCHINDUCTOR_CACHE_DIR=str(root / "inductor"),
            HF_HUB_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_DO_NOT_TRACK="1",
        )
        port = free_port()
        command = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(folder),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            str(max_model_len),
            *SERVE_FLAGS,
            *extra,
        ]
        log = root / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
            )
        server = VllmServer(f"http://127.0.0.1:{port}", process, log)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"vLLM exited with {process.returncode}:\n{server.log_tail()}")
                try:
                    if httpx.get(f"{server.url}/health", timeout=2.0, trust_env=False).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vLLM not healthy after {timeout:.0f} s:\n{server.log_tail()}")
                time.sleep(0.5)
            yield server
        finally:
            server.stop()
