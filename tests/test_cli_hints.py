"""The CLI prints library errors in CLI words: setting names become flags, verbose logging ``--verbose``.

Library hints name settings bare (``raise n_ctx``) and never flags; ``cli._hints.for_people`` rewrites them
for people, and ``guard``/``fail`` and the wizard apply it. Tested on the table and on real library errors:
a context overflow from the fake engine through ``edgejudge judge``, and llama.cpp failing to load a model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgejudge.cli import _common, app
from edgejudge.cli._hints import flag_table, for_people, running
from edgejudge.engine.fake import FakeEngine
from edgejudge.errors import EngineError, InputError
from edgejudge.judge import Judge

runner = CliRunner()


@pytest.fixture()
def image(work_dir: Path) -> Path:
    from edgejudge.images import synthetic_image

    path = work_dir / "cat.png"
    synthetic_image(96, seed=1).save(path, format="PNG")
    return path


@pytest.mark.parametrize(
    ("library", "people"),
    [
        ("raise n_ctx to 5000+", "raise --n-ctx to 5000+"),
        (
            "shorten the response, lower max_tokens from 1024 to 900 or less, or raise n_ctx to 5000+",
            "shorten the response, lower --max-tokens from 1024 to 900 or less, or raise --n-ctx to 5000+",
        ),
        ("use n_threads >= 1, or leave it unset", "use --threads >= 1, or leave it unset"),
        ("lower n_ctx or pass max_parallel=1", "lower --n-ctx or pass --parallel=1"),
        (
            "use parallel 4 (1 decodes one sequence at a time)",
            "use --parallel 4 (1 decodes one sequence at a time)",
        ),
        ("n_gpu_layers must be an integer", "--n-gpu-layers must be an integer"),
        ("image_fit must be crop or pad", "--image-fit must be crop or pad"),
        ("top_p must be above 0, got 0", "--top-p must be above 0, got 0"),
        ("use repeat_penalty 1 (off)", "use --repeat-penalty 1 (off)"),
        ("samples must be at most 64, got 80", "--samples must be at most 64, got 80"),
        ("use temperature 0 (greedy)", "use --temperature 0 (greedy)"),
        ("seed must be an integer", "--seed must be an integer"),
        (
            "check the file (turn on verbose logging to see llama.cpp's messages)",
            "check the file (re-run with --verbose to see llama.cpp's messages)",
        ),
        ("verbose logging shows why", "--verbose shows why"),
        # everyday words, user values, paths, longer names and flags stay as they are
        ("3 samples agree; the seed is random", "3 samples agree; the seed is random"),
        ("use 1 to 64 samples", "use 1 to 64 samples"),
        ("parallel sequences are decoded together", "parallel sequences are decoded together"),
        ("rubric 'seed' not found", "rubric 'seed' not found"),
        ("image /data/n_ctx/cat.png not found", "image /data/n_ctx/cat.png not found"),
        ("my_n_ctx.txt and n_ctx.gguf", "my_n_ctx.txt and n_ctx.gguf"),
        ("already --n-ctx and --max-tokens", "already --n-ctx and --max-tokens"),
        ("llama.cpp rejected the verdict grammar", "llama.cpp rejected the verdict grammar"),
        ("the model file is missing", "the model file is missing"),
    ],
)
def test_for_people_names_flags(library: str, people: str) -> None:
    assert for_people(library) == people


def test_the_table_is_the_settings_flags_every_one_an_option_of_judge() -> None:
    from edgejudge.settings import flag_names

    table = flag_table()
    assert table["n_ctx"] == "--n-ctx" and table["max_parallel"] == "--parallel" == table["parallel"]
    assert table["n_threads"] == "--threads" and table["verbose"] == "--verbose"
    assert "grammar" not in table and "model" not in table  # --no-grammar, and an everyday word
    assert set(table.items()) <= set(flag_names().items())
    command = typer.main.get_command(app).commands["judge"]  # type: ignore[attr-defined]
    options = {opt for param in command.params for opt in param.opts}
    assert set(table.values()) <= options


def _lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    return lines


def test_context_overflow_hint_names_the_flags(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    engine = FakeEngine(n_ctx=2048)
    monkeypatch.setattr(_common, "JUDGE_FACTORY", lambda options: Judge(engine))
    result = runner.invoke(app, ["judge", str(image), "-i", "What is it?", "--response", "word " * 3000])
    assert result.exit_code == 1 and result.stdout == ""
    error, hint = _lines(result.stderr)
    assert "tokens too many" in error
    assert "raise --n-ctx to " in hint and "shorten the response" in hint
    assert not re.search(r"(?<!-)\b(n_ctx|max_tokens)\b", result.stderr)


def test_library_error_raised_in_a_command_hint_mapped_message_as_written(
    monkeypatch: pytest.MonkeyPatch, image: Path
) -> None:
    def factory(options: object) -> Judge:
        raise EngineError(
            "llama.cpp could not load the model with n_gpu_layers -1",
            hint="lower n_gpu_layers or n_ctx (turn on verbose logging to see llama.cpp's messages)",
        )

    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    result = runner.invoke(app, ["judge", str(image), "-i", "Q?", "--response", "A."])
    assert result.exit_code == 1
    error, hint = _lines(result.stderr)
    # messages quote paths and user values: printed as the library wrote them, only hints are rewritten
    assert error == "error: llama.cpp could not load the model with n_gpu_layers -1"
    assert hint == "hint: lower --n-gpu-layers or --n-ctx (re-run with --verbose to see llama.cpp's messages)"


def test_the_cli_own_hint_is_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        _common.fail(InputError("bad max_tokens", hint="library hint"), hint="the n_ctx of --n-ctx")
    err = capsys.readouterr().err
    assert "error: bad max_tokens" in err and "error: bad --max-tokens" not in err  # a message as written
    assert "hint: the n_ctx of --n-ctx" in err


def test_wizard_errors_are_mapped_too() -> None:
    from rich.console import Console

    from edgejudge.cli._tui_prompts import Prompter

    console = Console(record=True, width=200)
    Prompter(console).error(InputError("max_tokens must be at least 1", hint="use max_tokens >= 1"))
    text = console.export_text()
    assert "error: max_tokens must be at least 1" in text and "hint: use --max-tokens >= 1" in text


def test_a_model_llama_cpp_cannot_load_says_verbose_and_verbose_shows_its_log(
    tiny_gguf: tuple[Path, Path], image: Path, work_dir: Path
) -> None:
    text, mmproj = tiny_gguf
    broken = work_dir / "broken-F16.gguf"
    broken.write_bytes(
        text.read_bytes()[: text.stat().st_size // 3]
    )  # a cut text model: llama.cpp refuses it
    (work_dir / mmproj.name.replace("tiny", "broken")).write_bytes(mmproj.read_bytes())
    args = ["judge", str(image), "-i", "Q?", "--response", "A.", "-m", str(broken)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    error, hint = result.stderr.splitlines()[-2:]
    assert error.startswith("error: ") and hint.startswith("hint: ")
    assert "--verbose" in hint and "verbose=True" not in hint and "verbose logging" not in hint
    verbose = runner.invoke(app, [*args, "--verbose"])
    assert verbose.exit_code == 1
    assert len(verbose.stderr.splitlines()) > len(result.stderr.splitlines())  # llama.cpp's own messages


@pytest.mark.parametrize("command", ["judge", "batch", "tui", "demo"])
def test_commands_that_load_a_model_accept_verbose(command: str) -> None:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    assert "--verbose" in {opt for param in click_command.params for opt in param.opts}


def test_verbose_reaches_the_load_options(
    monkeypatch: pytest.MonkeyPatch, image: Path, work_dir: Path
) -> None:
    seen: list[bool] = []

    def factory(options: _common.GenerationOptions) -> Judge:
        seen.append(options.load_options().verbose)
        return Judge(FakeEngine())

    monkeypatch.setattr(_common, "JUDGE_FACTORY", factory)
    base = ["judge", str(image), "-i", "Q?", "--response", "A."]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--verbose"]).exit_code == 0
    rows = work_dir / "in.jsonl"
    rows.write_text(f'{{"id": "a", "image": "{image}", "instruction": "Q?", "response": "A."}}\n')
    batch = [
        "batch",
        str(rows),
        "-o",
        str(work_dir / "out.jsonl"),
        "--rubric",
        "vqa-helpfulness",
        "--verbose",
    ]
    assert runner.invoke(app, batch).exit_code == 0
    assert seen == [False, True, True]


# --- A6: user text is never rewritten (paths, quoted values, messages), English stays English


@pytest.mark.parametrize(
    "text",
    [
        "the samples must agree",
        "The samples must be alike",
        "3 samples must agree",
        "rubric 'use seed 2' not found",
        'the value "raise n_ctx to 9" came from the file',
        "the file `use seed 2` is a rubric",
        "move /tmp/runs_n_ctx/x.png away",
        "check C:\\runs\\n_ctx\\cat.png",
        "read /data/use_n_ctx/max_tokens.txt",
    ],
)
def test_for_people_keeps_english_quotes_and_paths(text: str) -> None:
    assert for_people(text) == text


def test_for_people_rewrites_outside_quotes_and_paths_only() -> None:
    assert (
        for_people("rename 'use seed 2' or /a/n_ctx/b, then raise n_ctx")
        == "rename 'use seed 2' or /a/n_ctx/b, then raise --n-ctx"
    )


def test_an_image_path_naming_a_setting_is_printed_as_given(work_dir: Path, image: Path) -> None:
    folder = work_dir / "runs n_ctx 8192"
    folder.mkdir()
    missing = folder / "cat.png"
    result = runner.invoke(app, ["judge", str(missing), "-i", "Q?", "--response", "A."])
    assert result.exit_code == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert error == f"error: image not found: {missing}"
    assert "--n-ctx" not in result.stderr


def test_a_rubric_name_naming_a_setting_is_printed_as_given(
    monkeypatch: pytest.MonkeyPatch, image: Path
) -> None:
    monkeypatch.setattr(_common, "JUDGE_FACTORY", lambda options: Judge(FakeEngine()))
    result = runner.invoke(
        app, ["judge", str(image), "-i", "Q?", "--response", "A.", "--rubric", "use seed 2"]
    )
    assert result.exit_code == 1
    assert "error: unknown rubric 'use seed 2'" in result.stderr
    assert "--seed" not in result.stderr


# --- A7: "re-run with --verbose" only where the command has --verbose, and there it shows native logs


def _all_commands() -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        else:
            found.append(path)

    walk(typer.main.get_command(app), ())
    assert len(found) > 15, found
    return found


def _click_command(path: tuple[str, ...]) -> object:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def _opts(command: object) -> set[str]:
    return {opt for param in command.params for opt in param.opts}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path", [("judge",), ("batch",), ("tui",), ("demo",), ("convert",), ("models", "pull"), ("doctor",)]
)
def test_commands_that_run_native_code_accept_verbose(path: tuple[str, ...]) -> None:
    assert "--verbose" in _opts(_click_command(path))


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_only_a_command_with_verbose_tells_to_re_run_with_it(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    from edgejudge.native.log import VERBOSE_HINT

    command = _click_command(path)
    err = EngineError("the vision encoder failed (code 1)", hint=VERBOSE_HINT)
    with running(command), pytest.raises(typer.Exit):  # what guard marks while the command runs
        _common.fail(err)
    hint = capsys.readouterr().err.splitlines()[-1]
    if "--verbose" in _opts(command):
        assert hint == "hint: re-run with --verbose to see llama.cpp's messages"
    else:
        assert "--verbose" not in hint and hint == f"hint: {VERBOSE_HINT}"


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["convert", "ckpt", "--outdir", "out"], "edgejudge.install.convert_checkpoint"),
        (["models", "pull", "prometheus-vision-7b"], "edgejudge.install.pull_model"),
        (["doctor"], "edgejudge.doctor.collect"),
    ],
)
def test_verbose_turns_on_native_logs_and_the_hint_names_it(
    monkeypatch: pytest.MonkeyPatch, work_dir: Path, args: list[str], target: str
) -> None:
    from edgejudge.native import log
    from edgejudge.native.log import VERBOSE_HINT

    shown: list[bool] = []

    def failing(*a: object, **k: object) -> None:
        shown.append(log._shown)
        raise EngineError("llama.cpp could not load tiny-F16.gguf", hint=f"check the file ({VERBOSE_HINT})")

    monkeypatch.setattr(target, failing)
    plain = runner.invoke(app, args)
    assert plain.exit_code == 1
    assert (
        plain.stderr.splitlines()[-1]
        == "hint: check the file (re-run with --verbose to see llama.cpp's messages)"
    )
    assert runner.invoke(app, [*args, "--verbose"]).exit_code == 1
    assert shown == [False, True] and log._shown is False


def test_verbose_native_logs_lets_the_quiet_blocks_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgejudge.native import log

    calls: list[bool] = []
    real = log.set_native_logging
    monkeypatch.setattr(log, "set_native_logging", lambda verbose: (calls.append(verbose), real(verbose)))
    with log.quiet_native_logs():
        pass
    assert calls == [False]
    calls.clear()
    with log.verbose_native_logs():
        with log.quiet_native_logs():  # the probe's and the quantizer's: not silenced now
            assert calls == [True]
    assert calls == [True, False]
