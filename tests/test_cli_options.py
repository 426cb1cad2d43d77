"""The shared model/generation options: ``with_generation_options`` (one declaration for judge, batch and
tui) and ``GenerationOptions.cli_args`` (what batch's resume hint repeats)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
                n_threads=2,
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


def test_top_p_repeat_penalty_and_verbose_are_options_built_from_the_settings_record() -> None:
    from edgejudge.settings import SETTINGS

    seen: list[tuple[str, GenerationOptions]] = []
    app = _app(seen)
    args = ["go", "x", "--top-p", "0.5", "--repeat-penalty", "1.3", "--verbose", "--parallel", "2"]
    assert runner.invoke(app, args).exit_code == 0
    options = seen[-1][1]
    assert (options.top_p, options.repeat_penalty, options.verbose, options.parallel) == (0.5, 1.3, True, 2)
    params = options.params()
    assert (params.top_p, params.repeat_penalty, params.constrained) == (0.5, 1.3, True)
    load = options.load_options()
    assert (load.verbose, load.parallel, load.n_ctx) == (True, 2, SETTINGS["n_ctx"].default)
    assert options.cli_args() == ["--top-p=0.5", "--repeat-penalty=1.3", "--parallel=2", "--verbose"]
    help_text = " ".join(runner.invoke(app, ["go", "--help"], env={"COLUMNS": "400"}).output.split())
    for flag in ("--top-p", "--repeat-penalty", "--verbose", "--parallel", "--threads"):
        assert flag in help_text
    for name in ("n_ctx", "max_tokens", "top_p"):  # every option's help is the settings record's
        assert " ".join(SETTINGS[name].help.split())[:30] in help_text


def test_out_of_bounds_values_are_usage_errors_naming_the_flag() -> None:
    app = _app([])
    for args in (["--top-p", "0"], ["--top-p", "1.5"], ["--repeat-penalty", "0"], ["--n-ctx", "100"]):
        result = runner.invoke(app, ["go", "x", *args])
        assert result.exit_code == 2, args
        assert args[0] in result.output, args
    result = runner.invoke(app, ["go", "x", "--temperature", "nan"])
    assert result.exit_code == 2 and "--temperature" in result.output


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


def test_image_fit_built_in_code_is_normalised_and_checked() -> None:
    assert GenerationOptions(image_fit="PAD").image_fit == "pad"
    assert GenerationOptions(image_fit="Crop").load_options().image_fit == "crop"
    with pytest.raises(typer.BadParameter, match="stretch"):
        GenerationOptions(image_fit="stretch")
