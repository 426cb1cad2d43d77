#!/usr/bin/env python3
"""Run edgejudge's property-based fuzz targets with any number of examples and print a table.

Each target is one ``tests/test_fuzz_<target>.py`` file of hypothesis tests (CI runs them with a quick
profile). Here every target runs in its own child process under the "fuzz" profile, so its peak RSS is its
own; the table shows, per target, the examples run, failures, wall time and peak RSS. Exit code 1 when any
target failed: a crash (an exception outside the documented EdgeJudgeError tree), an example over the 5 s
deadline, or one call of the code under test adding more than ``_support.EXAMPLE_BUDGET_MB`` (256 MB) to
the process at its peak (each call is measured alone: the peak RSS is reset before it), or when the whole
process went over ``--budget-mb``. The process peak includes hypothesis's own bookkeeping, which grows with
the number of examples (an empty test over 10,000 examples of JSON-like trees: ~320 MB), hence the larger
default.

    python scripts/fuzz.py                       # 10,000 examples per target
    python scripts/fuzz.py --examples 500 parse  # one target, fewer examples
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
# "N passing examples, M failing examples, K invalid examples" (older hypothesis) or
# "N passing, M failing, and K invalid test cases" (newer)
_PASSING = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,(?: and)? (\d+) invalid")


def targets() -> list[str]:
    return sorted(p.stem.removeprefix("test_fuzz_") for p in TESTS.glob("test_fuzz_*.py"))


def run_target(name: str, examples: int, budget_mb: float) -> dict[str, object]:
    env = {**os.environ, "HYPOTHESIS_PROFILE": "fuzz", "EDGEJUDGE_FUZZ_EXAMPLES": str(examples)}
    began = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--hypothesis-show-statistics",
                str(TESTS / f"test_fuzz_{name}.py"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    passing = failing = 0
    for match in _PASSING.finditer(text):
        passing += int(match.group(1))
        failing += int(match.group(2))
    peak = usage.ru_maxrss / 1024
    ok = code == 0 and peak <= budget_mb
    return {
        "target": name,
        "ok": ok,
        "code": code,
        "examples": passing + failing,
        "failing": failing,
        "seconds": time.perf_counter() - began,
        "peak_mb": peak,
        "log": text,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets to run (default: all of {', '.join(targets())})")
    parser.add_argument("--examples", type=int, default=10_000, help="examples per test (default 10000)")
    parser.add_argument(
        "--budget-mb", type=float, default=1024, help="peak RSS allowed per target process (MB)"
    )
    parser.add_argument("--verbose", action="store_true", help="print every target's pytest output")
    args = parser.parse_args()
    known = targets()
    chosen = args.targets or known
    unknown = [t for t in chosen if t not in known]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)} (known: {', '.join(known)})")
    print(f"{'target':<14} {'examples':>9} {'failing':>8} {'seconds':>8} {'peak MB':>8}  result", flush=True)
    failed = False
    for name in chosen:
        r = run_target(name, args.examples, args.budget_mb)
        verdict = "ok" if r["ok"] else ("over budget" if r["code"] == 0 else "FAILED")
        print(
            f"{name:<14} {r['examples']:>9} {r['failing']:>8} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f}  "
            f"{verdict}",
            flush=True,
        )
        if args.verbose or not r["ok"]:
            tail = str(r["log"])[-6000:]
            print("\n".join("    " + line for line in tail.splitlines()), flush=True)
        failed |= not r["ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
