"""Test-only helpers shared by the hardening and fuzz tests.

- ``only_documented(fn, *args)``: call ``fn``; an ``EdgeJudgeError`` (the documented tree) is fine and
  returned, anything else propagates and fails the test (hypothesis then shrinks the input).
- ``run_measured(args)``: run a command in a child process and return its exit code, output and peak RSS
  (from ``os.wait4``, that child alone), for regressions that are about memory.
- ``cli(*args)``: the ``edgejudge`` command line as a child-process argv (``python -m edgejudge.cli``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgejudge.errors import EdgeJudgeError

__all__ = ["only_documented", "Measured", "run_measured", "cli"]


def only_documented(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with an EdgeJudgeError returned instead of raised; other errors propagate."""
    try:
        return fn(*args, **kwargs)
    except EdgeJudgeError as err:
        assert str(err).strip(), "an EdgeJudgeError must carry a message"
        assert "\n" not in str(err), "an EdgeJudgeError's message must be one line"
        return err


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    elapsed_s: float


def run_measured(
    args: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None, cwd: str | None = None
) -> Measured:
    """Run ``args`` to completion; the peak RSS is the child's own (``ru_maxrss`` from ``os.wait4``)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise subprocess.TimeoutExpired(list(args), timeout)
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            peak_rss_mb=usage.ru_maxrss / 1024,  # Linux: KiB
            elapsed_s=time.perf_counter() - began,
        )


def cli(*args: str) -> list[str]:
    """argv that runs the edgejudge command line in a child process with this interpreter."""
    return [sys.executable, "-c", "from edgejudge.cli import main; main()", *args]
