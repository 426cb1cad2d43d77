"""``edgejudge server build`` / ``edgejudge server start`` as users run them: a real process, a real
llama-server on the tiny model, stopped by SIGTERM or Ctrl-C with nothing left running."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.serverctl import KNOWN_COMMITS, MEDIA_MARKER, cache_key, pinned_version
from tests.helpers.llama_server import free_port, server_binary

runner = CliRunner()
ENTRY = "import sys; from edgejudge.cli import main; sys.argv = ['edgejudge', *sys.argv[1:]]; main()"


def _cli(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _one_error(stderr: str) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _gone(pid: int) -> bool:
    """True when no process ``pid`` runs any more (a zombie of ours counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture()
def started(tiny_gguf: tuple[Path, Path]) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """``edgejudge server start TINY --parallel 2 --ctx-per-seq 256`` running in its own process group:
    (the CLI process, the URL it printed, llama-server's pid). Killed at the end whatever happened."""
    server_binary()
    port = free_port()
    cli = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "server", "start", str(tiny_gguf[0]), "--port", str(port)]
        + ["--parallel", "2", "--ctx-per-seq", "256", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        start_new_session=True,
    )
    try:
        assert cli.stdout is not None
        ready, _, _ = select.select([cli.stdout], [], [], 60)
        assert ready, "no URL printed within 60 s"
        url = cli.stdout.readline().strip()
        children = _children(cli.pid)
        assert len(children) == 1, children
        yield cli, url, children[0]
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()
        for pid in _children(cli.pid):  # pragma: no cover - only when the test failed half-way
            os.kill(pid, signal.SIGKILL)


def _stop_and_check(cli: subprocess.Popen[str], server_pid: int, send: object) -> str:
    send()  # type: ignore[operator]
    _, stderr = cli.communicate(timeout=30)
    assert cli.returncode == 0, stderr
    deadline = time.monotonic() + 5
    while not _gone(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(server_pid), "llama-server outlived edgejudge server start"
    assert "Traceback" not in stderr
    return stderr


def test_start_prints_the_url_and_serves_the_pair(started: tuple[subprocess.Popen[str], str, int]) -> None:
    cli, url, server_pid = started
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    props = httpx.get(f"{url}/props").json()
    assert props["media_marker"] == MEDIA_MARKER
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 256
    assert [s["n_ctx"] for s in httpx.get(f"{url}/slots").json()] == [256, 256]
    stderr = _stop_and_check(cli, server_pid, lambda: cli.send_signal(signal.SIGTERM))
    assert f"--engine llama-server --server {url}" in stderr
    assert "--model " in stderr.split("judge with it:", 1)[1]  # the printed command names the pair served
    assert "llama-server stopped" in stderr


def test_ctrl_c_stops_the_server(started: tuple[subprocess.Popen[str], str, int]) -> None:
    """Ctrl-C in a terminal reaches the whole foreground process group: edgejudge and llama-server."""
    cli, url, server_pid = started
    assert httpx.get(f"{url}/health").status_code == 200
    stderr = _stop_and_check(cli, server_pid, lambda: os.killpg(cli.pid, signal.SIGINT))
    assert "llama-server stopped" in stderr


def test_start_an_unknown_model_is_one_error() -> None:
    done = _cli("server", "start", "no-such-judge", "--port", str(free_port()))
    assert done.returncode == 1 and done.stdout == ""
    assert "no-such-judge" in _one_error(done.stderr)


def test_start_on_a_port_in_use_is_one_error(tiny_gguf: tuple[Path, Path]) -> None:
    server_binary()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("server", "start", str(tiny_gguf[0]), "--port", str(port), "--threads", "1")
    assert done.returncode == 1 and done.stdout == ""
    assert f"port {port} on 127.0.0.1 is already in use" in _one_error(done.stderr)


def test_a_public_host_is_warned_about_unless_an_api_key_is_passed() -> None:
    """The warning comes before anything starts (here the model is unknown, so nothing does)."""
    warned = _cli("server", "start", "no-such-judge", "--host", "0.0.0.0")
    assert warned.returncode == 1
    assert "warning: --host 0.0.0.0" in warned.stderr and "--api-key" in warned.stderr
    _one_error(warned.stderr)
    keyed = _cli("server", "start", "no-such-judge", "--host", "0.0.0.0", "--", "--api-key", "k")
    assert keyed.returncode == 1 and "warning" not in keyed.stderr


def test_build_cache_hit_prints_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the build in the cache: no download, no cmake (PATH holds no program), the path on stdout."""
    cache = tmp_path / "cache"
    key = cache_key(KNOWN_COMMITS[pinned_version()])
    cached = cache / "llama-server" / key / "llama-server"
    cached.parent.mkdir(parents=True)
    shutil.copy2(server_binary(), cached)
    (tmp_path / "no-bin").mkdir()
    done = _cli("server", "build", env={"EDGEJUDGE_CACHE": str(cache), "PATH": str(tmp_path / "no-bin")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{cached}\n"
    assert "already built" in done.stderr and "nothing downloaded or built" in done.stderr
    assert sorted(p.name for p in (cache / "llama-server").iterdir()) == [key]


def test_build_with_unsplittable_cmake_args_is_a_usage_error() -> None:
    result = runner.invoke(app, ["server", "build", "--cmake-args", '"-DGGML_CUDA=ON'])
    assert result.exit_code == 1
    assert "--cmake-args cannot be split" in _one_error(result.stderr)


def test_help_shows_examples() -> None:
    for command in (["server"], ["server", "build"], ["server", "start"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.stdout, command
