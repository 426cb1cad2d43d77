"""A real ``edgejudge serve`` for tests: ``running_serve(model, mmproj, *extra_args)`` starts one on a free
loopback port as a subprocess (``python -m edgejudge serve --model ... --port 0``: the URL it prints
names the port it bound), waits for ``/healthz`` and always stops it (SIGTERM, then SIGKILL after a timeout).

    with running_serve(*tiny_gguf, "--temperature", "0") as server:
        httpx.post(f"{server.url}/v1/judge", json={...}, headers=server.headers)

``api_key`` given: the server gets it through ``EDGEJUDGE_SERVE_API_KEY`` (``.headers`` carries it).
``.stdout``/``.stderr`` are files the server writes to (read them after ``.stop()``, or while it runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ServeHandle", "running_serve", "serve_argv", "image_b64", "png_bytes"]


@dataclass
class ServeHandle:
    """A running server: ``url``, ``proc``, ``api_key`` (None: none), the files of its output."""

    url: str
    proc: subprocess.Popen[bytes]
    api_key: str | None = None
    stdout_file: IO[bytes] | None = None
    stderr_file: IO[bytes] | None = None
    returncode: int | None = field(default=None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: object) -> httpx.Client:
        """An ``httpx.Client`` on this server (with the key, a long timeout)."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120.0, **kwargs)  # type: ignore[arg-type]

    def _read(self, fh: IO[bytes] | None) -> str:
        if fh is None:
            return ""
        fh.flush()
        with open(fh.name, "rb") as again:
            return again.read().decode("utf-8", "replace")

    @property
    def stdout(self) -> str:
        return self._read(self.stdout_file)

    @property
    def stderr(self) -> str:
        return self._read(self.stderr_file)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` (SIGKILL after); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        return self.returncode


def serve_argv(model: Path | str, mmproj: Path | str | None, *extra: str, port: int) -> list[str]:
    argv = [sys.executable, "-m", "edgejudge", "serve", "--model", str(model), "--port", str(port)]
    if mmproj is not None:
        argv += ["--mmproj", str(mmproj)]
    return argv + list(extra)


@contextmanager
def running_serve(
    model: Path | str,
    mmproj: Path | str | None,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    timeout: float = 90.0,
    cwd: Path | None = None,
) -> Iterator[ServeHandle]:
    """A healthy ``edgejudge serve`` (see the module docstring) on ``--port 0``: the port is the one the
    server bound, read from the URL it prints, so no other process can take it in between. ``cwd``: the
    server's working directory (default: the test's)."""
    child_env = {**os.environ, **(env or {})}
    child_env.pop("EDGEJUDGE_SERVE_API_KEY", None)
    if api_key is not None:
        child_env["EDGEJUDGE_SERVE_API_KEY"] = api_key
    handle: ServeHandle | None = None
    with tempfile.TemporaryDirectory(prefix="edgejudge-serve-") as tmp:
        out = open(Path(tmp) / "stdout", "w+b")  # noqa: SIM115 - closed below
        err = open(Path(tmp) / "stderr", "w+b")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                serve_argv(model, mmproj, *extra_args, port=0),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env,
                cwd=cwd,
            )
            handle = ServeHandle("", proc, api_key, out, err)
            if not _wait_healthy(handle, timeout):
                handle.stop()
                raise AssertionError(f"edgejudge serve did not start:\n{handle.stderr[-4000:]}")
            yield handle
        finally:
            if handle is not None:
                handle.stop()
            out.close()
            err.close()


def _wait_healthy(handle: ServeHandle, timeout: float) -> bool:
    """Wait for the URL on the server's stdout, then for ``/healthz`` to answer 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.proc.poll() is not None:
            return False
        if not handle.url:
            printed = handle.stdout.strip().splitlines()
            if printed and printed[0].startswith("http://"):
                handle.url = printed[0].strip()
        if handle.url:
            try:
                if httpx.get(f"{handle.url}/healthz", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    return False


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small PNG made in memory."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def image_b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")
