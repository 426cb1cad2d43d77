"""The shared model/generation options: ``with_generation_options`` (one declaration for judge, batch and
tui) and ``GenerationOptions.cli_args`` (what batch's resume hint repeats)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from edgejudge.cli._common import GenerationOptions, make_app, with_generation_options

runner = CliRunner()


def _app(seen: list[tuple[str, GenerationOptions]]) -> typer.Typer:
    app = make_app("t", "test")

    @app.command("go")
    @with_generation_options
    def go(name: str, *, options: GenerationOptions) -> None:
        seen.append((name, options))

    @app.command("other")
    def other() -> None:
        pass

    return app


def test_the_shared_options_reach_the_command_as_one_record() -> None:
    seen: list[tuple[str, GenerationOptions]] = []
    app = _app(seen)
    args = ["go", "x", "--model", "tiny:Q8_0", "--mmproj", "p.gguf", "--samples", "3", "--temperature", "0"]
    args += ["--seed", "7", "--max-tokens", "64", "--image-fit", "PAD", "--n-gpu-layers", "0"]
    args += ["--threads", "2", "--n-ctx", "2048", "--no-grammar"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == [
        (
            "x",
            GenerationOptions(
                model="tiny:Q8_0",
                mmproj=Path("p.gguf"),
                samples=3,
                temperature=0.0,
                seed=7,
                max_tokens=64,
                image_fit="pad",
                n_gpu_layers=0,
                threads=2,
                n_ctx=2048,
                grammar=False,
            ),
        )
    ]
    assert runner.invoke(app, ["go", "y"]).exit_code == 0
    assert seen[-1] == ("y", GenerationOptions())
    help_text = runner.invoke(app, ["go", "--help"]).output
    for flag in ("--model", "--temperature", "--no-grammar", "--n-ctx", "Generation", "Model"):
        assert flag in help_text


def test_bad_image_fit_is_a_usage_error() -> None:
    result = runner.invoke(_app([]), ["go", "x", "--image-fit", "stretch"])
    assert result.exit_code == 2 and "--image-fit" in result.output


def test_cli_args_repeat_only_what_differs_from_the_defaults() -> None:
    assert GenerationOptions().cli_args() == []
    options = GenerationOptions(model="tiny", temperature=0.0, seed=3, grammar=False)
    assert options.cli_args() == ["--model=tiny", "--temperature=0.0", "--seed=3", "--no-grammar"]


def test_stage_progress_shows_stage_names_as_typed() -> None:
    import io

    from rich.console import Console

    from edgejudge.cli._console import StageProgress

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    with StageProgress(console) as progress:
        progress("reading shard[/bold]", 3, 10)
        progress("reading shard[/bold]", 10, 10)
    assert "reading shard[/bold]" in buffer.getvalue()
