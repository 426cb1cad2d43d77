"""``edgejudge`` alone without a terminal: the same two lines as before the restructure (issue #9 asked for
no change), exit 2; ``edgejudge tui`` keeps its own message."""

from __future__ import annotations

from typer.testing import CliRunner

from edgejudge.cli import app


def test_no_command_without_a_terminal_prints_the_old_message() -> None:
    result = CliRunner().invoke(app, [], input="")
    assert result.exit_code == 2 and result.stdout == ""
    assert " ".join(result.stderr.split()) == " ".join(  # the console wraps at its width
        (
            "edgejudge: no command given, and the guided wizard needs a terminal (stdin is not one). "
            'To judge from a script use:  edgejudge judge IMAGE --instruction "..." --response "..."  '
            "(see edgejudge --help)"
        ).split()
    )


def test_tui_without_a_terminal_says_how_to_judge_from_a_script() -> None:
    from edgejudge.cli.tui import NOT_A_TERMINAL

    result = CliRunner().invoke(app, ["tui"], input="")
    assert result.exit_code == 2
    assert " ".join(result.stderr.split()) == " ".join(f"edgejudge: {NOT_A_TERMINAL}".split())
