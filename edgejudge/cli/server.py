"""``edgejudge server build`` and ``edgejudge server start``: llama.cpp's llama-server for scale-out.

Thin over ``edgejudge.serverctl``: ``build`` shows the build's progress and prints the binary's path on
stdout; ``start`` runs the server on a judge pair in the foreground, prints its URL on stdout and the
``edgejudge batch`` line that uses it on stderr, and stops it on Ctrl-C or SIGTERM (exit 0).
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.progress import BarColumn, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from ..errors import InputError
from ._common import examples, fail, make_app, make_progress, shown, stderr_console

__all__ = ["register"]

_STAGES = {
    "download": "downloading the llama-cpp-python source",
    "extract": "extracting the source",
    "configure": "configuring llama.cpp",
    "build": "building llama-server",
    "install": "installing llama-server",
}


class _Stopped(Exception):
    """SIGTERM arrived while the server was running in the foreground."""


def register(app: typer.Typer) -> None:
    server = make_app(
        "server",
        "Build and run llama.cpp's llama-server, the scale-out engine of `edgejudge batch --engine "
        "llama-server` (same GGUF pairs, same numerics, parallel slots, prompt cache).",
        epilog=examples(
            "edgejudge server build",
            'edgejudge server build --cmake-args "-DGGML_CUDA=ON"',
            "edgejudge server start prometheus-vision-7b --parallel 4",
            "edgejudge server start judge-Q4_K_M.gguf --port 8081 -- --api-key SECRET",
        ),
    )
    app.add_typer(server, name="server")

    @server.command(
        "build",
        epilog=examples(
            "edgejudge server build",
            'edgejudge server build --cmake-args "-DGGML_CUDA=ON"',
            'edgejudge server build --cmake-args "-DGGML_METAL=ON" --jobs 8',
            'export EDGEJUDGE_LLAMA_SERVER="$(edgejudge server build)"',
        ),
    )
    def build(
        cmake_args: Annotated[
            str | None,
            typer.Option(
                "--cmake-args",
                metavar="ARGS",
                help='Extra cmake configure arguments, e.g. "-DGGML_CUDA=ON" or "-DGGML_METAL=ON" '
                "(a separate cached build).",
            ),
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Rebuild even when a build is cached.")] = False,
        jobs: Annotated[
            int | None,
            typer.Option("--jobs", "-j", min=1, help="Parallel compile jobs (default: the available cores)."),
        ] = None,
    ) -> None:
        """Build llama-server from the llama.cpp that edgejudge's llama-cpp-python bundles, once.

        Downloads the pinned llama-cpp-python source with pip (about 76 MB), builds only the server from
        its vendored llama.cpp with cmake (about 4 minutes on 2 cores; needs cmake and a C++ compiler) and
        keeps the binary in edgejudge's cache folder, by llama.cpp commit: later runs find it and build
        nothing. Prints the binary's path on stdout.
        """
        from ..serverctl import BuildProgress, build_server

        try:
            extra = tuple(shlex.split(cmake_args or ""))
        except ValueError as exc:
            raise InputError(f"--cmake-args cannot be split into arguments: {exc}") from None
        console = stderr_console()
        started = time.monotonic()
        with make_progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("looking for a cached build", total=None)
            seen: set[str] = set()

            def report(event: BuildProgress) -> None:
                if event.stage not in seen:
                    seen.add(event.stage)
                    console.print(f"{_STAGES.get(event.stage, event.stage)}...", highlight=False)
                    progress.update(task, description=_STAGES.get(event.stage, event.stage), total=None)
                if event.percent is not None:
                    progress.update(task, total=100, completed=event.percent)

            result = build_server(cmake_args=extra, force=force, jobs=jobs, progress=report)
        if result.cached:
            console.print(
                shown(
                    f"llama-server {result.key} is already built (nothing downloaded or built): "
                    f"{result.binary}"
                ),
                soft_wrap=True,
            )
        else:
            minutes, seconds = divmod(int(time.monotonic() - started), 60)
            console.print(
                shown(
                    f"built llama-server {result.key} in {minutes}m{seconds:02d}s: {result.binary} "
                    f"(log: {result.log})"
                ),
                soft_wrap=True,
            )
        typer.echo(str(result.binary))

    @server.command(
        "start",
        epilog=examples(
            "edgejudge server start prometheus-vision-7b",
            "edgejudge server start prometheus-vision-7b:Q8_0 --parallel 4 --port 8081",
            "edgejudge server start ./judge-Q4_K_M.gguf --mmproj ./mmproj-judge-F16.gguf",
            "edgejudge server start prometheus-vision-7b --host 0.0.0.0 -- --api-key SECRET -ngl 99",
        ),
    )
    def start(
        model: Annotated[
            str, typer.Argument(metavar="MODEL", help="A registered name, name:QUANT, or a text .gguf path.")
        ],
        extra: Annotated[
            list[str] | None,
            typer.Argument(
                metavar="ARGS", help="Extra llama-server arguments, after --.", show_default=False
            ),
        ] = None,
        mmproj: Annotated[
            Path | None, typer.Option("--mmproj", help="The projector (default: the one beside the model).")
        ] = None,
        host: Annotated[
            str,
            typer.Option(
                "--host", help="Address to listen on (anything but loopback is reachable by others)."
            ),
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")] = 8080,
        parallel: Annotated[
            int, typer.Option("--parallel", min=1, help="Slots: requests decoded at the same time.")
        ] = 1,
        ctx_per_seq: Annotated[
            int | None,
            typer.Option(
                "--ctx-per-seq",
                min=256,
                help="Context tokens of each slot (default: the judge's --n-ctx default); the server gets "
                "--parallel × this.",
                show_default=False,
            ),
        ] = None,
        threads: Annotated[
            int | None,
            typer.Option(
                "--threads",
                "-t",
                min=1,
                help="CPU threads (default: llama-server's choice).",
                show_default=False,
            ),
        ] = None,
        binary: Annotated[
            Path | None,
            typer.Option(
                "--binary",
                help="A llama-server binary (default: EDGEJUDGE_LLAMA_SERVER, else the one "
                "`edgejudge server build` made).",
                show_default=False,
            ),
        ] = None,
        log: Annotated[
            Path | None, typer.Option("--log", help="Append llama-server's own output to this file.")
        ] = None,
    ) -> None:
        """Run llama-server on a judge pair in the foreground until Ctrl-C (or SIGTERM).

        Starts it with edgejudge's flags (the projector, --parallel slots of --ctx-per-seq tokens each,
        a pinned media marker), waits until it is healthy, prints its URL on stdout and the `edgejudge
        batch` command line that uses it. llama-server has no authentication unless you pass --api-key
        after --; keep the default loopback host unless the network is yours.
        """
        from ..serverctl import is_loopback

        console = stderr_console()
        extra_args = list(extra or [])
        if not is_loopback(host) and "--api-key" not in extra_args and "--api-key-file" not in extra_args:
            console.print(
                shown(
                    f"warning: --host {host} makes llama-server reachable from other machines, and it has no "
                    "authentication: pass `-- --api-key KEY` or keep the default 127.0.0.1"
                ),
                style="yellow",
                soft_wrap=True,
            )
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: FrameType | None) -> None:
            raise _Stopped

        signal.signal(signal.SIGTERM, on_term)
        try:
            _serve(model, mmproj, binary, host, port, parallel, ctx_per_seq, threads, extra_args, log)
        except (KeyboardInterrupt, _Stopped):
            console.print("llama-server stopped")
        finally:
            signal.signal(signal.SIGTERM, previous)


def _serve(
    model: str,
    mmproj: Path | None,
    binary: Path | None,
    host: str,
    port: int,
    parallel: int,
    ctx_per_seq: int | None,
    threads: int | None,
    extra: list[str],
    log: Path | None,
) -> None:
    """Start the server, announce it, wait until it ends (an error) or a stop is asked (an exception)."""
    from ..serverctl import MEDIA_MARKER, start_server

    console = stderr_console()
    handle = start_server(
        model,
        mmproj=mmproj,
        binary=binary,
        host=host,
        port=port,
        slots=parallel,
        ctx_per_seq=ctx_per_seq,
        threads=threads,
        extra=extra,
        log=log,
    )
    with handle:
        per_seq = handle.command.n_ctx // parallel
        console.print(
            shown(
                f"llama-server is serving {handle.text.name} + {handle.mmproj.name} at {handle.url} "
                f"({parallel} slot(s) × {per_seq} tokens, media marker {MEDIA_MARKER}, pid "
                f"{handle.process.pid})"
            ),
            soft_wrap=True,
        )
        typer.echo(handle.url)
        console.print(
            shown(
                "judge with it: edgejudge batch IN.jsonl --output OUT.jsonl "
                f"--model {shlex.quote(model)}"
                + (f" --mmproj {shlex.quote(str(mmproj))}" if mmproj is not None else "")
                + f" --engine llama-server --server {handle.url}"
            ),
            soft_wrap=True,
        )
        console.print("press Ctrl-C to stop it", style="dim")
        try:
            code = handle.process.wait()
        except BaseException:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
            console.print("\nstopping llama-server...", style="yellow")
            raise
        tail = handle.log_tail(4)
    fail(
        f"llama-server exited by itself (exit status {code}): {' | '.join(tail.splitlines()) or 'no output'}"
    )
