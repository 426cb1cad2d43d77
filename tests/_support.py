"""Test-only helpers shared by the hardening and fuzz tests.

- ``only_documented(fn, *args)``: call ``fn``; an ``EdgeJudgeError`` (the documented tree) is fine and
  returned, anything else propagates and fails the test (hypothesis then shrinks the input); the call's own
  peak memory must stay under ``EXAMPLE_BUDGET_MB``.
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


#: What one call under ``only_documented`` may add to the process's resident memory at its peak.
EXAMPLE_BUDGET_MB = 256


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> int | None:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5); the current RSS in KiB,
    or None where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


def only_documented(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with an EdgeJudgeError returned instead of raised; other errors propagate.

    The call's own peak memory is bounded too: the process's peak RSS is reset before the call (Linux),
    and what the call added at its peak must stay under ``EXAMPLE_BUDGET_MB`` (hypothesis's bookkeeping,
    which grows with the number of examples, is not counted: it happens between calls)."""
    before = _reset_peak()
    try:
        result = fn(*args, **kwargs)
    except EdgeJudgeError as err:
        assert str(err).strip(), "an EdgeJudgeError must carry a message"
        assert "\n" not in str(err), "an EdgeJudgeError's message must be one line"
        result = err
    peak = _status_kib("VmHWM") if before is not None else None
    if before is not None and peak is not None:
        grew_mb = (peak - before) / 1024
        assert grew_mb < EXAMPLE_BUDGET_MB, f"one call took {grew_mb:.0f} MB at its peak"
    return result


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    elapsed_s: float


#: Runs in a small fresh interpreter between the test process and the measured command. Linux carries a
#: process's peak RSS across fork+exec (``ru_maxrss`` of an exec'd child starts at its parent's high-water
#: mark, and vfork/posix_spawn children inherit pytest's, hundreds of MB), so the command is started from
#: this ~10 MB process instead, and its own ``ru_maxrss`` is reported back through a file.
_SPAWNER = """
import json, os, subprocess, sys, time
args, timeout, report = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
deadline = time.monotonic() + timeout
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    if time.monotonic() > deadline:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        with open(report, "w") as fh:
            json.dump({"timeout": True}, fh)
        sys.exit(0)
    time.sleep(0.01)
with open(report, "w") as fh:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}, fh)
"""


def run_measured(
    args: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None, cwd: str | None = None
) -> Measured:
    """Run ``args`` to completion; ``peak_rss_mb`` is that command's own peak RSS (see ``_SPAWNER``)."""
    import json

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        with open(os.path.join(tmp, "out"), "w+b") as out, open(os.path.join(tmp, "err"), "w+b") as err:
            proc = subprocess.run(
                [sys.executable, "-S", "-c", _SPAWNER, json.dumps(list(args)), str(timeout), report],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                timeout=timeout + 30,
                check=False,
            )
            with open(report) as fh:
                result = json.load(fh)
            if result.get("timeout"):
                raise subprocess.TimeoutExpired(list(args), timeout)
            assert proc.returncode == 0, "the measuring wrapper failed"
            out.seek(0)
            err.seek(0)
            return Measured(
                returncode=int(result["code"]),
                stdout=out.read().decode("utf-8", "replace"),
                stderr=err.read().decode("utf-8", "replace"),
                peak_rss_mb=result["maxrss_kib"] / 1024,  # Linux: KiB
                elapsed_s=time.perf_counter() - began,
            )


def cli(*args: str) -> list[str]:
    """argv that runs the edgejudge command line in a child process with this interpreter."""
    return [sys.executable, "-c", "from edgejudge.cli import main; main()", *args]
