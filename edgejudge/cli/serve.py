"""``edgejudge serve``: the judge as a shared HTTP service (``edgejudge.serve``: FastAPI on uvicorn).

Parses the options (the shared model/runtime options; their generation values become the defaults of
requests that leave them out), checks the bind before loading (a host other than loopback needs an API
key: a usage error, exit 2), loads the judge once and serves until SIGTERM/SIGINT (exit 0). The URL goes
to stdout once the server listens; messages go to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..serve.options import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_SEQUENCES,
    DEFAULT_PORT,
    MAX_BODY_MB,
)
from ._common import (
    EXIT_USAGE,
    GenerationOptions,
    examples,
    fail,
    read_text_file,
    stderr_console,
    with_generation_options,
)

__all__ = ["register"]

_PANEL = "Server"


def _api_key(path: Path | None) -> str | None:
    from .. import config

    if path is None:
        return config.serve_api_key()
    key = read_text_file(path, option="--api-key-file").strip()
    if not key or len(key.split()) != 1:
        fail(
            f"--api-key-file {path} holds no key (or more than one word)",
            "write the key alone on one line in that file",
            code=EXIT_USAGE,
        )
    return key


def register(app: typer.Typer) -> None:
    @app.command(
        "serve",
        epilog=examples(
            "edgejudge serve",
            "edgejudge serve -m prometheus-vision-7b --port 9000 --temperature 0",
            "edgejudge serve --host 0.0.0.0 --api-key-file ~/.edgejudge-key",
            "curl -s localhost:8765/v1/judge -F image=@cat.jpg -F instruction='What is it?' "
            "-F response='A cat.'",
        ),
    )
    @with_generation_options
    def serve(
        host: Annotated[
            str,
            typer.Option(
                "--host",
                help="Address to listen on (not loopback: needs an API key).",
                rich_help_panel=_PANEL,
            ),
        ] = "127.0.0.1",
        port: Annotated[
            int,
            typer.Option("--port", min=0, max=65535, help="Port (0: any free one).", rich_help_panel=_PANEL),
        ] = DEFAULT_PORT,
        api_key_file: Annotated[
            Path | None,
            typer.Option(
                "--api-key-file",
                help="A file holding the API key clients send as 'Authorization: Bearer KEY' (default: "
                "EDGEJUDGE_SERVE_API_KEY; neither: no key, loopback only).",
                rich_help_panel=_PANEL,
            ),
        ] = None,
        max_queue: Annotated[
            int,
            typer.Option(
                "--max-queue", min=1, help="Requests that may wait; more get 429.", rich_help_panel=_PANEL
            ),
        ] = 64,
        gather_ms: Annotated[
            float,
            typer.Option(
                "--gather-ms",
                min=0,
                max=10_000,
                help="How long a request waits for same-image requests to decode with it.",
                rich_help_panel=_PANEL,
            ),
        ] = 10.0,
        max_body_mb: Annotated[
            int,
            typer.Option(
                "--max-body-mb",
                min=1,
                max=MAX_BODY_MB,
                help="Largest request body in MiB (2^20 bytes; an image travels as base64, 4/3 of its size).",
                rich_help_panel=_PANEL,
            ),
        ] = DEFAULT_MAX_BODY_MB,
        max_sequences: Annotated[
            int,
            typer.Option(
                "--max-sequences",
                min=1,
                max=1_000_000,
                help="Most sequences one request may decode (responses x rubrics x samples; more get 400).",
                rich_help_panel=_PANEL,
            ),
        ] = DEFAULT_MAX_SEQUENCES,
        max_connections: Annotated[
            int,
            typer.Option(
                "--max-connections",
                min=1,
                max=100_000,
                help="Most connections and requests at once (more get 503).",
                rich_help_panel=_PANEL,
            ),
        ] = DEFAULT_MAX_CONNECTIONS,
        drain_timeout: Annotated[
            float,
            typer.Option(
                "--drain-timeout",
                min=0.1,
                max=86_400,
                help="Seconds SIGTERM waits for the requests in flight; then the rest get 503 (a second "
                "signal: at once).",
                rich_help_panel=_PANEL,
            ),
        ] = DEFAULT_DRAIN_TIMEOUT_S,
        body_timeout: Annotated[
            float,
            typer.Option(
                "--body-timeout",
                min=0.1,
                max=86_400,
                help="Seconds a request body may take to arrive in full (then 408).",
                rich_help_panel=_PANEL,
            ),
        ] = DEFAULT_BODY_TIMEOUT_S,
        max_image_pixels: Annotated[
            int | None,
            typer.Option(
                "--max-image-pixels",
                min=1,
                max=64_000_000,
                help="Largest decoded image in pixels (default and most: 64,000,000, as judge and batch).",
                rich_help_panel=_PANEL,
            ),
        ] = None,
        no_coalesce: Annotated[
            bool,
            typer.Option(
                "--no-coalesce",
                help="Judge every request alone (no same-image groups).",
                rich_help_panel=_PANEL,
            ),
        ] = False,
        *,
        options: GenerationOptions,
    ) -> None:
        """Serve the judge over HTTP: one loaded model shared by many clients and scripts.

        Routes: POST /v1/judge (one verdict, exactly as [bold]judge --json[/bold] prints it; multipart
        uploads and streamed feedback too), POST /v1/judge/batch, POST /v1/judge/policy, GET /v1/rubrics
        and /v1/rubrics/NAME, /v1/policies and /v1/policies/NAME, /v1/model, /healthz, /metrics
        (Prometheus), /openapi.json and /docs. Requests queue
        (bounded: a full queue answers 429 with Retry-After); requests on the same image decode together.
        The generation options are the defaults of requests that do not set them. SIGTERM or Ctrl-C
        finishes the requests in flight (at most --drain-timeout seconds; a second signal: at once, the
        rest answered 503) and exits.
        """
        from ..errors import InputError
        from ..serve.options import ServeOptions, check_bind
        from ..serve.run import serve as run_serve
        from ..settings import GenerationSettings

        key = _api_key(api_key_file)
        try:
            check_bind(host, key)
        except InputError as err:
            hint = "give --api-key-file FILE (or set EDGEJUDGE_SERVE_API_KEY), or leave out --host"
            fail(
                err,
                "give --host an address, e.g. 127.0.0.1" if "host" in err.about else hint,
                code=EXIT_USAGE,
            )
        defaults = GenerationSettings(
            temperature=options.temperature,
            top_p=options.top_p,
            repeat_penalty=options.repeat_penalty,
            max_tokens=options.max_tokens,
            seed=options.seed,
            samples=options.samples,
            grammar=options.grammar,
        )
        config = ServeOptions(
            host=host,
            port=port,
            api_key=key,
            max_queue=max_queue,
            gather_ms=gather_ms,
            coalesce=not no_coalesce,
            max_body_bytes=max_body_mb * 2**20,
            max_image_pixels=max_image_pixels,
            max_sequences=max_sequences,
            max_connections=max_connections,
            drain_timeout_s=drain_timeout,
            body_timeout_s=body_timeout,
            defaults=defaults,
        )
        console = stderr_console()
        console.print("edgejudge serve: loading the judge model…", soft_wrap=True)

        def listening(url: str) -> None:
            console.print(f"edgejudge serve: listening on {url} (Ctrl-C or SIGTERM to stop)", soft_wrap=True)
            typer.echo(url)

        if run_serve(options.load_options(), config, on_listening=listening):
            console.print("edgejudge serve: stopped", soft_wrap=True)
            return
        # a generation is still running in the engine (its client was answered 503): end the process now,
        # without tearing the interpreter down under it
        console.print("edgejudge serve: stopped (a generation still running was abandoned)", soft_wrap=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
